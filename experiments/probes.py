"""Per-layer statistics and histograms on a fixed probe batch, in one compiled function.

For every hidden layer and the output layer, `Probe` computes in a single
`tf.function` call: the post-activation outputs (`activations/<layer>`), the
back-propagated gradients dLoss/d(outputs) (`activation_gradients/<layer>`,
Glorot & Bengio's Fig. 7), the kernel gradients (`weight_gradients/<layer>/kernel`)
and the kernels (`weights/<layer>/kernel`), plus their standard deviations and the
saturation fraction of bounded activations.

Histograms are bucketed with `tf.histogram_fixed_width` and written as the
histogram plugin's `[k, 3]` tensor (left edge, right edge, count), which is what
`tf.summary.histogram` writes too: TensorBoard's Histograms and Distributions
dashboards read both alike. `tf.summary.histogram` builds an (n x k) one-hot
matrix per tensor instead, about 25x slower on the activations of a 256-wide MLP
(see benchmarks/harness_overhead.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from tensorboard.plugins.histogram import metadata as histogram_metadata

from experiments import models

BINS = 30  # TensorBoard's default bucket count.
_SATURATED_ABOVE = 0.9  # |a| > 0.9: tanh'(a) = 1 - a^2 < 0.19


def saturation_rule(activation: str) -> Callable[[tf.Tensor], tf.Tensor] | None:
    """Which outputs count as saturated, or None where saturation is not defined.

    tanh, softsign and hard_tanh (range (-1, 1)): |a| > 0.9. sigmoid and
    hard_sigmoid (range (0, 1)): a outside (0.1, 0.9), Glorot & Bengio's measure.
    Unbounded activations (relu, gelu, linear...) do not saturate; none is logged.
    """
    if activation in ("tanh", "softsign", "hard_tanh"):
        return lambda a: tf.abs(a) > _SATURATED_ABOVE
    if activation in ("sigmoid", "hard_sigmoid"):
        return lambda a: tf.abs(a - 0.5) >= _SATURATED_ABOVE - 0.5
    return None


def histogram(values: tf.Tensor, bins: int = BINS) -> tf.Tensor:
    """The histogram plugin's float64 `[bins, 3]` tensor over the finite values.

    Buckets span [min, max] of the finite values; a constant tensor gets a
    bucket range of width 1 around its value (as `tf.summary.histogram` does).
    NaN and inf (a diverging run) are left out rather than spoiling the range.
    """
    values = tf.reshape(tf.cast(values, tf.float32), [-1])
    finite = tf.math.is_finite(values)
    any_finite = tf.reduce_any(finite)
    low = tf.where(any_finite, tf.reduce_min(tf.where(finite, values, np.inf)), 0.0)
    high = tf.where(any_finite, tf.reduce_max(tf.where(finite, values, -np.inf)), 0.0)
    pad = tf.where(high > low, 0.0, 0.5)
    low, high = low - pad, high + pad
    # Non-finite values are counted in bucket 0 as `low`, then taken out again.
    counts = tf.histogram_fixed_width(tf.where(finite, values, low), [low, high], nbins=bins)
    non_finite = tf.reduce_sum(tf.cast(~finite, counts.dtype))
    counts -= tf.one_hot(0, bins, dtype=counts.dtype) * non_finite
    edges = tf.linspace(low, high, bins + 1)
    return tf.cast(tf.stack([edges[:-1], edges[1:], tf.cast(counts, tf.float32)], 1), tf.float64)


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """One probe result: scalar and histogram tensors keyed by TensorBoard tag."""

    scalars: dict[str, tf.Tensor]
    histograms: dict[str, tf.Tensor]

    def profile(self, layers: list[str]) -> dict[str, list]:
        """Per-layer numbers (JSON-ready) for the report's depth plots and histogram grid."""

        def column(prefix: str) -> list[float | None]:
            return [
                _finite_or_none(self.scalars[f"{prefix}/{layer}"])
                if f"{prefix}/{layer}" in self.scalars
                else None
                for layer in layers
            ]

        profile = {
            "activation_std": column("activation_std"),
            "activation_gradient_std": column("activation_gradient_std"),
            "weight_gradient_std": column("weight_gradient_std"),
            "saturation": column("saturation"),
        }
        if self.histograms:
            profile["activation_histograms"] = [
                np.nan_to_num(self.histograms[f"activations/{layer}"].numpy()).tolist()
                for layer in layers
            ]
        return profile


def _finite_or_none(value: tf.Tensor) -> float | None:
    number = float(value)
    return number if np.isfinite(number) else None


