"""One run of the comparison: one initializer, one activation, one seed.

Everything random is fixed by the seed and independent of the initializer:
`keras.utils.set_random_seed(seed)` seeds Python, NumPy and TensorFlow; the
training batches come from a `tf.data` shuffle seeded with `seed`; each layer's
kernel initializer is reseeded from `seed` and the layer's index (see
`models.layer_seed`), or, for your own model and for kernels that need the
fallback, `keras_inits.reinitialize` seeds each kernel from `seed` and its
position (see `models.initialize`); biases start at zero. Two initializers with
the same seed thus train the same architecture on the same batches in the same
order. Each run starts from a cleared Keras session, so the layers of your own
model get the same automatic names in every run.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from experiments import hparams, models
from experiments.config import ExperimentConfig
from experiments.data import Dataset
from experiments.monitor import RunMonitor
from keras_inits import SignalHistograms


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What one run produced.

    Attributes:
        entry: the run's `summary.json` fields (JSON-ready; non-finite numbers as None).
        details: per-epoch history and per-layer profiles at step 0 and at the end,
            for the report (saved as `run.json` in the run folder).
        fit_seconds: wall time of the whole `model.fit` call (compilation,
            validation and callbacks included), for benchmarks.
    """

    entry: dict[str, Any]
    details: dict[str, Any]
    fit_seconds: float


def run_name(initializer: str, activation: str | None, seed: int) -> str:
    """A folder name for the run: the spec made path-safe, the activation if given, the seed.

    >>> run_name("random_uniform(minval=-0.1, maxval=0.1)", None, 0)
    'random_uniform-minval=-0.1-maxval=0.1_seed0'
    """
    slug = re.sub(r"[^\w.=+-]+", "-", initializer).strip("-")
    parts = [slug, activation] if activation else [slug]
    return "_".join([*parts, f"seed{seed}"])


def training_batches(x: Any, y: Any, batch_size: int, seed: int) -> tf.data.Dataset:
    """Shuffled training batches whose order (every epoch's) depends on `seed` only."""
    return (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )


def make_optimizer(name: str, learning_rate: float, momentum: float) -> keras.optimizers.Optimizer:
    """The Keras optimizer `name`; `momentum` applies to those that have one (sgd, rmsprop)."""
    optimizer = keras.optimizers.get(name)
    config = optimizer.get_config()
    config["learning_rate"] = learning_rate
    if "momentum" in config:
        config["momentum"] = momentum
    return optimizer.from_config(config)


def _finite(value: float) -> float | None:
    """JSON has no NaN or inf: a diverged run's numbers become null."""
    return value if math.isfinite(value) else None


def train_run(
    config: ExperimentConfig,
    data: Dataset,
    *,
    initializer: str,
    activation: str,
    seed: int,
    run_dir: Path,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> RunResult:
    """Trains one model and logs it to TensorBoard under `run_dir`.

    Logs at step 0 (before any update) the evaluation on the train and test
    sets and a probe snapshot (histograms too unless `config.histogram_every`
    is 0), then trains with `model.fit`; `callbacks` are added to the fit.
    """
    built = models.initialize_run(
        config,
        input_shape=data.input_shape,
        num_classes=data.num_classes,
        x_sample=data.x_train[:2],
        activation=activation,
        initializer=initializer,
        seed=seed,
    )
    model = built.model
    fallback = config.fallback_initializer if built.fallback_layers else None
    model.compile(
        optimizer=make_optimizer(config.optimizer, config.learning_rate, config.momentum),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    histograms_on = config.histogram_every > 0
    # The same callback a user adds to their own fit: activation, gradient and weight
    # histograms of every layer with a kernel, on a fixed probe batch.
    signals = SignalHistograms(
        data.x_train[: config.probe_size],
        data.y_train[: config.probe_size],
        log_dir=str(run_dir),
        every_n_steps=config.histogram_every or 1,
        loss="sparse_categorical_crossentropy",
        subdir="",
    )
    signals.set_model(model)
    writer = signals.writer
    hparams.write_run(
        writer,
        config,
        run_name=run_dir.name,
        initializer=initializer,
        activation=activation,
        seed=seed,
        fallback=fallback,
    )

    # Step 0, before any update.
    train_eval = model.evaluate(
        data.x_train, data.y_train, batch_size=config.batch_size, verbose=0, return_dict=True
    )
    test_eval = model.evaluate(
        data.x_test, data.y_test, batch_size=config.batch_size, verbose=0, return_dict=True
    )
    monitor = RunMonitor(signals)
    monitor.record(0, {**train_eval, **{f"val_{name}": value for name, value in test_eval.items()}})
    initial = signals.snapshot(0, scalars=True, histograms=histograms_on)

    test_batches = tf.data.Dataset.from_tensor_slices((data.x_test, data.y_test)).batch(
        config.batch_size
    )
    started = time.perf_counter()
    model.fit(
        training_batches(data.x_train, data.y_train, config.batch_size, seed),
        epochs=config.epochs,
        validation_data=test_batches,
        # Signals first: at an epoch's end it may log its scalars, which the monitor then
        # does not log again.
        callbacks=[*([signals] if histograms_on else []), monitor, *callbacks],
        shuffle=False,  # the dataset is already shuffled, reproducibly
        verbose=config.verbose,
    )
    fit_seconds = time.perf_counter() - started

    final = signals.snapshot(
        monitor.step,
        scalars=False,
        histograms=histograms_on and signals.last_step != monitor.step,
    )
    writer.close()

    history = {
        key: values if key in ("step", "epoch") else [_finite(float(v)) for v in values]
        for key, values in monitor.history.items()
    }
    diverged = monitor.diverged_at_step is not None
    entry = {
        "initializer": initializer,
        "activation": activation,
        "seed": seed,
        "status": "diverged" if diverged else "ok",
        "steps": monitor.step,
        "train_seconds": round(monitor.train_seconds, 3),
        "initial_loss": history["loss"][0],
        "final_loss": history["loss"][-1],
        "final_test_loss": history["test_loss"][-1],
        "final_test_accuracy": history["test_accuracy"][-1],
        "diverged_at_step": monitor.diverged_at_step,
        "fallback_layers": list(built.fallback_layers),
    }
    details = {
        "layers": initial.layers,
        "fallback": fallback,
        "fallback_layers": list(built.fallback_layers),
        "history": history,
        "profiles": {
            "initial": {"step": 0, **initial.profile()},
            "final": {"step": monitor.step, **final.profile()},
        },
    }
    return RunResult(entry, details, fit_seconds)
