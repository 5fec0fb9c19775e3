"""The Maximal Update Parametrization (muP) for Keras 3: tune a narrow model, train a wide one.

Under muP (Yang et al. 2022) every layer's activations and updates keep their scale as
the model widens, so the best learning rate (and other hyperparameters) found at a base
width stays the best at any width. This module implements the form of Table 8 that
Microsoft's reference, `mup` 1.0.0, implements, with the same numbers:

1. Build the model at the base width and at the target width; `parametrize(model,
   base_model)` compares each weight's shape with its base shape (weights in the same
   order; kernels with the fans of their layer type, `keras_inits.kernels`) and classifies
   it as mup does:

   | kind | what grows | examples |
   |---|---|---|
   | `input` | only fan_out | the first Dense's kernel, an embedding table |
   | `hidden` | fan_in and fan_out | hidden Dense kernels, attention projections |
   | `output` | only fan_in | the read-out's kernel |
   | `vector` | its one axis | biases, LayerNorm's gamma and beta of a width |
   | `fixed` | nothing | the read-out's bias, scalars |

   width_mult is mup's: the growth of fan_in for `hidden` and `output` weights, of the
   growing axis otherwise.
2. The read-out multiplies its input by `output_mult / width_mult` (a `Readout` layer, mup's
   `MuReadout`) and `parametrize` multiplies its kernel and bias by sqrt(width_mult) (or
   zeros them, `readout_zero_init=True`), so its output's scale is independent of the
   width. Attention logits are divided by the head size rather than its square root (a
   `MultiHeadAttention` layer, matched at the base head size). Other layers' biases are
   multiplied by sqrt(fan_in growth), as mup does (a no-op for Keras's zero biases). The
   other weights keep their draw: an initializer whose variance scales with 1/fan_in (He,
   LeCun, Glorot when fan_in and fan_out grow together) already is muP's for input and
   hidden weights. At the base width nothing changes: the model is the standard
   parametrization exactly.
3. `optimizer(model, keras.optimizers.Adam(1e-3))` gives each weight its learning rate: for
   Adam-like optimizers (Adam, AdamW, Adamax, Nadam, RMSprop, Adagrad, Lion), hidden
   weights lr / width_mult and weight decay x width_mult (mup's `MuAdam`); for SGD (with or
   without momentum), input, output and vector weights lr x width_mult and hidden weights
   lr x fan_out growth / fan_in growth, weight decay inversely (mup's `MuSGD`). Adam's
   epsilon is left as given, as mup leaves it: the paper scales it with 1/fan_in for the
   exact limit, which matters only when gradients are as small as epsilon.

Reference:
    Yang, Hu, Babuschkin, Sidor, Liu, Farhi, Ryder, Pachocki, Chen & Gao 2022, "Tensor
    Programs V: Tuning Large Neural Networks via Zero-Shot Hyperparameter Transfer",
    arXiv 2203.03466, Table 8; microsoft/mup 1.0.0 (`set_base_shapes`, `MuReadout`,
    `MuAdam`, `MuSGD`).
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from keras_inits import tables
from keras_inits.kernels import find_kernels, relative_path, walk

KINDS = ("input", "hidden", "output", "vector", "fixed")
# Optimizers whose update of a weight is its gradient normalized entrywise (mup's MuAdam
# column) and those whose update is proportional to the gradient (MuSGD's).
ADAM_LIKE = ("Adam", "AdamW", "Adamax", "Nadam", "RMSprop", "Adagrad", "Lion")
SGD_LIKE = ("SGD",)
_PACKAGE = "keras_inits"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Readout(keras.layers.Dense):
    """A `Dense` read-out whose input is multiplied by `output_mult / width_mult`: mup's
    `MuReadout`. Use it for the layer that maps the width to a fixed size (classes,
    vocabulary); `parametrize` sets `width_mult` (1 until then: a plain Dense).

    Args:
        units: output size (not a width); then Dense's arguments (activation...).
        width_mult: the growth of the read-out's fan_in over the base model's.
        output_mult: a width-independent multiplier to tune (mup's `output_mult`).
        **kwargs: `keras.layers.Dense`'s.
    """

    def __init__(
        self, units: int, *args: Any, width_mult: float = 1.0, output_mult: float = 1.0,
        **kwargs: Any,
    ):
        super().__init__(units, *args, **kwargs)
        self.width_mult = float(width_mult)
        self.output_mult = float(output_mult)

    def call(self, inputs: Any, training: Any = None) -> Any:
        scale = keras.ops.cast(self.output_mult / self.width_mult, inputs.dtype)
        return super().call(inputs * scale, training=training)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "width_mult": self.width_mult,
                "output_mult": self.output_mult}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MultiHeadAttention(keras.layers.MultiHeadAttention):
    """`keras.layers.MultiHeadAttention` with muP's attention logits: q.k / key_dim rather
    than q.k / sqrt(key_dim), matched at the base head size, q.k sqrt(base_key_dim) / key_dim,
    so that it is the plain layer at the base width (Yang et al. 2022, section 4 and Table 8;
    mup's `attn_mult / d` in its Transformer examples). `parametrize` sets `base_key_dim`
    from the base model (None until then: the plain layer's 1/sqrt(key_dim)).

    Args:
        num_heads: as `keras.layers.MultiHeadAttention`'s.
        key_dim: the head size, as `keras.layers.MultiHeadAttention`'s; then its other
            arguments.
        base_key_dim: the base model's key_dim.
    """

    def __init__(self, num_heads: int, key_dim: int, *args: Any,
                 base_key_dim: int | None = None, **kwargs: Any):
        super().__init__(num_heads, key_dim, *args, **kwargs)
        self.set_base_key_dim(base_key_dim)

    def set_base_key_dim(self, base_key_dim: int | None) -> None:
        """Scales the logits by sqrt(base_key_dim) / key_dim (None: 1 / sqrt(key_dim))."""
        self.base_key_dim = None if base_key_dim is None else int(base_key_dim)
        # Keras's layer scales the query by this attribute on every attention path.
        self._inverse_sqrt_key_dim = (
            1.0 / math.sqrt(self._key_dim) if base_key_dim is None
            else math.sqrt(base_key_dim) / self._key_dim
        )

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "base_key_dim": self.base_key_dim}


@dataclasses.dataclass(frozen=True)
class MupWeight:
    """One trainable weight under muP.

    Attributes:
        path: its path in the model (`keras_inits.kernels.relative_path`).
        kind: one of `KINDS`.
        shape, base_shape: its shape in the model and in the base model.
        fan_in_mult, fan_out_mult: growth of its fans (kernels; 1 for other weights).
        width_mult: mup's width multiplier (see the module docstring).
        init_scale: what `parametrize` multiplied the weight by.
        adam_lr, sgd_lr: its learning-rate multiplier under Adam-like optimizers and SGD.
        adam_decay, sgd_decay: its weight-decay multiplier under each.
    """

    path: str
    kind: str
    shape: tuple[int, ...]
    base_shape: tuple[int, ...]
    fan_in_mult: float
    fan_out_mult: float
    width_mult: float
    init_scale: float
    adam_lr: float
    sgd_lr: float
    adam_decay: float
    sgd_decay: float
    variable: keras.Variable = dataclasses.field(repr=False, compare=False)


@dataclasses.dataclass(frozen=True)
class MupReport:
    """What `parametrize` found and did, weight by weight; prints as a table."""

    weights: list[MupWeight]

    def of(self, *kinds: str) -> list[MupWeight]:
        return [weight for weight in self.weights if weight.kind in kinds]

    def to_dict(self) -> dict[str, Any]:
        return {"weights": [
            {f.name: getattr(w, f.name) for f in dataclasses.fields(w) if f.name != "variable"}
            for w in self.weights
        ]}

    def __str__(self) -> str:
        columns = [
            ("path", "weight"), ("kind", "kind"), ("shape", "shape"), ("base_shape", "base"),
            ("width_mult", "width_mult"), ("init_scale", "init x"), ("adam_lr", "Adam lr x"),
            ("sgd_lr", "SGD lr x"),
        ]
        rows = [
            {key: getattr(weight, key) for key, _ in columns} for weight in self.weights
        ]
        return f"muP: {len(self.weights)} trainable weights\n" + tables.render(rows, columns)


def classify(
    model: keras.Model, base_model: keras.Model, delta_model: keras.Model | None = None
) -> list[MupWeight]:
    """Each trainable weight of `model` against the same weight of `base_model` (the same
    architecture at the base width), with its kind and multipliers; changes nothing.

    Which axes are widths is read from where `base_model` and `delta_model` differ (mup's
    `delta`), by default `model` itself; a model at the base width needs a `delta_model` at
    another width, as with mup's `set_base_shapes(model, base, delta=...)`.

    Raises:
        TypeError: not built Keras models.
        ValueError: the models' weights do not correspond (another architecture), or no
            weight differs in shape between the base and the delta models.
    """
    delta_model = model if delta_model is None else delta_model
    for name, candidate in (
        ("model", model), ("base_model", base_model), ("delta_model", delta_model)
    ):
        if not isinstance(candidate, keras.layers.Layer) or not candidate.built:
            raise TypeError(
                f"{name} must be a built Keras model (call it on a batch or give it a "
                f"keras.Input), got {type(candidate).__name__}."
            )
    shapes = [_shapes(candidate) for candidate in (model, base_model, delta_model)]
    for name, other in (("base_model", shapes[1]), ("delta_model", shapes[2])):
        names = [[entry[0].name for entry in found] for found in (shapes[0], other)]
        if names[0] != names[1]:
            raise ValueError(
                f"{name} must be the model's architecture at another width: it has "
                f"{len(names[1])} trainable weights ({', '.join(names[1][:4])}...) where "
                f"the model has {len(names[0])} ({', '.join(names[0][:4])}...)."
            )
    weights = []
    for (variable, shape, fans), (_, base_shape, base_fans), (_, delta_shape, delta_fans) in zip(
        *shapes, strict=True
    ):
        if not len(shape) == len(base_shape) == len(delta_shape):
            raise ValueError(
                f"{variable.path}: shape {shape} in the model but {base_shape} in base_model "
                f"and {delta_shape} in delta_model; a weight may change its size with the "
                "width, not its number of axes."
            )
        if fans is not None:
            grows = (base_fans[0] != delta_fans[0], base_fans[1] != delta_fans[1])
            kind = {
                (True, True): "hidden", (True, False): "output", (False, True): "input",
                (False, False): "fixed",
            }[grows]
            fan_in_mult, fan_out_mult = fans[0] / base_fans[0], fans[1] / base_fans[1]
            width_mult = fan_in_mult if kind in ("hidden", "output") else fan_out_mult
        else:
            grown = [i for i, (b, d) in enumerate(zip(base_shape, delta_shape, strict=True))
                     if b != d]
            if len(grown) > 1:
                raise ValueError(
                    f"{variable.path}: shape {base_shape} in base_model against {delta_shape} "
                    "grows in more than one axis and is not a kernel keras_inits knows the "
                    "fans of; muP's rules cover kernels and vectors of one width."
                )
            kind = "vector" if grown else "fixed"
            fan_in_mult = fan_out_mult = 1.0
            width_mult = shape[grown[0]] / base_shape[grown[0]] if grown else 1.0
        weights.append(_weight(model, variable, kind, shape, base_shape, fan_in_mult,
                               fan_out_mult, width_mult))
    if all(weight.kind == "fixed" for weight in weights):
        raise ValueError(
            "No weight differs in shape between base_model and "
            f"{'the model' if delta_model is model else 'delta_model'}, so no axis is a "
            "width: build base_model at the base width, or, for a model at the base width, "
            "pass delta_model= at another width."
        )
    return weights


def _shapes(model: keras.Model) -> list[tuple[keras.Variable, tuple[int, ...], Any]]:
    """(variable, shape, (fan_in, fan_out) or None) of each trainable weight, in order."""
    fans = {id(k.variable): (k.plan.fan_in, k.plan.fan_out) for k in find_kernels(model)}
    return [
        (variable, tuple(variable.shape), fans.get(id(variable)))
        for variable in model.trainable_weights
    ]


def _weight(model, variable, kind, shape, base_shape, fan_in_mult, fan_out_mult, width_mult):
    if kind == "hidden":
        adam_lr = 1 / width_mult
        sgd_lr = fan_out_mult / fan_in_mult
    elif kind == "fixed":
        adam_lr = sgd_lr = 1.0
    else:
        adam_lr, sgd_lr = 1.0, width_mult
    return MupWeight(
        relative_path(model, variable), kind, shape, base_shape, fan_in_mult, fan_out_mult,
        width_mult, 1.0, adam_lr, sgd_lr, 1 / adam_lr, 1 / sgd_lr, variable,
    )


def parametrize(
    model: keras.Model,
    base_model: keras.Model,
    *,
    delta_model: keras.Model | None = None,
    readout_zero_init: bool = False,
) -> MupReport:
    """Puts `model` in muP relative to `base_model` (see the module docstring): sets each
    `Readout`'s width_mult, rescales the read-out (or zeros it) and the biases, and
    records the learning-rate multipliers `optimizer` uses. Call it once, after building
    and initializing the model as usual. `delta_model`: see `classify` (needed for a model
    at the base width, where muP is the standard parametrization exactly).

    Raises:
        ValueError: a weight whose fan_in grows but fan_out does not outside a `Readout`
            (a read-out mup needs as `MuReadout`), a model parametrized already, or what
            `classify` refuses.
    """
    if getattr(model, "_keras_inits_mup", None) is not None:
        raise ValueError(
            f"Model {model.name!r} is parametrized already: parametrize rescales the read-out "
            "once. Build a fresh model to parametrize it against another base."
        )
    weights = classify(model, base_model, delta_model)
    _check_draws(weights, base_model)
    by_variable = {id(weight.variable): weight for weight in weights}
    kernels = {id(k.variable): k for k in find_kernels(model)}
    readouts = [layer for layer in walk(model) if isinstance(layer, Readout)]
    readout_kernels = {id(layer.kernel) for layer in readouts}
    stray = [w.path for w in weights if w.kind == "output" and id(w.variable) not in
             readout_kernels]
    if stray:
        raise ValueError(
            f"{', '.join(stray)}: fan_in grows with the width but fan_out does not, so it is a "
            "read-out, and muP multiplies a read-out's input by 1/width_mult: make that layer "
            "a keras_inits.mup.Readout (a Dense with that multiplier)."
        )
    _set_attention(model, base_model)
    scales: dict[int, float] = {}
    for layer in readouts:
        kernel = by_variable[id(layer.kernel)]
        layer.width_mult = kernel.width_mult
        scale = 0.0 if readout_zero_init else math.sqrt(kernel.width_mult)
        scales[id(layer.kernel)] = scale
        if layer.bias is not None:
            scales[id(layer.bias)] = scale
    for kernel in kernels.values():
        bias = getattr(kernel.layer, "bias", None)
        if kernel.role == "kernel" and isinstance(bias, keras.Variable) and (
            id(bias) not in scales and id(bias) in by_variable
        ):
            scales[id(bias)] = math.sqrt(by_variable[id(kernel.variable)].fan_in_mult)
    for variable_id, scale in scales.items():
        variable = by_variable[variable_id].variable
        if scale != 1.0:
            variable.assign(variable.value * scale)
    report = MupReport([
        dataclasses.replace(weight, init_scale=scales.get(id(weight.variable), 1.0))
        for weight in weights
    ])
    model._keras_inits_mup = report
    return report


# A kernel's std may differ from what muP expects of it (relative to the base model's) by this
# factor before parametrize warns: sampling noise is a few percent for the smallest kernels.
DRAW_TOLERANCE = 1.25


def _check_draws(weights: Sequence[MupWeight], base_model: keras.Model) -> None:
    """Warns when input or hidden kernels were drawn with a variance that does not scale as
    1/fan_in (Glorot's fan_avg shrinks input kernels as their fan_out grows): parametrize
    keeps those draws, so they must already be muP's."""
    wrong = []
    for weight, base in zip(weights, base_model.trainable_weights, strict=True):
        if weight.kind not in ("input", "hidden") or len(weight.shape) < 2:
            continue
        ours = float(np.std(keras.ops.convert_to_numpy(weight.variable)))
        theirs = float(np.std(keras.ops.convert_to_numpy(base)))
        if ours == 0 or theirs == 0:
            continue
        expected = 1.0 if weight.kind == "input" else weight.fan_in_mult**-0.5
        ratio = ours / theirs / expected
        if not 1 / DRAW_TOLERANCE <= ratio <= DRAW_TOLERANCE:
            wrong.append(f"{weight.path} ({weight.kind}: std {ratio:.2f}x muP's)")
    if wrong:
        warnings.warn(
            f"{', '.join(wrong)}: muP keeps input kernels' variance and scales hidden kernels' "
            "as 1/fan_in, and parametrize keeps their draw; draw them with a fan_in "
            "initializer (he_normal, lecun_normal, VarianceScaling(mode='fan_in')), not one "
            "that also scales with fan_out (Keras's default glorot_uniform).",
            stacklevel=3,
        )


def _set_attention(model: keras.Model, base_model: keras.Model) -> None:
    """Gives each muP attention layer its base head size; refuses a plain attention layer
    whose head size grows (its logits would shrink as 1/sqrt(width), not muP's 1/width)."""
    ours = [layer for layer in walk(model) if isinstance(layer, keras.layers.MultiHeadAttention)]
    theirs = [
        layer for layer in walk(base_model)
        if isinstance(layer, keras.layers.MultiHeadAttention)
    ]
    for layer, base in zip(ours, theirs, strict=True):
        if isinstance(layer, MultiHeadAttention):
            layer.set_base_key_dim(base._key_dim)
        elif layer._key_dim != base._key_dim:
            raise ValueError(
                f"{layer.name}: its head size grows with the width ({base._key_dim} -> "
                f"{layer._key_dim}), and muP divides attention logits by the head size, not "
                "its square root: make it a keras_inits.mup.MultiHeadAttention."
            )


def optimizer(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    report: MupReport | None = None,
) -> keras.optimizers.Optimizer:
    """`optimizer` with muP's per-weight learning rates and weight decays for `model`: a
    `keras.optimizers.MultiOptimizer` (Keras >= 3.15) of copies of `optimizer`, one per
    distinct multiplier (see the module docstring). Pass it to `model.compile`.

    Args:
        model: a model `parametrize` has put in muP.
        optimizer: any Adam-like optimizer or SGD, configured as at the base width.
        report: `parametrize`'s report, for a model that does not carry it (one reloaded
            from a file); by default the model's own.

    Raises:
        ValueError: the model was not parametrized, or the optimizer has no muP rule.
        ImportError: Keras older than 3.15 (no MultiOptimizer).
    """
    groups = optimizer_groups(model, optimizer, report)
    multi = getattr(keras.optimizers, "MultiOptimizer", None)
    if multi is None:
        raise ImportError(
            f"keras_inits.mup.optimizer needs keras.optimizers.MultiOptimizer (Keras >= 3.15); "
            f"this is Keras {keras.__version__}."
        )
    mapping = {}
    default = None
    for copy, variables, plain in groups:
        if plain:
            default = copy
        else:
            mapping["|".join(re.escape(variable.path) for variable in variables)] = copy
    default = default or type(optimizer).from_config(optimizer.get_config())
    return multi(keras.optimizers.OptimizerMap(default, mapping))


def optimizer_groups(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    report: MupReport | None = None,
) -> list[tuple[keras.optimizers.Optimizer, list[keras.Variable], bool]]:
    """The copies of `optimizer` that muP gives `model`'s weights: (copy, its weights,
    whether its multipliers are all 1), one per distinct (learning rate, weight decay)
    multiplier, in the model's weight order. `optimizer` builds the `MultiOptimizer` from
    them; use this to combine them with other per-weight optimizers (several models trained
    as one, each with its own). Arguments and errors as `optimizer`'s, ImportError aside.
    """
    report = report or getattr(model, "_keras_inits_mup", None)
    if report is None:
        raise ValueError(
            f"Model {model.name!r} has no muP shapes: call keras_inits.mup.parametrize(model, "
            "base_model) first, or pass its report=."
        )
    kind = type(optimizer).__name__
    if kind not in ADAM_LIKE + SGD_LIKE:
        raise ValueError(
            f"muP's learning-rate rule is defined here for {', '.join(ADAM_LIKE + SGD_LIKE)}; "
            f"{kind} updates a weight by more than its own gradient's entries (or in its own "
            "way): scale its learning rates yourself from the report's multipliers."
        )
    adam = kind in ADAM_LIKE
    config = optimizer.get_config()
    groups: dict[tuple[float, float], list[keras.Variable]] = {}
    for weight in report.weights:
        key = (weight.adam_lr, weight.adam_decay) if adam else (weight.sgd_lr, weight.sgd_decay)
        groups.setdefault(key, []).append(weight.variable)
    found = []
    for (lr, decay), variables in groups.items():
        copy = type(optimizer).from_config({
            **config,
            "learning_rate": config["learning_rate"] if lr == 1.0 else _scaled(optimizer, lr),
            **({"weight_decay": config["weight_decay"] * decay} if config.get("weight_decay")
               else {}),
        })
        found.append((copy, variables, (lr, decay) == (1.0, 1.0)))
    return found


def _scaled(optimizer: keras.optimizers.Optimizer, factor: float) -> Any:
    rate = optimizer._learning_rate  # the schedule itself, not its current value
    if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
        return ScaledSchedule(rate, factor)
    return float(keras.ops.convert_to_numpy(rate)) * factor


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ScaledSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A learning-rate schedule times a constant: a muP multiplier on your schedule."""

    def __init__(self, schedule: Any, factor: float):
        self.schedule = keras.optimizers.schedules.deserialize(schedule) if isinstance(
            schedule, dict) else schedule
        self.factor = float(factor)

    def __call__(self, step: Any) -> Any:
        return self.schedule(step) * self.factor

    def get_config(self) -> dict[str, Any]:
        return {"schedule": keras.optimizers.schedules.serialize(self.schedule),
                "factor": self.factor}


def multipliers(report: MupReport, optimizer_kind: str = "adam") -> dict[str, float]:
    """Each weight's learning-rate multiplier by path, for `optimizer_kind` "adam" or "sgd"."""
    key = {"adam": "adam_lr", "sgd": "sgd_lr"}.get(optimizer_kind)
    if key is None:
        raise ValueError(f"optimizer_kind must be 'adam' or 'sgd', got {optimizer_kind!r}.")
    return {weight.path: getattr(weight, key) for weight in report.weights}


