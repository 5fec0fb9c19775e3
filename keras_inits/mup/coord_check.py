"""The coordinate check: does every layer's activation keep its scale as the model widens?

Build the model at several widths, train each a few steps on one repeated batch, and record
the mean absolute value of every layer's output (its "coordinates") before each step. Under
muP the curves against the width are flat at every step; under the standard parametrization
(SP) they grow after the first update, the faster the larger the learning rate. It is the
correctness test of a muP implementation (Yang et al. 2022, section 3 and Appendix D.1;
mup's `coord_check.py`), and it needs no training run: seconds on a CPU.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from keras_inits._extras import HARNESS, require, save_figure
from keras_inits.mup.parametrization import optimizer as mup_optimizer
from keras_inits.mup.parametrization import parametrize
from keras_inits.taps import call_model, find_taps, intercept, main_output

PARAMETRIZATIONS = ("mup", "sp")


@dataclasses.dataclass(frozen=True)
class CoordCheck:
    """Mean |activation| of every layer, per width and step.

    Attributes:
        parametrization: "mup" or "sp".
        widths: the widths, ascending.
        layers: the layers' paths, in forward order.
        values: `values[w][s][l]`: width `widths[w]`, step `s + 1`, layer `layers[l]`.
    """

    parametrization: str
    widths: list[int]
    layers: list[str]
    values: np.ndarray

    @property
    def steps(self) -> int:
        return self.values.shape[1]

    def rows(self) -> list[dict[str, Any]]:
        """One row per (width, step, layer): `width`, `step` (from 1), `layer`, `mean_abs`."""
        return [
            {"width": width, "step": step + 1, "layer": layer,
             "mean_abs": float(self.values[w, step, index])}
            for w, width in enumerate(self.widths)
            for step in range(self.steps)
            for index, layer in enumerate(self.layers)
        ]

    def ratios(self) -> np.ndarray:
        """`[step, layer]`: each layer's mean |activation| at the widest width over the
        narrowest's: about 1 under muP; growing with the width ratio under SP. A layer
        whose output is zero at both widths (a zero read-out at step 1) has ratio 1."""
        wide, narrow = self.values[-1], self.values[0]
        both_zero = (wide == 0) & (narrow == 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(both_zero, 1.0, wide / np.where(both_zero, 1.0, narrow))

    def slopes(self) -> np.ndarray:
        """`[step, layer]`: the least-squares slope of log mean |activation| against log width,
        0 when flat; SP's hidden layers tend to 0.5 and its logits to 1 under Adam."""
        logs = np.log(np.asarray(self.widths, dtype=float))
        centered = logs - logs.mean()
        zero = np.all(self.values == 0, axis=0)  # a zero read-out at step 1: flat
        with np.errstate(divide="ignore", invalid="ignore"):
            slopes = np.einsum("w,wsl->sl", centered, np.log(self.values)) / (centered**2).sum()
        return np.where(zero, 0.0, slopes)

    def plot(self, path: str | Path, title: str | None = None) -> Path:
        """Writes the figure: one panel per step, mean |activation| against the width on
        log-log axes, one line per layer. Needs matplotlib (`keras-inits[harness]`)."""
        mpl_figure = require("matplotlib.figure", HARNESS, "CoordCheck.plot draws with matplotlib")
        figure = mpl_figure.Figure(figsize=(3.6 * self.steps, 3.6), layout="constrained")
        panels = np.atleast_1d(figure.subplots(1, self.steps, sharey=True))
        for step, axes in enumerate(panels):
            for index, layer in enumerate(self.layers):
                axes.plot(self.widths, self.values[:, step, index], marker="o", markersize=3,
                          label=layer)
            axes.set_xscale("log", base=2)
            axes.set_yscale("log")
            axes.set_title(f"step {step + 1}")
            axes.set_xlabel("width")
            axes.grid(alpha=0.3)
        panels[0].set_ylabel("mean |activation|")
        panels[-1].legend(fontsize="x-small")
        figure.suptitle(title or f"coordinate check, {self.parametrization}")
        return save_figure(figure, path)


