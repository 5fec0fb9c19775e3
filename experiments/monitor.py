"""The Keras callback that watches one training run: clock, divergence, epoch logs.

Histograms are `keras_inits.SignalHistograms`' job (the same callback users put
in their own `fit`); this one adds the per-epoch metrics and signal scalars.
"""

from __future__ import annotations

import math
import time

import keras
import tensorflow as tf

from keras_inits import SignalHistograms

# Keras's epoch logs -> the run's history keys and TensorBoard scalar tags.
_EPOCH_METRICS = {
    "loss": ("loss", "loss/train"),
    "accuracy": ("accuracy", "accuracy/train"),
    "val_loss": ("test_loss", "loss/test"),
    "val_accuracy": ("test_accuracy", "accuracy/test"),
}


class RunMonitor(keras.callbacks.Callback):
    """Times the training loop, stops on a non-finite loss, logs epoch metrics and scalars.

    Clock (`train_seconds`): runs from the end of the first step (which
    includes tracing and compiling the train function) to the end of each
    epoch's steps, so it covers the training steps and the periodic histogram
    snapshots, and excludes compilation, validation and the epoch-end logging.

    Divergence: Keras reports the running mean of the epoch's batch losses,
    which turns non-finite at the first non-finite batch loss; that step is
    recorded as `diverged_at_step` and training stops.

    Attributes:
        step: optimizer steps done so far.
        history: metrics after each epoch (and at step 0 when `record`ed): step,
            epoch, loss, accuracy, test_loss, test_accuracy.
    """

    def __init__(self, signals: SignalHistograms):
        super().__init__()
        self.signals = signals
        self.writer = signals.writer
        self.step = 0
        self.diverged_at_step: int | None = None
        self.train_seconds = 0.0
        self.history: dict[str, list] = {"step": [], "epoch": []}
        self.history.update({key: [] for key, _ in _EPOCH_METRICS.values()})
        self._clock_started: float | None = None

    def _start_clock(self) -> None:
        self._clock_started = time.perf_counter()

    def _stop_clock(self) -> None:
        if self._clock_started is not None:
            self.train_seconds += time.perf_counter() - self._clock_started
            self._clock_started = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self.step > 0:
            self._start_clock()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.step += 1
        if not math.isfinite(float(logs["loss"])):
            self.diverged_at_step = self.step
            self.model.stop_training = True
        if self.step == 1:
            self._start_clock()

    def on_test_begin(self, logs: dict | None = None) -> None:
        self._stop_clock()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._stop_clock()  # when there is no validation
        self.record(epoch + 1, logs or {})
        if self.signals.last_step != self.step:  # it logged its scalars at this step already
            self.signals.snapshot(self.step, scalars=True, histograms=False)
        self.writer.flush()

    def record(self, epoch: int, logs: dict) -> None:
        """Appends Keras-style metrics (`loss`, `val_loss`...) at the current step to the
        history and TensorBoard; also called before training with the step-0 evaluation."""
        self.history["step"].append(self.step)
        self.history["epoch"].append(epoch)
        with self.writer.as_default(step=self.step):
            for name, (key, tag) in _EPOCH_METRICS.items():
                value = float(logs[name]) if name in logs else math.nan
                self.history[key].append(value)
                tf.summary.scalar(tag, value)
