"""`diagnose`: signal propagation through any model at its current weights, in numbers and words.

Verdicts and their thresholds (`THRESHOLDS`), over the layers with a kernel in
forward order. The depth checks leave out softmax layers (probabilities are
not a signal that should keep its scale, and the softmax Jacobian rescales the
gradient by itself) and embeddings (a lookup whose scale is a convention, and
whose gradient sums every residual path above it):

- vanishing / exploding activations: the output std of the deepest layer is
  more than `depth_ratio` (10x) smaller / larger than the first layer's (with at
  least 3 layers compared).
- vanishing / exploding gradients: dLoss/d(output) at the first layer is more
  than 10x smaller / larger than at the deepest layer of the same output size
  per example (the per-element gradient changes with a layer's size alone, e.g.
  across average pooling; see `_longest_equal_size_span`). Layers without a
  gradient (the loss does not reach them) are left out.
- shrinking / growing activations or gradients: below those limits, a steady rate per
  layer outside [1/1.25, 1.25] (`layer_rate`), measured over the same span: the
  end-to-end change stays under 10x only because the model is shallow (Glorot &
  Bengio's U(-1/sqrt(n), 1/sqrt(n)) loses about 0.57x per tanh layer, 9.4x over five).
  The verdict says the rate, how many layers lose 10x at that rate, and, for a
  chain-like model, the rate mean-field theory predicts from the weights.
- beyond the trainable depth: a chain-like model (see `keras_inits.prediction`) deeper
  than 6 xi_c of its mean-field phase (Schoenholz et al. 2017).
- saturated layer: more than `saturated` (50%) of a tanh/sigmoid-like layer's
  outputs are saturated (|a| > 0.9, or a outside (0.1, 0.9) for sigmoid).
- dead layer: more than `dead` (50%) of a ReLU layer's units are never active
  on the batch.
- no signal: a layer whose output std is 0; non-finite: NaN or inf outputs or
  gradients.
- growing residual stream (models with residual blocks, see `keras_inits.roles`): the
  std of the blocks' outputs grows more than `stream_growth` (2x) from the first block
  to the last; the verdict says whether it multiplies at each block or adds, and which
  scheme keeps it level (`keras_inits.stream`). In such models the vanishing and
  exploding checks above run on the stream (block by block) rather than on each
  sublayer's output (an attention query's scale says nothing about depth), and a
  residual output or head with an all-zero kernel (Fixup, zero_branch) is silent by
  design, not "no signal".
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from keras_inits import tables
from keras_inits._extras import HARNESS, require, save_figure
from keras_inits.base import check_choice
from keras_inits.prediction import describe_phase, phase, predict
from keras_inits.roles import RESIDUAL_OUTPUTS
from keras_inits.signals import SignalProbe
from keras_inits.stream import STREAM_GROWTH, stream_verdict

THRESHOLDS: dict[str, float] = {
    "depth_ratio": 10.0, "layer_rate": 1.25, "saturated": 0.5, "dead": 0.5,
    "stream_growth": STREAM_GROWTH,
}
_MIN_DEPTH = 3  # a trend "across depth" needs at least this many layers
_COLUMNS = [
    ("path", "layer"),
    ("activation", "activation"),
    ("output_mean", "mean"),
    ("output_std", "std"),
    ("gradient_std", "grad std"),
    ("weight_gradient_std", "w-grad std"),
    ("saturated_fraction", "saturated"),
    ("dead_fraction", "dead"),
]
# The theory's numbers beside the measured ones (keras_inits.prediction), for chain-like models.
_PREDICTED_COLUMNS = [
    ("predicted_std", "pred std"),
    ("predicted_q", "pred q"),
    ("gradient_ratio", "grad ratio"),
    ("predicted_gradient_ratio", "pred ratio"),
]
_STREAM_COLUMNS = [
    ("block", "block"), ("path", "output of"), ("output_std", "stream std"),
    ("gradient_std", "grad std"),
]


@dataclasses.dataclass(frozen=True)
class Verdict:
    """One finding: `kind` (e.g. "vanishing_activations"), the layers it is about (their
    paths in the model, as in the table), in words."""

    kind: str
    layers: tuple[str, ...]
    message: str

    def __str__(self) -> str:
        return self.message


@dataclasses.dataclass
class Diagnosis:
    """Per-layer signal statistics of a model on a batch, and verdicts in words.

    Attributes:
        layers: one dict per layer with a kernel, in forward order: name, path,
            layout (the kernel's fan rule), activation, output_mean, output_std,
            output_size (per example), gradient_std (of dLoss/d output),
            weight_gradient_std, weight_std,
            saturated_fraction (None for unbounded activations), dead_fraction
            (None unless ReLU-like), role and block (see `keras_inits.roles`).
        verdicts: what is wrong and where; empty when every check passes.
        loss: the loss on the batch (the surrogate's value when `surrogate`).
        surrogate: whether the loss is the surrogate (no `y` given).
        stream: for residual models, one dict per residual block in order: block,
            path (the operation whose output is the block's), attention (whether
            the block holds an attention layer), output_std and gradient_std of
            the residual stream there; empty otherwise.
        phase: for a chain-like model (see `keras_inits.prediction`), its mean-field
            phase at its typical hidden layer's weights: `keras_inits.theory.MeanField`'s
            fields, `trainable_depth` and the model's `depth`; None otherwise. The
            layers then also hold the theory's predicted_q, predicted_std,
            gradient_ratio, predicted_gradient_ratio and predicted_gradient_std.
        unpredicted: why nothing is predicted (the model is not a chain the theory
            describes), or None.
    """

    layers: list[dict[str, Any]]
    verdicts: list[Verdict]
    loss: float
    surrogate: bool
    stream: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    phase: dict[str, Any] | None = None
    unpredicted: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: `{"layers": [...], "verdicts": [str, ...], "findings": [...], ...}`."""
        return {
            "layers": [
                {key: _json_number(value) for key, value in layer.items()} for layer in self.layers
            ],
            "verdicts": [verdict.message for verdict in self.verdicts],
            "findings": [dataclasses.asdict(verdict) for verdict in self.verdicts],
            "loss": _json_number(self.loss),
            "surrogate_loss": self.surrogate,
            "stream": [
                {key: _json_number(value) for key, value in block.items()}
                for block in self.stream
            ],
            "phase": None if self.phase is None else {
                key: _json_number(value) for key, value in self.phase.items()
            },
            "unpredicted": self.unpredicted,
        }

    def table(self) -> str:
        """The layers as a text table, then the verdicts."""
        loss = "surrogate loss" if self.surrogate else "loss"
        predicted = any("predicted_q" in layer for layer in self.layers)
        lines = [tables.render(self.layers, _COLUMNS + (_PREDICTED_COLUMNS if predicted else []))]
        if self.stream:
            lines += ["", "Residual stream (each block's output):"]
            lines.append(tables.render(self.stream, _STREAM_COLUMNS))
        lines.append(f"{loss}: {self.loss:.4g}")
        if self.phase is not None:
            lines.append(describe_phase(self.phase))
        if self.verdicts:
            lines += [f"- {verdict.message}" for verdict in self.verdicts]
        else:
            lines.append("No problem found (keras_inits.diagnosis.THRESHOLDS lists the checks).")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def plot(self, path: str | Path, title: str | None = None, of: str = "layers") -> Path:
        """Writes the depth profile (activation and gradient std per layer; with
        `of="stream"`, the residual stream's per block) as a PNG.

        Needs matplotlib (`pip install 'keras-inits[harness]'`); the numbers need nothing.
        """
        return plot_profiles(path, {title or "model": self}, of)


def diagnose(
    model: keras.layers.Layer, x: Any, y: Any = None, *, loss: Any = None
) -> Diagnosis:
    """Signal propagation through `model` at its current weights, on the batch `x`.

    One forward and one backward pass in inference mode (dropout off, batch
    norm on its moving statistics), through the backend's own autodiff. The
    weights are not changed.

    Examples:
        >>> model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3))
        >>> print(keras_inits.diagnose(model, x))          # surrogate loss
        >>> keras_inits.diagnose(model, x, y, loss="sparse_categorical_crossentropy").to_dict()

    Args:
        model: a built Sequential, Functional or subclassed model.
        x: one batch of inputs.
        y: its targets; without them the loss is the surrogate described in
            `keras_inits.signals` (unit-variance noise back-propagated from the output).
        loss: with `y`: a Keras loss name or callable; default the compiled loss.

    Returns:
        A `Diagnosis`: `print` it, `.to_dict()`, `.plot(path)`.
    """
    probe = SignalProbe(model, x, y, loss=loss, stream=True)
    signals = probe.compute()
    prediction = predict(probe.taps, x, [
        {"gradient_std": _number(stats["gradient_std"])} for stats in signals.statistics()
    ])
    found = {kernel.path: kernel for kernel in probe.roles.kernels}
    rows = []
    for tap, (shape, _), stats in zip(
        probe.taps, probe.specs, signals.statistics(), strict=True
    ):
        row = {
            "name": tap.name,
            "path": tap.path,
            "layout": tap.kernel.plan.layout,
            "activation": tap.activation,
            "output_size": math.prod(shape[1:]),
            "role": found[tap.kernel.path].role if tap.kernel.path in found else None,
            "block": found[tap.kernel.path].block if tap.kernel.path in found else None,
        }
        row.update({key: _number(value) for key, value in stats.items()})
        rows.append(row)
    for row, predicted in zip(rows, prediction.rows, strict=False):
        row.update(predicted)
    stream = [
        {
            "block": point.block,
            "path": point.path,
            "attention": point.attention,
            **{key: _number(value) for key, value in stats.items()},
        }
        for point, stats in zip(signals.stream, signals.stream_statistics(), strict=True)
    ]
    found_phase, warning = phase(prediction, [row["path"] for row in rows])
    verdicts = find_verdicts(rows, THRESHOLDS, stream)
    if warning:
        verdicts.append(Verdict("beyond_trainable_depth", (rows[0]["path"], rows[-1]["path"]),
                                warning))
    return Diagnosis(rows, verdicts, _number(signals.loss), y is None, stream,
                     phase=found_phase, unpredicted=prediction.reason)


def _number(value: Any) -> float | None:
    return None if value is None else float(keras.ops.convert_to_numpy(value))


def _json_number(value: Any) -> Any:
    """JSON has no NaN or inf: non-finite numbers become None."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _fold(change: float) -> str:
    """How many times smaller, in words: '9.3x', or 'to 0' when nothing is left."""
    return f"{1 / change:.3g}x" if change > 0 else "to 0"


def _ratio(numerator: float, denominator: float) -> float:
    if denominator == 0:
        return math.inf if numerator > 0 else 1.0
    return numerator / denominator


def find_verdicts(
    rows: Sequence[Mapping[str, Any]],
    thresholds: Mapping[str, float] = THRESHOLDS,
    stream: Sequence[Mapping[str, Any]] = (),
) -> list[Verdict]:
    """The verdicts for per-layer rows in forward order, and the residual stream's rows
    when the model has residual blocks (see the module docstring)."""
    verdicts: list[Verdict] = []
    for row in [*rows, *stream]:
        values = [row[k] for k in ("output_std", "gradient_std") if row[k] is not None]
        if any(not math.isfinite(value) for value in values):
            verdicts.append(
                Verdict(
                    "non_finite",
                    (row["path"],),
                    f"{row['path']}: non-finite outputs or gradients (NaN or inf); the weights "
                    "are far too large or the input holds NaN.",
                )
            )
            return verdicts
    # A residual output or a head whose kernel is zero (Fixup, zero_branch) is silent by
    # design: its block starts as the identity, and it learns from its first step.
    by_design = [
        row for row in rows
        if row.get("weight_std") == 0 and row.get("role") in (*RESIDUAL_OUTPUTS, "head")
    ]
    for row in rows:
        if row["output_std"] == 0 and not any(row is silent for silent in by_design):
            verdicts.append(
                Verdict(
                    "no_signal",
                    (row["path"],),
                    f"{row['path']}: output is constant on the batch (std 0); no signal passes "
                    "this layer (zero kernel, or dead units upstream).",
                )
            )
    signal = [
        row for row in rows
        if row["activation"] != "softmax" and row.get("layout") != "embedding"
        and not any(row is silent for silent in by_design)
    ]
    if len(stream) >= _MIN_DEPTH:
        # Through residual blocks the signal is the stream, not each sublayer's output (an
        # attention query's scale says nothing about depth); the layers outside every
        # block (a deep stem or head) are checked as a chain of their own.
        verdicts += _stream_verdicts(stream, thresholds)
        signal = [row for row in signal if row.get("block") is None]
    verdicts += _depth_verdicts(
        signal, thresholds["depth_ratio"], "layers",
        thresholds.get("layer_rate", THRESHOLDS["layer_rate"]),
    )
    verdicts += _fraction_verdicts(
        rows,
        "saturated_fraction",
        thresholds["saturated"],
        "saturated",
        "Saturated: {} of {} outputs",
        "saturated units pass almost no gradient",
    )
    verdicts += _fraction_verdicts(
        rows,
        "dead_fraction",
        thresholds["dead"],
        "dead_units",
        "Dead units: {} of {} units never active on the batch",
        "they get no gradient and will not recover",
    )
    return verdicts


def _depth_verdicts(
    signal: Sequence[Mapping[str, Any]], limit: float, unit: str,
    rate_limit: float = THRESHOLDS["layer_rate"],
) -> list[Verdict]:
    """Vanishing or exploding activations and gradients from the first to the last of
    `signal` (layers, or residual blocks: `unit`), or, below that limit, a steady
    shrinking or growth per layer that a deeper model would compound."""
    verdicts: list[Verdict] = []
    if len(signal) >= _MIN_DEPTH:
        first, last = signal[0], signal[-1]
        change = _ratio(last["output_std"], first["output_std"])
        span = f"from {first['path']} to {last['path']} ({len(signal)} {unit})"
        values = f"{first['output_std']:.3g} -> {last['output_std']:.3g}"
        predicted = _predicted_change(first, last, "predicted_std", forward=True)
        rate = _rate_text(change, len(signal), unit, predicted)
        verdicts += _depth_verdict(
            "activations",
            (first["path"], last["path"]),
            change,
            limit,
            f"Vanishing activations: output std falls {_fold(change)} {span}, {values}.{rate}",
            f"Exploding activations: output std grows {change:.3g}x {span}, {values}.{rate}",
        ) or _rate_verdict("activations", "output std", (first["path"], last["path"]), change,
                           len(signal), unit, limit, rate_limit, predicted)
    # A layer the loss does not reach (its output computed, then unused) has no gradient
    # (None under TensorFlow and PyTorch): it is left out rather than divided by.
    span = _longest_equal_size_span([row for row in signal if row["gradient_std"] is not None])
    if span is not None and span[2] >= _MIN_DEPTH:
        first, last, count = span
        change = _ratio(first["gradient_std"], last["gradient_std"])
        predicted = _predicted_change(first, last, "predicted_gradient_std", forward=False)
        rate = _rate_text(change, count, unit, predicted)
        verdicts += _depth_verdict(
            "gradients",
            (first["path"], last["path"]),
            change,
            limit,
            f"Vanishing gradients: dLoss/d(output) shrinks {_fold(change)} from "
            f"{last['path']} back to {first['path']}; the first {unit} will barely learn.{rate}",
            f"Exploding gradients: dLoss/d(output) is {change:.3g}x larger at "
            f"{first['path']} than at {last['path']}.{rate}",
        ) or _rate_verdict("gradients", "dLoss/d(output)", (last["path"], first["path"]),
                           change, count, unit, limit, rate_limit, predicted)
    return verdicts


def _rate_text(change: float, count: int, unit: str, predicted: float | None) -> str:
    """' That is 0.45x per layer (mean-field theory predicts 0.44x from these weights).'"""
    if not 0 < change < math.inf or count < 2:
        return ""
    text = f" That is {change ** (1 / (count - 1)):.2g}x per {unit[:-1]}"
    if predicted is not None and 0 < predicted < math.inf:
        text += (f" (mean-field theory predicts {predicted ** (1 / (count - 1)):.2g}x from these "
                 "weights)")
    return text + "."


def _predicted_change(
    first: Mapping[str, Any], last: Mapping[str, Any], key: str, forward: bool
) -> float | None:
    """The theory's change over the span (last over first forward, first over last for
    gradients, which flow back), when both ends are predicted."""
    a, b = first.get(key), last.get(key)
    if not a or not b:
        return None
    return b / a if forward else a / b


def _rate_verdict(
    quantity: str, measured: str, layers: tuple[str, str], change: float, count: int,
    unit: str, limit: float, rate_limit: float, predicted: float | None,
) -> list[Verdict]:
    """A steady per-layer rate outside [1/rate_limit, rate_limit] that stays under the
    end-to-end `limit` only because the model is shallow: Glorot & Bengio's point about
    U(-1/sqrt(n), 1/sqrt(n)), whose signal shrinks about 0.57x per tanh layer."""
    if not 0 < change < math.inf or count < 2:
        return []
    rate = change ** (1 / (count - 1))
    if 1 / rate_limit <= rate <= rate_limit:
        return []
    shrinks = rate < 1
    per_limit = math.log(limit) / abs(math.log(rate))
    doubled = rate ** (2 * (count - 1))
    verb, kind = ("shrink", "shrinking") if shrinks else ("grow", "growing")
    over = _fold(change) if shrinks else f"{change:.3g}x"
    twice = f"{1 / doubled:.3g}x" if shrinks else f"{doubled:.3g}x"
    theory = "" if predicted is None or not 0 < predicted < math.inf else (
        f" Mean-field theory predicts {predicted ** (1 / (count - 1)):.2g}x per {unit[:-1]} "
        "from these weights."
    )
    message = (
        f"{quantity.capitalize()} ({measured}) {verb} {rate:.2g}x per {unit[:-1]} from "
        f"{layers[0]} {'back ' if quantity == 'gradients' else ''}to {layers[1]}: {over} "
        f"over these "
        f"{count} {unit}, under the {limit:g}x limit only because the model is shallow. At "
        f"this rate {limit:g}x is {'lost' if shrinks else 'gained'} every {per_limit:.2g} "
        f"{unit}, and a model twice as deep would {'lose' if shrinks else 'gain'} "
        f"{twice}.{theory}"
    )
    return [Verdict(f"{kind}_{quantity}", layers, message)]


def _stream_verdicts(
    stream: Sequence[Mapping[str, Any]], thresholds: Mapping[str, float]
) -> list[Verdict]:
    """The depth checks on the residual stream: its growth (`stream_growth`, in words that
    say how it grows and which scheme keeps it level), its fall and its gradients'."""
    ends = (stream[0]["path"], stream[-1]["path"])
    growing = stream_verdict(
        stream, thresholds.get("stream_growth", STREAM_GROWTH),
        attention=any(row.get("attention") for row in stream),
    )
    sized = [{**row, "output_size": 1} for row in stream]  # one stream, one size
    verdicts = _depth_verdicts(
        sized, thresholds["depth_ratio"], "blocks",
        thresholds.get("layer_rate", THRESHOLDS["layer_rate"]),
    )
    if growing is not None:
        verdicts = [v for v in verdicts if v.kind != "exploding_activations"]
        verdicts.insert(0, Verdict("growing_stream", ends, growing))
    return verdicts


def _depth_verdict(
    quantity: str,
    layers: tuple[str, str],
    change: float,
    limit: float,
    vanishing: str,
    exploding: str,
) -> list[Verdict]:
    """`vanishing_<quantity>` below 1/limit, `exploding_<quantity>` above limit, else none."""
    if change < 1 / limit:
        return [Verdict(f"vanishing_{quantity}", layers, vanishing)]
    if change > limit:
        return [Verdict(f"exploding_{quantity}", layers, exploding)]
    return []


def _longest_equal_size_span(rows: Sequence[Mapping[str, Any]]):
    """The first and the deepest of the layers that share an output size per example, for
    the size that spans the most layers, and how many layers that span covers; None if no
    two layers share one.

    The std of dLoss/d(output) per element changes with the layer's size alone
    (average pooling divides it by the pooled positions, a narrower layer
    gathers it from fewer units), so gradients are compared between layers of
    the same size: the hidden layers of an MLP, the blocks of a ResNet stage.
    """
    first_at: dict[Any, int] = {}
    best: tuple[int, int] | None = None
    for index, row in enumerate(rows):
        start = first_at.setdefault(row.get("output_size"), index)
        if start < index and (best is None or index - start > best[1] - best[0]):
            best = (start, index)
    if best is None:
        return None
    return rows[best[0]], rows[best[1]], best[1] - best[0] + 1


def _fraction_verdicts(
    rows: Sequence[Mapping[str, Any]],
    key: str,
    limit: float,
    kind: str,
    template: str,
    consequence: str,
) -> list[Verdict]:
    """One verdict naming every layer whose `key` fraction exceeds `limit`."""
    over = [row for row in rows if row[key] is not None and row[key] > limit]
    if not over:
        return []
    title, detail = template.split(": ", 1)
    parts = [
        f"{row['path']} ({detail.format(f'{row[key]:.0%}', row['activation'])})" for row in over
    ]
    message = f"{title}: {', '.join(parts)}; {consequence}."
    return [Verdict(kind, tuple(row["path"] for row in over), message)]


def plot_profiles(
    path: str | Path, diagnoses: Mapping[str, Diagnosis], of: str = "layers"
) -> Path:
    """Activation std and back-propagated gradient std per layer, one line per diagnosis,
    and for a chain-like model a dashed line in the same colour for what mean-field
    theory predicts from its weights (see `keras_inits.prediction`).

    The figure the harness draws for its own models (Glorot & Bengio's Figs. 6-7),
    for any model; several diagnoses of the same model (one per initializer, say)
    share the axes. `of="stream"` draws the residual stream instead, block by block
    (each block's output: what schemes such as GPT-2's keep level). Needs matplotlib,
    which is not a core dependency: without it, a one-line error names the extra
    that installs it.
    """
    check_choice("of", of, ("layers", "stream"))
    mpl_figure = require("matplotlib.figure", HARNESS, "Diagnosis.plot draws with matplotlib")
    figure = mpl_figure.Figure(figsize=(11, 4.5), layout="constrained")
    activations, gradients = figure.subplots(1, 2, sharex=True)
    names: list[str] = []
    for label, diagnosis in diagnoses.items():
        rows = diagnosis.layers if of == "layers" else diagnosis.stream
        if of == "stream" and not rows:
            raise ValueError(
                f"Diagnosis {label!r} has no residual stream (keras_inits.roles found no "
                "residual block in its model); draw of='layers'."
            )
        names = [str(row["path"]) for row in rows] if len(rows) > len(names) else names
        x = np.arange(1, len(rows) + 1)
        for axes, key, theory in (
            (activations, "output_std", "predicted_std"),
            (gradients, "gradient_std", "predicted_gradient_std"),
        ):
            values = [np.nan if row[key] is None else row[key] for row in rows]
            (line,) = axes.plot(x, values, marker="o", markersize=3, label=label)
            predicted = [row.get(theory) for row in rows]
            if any(value is not None for value in predicted):
                axes.plot(x, [np.nan if v is None else v for v in predicted], linestyle="--",
                          color=line.get_color(), label=f"{label}: mean-field theory")
    unit = "layer" if of == "layers" else "residual block"
    quantity = "activation" if of == "layers" else "residual stream"
    activations.set_title(f"{quantity} std per {unit} (log scale; zeros not drawn)")
    gradients.set_title("back-propagated gradient std dL/d(output) (zeros not drawn)")
    for axes in (activations, gradients):
        axes.set_yscale("log")
        axes.grid(alpha=0.3)
        axes.set_xlabel(f"{unit} (forward order)")
        step = max(1, len(names) // 12)
        axes.set_xticks(np.arange(1, len(names) + 1)[::step], names[::step], rotation=60,
                        fontsize="x-small", ha="right")
    gradients.legend(fontsize="small")
    return save_figure(figure, path)
