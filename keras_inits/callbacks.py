"""`SignalHistograms`: activation and gradient histograms of any model in TensorBoard, during fit.

Keras's `TensorBoard(histogram_freq=1)` logs weight histograms only (activation
and gradient histograms are gone since TF 2: tensorflow#31173, tf-keras#118).
This callback logs, on a fixed batch and per layer with a kernel, the
activations, the back-propagated gradients dLoss/d(activations), the kernel
gradients and the kernels, with their std (and saturation or dead-unit
fractions) as scalars, at step 0 and every `every_n_steps` optimizer steps.

It writes with TensorFlow's summary writer, so it needs TensorFlow and TensorBoard
(`pip install 'keras-inits[harness]'`) even when the model runs on another
backend. Under the TensorFlow backend one snapshot is a single compiled
`tf.function` call that computes, buckets and writes everything; under JAX and
PyTorch it runs eagerly and buckets with NumPy.

Histograms are bucketed by `tf.histogram_fixed_width` (`tf_histograms`) and written
as the histogram plugin's `[k, 3]` tensor (left edge, right edge, count), which
is what `tf.summary.histogram` writes too; `tf.summary.histogram` builds an
(n x k) one-hot matrix per tensor instead, about 25x slower on the activations
of a 256-wide MLP.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from keras_inits._extras import HARNESS, require
from keras_inits.signals import SignalProbe

BINS = 30  # TensorBoard's default bucket count.
# TensorBoard scalar tag prefix -> the statistic (keras_inits.signals.Signals.statistics).
SCALARS = {
    "activation_std": "output_std",
    "activation_gradient_std": "gradient_std",
    "weight_gradient_std": "weight_gradient_std",
    "saturation": "saturated_fraction",
    "dead_fraction": "dead_fraction",
}


# What the missing-package message says needs TensorFlow and TensorBoard (keras_inits._extras).
_PURPOSE = "SignalHistograms writes TensorBoard summaries"


def _tensorflow() -> Any:
    """TensorFlow, whose summary writer writes the events (on any Keras backend), or the
    one-line error that names the extra to install."""
    return require("tensorflow", HARNESS, _PURPOSE)


def histogram_tags(layer: str) -> tuple[str, str, str, str]:
    """The histogram tags of one layer: activations, their gradients, kernel gradients, kernel."""
    return (
        f"activations/{layer}",
        f"activation_gradients/{layer}",
        f"weight_gradients/{layer}/kernel",
        f"weights/{layer}/kernel",
    )


def tf_histograms(tensors: Sequence[Any], bins: int = BINS) -> Any:
    """The histogram plugin's float64 `[bins, 3]` tensor (left edge, right edge, count) of
    each tensor, stacked into `[len(tensors), bins, 3]`, over its finite values (TensorFlow).

    Buckets span [min, max] of each tensor's finite values; a constant tensor gets a
    range of width 1 around its value (as `tf.summary.histogram` does), wider beyond
    +-500 where float32 cannot tell the value from the value +- 0.5. NaN and inf
    (a diverging run) are left out rather than spoiling the range. Each tensor is
    counted by `tf.histogram_fixed_width` (fast at run time) with only scalar ops
    around it; edges and the non-finite correction are computed for all tensors at
    once, which keeps the traced graph small.
    """
    tf = _tensorflow()
    counts, lows, highs, non_finite = [], [], [], []
    for tensor in tensors:
        values = tf.reshape(tf.cast(tensor, tf.float32), [-1])
        finite = tf.math.is_finite(values)
        low = tf.reduce_min(tf.where(finite, values, np.inf))
        high = tf.reduce_max(tf.where(finite, values, -np.inf))
        seen = low <= high  # False when the tensor has no finite value (or none at all)
        low, high = tf.where(seen, low, 0.0), tf.where(seen, high, 0.0)
        pad = tf.where(high > low, 0.0, _constant_pad(tf, low))
        low, high = low - pad, high + pad
        # Non-finite values are counted in bucket 0 as `low`, then taken out again.
        counts.append(
            tf.histogram_fixed_width(tf.where(finite, values, low), [low, high], nbins=bins)
        )
        non_finite.append(tf.size(values) - tf.math.count_nonzero(finite, dtype=tf.int32))
        lows.append(low)
        highs.append(high)
    low, high = tf.stack(lows)[:, None], tf.stack(highs)[:, None]
    edges = low + (high - low) * tf.range(bins + 1, dtype=tf.float32)[None, :] / bins
    counts = tf.stack(counts) - tf.one_hot(0, bins, dtype=tf.int32)[None, :] * tf.stack(
        non_finite
    )[:, None]
    stacked = tf.stack([edges[:, :-1], edges[:, 1:], tf.cast(counts, tf.float32)], 2)
    return tf.cast(stacked, tf.float64)


def _constant_pad(ops: Any, value: Any) -> Any:
    """Half the range given to a constant tensor's buckets: 0.5, or a thousandth of the
    value when float32 would round value +- 0.5 to the value itself (an empty range)."""
    return ops.maximum(0.5, ops.abs(value) * 1e-3)


def tf_histogram(values: Any, bins: int = BINS) -> Any:
    """`tf_histograms` of one tensor: a float64 `[bins, 3]` tensor."""
    return tf_histograms([values], bins)[0]


def np_histogram(values: Any, bins: int = BINS) -> np.ndarray:
    """`tf_histogram` in NumPy, for the other backends: the same buckets and rules."""
    values = np.asarray(values, dtype=np.float32).reshape(-1)
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if not high > low:
        pad = float(_constant_pad(np, np.float32(low)))
        low, high = low - pad, high + pad
    counts, edges = np.histogram(finite, bins=bins, range=(low, high))
    return np.stack([edges[:-1], edges[1:], counts.astype(np.float64)], axis=1)


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """One probe's results as NumPy: per-layer statistics and the histograms by tag."""

    step: int
    layers: list[str]
    statistics: list[dict[str, float | None]]
    histograms: dict[str, np.ndarray]

    def profile(self) -> dict[str, list]:
        """Per-layer lists (JSON-ready), as the harness's report reads them."""

        def column(key: str) -> list[float | None]:
            return [_finite_or_none(row[key]) for row in self.statistics]

        return {
            "activation_mean": column("output_mean"),
            "activation_std": column("output_std"),
            "activation_gradient_std": column("gradient_std"),
            "weight_gradient_std": column("weight_gradient_std"),
            "saturation": column("saturated_fraction"),
            "dead_fraction": column("dead_fraction"),
            "activation_histograms": [
                np.nan_to_num(self.histograms[f"activations/{layer}"]).tolist()
                for layer in self.layers
            ],
        }


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


