"""One compiled snapshot for all the arms of a group.

Each arm logs what `keras_inits.SignalHistograms` logs for a model (the same tags,
statistics and buckets, into the arm's own run), but the group's arms share one
`tf.function`, and within it, one computation: the engine gives the signals of every
arm as one grouped `Signals` (each tensor leading with the arms' axis: the stack's own
layers, or the towers' tensors side by side), each statistic and histogram is computed
for all arms at once, and each arm's summaries are written by one loop. The traced
graph thus hardly grows with the arms: per arm, it was traced and optimized anew (0.55 s
an arm for the lesson's MLP on 2 cores).
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
    scalar_summaries,
    stack_scalars,
    tf_histograms,
    write_summaries,
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
        # Each arm's histogram tags, in the order of its tensors (the compiled outputs').
        self._tags = [list(histogram_metadata(arm.probe().taps)) for arm in self.arms]
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
        stats, buckets = self._compiled(
            tf.constant(step, tf.int64),
            tf.constant([name in wanted for name in self.names]),
            tf.constant(scalars),
            tf.constant(histograms),
        )
        stats = [{key: value.numpy() for key, value in row.items()} for row in stats]
        buckets = buckets.numpy()
        snapshots = {}
        for index, (name, arm) in enumerate(zip(self.names, self.arms, strict=True)):
            if name not in wanted:
                continue
            own = [{key: value[index] for key, value in row.items()} for row in stats]
            snapshots[name] = Snapshot.from_tensors(
                step,
                arm.probe().taps,
                own,
                {tag: buckets[i, index] for i, tag in enumerate(self._tags[index])},
            )
            if histograms:
                self.last_histograms[name] = step
        return snapshots

    def _trace(self):
        probes = [arm.probe() for arm in self.arms]
        metadata = [histogram_metadata(probe.taps) for probe in probes]
        writers = [arm.writer for arm in self.arms]
        engine, bins = self.engine, self.bins

        def compute(step, logged, log_scalars, log_histograms):
            signals = engine.signals(probes)
            rows = signals.statistics()
            buckets = tf_histograms(signals.per_layer_tensors(), bins, grouped=True)
            scalars = scalar_summaries(signals.taps, rows)
            values = stack_scalars(tf, [value for _, value in scalars])
            for index, probe in enumerate(probes):
                with writers[index].as_default(step=step):
                    write_summaries(
                        # The arm's own tags: its layers' paths.
                        [tag for tag, _ in scalar_summaries(probe.taps, rows)],
                        values[:, index],
                        metadata[index],
                        buckets[:, index],
                        tf.logical_and(log_scalars, logged[index]),
                        tf.logical_and(log_histograms, logged[index]),
                    )
            return [{k: v for k, v in row.items() if v is not None} for row in rows], buckets

        # As SignalHistograms: no AutoGraph (it doubles tracing); the partial keeps TF
        # from counting each group's trace as a retrace of one function.
        return tf.function(functools.partial(compute), autograph=False)
