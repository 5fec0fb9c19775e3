"""The Keras callback that watches a group of arms trained together: clock, divergence, logs.

Each arm (`ArmLog`) keeps its own TensorBoard writer, history and signals
(`keras_inits.SignalHistograms` on its tower, the callback users put in their own
`fit`); `GroupMonitor` reads the group's Keras logs after every execution of the
train function and hands each arm its own part.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import keras
import tensorflow as tf

from experiments.engine import stacked, towers
from experiments.engine.evaluation import NONFINITE_BATCH
from experiments.engine.snapshots import GroupSnapshots
from keras_inits import SignalHistograms

# Keras's epoch logs -> the run's history keys and TensorBoard scalar tags.
_EPOCH_METRICS = {
    "loss": ("loss", "loss/train"),
    "accuracy": ("accuracy", "accuracy/train"),
    "val_loss": ("test_loss", "loss/test"),
    "val_accuracy": ("test_accuracy", "accuracy/test"),
}


class ArmLog:
    """One arm of a group: its tower's name, signals and writer, metrics and divergence.

    Attributes:
        name: the tower's name in the group (`arm0`...), the prefix of its Keras logs.
        signals: the arm's `SignalHistograms`, set on its tower; its writer is the run's.
        history: metrics after each epoch (and at step 0): step, epoch, loss, accuracy,
            test_loss, test_accuracy.
        diverged_at_step: the first optimizer step whose batch gave non-finite outputs
            (so a non-finite loss), counting from 1.
    """

    def __init__(self, name: str, signals: SignalHistograms):
        self.name = name
        self.signals = signals
        self.writer = signals.writer
        self.history: dict[str, list] = {"step": [], "epoch": []}
        self.history.update({key: [] for key, _ in _EPOCH_METRICS.values()})
        self.diverged_at_step: int | None = None

    def record(self, step: int, epoch: int, logs: dict) -> None:
        """Appends Keras-style metrics (`loss`, `val_loss`...) at `step` to the history and
        TensorBoard; also called before training with the step-0 evaluation."""
        self.history["step"].append(step)
        self.history["epoch"].append(epoch)
        with self.writer.as_default(step=step):
            for name, (key, tag) in _EPOCH_METRICS.items():
                value = float(logs[name]) if name in logs else math.nan
                self.history[key].append(value)
                tf.summary.scalar(tag, value)


class GroupMonitor(keras.callbacks.Callback):
    """Times the training loop, freezes diverged towers, logs epoch metrics and signals.

    Clock (`train_seconds`): from the end of the train function's first execution
    (which includes tracing it) to the end of each epoch's steps, so it covers the
    training steps and the periodic histogram snapshots, and excludes tracing,
    validation and the epoch-end logging.

    Divergence: `evaluation.GroupMetrics` gives each tower's first batch with
    non-finite outputs; that step is the arm's `diverged_at_step`, the engine freezes
    it, and when every arm has diverged training stops.

    Histograms: every `every_n_steps` optimizer steps (0: never), at the first step
    of an execution at or after each multiple, the live arms take a snapshot, all in
    one compiled call (`snapshots`, on the engine: `towers.Towers` or
    `stacked.StackedArms`).

    Validation: after each epoch, `validate()` gives each tower's test loss and
    accuracy (`evaluation.GroupEvaluation`), logged as Keras logs its validation.

    Attributes:
        step: optimizer steps done so far.
        snapshot_seconds: the part of `train_seconds` spent in the periodic snapshots.
    """

    def __init__(
        self,
        arms: Sequence[ArmLog],
        every_n_steps: int,
        engine: towers.Towers | stacked.StackedArms,
        snapshots: GroupSnapshots,
        validate: Callable[[], dict[str, dict[str, float]]] | None = None,
    ):
        super().__init__()
        self.arms = list(arms)
        self.engine = engine
        self.snapshots = snapshots
        self.validate = validate
        self.every_n_steps = every_n_steps
        self.step = 0
        self.train_seconds = 0.0
        self.snapshot_seconds = 0.0
        self._clock_started: float | None = None
        self._epoch_start_step = 0
        self._last_snapshot = 0  # step 0 is taken before fit

    def live(self) -> list[ArmLog]:
        return [arm for arm in self.arms if arm.diverged_at_step is None]

    def _start_clock(self) -> None:
        self._clock_started = time.perf_counter()

    def _stop_clock(self) -> None:
        if self._clock_started is not None:
            self.train_seconds += time.perf_counter() - self._clock_started
            self._clock_started = None

    def _optimizer_step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch_start_step = self.step
        if self.step > 0:
            self._start_clock()

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        every = self.every_n_steps
        if every and (self._epoch_start_step + batch) // every > self._last_snapshot // every:
            started = time.perf_counter()
            self._last_snapshot = self._epoch_start_step + batch
            self._snapshot_live(self._last_snapshot)
            self.snapshot_seconds += time.perf_counter() - started

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        first_execution = self.step == 0
        self.step = self._optimizer_step()
        diverged = []
        split = towers.split_logs(logs, [arm.name for arm in self.arms])
        for arm in self.live():
            nonfinite = int(float(split[arm.name][NONFINITE_BATCH]))
            if nonfinite:
                arm.diverged_at_step = self._epoch_start_step + nonfinite
                diverged.append(arm)
        if diverged and not self.live():
            self.model.stop_training = True
        for arm in diverged if self.live() else ():
            self.engine.freeze(arm.name)
        if first_execution:
            self._start_clock()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._stop_clock()
        names = [arm.name for arm in self.arms]
        if logs is not None and self.validate is not None:
            # Into Keras's own logs, as its validation would: the callbacks after this one
            # see `val_arm0_accuracy`... too.
            logs.update(towers.validation_logs(self.validate(), names))
        split = towers.split_logs(logs or {}, names)
        for arm in self.arms:
            if arm.history["step"][-1] == arm.diverged_at_step:
                continue  # recorded in the epoch it diverged; frozen since
            arm.record(self.arm_step(arm), epoch + 1, split[arm.name])
        # Without histograms, the signal scalars are logged once an epoch; with them, at
        # every histogram snapshot already.
        if not self.every_n_steps:
            self._snapshot_live(self.step, histograms=False)
        for arm in self.arms:
            arm.writer.flush()

    def _snapshot_live(self, step: int, histograms: bool = True) -> None:
        """Each live arm's signals at `step`."""
        live = [arm.name for arm in self.live()]
        self.snapshots.take(step, live, scalars=True, histograms=histograms)

    def arm_step(self, arm: ArmLog) -> int:
        """The arm's last step: where it diverged, else the group's."""
        return arm.diverged_at_step if arm.diverged_at_step is not None else self.step