def coord_check(
    build: Callable[[int], keras.Model],
    widths: Sequence[int],
    x: Any,
    y: Any,
    optimizer: keras.optimizers.Optimizer,
    *,
    steps: int = 3,
    parametrization: str = "mup",
    base_width: int | None = None,
    readout_zero_init: bool = False,
    loss: Any = None,
    seeds: Sequence[int] = (0,),
) -> CoordCheck:
    """The coordinate check of `build` over `widths` (see the module docstring).

    For each width and seed: `keras.utils.set_random_seed(seed)`, `model = build(width)`; under
    "mup", `parametrize(model, build(base_width))` (the smallest width by default; a
    `delta_model` at twice it when the model is at the base width) and the muP copy of
    `optimizer`; under "sp", a plain copy of `optimizer`. Then `steps` times: the mean
    |output| of every layer with a kernel on `x` (inference mode), and one training step
    on `(x, y)`. The values are averaged over the seeds, as mup's check averages its
    `nseeds`: one draw at a narrow width is noisy.

    Args:
        build: width -> a built model, ending in a `keras_inits.mup.Readout` for "mup".
        widths: at least two widths.
        x: one batch of inputs, repeated at every step.
        y: its targets.
        optimizer: configured as at the base width; copied for every width.
        steps: how many steps to record (step 1 is at initialization).
        parametrization: "mup" or "sp".
        base_width: the muP base width; default the smallest of `widths`.
        readout_zero_init: "mup" only: start the read-out at zero (see `parametrize`).
        loss: the training loss; default sparse categorical cross-entropy on logits.
        seeds: the seeds of each width's builds, averaged over.

    Raises:
        ValueError: fewer than two widths, a bad `steps` or `parametrization`, a model
            that does not grow with the width, or what `parametrize` refuses.
    """
    widths = sorted(int(width) for width in widths)
    if len(set(widths)) < 2:
        raise ValueError(f"coord_check needs at least two different widths, got {widths}.")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}.")
    if parametrization not in PARAMETRIZATIONS:
        raise ValueError(
            f"parametrization must be 'mup' or 'sp', got {parametrization!r}."
        )
    base_width = widths[0] if base_width is None else int(base_width)
    loss = loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    config = optimizer.get_config()
    values, layers = [], None
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds must hold at least one seed.")
    for width in widths:
        runs = []
        for seed in seeds:
            keras.utils.set_random_seed(seed)
            model = build(width)
            plain = type(optimizer).from_config(config)
            if parametrization == "mup":
                delta = build(2 * base_width) if width == base_width else None
                parametrize(model, build(base_width), delta_model=delta,
                            readout_zero_init=readout_zero_init)
                plain = mup_optimizer(model, plain)
            model.compile(optimizer=plain, loss=loss)
            per_step = []
            for _ in range(steps):
                names, means = _mean_abs(model, x)
                per_step.append(means)
                model.train_on_batch(x, y)
            # Layers are matched in forward order (each build numbers its automatic names
            # anew).
            if layers is None:
                layers = names
            elif len(names) != len(layers):
                raise ValueError(
                    f"build({width}) has {len(names)} layers with kernels, build({widths[0]}) "
                    f"{len(layers)}: the coordinate check compares the same layers across "
                    "widths."
                )
            runs.append(per_step)
        values.append(np.mean(np.asarray(runs, dtype=float), axis=0))
    return CoordCheck(parametrization, widths, layers, np.asarray(values, dtype=float))


def _mean_abs(model: keras.Model, x: Any) -> tuple[list[str], list[float]]:
    """Each layer with a kernel, in forward order: its path and the mean |output| on `x`."""
    taps = find_taps(model)
    found: dict[int, tuple[str, float]] = {}
    order: list[int] = []

    def record(tap, call, args, kwargs):
        outputs = call(*args, **kwargs)
        if id(tap) not in found:
            value = keras.ops.mean(keras.ops.abs(main_output(outputs)))
            found[id(tap)] = (tap.path, float(keras.ops.convert_to_numpy(value)))
            order.append(id(tap))
        return outputs

    with intercept(taps, record):
        call_model(model, x)
    # A layer that diverged records inf or NaN: the check shows it rather than stopping.
    return [found[key][0] for key in order], [found[key][1] for key in order]
