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
`tf.function` call that computes and buckets everything; under JAX and PyTorch it
runs eagerly and buckets with NumPy. Each snapshot is then written as one event
(`write_snapshot`).

Histograms are bucketed by `tf_histograms` (every tensor of one size in one
`bincount`) and written as the histogram plugin's `[k, 3]` tensor (left edge, right
edge, count), which is what `tf.summary.histogram` writes too; `tf.summary.histogram`
builds an (n x k) one-hot matrix per tensor instead, about 25x slower on the
activations of a 256-wide MLP.
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
from keras_inits.stream import StreamPoint
from keras_inits.taps import Tap

BINS = 30  # TensorBoard's default bucket count.
# TensorBoard scalar tag prefix -> the statistic (keras_inits.signals.Signals.statistics).
SCALARS = {
    "activation_std": "output_std",
    "activation_gradient_std": "gradient_std",
    "weight_gradient_std": "weight_gradient_std",
    "saturation": "saturated_fraction",
    "dead_fraction": "dead_fraction",
}
# The same for each residual block's output (keras_inits.signals.Signals.stream_statistics).
STREAM_SCALARS = {
    "residual_stream_std": "output_std",
    "residual_stream_gradient_std": "gradient_std",
}


# What the missing-package message says needs TensorFlow and TensorBoard (keras_inits._extras).
_PURPOSE = "SignalHistograms writes TensorBoard summaries"


def _tensorflow() -> Any:
    """TensorFlow, whose summary writer writes the events (on any Keras backend), or the
    one-line error that names the extra to install."""
    return require("tensorflow", HARNESS, _PURPOSE)


def stream_tags(block: str) -> tuple[str, str]:
    """The histogram tags of one residual block's output: the stream, its gradient."""
    return (f"residual_stream/{block}", f"residual_stream_gradients/{block}")


def histogram_tags(layer: str) -> tuple[str, str, str, str]:
    """The histogram tags of one layer: activations, their gradients, kernel gradients, kernel."""
    return (
        f"activations/{layer}",
        f"activation_gradients/{layer}",
        f"weight_gradients/{layer}/kernel",
        f"weights/{layer}/kernel",
    )