def _crossentropy(labels: tf.Tensor, probabilities: tf.Tensor) -> tf.Tensor:
    """Mean cross-entropy computed from the probabilities themselves.

    Keras's TensorFlow crossentropy reads the logits back from the softmax op's
    input, which would leave dLoss/d(output probabilities) undefined (None).
    """
    chosen = tf.gather(probabilities, labels, axis=1, batch_dims=1)
    return -tf.reduce_mean(tf.math.log(tf.clip_by_value(chosen, keras.config.epsilon(), 1.0)))


class Probe:
    """Statistics of `model` on a fixed batch `(x, y)`, one compiled call per snapshot.

    Training steps are untouched: the probe runs its own forward and backward
    pass on the probe batch (inference mode, no update), only when asked, and
    writes its summaries from inside the same compiled function (one eager
    `tf.summary` call per tag would cost more than the whole computation).
    """

    def __init__(
        self,
        model: keras.Model,
        x: np.ndarray,
        y: np.ndarray,
        activation: str,
        writer: tf.summary.SummaryWriter,
    ):
        layers = models.probed_layers(model)
        self.layers = [layer.name for layer in layers]
        # The harness's models are chains, so calling their layers in order
        # reproduces the forward pass and yields the very tensors the next layer
        # consumes; a multi-output tap model would return copies the tape cannot
        # differentiate through.
        self._chain = [layer for layer in model.layers if layer.name != "inputs"]
        self._kernels = [layer.kernel for layer in layers]
        self._x = tf.constant(x)
        self._y = tf.constant(y)
        self._saturated = saturation_rule(activation)
        self._writer = writer
        self._metadata = {
            tag: histogram_metadata.create_summary_metadata(
                display_name=tag, description=""
            ).SerializeToString()
            for tag in self.histogram_tags()
        }
        self._compute = tf.function(self._snapshot)

    def histogram_tags(self) -> list[str]:
        """Every histogram tag, layer by layer."""
        return [
            tag
            for name in self.layers
            for tag in (
                f"activations/{name}",
                f"activation_gradients/{name}",
                f"weight_gradients/{name}/kernel",
                f"weights/{name}/kernel",
            )
        ]

    def __call__(self, step: int, *, log_scalars: bool, log_histograms: bool) -> Snapshot:
        """Computes a snapshot at training step `step` and logs the parts asked for.

        Histograms are always computed (the report draws them even when
        TensorBoard histograms are off); the flags only gate the writing, as
        tensors, so the function is traced once per run.
        """
        scalars, buckets = self._compute(
            tf.constant(step, tf.int64), tf.constant(log_scalars), tf.constant(log_histograms)
        )
        return Snapshot(scalars, buckets)

    def _snapshot(
        self, step: tf.Tensor, log_scalars: tf.Tensor, log_histograms: tf.Tensor
    ) -> tuple[dict, dict]:
        with tf.GradientTape() as tape:
            outputs, hidden = [], self._x
            for layer in self._chain:
                hidden = layer(hidden, training=False)
                if layer.name in self.layers:
                    outputs.append(hidden)
            loss = _crossentropy(self._y, outputs[-1])
        # Gradients with respect to intermediate outputs are total derivatives: each
        # includes every path to the loss, i.e. the back-propagated gradient.
        gradients = tape.gradient(loss, [*outputs, *self._kernels])
        output_grads, kernel_grads = gradients[: len(outputs)], gradients[len(outputs) :]
        scalars, values = {}, {}
        for index, name in enumerate(self.layers):
            scalars[f"activation_std/{name}"] = tf.math.reduce_std(outputs[index])
            scalars[f"activation_gradient_std/{name}"] = tf.math.reduce_std(output_grads[index])
            scalars[f"weight_gradient_std/{name}"] = tf.math.reduce_std(kernel_grads[index])
            if self._saturated is not None and name != models.OUTPUT:
                saturated = tf.cast(self._saturated(outputs[index]), tf.float32)
                scalars[f"saturation/{name}"] = tf.reduce_mean(saturated)
            values[f"activations/{name}"] = outputs[index]
            values[f"activation_gradients/{name}"] = output_grads[index]
            values[f"weight_gradients/{name}/kernel"] = kernel_grads[index]
            values[f"weights/{name}/kernel"] = self._kernels[index]
        buckets = {tag: histogram(value) for tag, value in values.items()}
        with self._writer.as_default(step=step):
            with tf.summary.record_if(log_scalars):
                for tag, value in scalars.items():
                    tf.summary.scalar(tag, value)
            with tf.summary.record_if(log_histograms):
                for tag, value in buckets.items():
                    tf.summary.write(tag, value, metadata=self._metadata[tag])
        return scalars, buckets