class SignalHistograms(keras.callbacks.Callback):
    """Per-layer activation, gradient and weight histograms of any model's `fit` in TensorBoard.

    At step 0 (before the first update) and every `every_n_steps` optimizer
    steps, on the fixed batch `(x, y)` in inference mode, for each layer with a
    kernel (tag = the layer's path, e.g. `block1_conv1` or
    `multi_head_attention/query`):

    - histograms `activations/<layer>`, `activation_gradients/<layer>`
      (dLoss/d activations), `weight_gradients/<layer>/kernel`, `weights/<layer>/kernel`;
    - scalars `activation_std/<layer>`, `activation_gradient_std/<layer>`,
      `weight_gradient_std/<layer>`, and `saturation/<layer>` (tanh/sigmoid-like
      layers) or `dead_fraction/<layer>` (ReLU layers).

    Events go to `log_dir/train`, where `keras.callbacks.TensorBoard(log_dir)`
    writes its own, so both can share a folder and show up as one run. Steps
    are the optimizer's, so it works with `steps_per_execution > 1` (a snapshot
    falls on the first step at or after each multiple) and across `fit` calls.

    Examples:
        >>> model.fit(x_train, y_train, epochs=5, callbacks=[
        ...     keras.callbacks.TensorBoard("logs/run1"),
        ...     keras_inits.SignalHistograms(x_train[:256], y_train[:256], "logs/run1"),
        ... ])

    Args:
        x: one fixed batch of inputs (a few hundred examples is plenty).
        y: its targets, or None for the surrogate loss (see `keras_inits.signals`).
        log_dir: the TensorBoard log folder.
        every_n_steps: optimizer steps between snapshots, >= 1.
        loss: with `y`: a Keras loss name or callable; default the compiled loss.
        bins: histogram buckets.
        subdir: the run folder under `log_dir` ("train" as Keras's TensorBoard;
            "" writes into `log_dir` itself).
    """

    def __init__(
        self,
        x: Any,
        y: Any = None,
        log_dir: str = "logs",
        every_n_steps: int = 100,
        *,
        loss: Any = None,
        bins: int = BINS,
        subdir: str = "train",
    ):
        super().__init__()
        # Both are needed only to write, but a missing one is told now, not in `fit`.
        self._tf = _tensorflow()
        require("tensorboard", HARNESS, _PURPOSE)
        for name, value in (("every_n_steps", every_n_steps), ("bins", bins)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {name}={value!r}.")
        if not isinstance(log_dir, (str, os.PathLike)):
            raise TypeError(f"log_dir must be a path, got {type(log_dir).__name__}.")
        self.x, self.y, self.loss = x, y, loss
        self.log_dir = os.fspath(log_dir)
        self.every_n_steps = every_n_steps
        self.bins = bins
        self.subdir = subdir
        self.last_step: int | None = None
        self._writer = None
        self._probe: SignalProbe | None = None
        self._probe_model = None
        self._compiled = None
        self._compiled_trainable: tuple[bool, ...] = ()
        self._epoch_start_step = 0

    @property
    def writer(self):
        """The summary writer of `log_dir/subdir`, created on first use."""
        if self._writer is None:
            self._writer = self._tf.summary.create_file_writer(
                os.path.join(self.log_dir, self.subdir)
            )
        return self._writer

    def probe(self) -> SignalProbe:
        """The probe of the current model (built, and `x` checked, on first use)."""
        if self._probe is None or self._probe_model is not self.model:
            self._probe = SignalProbe(self.model, self.x, self.y, loss=self.loss)
            if self._probe_model is not None:  # another model: its own step 0 and schedule
                self.last_step = None
            self._probe_model = self.model
            self._compiled = None
        return self._probe

    @property
    def layers(self) -> list[str]:
        """The tag of each tapped layer (its path), in forward order."""
        return [tap.path for tap in self.probe().taps]

    # --- Keras hooks -----------------------------------------------------------------

    def on_train_begin(self, logs: dict | None = None) -> None:
        step = self._optimizer_step()
        if self.last_step != step:
            self.snapshot(step)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch_start_step = self._optimizer_step()

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        # Before step k + 1 the weights are those after k steps. Checking here rather than
        # in on_train_batch_end keeps Keras's asynchronous batch-end dispatch on (a
        # batch-end hook makes it wait for every step's logs). `batch` is the first step
        # of this execution within the epoch, so it only tells when a multiple may have
        # been crossed; the optimizer tells the step.
        self._maybe_snapshot(self._epoch_start_step + batch)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._maybe_snapshot(self._optimizer_step())  # the epoch's last steps

    def _maybe_snapshot(self, estimate: int) -> None:
        last = self.last_step if self.last_step is not None else -1
        if estimate // self.every_n_steps > last // self.every_n_steps:
            step = self._optimizer_step()
            if step // self.every_n_steps > last // self.every_n_steps:
                self.snapshot(step)

    def _optimizer_step(self) -> int:
        # Reading the model syncs JAX's training state; done once per epoch and snapshot.
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._writer is not None:
            self._writer.flush()

    # --- Snapshots -------------------------------------------------------------------

    def snapshot(self, step: int, *, scalars: bool = True, histograms: bool = True) -> Snapshot:
        """Computes the signals now and logs the parts asked for at `step`.

        Both parts are always computed (and returned); the flags only gate the
        writing, so under TensorFlow the compiled function is traced once.
        """
        probe = self.probe()
        if keras.backend.backend() == "tensorflow":
            stats, buckets = self._tf_snapshot(step, scalars, histograms)
        else:
            stats, buckets = self._eager_snapshot(step, scalars, histograms)
        self.last_step = step if histograms else self.last_step
        layers = [tap.path for tap in probe.taps]
        return Snapshot(step, layers, stats, buckets)

    def _tags(self) -> tuple[list[str], dict[str, bytes]]:
        from tensorboard.plugins.histogram import metadata

        tags = [tag for tap in self.probe().taps for tag in histogram_tags(tap.path)]
        serialized = {
            tag: metadata.create_summary_metadata(display_name=tag, description="")
            .SerializeToString()
            for tag in tags
        }
        return tags, serialized

    def _tf_snapshot(self, step: int, scalars: bool, histograms: bool):
        tf = self._tf
        # Frozen kernels get no gradient; the traced function bakes that in.
        trainable = tuple(tap.kernel.variable.trainable for tap in self.probe().taps)
        if self._compiled is not None and trainable != self._compiled_trainable:
            self._compiled = None
        self._compiled_trainable = trainable
        if self._compiled is None:
            tags, serialized = self._tags()
            probe = self.probe()
            writer = self.writer
            bins = self.bins

            def compute(step, log_scalars, log_histograms):
                signals = probe.compute()
                stats = signals.statistics()
                values = signals.per_layer_tensors()  # in the order of `tags`
                stacked = tf_histograms(
                    [value if value is not None else tf.zeros([0]) for value in values], bins
                )
                buckets = {tag: stacked[i] for i, tag in enumerate(tags)}

                def write_scalars():
                    _write_scalars(tf, probe, stats)
                    return tf.constant(True)

                def write_histograms():
                    for tag, value in buckets.items():
                        tf.summary.write(tag, value, metadata=serialized[tag])
                    return tf.constant(True)

                # One cond per kind of summary, not one per tag (record_if's way): each
                # cond traces two branch functions, the costliest part of the trace.
                with writer.as_default(step=step), tf.summary.record_if(True):
                    tf.cond(log_scalars, write_scalars, lambda: tf.constant(False))
                    tf.cond(log_histograms, write_histograms, lambda: tf.constant(False))
                return [{k: v for k, v in row.items() if v is not None} for row in stats], buckets

            # Plain Python control flow only: no AutoGraph conversion (it doubles tracing).
            # The partial makes TF count this callback's traces apart from other
            # callbacks' (it counts per code object, and each callback traces once; many
            # callbacks in one process are not retracing).
            self._compiled = tf.function(functools.partial(compute), autograph=False)
        stats, buckets = self._compiled(
            tf.constant(step, tf.int64), tf.constant(scalars), tf.constant(histograms)
        )
        return _stats_to_numpy(stats), {tag: value.numpy() for tag, value in buckets.items()}

    def _eager_snapshot(self, step: int, scalars: bool, histograms: bool):
        tf = self._tf
        probe = self.probe()
        tags, serialized = self._tags()
        signals = probe.compute()
        stats = _stats_to_numpy(signals.statistics())
        values = signals.per_layer_tensors()  # in the order of `tags`
        buckets = {
            tag: np_histogram(_to_numpy(value) if value is not None else [], self.bins)
            for tag, value in zip(tags, values, strict=True)
        }
        with self.writer.as_default(step=step):
            if scalars:
                _write_scalars(tf, probe, stats)
            if histograms:
                for tag, value in buckets.items():
                    tf.summary.write(tag, value, metadata=serialized[tag])
        return stats, buckets


def _write_scalars(tf, probe: SignalProbe, stats: list[dict[str, Any]]) -> None:
    """The per-layer statistics as scalars (`tf.summary.write` with the scalar plugin's
    metadata, as `tf.summary.scalar` writes them, but with no name scope in the tag)."""
    from tensorboard.plugins.scalar import metadata

    serialized = metadata.create_summary_metadata(display_name="", description="")
    for tap, row in zip(probe.taps, stats, strict=True):
        for prefix, key in SCALARS.items():
            if row.get(key) is not None:
                value = tf.cast(row[key], tf.float32)
                tf.summary.write(f"{prefix}/{tap.path}", value, metadata=serialized)


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensors that require grad
        value = value.detach()
    return np.asarray(keras.ops.convert_to_numpy(value))


def _stats_to_numpy(stats: list[dict[str, Any]]) -> list[dict[str, float | None]]:
    keys = ("output_mean", "output_std", "gradient_std", "weight_gradient_std", "weight_std",
            "saturated_fraction", "dead_fraction")
    return [
        {key: None if row.get(key) is None else float(_to_numpy(row[key])) for key in keys}
        for row in stats
    ]