def tf_histograms(tensors: Sequence[Any], bins: int = BINS, grouped: bool = False) -> Any:
    """The histogram plugin's float64 `[bins, 3]` tensor (left edge, right edge, count) of
    each tensor, stacked into `[len(tensors), bins, 3]`, over its finite values (TensorFlow);
    a None (a frozen kernel's gradient) gets an empty histogram. `grouped`: the first
    axis of every tensor indexes models, each of which gets its own histogram, stacked
    into `[len(tensors), models, bins, 3]`.

    Buckets span [min, max] of each tensor's finite values; a constant tensor gets a
    range of width 1 around its value (as `tf.summary.histogram` does), wider beyond
    +-500 where float32 cannot tell the value from the value +- 0.5. NaN and inf
    (a diverging run) are left out rather than spoiling the range.

    Tensors of one size are bucketed together, as the rows of one matrix: a value's
    bucket is floor((v - low) * bins / (high - low)) (the maximum in the last), as
    `tf.histogram_fixed_width` buckets one tensor, and one `bincount` counts every row.
    The traced graph thus grows with the number of sizes, not of tensors: a layer's
    activations and their gradients share a size, and so do its kernel and the
    kernel's gradient, and every layer of one width.
    """
    tf = _tensorflow()
    if not tensors:
        return tf.zeros([0, bins, 3], tf.float64)
    present = [tensor for tensor in tensors if tensor is not None]
    models = int(present[0].shape[0]) if grouped and present else 1
    matrices = []
    for tensor in tensors:
        values = tf.cast(tensor if tensor is not None else tf.zeros([models, 0]), tf.float32)
        matrices.append(tf.reshape(values, [models, -1]))
    by_size: dict[int, list[int]] = {}
    for index, matrix in enumerate(matrices):
        # A size unknown when tracing (a dimension some op left dynamic) is bucketed alone.
        size = matrix.shape[1]
        by_size.setdefault(int(size) if size is not None else -1 - index, []).append(index)
    parts, order = [], []
    for size, members in by_size.items():
        # At most _ROW_BUDGET values a batch: a stack of every activation of a deep CNN
        # would double the snapshot's memory.
        count = max(1, _ROW_BUDGET // max(size * models, 1))
        for start in range(0, len(members), count):
            chunk = members[start : start + count]
            parts.append(_bucket_rows(tf, tf.concat([matrices[i] for i in chunk], 0), bins))
            order += chunk
    stacked = tf.reshape(tf.concat(parts, axis=0), [len(tensors), models, bins, 3])
    stacked = tf.gather(stacked, np.argsort(np.array(order)))  # back to the order given
    return stacked if grouped else stacked[:, 0]


# Values bucketed in one batch at most (32 MB as float64); more make several batches.
_ROW_BUDGET = 1 << 22


def _bucket_rows(tf: Any, values: Any, bins: int) -> Any:
    """`tf_histograms` of each row of the float32 matrix `values`: `[rows, bins, 3]`."""
    finite = tf.math.is_finite(values)
    low = tf.reduce_min(tf.where(finite, values, np.inf), axis=1)
    high = tf.reduce_max(tf.where(finite, values, -np.inf), axis=1)
    seen = low <= high  # False when a row has no finite value (or none at all)
    low, high = tf.where(seen, low, 0.0), tf.where(seen, high, 0.0)
    pad = tf.where(high > low, 0.0, _constant_pad(tf, low))
    low, high = low - pad, high + pad
    # Bucket floor((v - low) * (bins / (high - low))), the maximum in the last.
    scale = bins / (high - low)
    index = tf.cast(
        tf.minimum((tf.maximum(values, low[:, None]) - low[:, None]) * scale[:, None], bins - 1),
        tf.int32,
    )
    # Non-finite values go to an extra bucket per row, dropped below.
    index = tf.where(finite, index, bins)
    rows = tf.shape(values)[0]
    index += tf.range(rows)[:, None] * (bins + 1)
    counts = tf.math.bincount(
        tf.reshape(index, [-1]), minlength=rows * (bins + 1), maxlength=rows * (bins + 1)
    )
    counts = tf.reshape(counts, [rows, bins + 1])[:, :bins]
    edges = low[:, None] + (high - low)[:, None] * tf.range(bins + 1, dtype=tf.float32) / bins
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
    # The residual stream: each block's tag ("block_003") and its statistics.
    blocks: list[str] = dataclasses.field(default_factory=list)
    stream: list[dict[str, float | None]] = dataclasses.field(default_factory=list)

    @classmethod
    def from_tensors(
        cls,
        step: int,
        taps: Sequence[Tap],
        stats: list[dict[str, Any]],
        buckets: dict[str, Any],
        points: Sequence[StreamPoint] = (),
        stream: list[dict[str, Any]] = (),
    ) -> Snapshot:
        """The snapshot of `taps` (and of the residual stream at `points`) from a compiled
        snapshot's outputs (`Signals.statistics` and `Signals.stream_statistics` rows,
        tag -> `tf_histograms` row)."""
        return cls(
            step,
            [tap.path for tap in taps],
            _stats_to_numpy(stats),
            {tag: np.asarray(_to_numpy(value)) for tag, value in buckets.items()},
            [point.tag for point in points],
            _stats_to_numpy(list(stream)),
        )

    def profile(self) -> dict[str, Any]:
        """Per-layer lists (JSON-ready), as the harness's report reads them; with a residual
        stream, `stream`: its blocks' tags and their output and gradient std."""

        def column(key: str) -> list[float | None]:
            return [_finite_or_none(row[key]) for row in self.statistics]

        stream = {}
        if self.blocks:
            stream["stream"] = {
                "blocks": list(self.blocks),
                **{
                    key: [_finite_or_none(row[key]) for row in self.stream]
                    for key in ("output_std", "gradient_std")
                },
            }
        return {
            **stream,
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

    For models with residual blocks (those `keras_inits.roles` finds), also the
    residual stream at each block's output (tag `block_003`...): histograms
    `residual_stream/<block>` and `residual_stream_gradients/<block>`, scalars
    `residual_stream_std/<block>` and `residual_stream_gradient_std/<block>`.

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
        stream: log the residual stream too (models with residual blocks).
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
        stream: bool = True,
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
        self.stream = bool(stream)
        self.last_step: int | None = None
        self._writer = None
        self._probe: SignalProbe | None = None
        self._probe_model = None
        self._metadata: dict[str, bytes] = {}
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
            self._probe = SignalProbe(
                self.model, self.x, self.y, loss=self.loss, stream=self.stream
            )
            if self._probe_model is not None:  # another model: its own step 0 and schedule
                self.last_step = None
            self._probe_model = self.model
            self._compiled = None
            # Each histogram tag's plugin metadata, in the order of the probe's tensors.
            self._metadata = histogram_metadata(self._probe.taps, self._probe.stream)
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
            stats, stream, buckets = self._tf_snapshot()
        else:
            stats, stream, buckets = self._eager_snapshot()
        snapshot = Snapshot.from_tensors(step, probe.taps, stats, buckets, probe.stream, stream)
        write_snapshot(
            self.writer, snapshot, self._metadata,
            scalars=scalars, histograms=histograms,
        )
        self.last_step = step if histograms else self.last_step
        return snapshot

    def _tf_snapshot(self):
        tf = self._tf
        # Frozen kernels get no gradient; the traced function bakes that in.
        trainable = tuple(tap.kernel.variable.trainable for tap in self.probe().taps)
        if self._compiled is not None and trainable != self._compiled_trainable:
            self._compiled = None
        self._compiled_trainable = trainable
        if self._compiled is None:
            probe, bins = self.probe(), self.bins
            tags = list(self._metadata)

            def compute():
                signals = probe.compute()
                stats = signals.statistics()
                tensors = [*signals.per_layer_tensors(), *signals.stream_tensors()]
                stacked = tf_histograms(tensors, bins)
                buckets = {tag: stacked[i] for i, tag in enumerate(tags)}
                stats = [{k: v for k, v in row.items() if v is not None} for row in stats]
                return stats, signals.stream_statistics(), buckets

            # Plain Python control flow only: no AutoGraph conversion (it doubles tracing).
            # The partial makes TF count this callback's traces apart from other
            # callbacks' (it counts per code object, and each callback traces once; many
            # callbacks in one process are not retracing).
            self._compiled = tf.function(functools.partial(compute), autograph=False)
        return self._compiled()

    def _eager_snapshot(self):
        probe = self.probe()
        signals = probe.compute()
        # In the order of the tags.
        values = [*signals.per_layer_tensors(), *signals.stream_tensors()]
        buckets = {
            tag: np_histogram(_to_numpy(value) if value is not None else [], self.bins)
            for tag, value in zip(self._metadata, values, strict=True)
        }
        return signals.statistics(), signals.stream_statistics(), buckets


def histogram_metadata(
    taps: Sequence[Tap], points: Sequence[StreamPoint] = ()
) -> dict[str, bytes]:
    """The histogram plugin's serialized metadata of each histogram tag of `taps`, in the
    order of `Signals.per_layer_tensors`, then of the stream's `points`, in the order of
    `Signals.stream_tensors`."""
    from tensorboard.plugins.histogram import metadata

    tags = [
        *(tag for tap in taps for tag in histogram_tags(tap.path)),
        *(tag for point in points for tag in stream_tags(point.tag)),
    ]
    return {
        tag: metadata.create_summary_metadata(display_name=tag, description="")
        .SerializeToString()
        for tag in tags
    }


def scalar_summaries(
    layers: Sequence[str], stats: list[dict[str, Any]], names: dict[str, str] = SCALARS
) -> list[tuple[str, Any]]:
    """(tag, value) of each scalar of `stats` (`Signals.statistics` rows, one per layer
    path of `layers`; or with `names=STREAM_SCALARS`, stream rows, one per block tag), in
    `names` order layer by layer; statistics that are None (undefined) have none."""
    return [
        (f"{prefix}/{layer}", row[key])
        for layer, row in zip(layers, stats, strict=True)
        for prefix, key in names.items()
        if row.get(key) is not None
    ]


def write_snapshot(
    writer: Any,
    snapshot: Snapshot,
    metadata: dict[str, bytes],
    *,
    scalars: bool = True,
    histograms: bool = True,
) -> None:
    """Logs `snapshot` at its step through the summary `writer`: its statistics as
    scalars (`scalar_summaries`) and its histograms (`metadata`: `histogram_metadata`
    of its layers), the parts asked for.

    Every value goes into one `Summary` of one event, each value as `tf.summary.write`
    would write it on its own (the tag, its plugin's metadata, a float32 scalar or the
    histogram plugin's float64 `[bins, 3]` tensor), through
    `tf.summary.experimental.write_raw_pb`: one op per snapshot, where writing inside a
    compiled snapshot made tracing it cost more than computing it (a loop per model
    and kind of summary, or a cond per tag).
    """
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.scalar import metadata as scalar_metadata
    from tensorboard.util import tensor_util

    summary = summary_pb2.Summary()
    if scalars:
        kind = scalar_metadata.create_summary_metadata(display_name="", description="")
        values = [
            *scalar_summaries(snapshot.layers, snapshot.statistics),
            *scalar_summaries(snapshot.blocks, snapshot.stream, STREAM_SCALARS),
        ]
        for tag, value in values:
            summary.value.add(
                tag=tag, metadata=kind, tensor=tensor_util.make_tensor_proto(np.float32(value))
            )
    if histograms:
        for tag, buckets in snapshot.histograms.items():
            summary.value.add(
                tag=tag,
                metadata=summary_pb2.SummaryMetadata.FromString(metadata[tag]),
                tensor=tensor_util.make_tensor_proto(np.asarray(buckets, np.float64)),
            )
    if not summary.value:
        return
    tf = _tensorflow()
    with writer.as_default(step=snapshot.step):
        tf.summary.experimental.write_raw_pb(summary.SerializeToString())


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
