"""The phase diagram: the mean-field predictions on a grid of (sigma_w^2, sigma_b^2).

Schoenholz et al. (2017, figure 1 and figures 5-6) draw it for tanh: an ordered phase at
small sigma_w^2, a chaotic one at large sigma_w^2, the edge of chaos between them, and the
trainable depth 6 xi_c peaking along that edge. `phase_diagram` computes it for any
activation, as data (`PhaseDiagram`, one row per grid point) and as a figure
(`PhaseDiagram.plot`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from keras_inits._extras import HARNESS, require, save_figure
from keras_inits.theory.activations import resolve
from keras_inits.theory.recursions import (
    TRAINABLE_DEPTH_PER_XI_C,
    NoFixedPointError,
    _mean_field,
    _number,
    critical_sigma_w2,
)

UNBOUNDED = "unbounded"  # the phase of a grid point whose length map has no fixed point
_FIELDS = ("q_star", "chi_1", "c_star", "chi_c", "xi_q", "xi_c")


@dataclasses.dataclass(frozen=True, eq=False)
class PhaseDiagram:
    """`mean_field` on a grid: every array is indexed `[sigma_b2 index, sigma_w2 index]`.

    Attributes:
        activation: the activation's name.
        sigma_w2: the weight variances (times fan_in), the columns.
        sigma_b2: the bias variances, the rows.
        q_star: the fixed point of the length map (NaN where it has none).
        chi_1: the slope of the correlation map at c = 1.
        c_star: the stable fixed point of the correlation map.
        chi_c: the slope of the correlation map at c*.
        xi_q: the depth scale of the length.
        xi_c: the depth scale of the correlation (inf at the edge of chaos).
        phase: "ordered", "critical", "chaotic", or "unbounded" where q^l grows without
            bound (no fixed point; the other fields are NaN there).
        critical: per row, `critical_sigma_w2(activation, sigma_b2)`, NaN where none exists
            (or where it was not computed).
    """

    activation: str
    sigma_w2: np.ndarray
    sigma_b2: np.ndarray
    q_star: np.ndarray
    chi_1: np.ndarray
    c_star: np.ndarray
    chi_c: np.ndarray
    xi_q: np.ndarray
    xi_c: np.ndarray
    phase: np.ndarray
    critical: np.ndarray

    @property
    def trainable_depth(self) -> np.ndarray:
        """6 xi_c at every grid point (Schoenholz et al. 2017)."""
        return TRAINABLE_DEPTH_PER_XI_C * self.xi_c

    def rows(self) -> list[dict[str, Any]]:
        """One dict per grid point, row by row: `sigma_w2`, `sigma_b2`, `phase`, the
        fields of `MeanField` and `trainable_depth` (floats; NaN where unbounded)."""
        depth = self.trainable_depth
        return [
            {"sigma_w2": float(w), "sigma_b2": float(b), "phase": str(self.phase[i, j]),
             **{name: float(getattr(self, name)[i, j]) for name in _FIELDS},
             "trainable_depth": float(depth[i, j])}
            for i, b in enumerate(self.sigma_b2)
            for j, w in enumerate(self.sigma_w2)
        ]

    def plot(self, path: str | Path | None = None, title: str | None = None,
             max_depth: float = 1000.0) -> Any:
        """Draws two panels over (sigma_w^2, sigma_b^2): chi_1 (blue ordered, red chaotic)
        and the trainable depth 6 xi_c (log scale, capped at `max_depth`), with the edge of
        chaos as a dashed line and the unbounded region in grey. Needs matplotlib
        (`keras-inits[harness]`).

        Args:
            path: where to save the figure (PNG, PDF, SVG... by its suffix); None to
                return the figure unsaved.
            title: the figure's title; default the activation's name.
            max_depth: the top of the trainable-depth color scale.

        Returns:
            The saved file's `Path`, or the `matplotlib.figure.Figure` when `path` is None.
        """
        mpl_figure = require("matplotlib.figure", HARNESS, "PhaseDiagram.plot draws with "
                             "matplotlib")
        colors = require("matplotlib.colors", HARNESS, "PhaseDiagram.plot draws with matplotlib")
        figure = mpl_figure.Figure(figsize=(10.5, 4.0), layout="constrained")
        left, right = figure.subplots(1, 2, sharey=True)
        chi = np.ma.masked_invalid(self.chi_1)
        finite = chi.compressed()
        low = min(float(finite.min()), 0.99) if finite.size else 0.5
        high = max(float(finite.max()), 1.01) if finite.size else 2.0
        image = left.pcolormesh(
            self.sigma_w2, self.sigma_b2, chi, shading="nearest", cmap=_with_grey("RdBu_r"),
            norm=colors.TwoSlopeNorm(vmin=low, vcenter=1.0, vmax=high),
        )
        figure.colorbar(image, ax=left, label=r"$\chi_1$")
        depth = np.ma.masked_invalid(np.where(np.isinf(self.xi_c), max_depth,
                                              self.trainable_depth))
        image = right.pcolormesh(
            self.sigma_w2, self.sigma_b2, np.clip(depth, 1.0, max_depth), shading="nearest",
            cmap=_with_grey("viridis"), norm=colors.LogNorm(vmin=1.0, vmax=max_depth),
        )
        figure.colorbar(image, ax=right, label=r"trainable depth $6\,\xi_c$")
        for axes in (left, right):
            axes.set_facecolor("0.8")  # unbounded: no fixed point q*
            edge = np.isfinite(self.critical)
            if edge.any():
                axes.plot(self.critical[edge], self.sigma_b2[edge], "k--", linewidth=1.2,
                          label=r"edge of chaos ($\chi_1 = 1$)")
            axes.set_xlabel(r"$\sigma_w^2$")
            axes.set_xlim(self.sigma_w2.min(), self.sigma_w2.max())
        left.set_ylabel(r"$\sigma_b^2$")
        left.set_title(r"$\chi_1$: ordered < 1 < chaotic")
        right.set_title(r"trainable depth $6\,\xi_c$")
        if np.isfinite(self.critical).any():
            left.legend(loc="upper left", fontsize="small")
        figure.suptitle(title or f"{self.activation}: mean-field phase diagram")
        if path is None:
            return figure
        return save_figure(figure, path)


def _with_grey(name: str) -> Any:
    """A copy of the colormap `name` that draws masked (NaN) cells transparent."""
    cm = require("matplotlib", HARNESS, "PhaseDiagram.plot draws with matplotlib")
    return cm.colormaps[name].with_extremes(bad=(0.0, 0.0, 0.0, 0.0))


def _grid(values: Any, name: str, positive: bool) -> np.ndarray:
    if isinstance(values, str) or not isinstance(values, Sequence | np.ndarray):
        raise TypeError(f"{name} must be a sequence of numbers, got {values!r}.")
    array = np.array([_number(value, name, positive=positive) for value in values], np.float64)
    if array.size == 0:
        raise ValueError(f"{name} is empty: give at least one value.")
    return array


def phase_diagram(
    activation: str | Callable,
    sigma_w2: Sequence[float],
    sigma_b2: Sequence[float],
    *,
    critical_line: bool = True,
) -> PhaseDiagram:
    """`mean_field` at every (sigma_w2, sigma_b2) of a grid, and the edge of chaos.

    A grid point whose length map has no fixed point (q^l grows without bound, e.g. relu
    with sigma_w2 > 2) gets the phase "unbounded" and NaN values, instead of the
    `mean_field` error. Time: about a millisecond per ordered point, tens of milliseconds per
    chaotic one (the correlation fixed point is a two-dimensional quadrature), a fraction of
    a second per row for the critical line.

    Examples:
        >>> from keras_inits import theory
        >>> diagram = theory.phase_diagram("tanh", [0.5, 1.0, 2.0], [0.0])
        >>> [str(phase) for phase in diagram.phase[0]]
        ['ordered', 'critical', 'chaotic']

    Args:
        activation: a Keras activation name, `"erf"`, or an elementwise callable.
        sigma_w2: the weight variances (times fan_in), each > 0.
        sigma_b2: the bias variances, each >= 0.
        critical_line: compute `critical_sigma_w2` for every sigma_b2 (NaN where none
            exists); False leaves `critical` NaN.

    Returns:
        A `PhaseDiagram`.

    Raises:
        ValueError: an empty grid, a negative or non-finite variance, an unknown activation.
        TypeError: a grid that is not a sequence of numbers, an activation that is neither a
            name nor a callable.
    """
    act = resolve(activation)
    weights = _grid(sigma_w2, "sigma_w2", positive=True)
    biases = _grid(sigma_b2, "sigma_b2", positive=False)
    shape = (biases.size, weights.size)
    values = {name: np.full(shape, math.nan) for name in _FIELDS}
    phase = np.full(shape, UNBOUNDED, dtype=object)
    for i, b in enumerate(biases):
        for j, w in enumerate(weights):
            try:
                field = _mean_field(act, float(w), float(b), 1.0)
            except NoFixedPointError:
                continue
            phase[i, j] = field.phase
            for name in _FIELDS:
                values[name][i, j] = getattr(field, name)
    critical = np.full(biases.size, math.nan)
    if critical_line:
        for i, b in enumerate(biases):
            with contextlib.suppress(ValueError):  # no edge of chaos at this bias: NaN
                critical[i] = critical_sigma_w2(activation, float(b))
    return PhaseDiagram(act.name, weights, biases, phase=phase, critical=critical, **values)
