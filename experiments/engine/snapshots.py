"""One compiled snapshot for all the arms of a group.

Each arm logs what `keras_inits.SignalHistograms` logs for a model (the same tags,
statistics and buckets, into the arm's own run; the residual stream at each block's
output too, in residual models), but the group's arms share one
`tf.function`, and within it, one computation: the engine gives the signals of every
arm as one grouped `Signals` (each tensor leading with the arms' axis: the stack's own
layers, or the towers' tensors side by side), each statistic and histogram is computed
for all arms at once. The traced graph thus hardly grows with the arms: per arm, it was
traced and optimized anew (0.55 s an arm for the lesson's MLP on 2 cores). Each arm's
summaries are then written from the results, as one event (`write_snapshot`): written
inside the function, by a loop per arm and kind, they doubled the time to trace it
(ten arms of the lesson's MLP: 5.0 s instead of 2.4).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Protocol

import tensorflow as tf

from keras_inits.callbacks import (
    BINS,
    SignalHistograms,
    Snapshot,
    histogram_metadata,
    tf_histograms,
    write_snapshot,
)
from keras_inits.signals import SignalProbe, Signals


class Engine(Protocol):
    def signals(self, probes: Sequence[SignalProbe]) -> Signals: ...

    def trace_key(self) -> tuple: ...


class GroupSnapshots:
    """Snapshots of a group's arms, each logged through its `SignalHistograms`' writer.

    Args:
        engine: the group's engine (`towers.Towers` or `stacked.StackedArms`).
        names: each arm's tower name (`arm0`...), in the engine's order.
        signals: each arm's `SignalHistograms`, set on the arm's model: its probe batch,
            taps (the tags) and writer.
    """

    def __init__(
        self,
        engine: Engine,
        names: Sequence[str],
        signals: Sequence[SignalHistograms],
        bins: int = BINS,
    ):
        self.engine = engine
        self.names = list(names)
        self.arms = list(signals)
        self.bins = bins
        # The step of each arm's last histograms.
        self.last_histograms: dict[str, int] = {}
        # Each arm's histogram tags (in the order of its tensors) and their metadata.
        self._metadata = [
            histogram_metadata(arm.probe().taps, arm.probe().stream) for arm in self.arms
        ]
        self._compiled = None
        self._key: tuple | None = None

    def take(
        self, step: int, names: Iterable[str], *, scalars: bool, histograms: bool
    ) -> dict[str, Snapshot]:
        """Computes every arm's signals now and logs those of the arms `names` (the
        parts asked for) at `step`; returns their snapshots, by name."""
        wanted = set(names)
        key = self.engine.trace_key()  # frozen towers' kernels get no gradient: retrace
        if self._compiled is None or key != self._key:
            self._compiled, self._key = self._trace(), key
        stats, stream, buckets = self._compiled()
        stats = [{key: value.numpy() for key, value in row.items()} for row in stats]
        stream = [{key: value.numpy() for key, value in row.items()} for row in stream]
        buckets = buckets.numpy()
        snapshots = {}
        for index, (name, arm) in enumerate(zip(self.names, self.arms, strict=True)):
            if name not in wanted:
                continue
            own = [{key: value[index] for key, value in row.items()} for row in stats]
            own_stream = [{key: value[index] for key, value in row.items()} for row in stream]
            metadata = self._metadata[index]
            snapshot = snapshots[name] = Snapshot.from_tensors(
                step,
                arm.probe().taps,
                own,
                {tag: buckets[i, index] for i, tag in enumerate(metadata)},
                arm.probe().stream,
                own_stream,
            )
            write_snapshot(
                arm.writer, snapshot, metadata, scalars=scalars, histograms=histograms
            )
            if histograms:
                self.last_histograms[name] = step
        return snapshots

    def _trace(self):
        probes = [arm.probe() for arm in self.arms]
        engine, bins = self.engine, self.bins

        def compute():
            signals = engine.signals(probes)
            rows = signals.statistics()
            tensors = [*signals.per_layer_tensors(), *signals.stream_tensors()]
            buckets = tf_histograms(tensors, bins, grouped=True)
            rows = [{k: v for k, v in row.items() if v is not None} for row in rows]
            return rows, signals.stream_statistics(), buckets

        # As SignalHistograms: no AutoGraph (it doubles tracing); the partial keeps TF
        # from counting each group's trace as a retrace of one function.
        return tf.function(functools.partial(compute), autograph=False)
