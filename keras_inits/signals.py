"""Signal propagation on a fixed batch: what each layer outputs and what flows back into it.

`SignalProbe(model, x, y, loss=...)` taps every layer with a kernel (see
`keras_inits.taps`), and `compute()` returns, per layer in forward order, its
output, the back-propagated gradient dLoss/d(output), the gradient of its
kernel and the kernel, through the backend's own autodiff. `statistics()`
reduces them to the numbers `diagnose` reports and `SignalHistograms` logs.
Everything here is `keras.ops`, so under TensorFlow the whole computation
can run inside one `tf.function`.

The loss: with `y`, the given loss (or the model's compiled one), averaged
over the batch. Without `y`, a surrogate: `sum(output * g) / batch` with `g` a
fixed standard-normal tensor, so dLoss/d(model output) is unit-variance noise
(scaled by 1/batch) and each layer's gradient std measures how the backward
pass carries a unit signal down to it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from keras_inits.autodiff import gradients
from keras_inits.roles import Roles, roles
from keras_inits.stream import StreamOperation, StreamPoint, stream_order
from keras_inits.taps import (
    Tap,
    as_declared,
    forward_order,
    intercept,
    main_output,
    replace_main_output,
)

# Saturation as Glorot & Bengio measure it: tanh'(a) = 1 - a^2 < 0.19 for |a| > 0.9.
SATURATED_ABOVE = 0.9
_SYMMETRIC_BOUNDED = ("tanh", "softsign", "hard_tanh")
_UNIT_BOUNDED = ("sigmoid", "hard_sigmoid")
_RELU_LIKE = ("relu", "relu6")


def saturation(activation: str | None, outputs: Any, grouped: bool = False) -> Any | None:
    """The fraction of saturated outputs, or None where saturation is undefined.

    tanh, softsign, hard_tanh (range (-1, 1)): |a| > 0.9. sigmoid, hard_sigmoid
    (range (0, 1)): a outside (0.1, 0.9). Unbounded activations: None. `grouped`:
    the first axis indexes models, each of which gets its own fraction.
    """
    ops = keras.ops
    if activation in _SYMMETRIC_BOUNDED:
        saturated = ops.abs(outputs) > SATURATED_ABOVE
    elif activation in _UNIT_BOUNDED:
        saturated = ops.abs(outputs - 0.5) >= SATURATED_ABOVE - 0.5
    else:
        return None
    return ops.mean(ops.cast(saturated, "float32"), axis=_reduced(outputs, grouped))


def dead_units(
    activation: str | None, outputs: Any, channel_axis: int = -1, grouped: bool = False
) -> Any | None:
    """The fraction of units (features, or channels on `channel_axis`) that are never
    positive anywhere in the batch, for ReLU-like activations; None for others.
    `grouped`: the first axis indexes models (`channel_axis` counts without it)."""
    if activation not in _RELU_LIKE:
        return None
    ops = keras.ops
    if channel_axis != -1:
        outputs = ops.moveaxis(outputs, channel_axis + int(grouped), -1)
    models = (outputs.shape[0],) if grouped else ()
    flat = ops.reshape(outputs, (*models, -1, outputs.shape[-1]))
    active = ops.cast(ops.max(flat, axis=-2) > 0, "float32")
    return 1.0 - ops.mean(active, axis=-1)


def _reduced(values: Any, grouped: bool) -> tuple[int, ...] | None:
    """The axes a statistic reduces: all, or all but the first (the models') when grouped."""
    return tuple(range(1, len(values.shape))) if grouped else None


@dataclasses.dataclass
class Signals:
    """One probe's tensors, per tapped layer in forward order (backend tensors).

    `kernel_values` are the kernels the pass used, when they are not the taps' own
    variables (a group engine that trains many models' kernels as one tensor).
    `grouped`: the signals of several models of one architecture (`taps` are the first
    one's), every tensor leading with an axis of models; each statistic is then a
    vector over them."""

    taps: list[Tap]
    loss: Any
    outputs: list[Any]
    output_gradients: list[Any]
    kernel_gradients: list[Any]
    kernel_values: list[Any] | None = None
    grouped: bool = False
    stream: list[StreamPoint] = dataclasses.field(default_factory=list)
    stream_outputs: list[Any] = dataclasses.field(default_factory=list)
    stream_gradients: list[Any] = dataclasses.field(default_factory=list)

    @property
    def kernels(self) -> list[Any]:
        if self.kernel_values is not None:
            return list(self.kernel_values)
        return [tap.kernel.variable.value for tap in self.taps]

    def per_layer_tensors(self) -> list[Any]:
        """Layer by layer: output, dLoss/d(output), kernel gradient (None when frozen), kernel."""
        return [
            value
            for parts in zip(
                self.outputs,
                self.output_gradients,
                self.kernel_gradients,
                self.kernels,
                strict=True,
            )
            for value in parts
        ]

    def stream_tensors(self) -> list[Any]:
        """Block by block: the residual stream there, and dLoss/d(stream)."""
        return [
            value
            for parts in zip(self.stream_outputs, self.stream_gradients, strict=True)
            for value in parts
        ]

    def stream_statistics(self) -> list[dict[str, Any]]:
        """Per residual block: output_std and gradient_std of the stream, as tensors."""
        ops = keras.ops
        return [
            {
                key: ops.std(ops.cast(values, "float32"), axis=_reduced(values, self.grouped))
                for key, values in (("output_std", output), ("gradient_std", gradient))
            }
            for output, gradient in zip(self.stream_outputs, self.stream_gradients, strict=True)
        ]

    def statistics(self) -> list[dict[str, Any]]:
        """Per layer: output_mean, output_std, gradient_std, weight_gradient_std
        (None for a frozen kernel), weight_std, saturated_fraction and dead_fraction
        (None where undefined), as scalar tensors (vectors over the models when grouped)."""
        ops = keras.ops
        grouped = self.grouped

        def std(values: Any) -> Any | None:
            if values is None:
                return None
            return ops.std(ops.cast(values, "float32"), axis=_reduced(values, grouped))

        rows = []
        for tap, output, d_output, d_kernel, kernel in zip(
            self.taps,
            self.outputs,
            self.output_gradients,
            self.kernel_gradients,
            self.kernels,
            strict=True,
        ):
            output = ops.cast(output, "float32")
            rows.append(
                {
                    "output_mean": ops.mean(output, axis=_reduced(output, grouped)),
                    "output_std": std(output),
                    "gradient_std": std(d_output),
                    "weight_gradient_std": std(d_kernel),
                    "weight_std": std(kernel),
                    "saturated_fraction": saturation(tap.activation, output, grouped),
                    "dead_fraction": dead_units(
                        tap.activation, output, _channel_axis(tap), grouped
                    ),
                }
            )
        return rows


def _channel_axis(tap: Tap) -> int:
    return 1 if getattr(tap.layer, "data_format", None) == "channels_first" else -1


class SignalProbe:
    """Per-layer signals of `model` on the fixed batch `(x, y)`.

    Construction runs the model once on `x` (in inference mode) to find the
    forward order of the layers with a kernel and to check that `x` fits.

    Args:
        model: a built Keras model (Sequential, Functional or subclassed).
        x: one batch of inputs (array, tensor, or a list/dict for several inputs).
        y: the batch's targets, or None for the surrogate loss.
        loss: anything `keras.losses.get` takes, or a callable
            `(y_true, y_pred) -> loss`; default: the model's compiled loss.
            Only with `y`.
        seed: seed of the surrogate loss's fixed noise.
        stream: also tap each residual block's output (the residual stream; see
            `keras_inits.stream`), when `keras_inits.roles` finds blocks.

    Attributes:
        roles: the model's `Roles` (with `stream`), else None.
        stream: the blocks tapped, in order (empty without `stream` or blocks).
    """

    def __init__(
        self,
        model: keras.layers.Layer,
        x: Any,
        y: Any = None,
        *,
        loss: Any = None,
        seed: int = 0,
        stream: bool = False,
    ):
        self.model = model
        x = as_declared(model, x)  # Keras warns on every call with another structure
        self.taps, self.specs, outputs = forward_order(model, x)
        self.roles: Roles | None = roles(model) if stream else None
        self.stream: list[StreamPoint] = []
        self.stream_specs: list[tuple[tuple[int, ...], str]] = []
        if self.roles is not None:
            self.stream, self.stream_specs = stream_order(
                model, x, self.roles, skip=[tap.layer for tap in self.taps]
            )
        flat = keras.tree.flatten(outputs)
        self._single_output = len(flat) == 1
        if self._single_output and isinstance(y, (list, tuple)):
            y = np.asarray(y)  # labels given as a Python list
        self.x = x
        self.y = y
        self._loss = resolve_loss(model, y, loss)
        if y is not None:
            _check_targets(y, flat, self._single_output)
        rng = np.random.default_rng(seed)
        # Backend tensors: torch will not multiply a tensor that requires grad by an array.
        self._noise = [
            keras.ops.convert_to_tensor(rng.standard_normal(tuple(o.shape)).astype("float32"))
            for o in flat
        ]

    def compute(self) -> Signals:
        """One forward and backward pass on the probe batch; no weight changes."""
        taps, points = self.taps, self.stream
        # A layer by itself; a stream operation by itself and its call (a shared Add).
        position: dict[Any, int] = {id(tap): i for i, tap in enumerate(taps)}
        position.update(
            {(id(p.operation), p.call): len(taps) + i for i, p in enumerate(points)}
        )
        operations = list({id(p.operation): p.operation for p in points}.values())

        def forward(perturbations):
            outputs: list[Any] = [None] * (len(taps) + len(points))
            calls: dict[int, int] = {}

            def hook(tap, call, args, kwargs):
                result = call(*args, **kwargs)
                if isinstance(tap, StreamOperation):
                    calls[id(tap)] = calls.get(id(tap), -1) + 1
                    i = position.get((id(tap), calls[id(tap)]))
                else:
                    i = position.get(id(tap))
                if i is None or outputs[i] is not None:  # unused in order, or a second call
                    return result
                outputs[i] = main_output(result)
                return replace_main_output(result, outputs[i] + perturbations[i])

            with intercept([*taps, *operations], hook):
                predictions = self.model(self.x, training=False)
            return self.loss_value(predictions), outputs

        kernels = [tap.kernel.variable for tap in taps]
        loss, outputs, d_outputs, d_kernels = gradients(
            forward, [*self.specs, *self.stream_specs], kernels
        )
        # A frozen kernel gets no update: None on every backend (torch cannot differentiate it).
        d_kernels = [g if k.trainable else None for g, k in zip(d_kernels, kernels, strict=True)]
        n = len(taps)
        return Signals(
            taps, loss, outputs[:n], d_outputs[:n], d_kernels,
            stream=list(points), stream_outputs=outputs[n:], stream_gradients=d_outputs[n:],
        )

    def loss_value(self, predictions: Any) -> Any:
        """The probe's loss of the model's `predictions` on the probe batch (the given
        loss averaged over the batch, or the surrogate)."""
        ops = keras.ops
        flat = keras.tree.flatten(predictions)
        if self._loss is None:
            total = sum(
                ops.sum(ops.cast(p, "float32") * noise)
                for p, noise in zip(flat, self._noise, strict=True)
            )
            return total / flat[0].shape[0]
        # One output takes y whole (a list of labels included); several take one target each.
        targets = [self.y] if self._single_output else keras.tree.flatten(self.y)
        if len(targets) != len(flat):
            raise ValueError(
                f"y has {len(targets)} target(s) but the model has {len(flat)} output(s); "
                "give one target per output, in the order of model.outputs."
            )
        return sum(
            ops.mean(self._loss(target, prediction))
            for target, prediction in zip(targets, flat, strict=True)
        )


def _check_targets(y: Any, outputs: list[Any], single_output: bool) -> None:
    """One target per output, each with the batch's number of examples."""
    targets = [y] if single_output else keras.tree.flatten(y)
    if len(targets) != len(outputs):
        raise ValueError(
            f"y has {len(targets)} target(s) but the model has {len(outputs)} output(s); "
            "give one target per output, in the order of model.outputs."
        )
    for index, (target, output) in enumerate(zip(targets, outputs, strict=True)):
        have, want = np.shape(target), tuple(output.shape)
        if not have or have[0] != want[0]:
            raise ValueError(
                f"y{'' if single_output else f'[{index}]'} has shape {have}, but the model's "
                f"output for x has shape {want}: give one target per example of x."
            )


def resolve_loss(model: keras.layers.Layer, y: Any, loss: Any) -> Callable | None:
    """The loss function to differentiate, or None for the surrogate."""
    if y is None:
        if loss is not None:
            raise ValueError(
                "loss= was given without y: pass the batch's targets as y, or drop loss= "
                "to use the surrogate loss."
            )
        return None
    if loss is None:
        loss = getattr(model, "loss", None)
        if loss is None:
            raise ValueError(
                "A loss is needed with y: pass loss= (e.g. "
                "loss='sparse_categorical_crossentropy'), or compile the model first."
            )
    if isinstance(loss, (list, tuple, dict)):
        raise ValueError(
            f"Give one loss for all outputs (a name, a keras.losses.Loss or a callable), "
            f"got {type(loss).__name__}."
        )
    if callable(loss) and not isinstance(loss, str):
        return loss
    try:
        return keras.losses.get(loss)
    except (ValueError, TypeError):
        raise ValueError(
            f"Unknown loss {loss!r}: use a keras.losses name such as "
            "'sparse_categorical_crossentropy' or 'mse', or a callable."
        ) from None
