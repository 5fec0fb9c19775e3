"""A group of runs trained together: the initializers and learning rates of one cell and seed.

The arms of a group differ only in the initializer and the learning rate; they train as
the towers of one compiled model (`experiments.engine.towers`), each with its own
optimizer when it needs one (`experiments.engine.optimizers`), metrics, TensorBoard run,
HParams and histograms, exactly as each would train alone (with `--nogroup_arms` every
group holds one arm).

Everything random is fixed by the seed and independent of the initializer:
`keras.utils.set_random_seed(seed)` seeds Python, NumPy and TensorFlow; the
training batches come in an order drawn from the seed and the epoch (`epoch_order`); each layer's
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
import json
import math
import os
import re
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from experiments import files, models
from experiments.config import Cell, ExperimentConfig
from experiments.data.datasets import Dataset
from experiments.engine import spectra as spectra_lib
from experiments.engine import stacked, strategies, towers
from experiments.engine.evaluation import GroupEvaluation
from experiments.engine.monitor import ArmLog, GroupMonitor
from experiments.engine.optimizers import group_optimizer, make_optimizer
from experiments.engine.snapshots import GroupSnapshots
from experiments.results import hparams
from keras_inits import SignalHistograms
from keras_inits.callbacks import Snapshot

# Each run folder's per-epoch history and layer profiles, for the report.
RUN_DETAILS = "run.json"
# With `config.save_models`, each run folder keeps its arm's model trained (MODEL_FILE) and
# its weights at step 0 (INITIAL_WEIGHTS, loadable into that model): the best arm can be
# reloaded, and every number of the summary recomputed with plain Keras.
MODEL_FILE = "model.keras"
INITIAL_WEIGHTS = "initial.weights.h5"


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What one run produced.

    Attributes:
        entry: the run's `summary.json` fields (JSON-ready; non-finite numbers as None).
        details: per-epoch history and per-layer profiles at step 0 and at the end,
            for the report (saved as `run.json` in the run folder).
        fit_seconds: wall time of the group's whole `model.fit` call (compilation,
            validation and callbacks included), for benchmarks.
    """

    entry: dict[str, Any]
    details: dict[str, Any]
    fit_seconds: float


def run_name(initializer: str, cell: Cell, swept: Sequence[str], seed: int) -> str:
    """A folder name for the run: the spec made path-safe, the swept settings' values, the seed.

    >>> run_name("random_uniform(minval=-0.1, maxval=0.1)", cell, (), 0)
    'random_uniform-minval=-0.1-maxval=0.1_seed0'
    >>> run_name("xavier_normal", cell, ("depth", "activation"), 1)
    'xavier_normal_depth30_relu_seed1'
    """
    parts = [initializer]
    for name in swept:
        value = getattr(cell, name)
        if value is None:  # your own model in a sweep with built-ins: no depth of its own
            continue
        # Models, activations, optimizers and parametrizations are names already; numbers
        # need theirs.
        named = name in ("model", "activation", "optimizer", "parametrization")
        parts.append(str(value) if named else f"{name}{value}")
    slugs = [re.sub(r"[^\w.=+-]+", "-", str(part)).strip("-") for part in parts]
    return "_".join([*slugs, f"seed{seed}"])


def epoch_order(size: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the `size` training examples in `epoch` (from 0): a permutation drawn
    from (`seed`, `epoch`) alone."""
    return np.random.default_rng((seed, epoch)).permutation(size)


def training_batches(x: Any, y: Any, batch_size: int, seed: int, epochs: int) -> tf.data.Dataset:
    """Every epoch's shuffled batches, one epoch after the other (fit it with
    `steps_per_epoch=batches_per_epoch(len(x), batch_size)`).

    Epoch e visits the examples in `epoch_order(len(x), seed, e)`. The order is
    computed up front rather than by a `tf.data` shuffle, whose seed state a
    distribution strategy does not preserve when it rebatches the dataset: this way
    one device and several see the same global batches.
    """
    orders = np.stack([epoch_order(len(x), seed, epoch) for epoch in range(epochs)])
    features, labels = tf.convert_to_tensor(x), tf.convert_to_tensor(y)
    return untuned(
        tf.data.Dataset.from_tensor_slices(orders.astype(np.int32))
        .flat_map(lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size))
        .map(lambda batch: (tf.gather(features, batch), tf.gather(labels, batch)))
        .prefetch(2)
    )


def untuned(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """`dataset` without tf.data's autotuning. Deleting an autotuned iterator waits for
    its tuning thread to wake up: 8 to 10 s at the end of 2 fits in 3 on this machine
    (seen in `model.fit`'s return, blocked in `~RootDataset::Iterator`). These pipelines
    only gather a batch of arrays; they need no tuning."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def batches_per_epoch(size: int, batch_size: int) -> int:
    """Steps in an epoch of `size` examples (the last batch may be smaller)."""
    return math.ceil(size / batch_size)


def _finite(value: float) -> float | None:
    """JSON has no NaN or inf: a diverged run's numbers become null."""
    return value if math.isfinite(value) else None


@dataclasses.dataclass(frozen=True)
class Arm:
    """One run of a group: its initializer spec, its TensorBoard run folder and its learning
    rate (None: the group cell's)."""

    initializer: str
    run_dir: str
    learning_rate: float | None = None

    def cell(self, group_cell: Cell) -> Cell:
        """The arm's own cell: the group's, at the arm's learning rate."""
        if self.learning_rate is None:
            return group_cell
        return dataclasses.replace(group_cell, learning_rate=self.learning_rate)


def steps_per_execution(config: ExperimentConfig, cell: Cell, train_size: int) -> int:
    """Steps per call of the train function: `towers.STEPS_PER_EXECUTION`, cut to divide
    `histogram_every` and the epoch's steps, so that snapshots land on their multiples
    exactly (a snapshot is taken between calls). Under a distribution strategy, 1: Keras's
    multi-step loop fails there (TF 2.21: "You must feed a value for placeholder tensor")."""
    if config.strategy != "none":
        return 1
    steps = math.gcd(towers.STEPS_PER_EXECUTION, batches_per_epoch(train_size, cell.batch_size))
    return math.gcd(steps, config.histogram_every) if config.histogram_every else steps


def train_group(
    config: ExperimentConfig,
    data: Dataset,
    *,
    cell: Cell,
    seed: int,
    arms: Sequence[Arm],
    callbacks: Sequence[keras.callbacks.Callback] = (),
    built: Sequence[models.Initialized | None] = (),
) -> list[RunResult]:
    """Trains the arms together and logs each to TensorBoard under its `run_dir`.

    Whatever an interrupted earlier run left in a `run_dir` is removed first (it would
    mix into the curves). Logs at step 0 (before any update) each arm's evaluation on
    the train and test sets and a probe snapshot (histograms too unless
    `config.histogram_every` is 0), then trains with one `model.fit`; `callbacks` are
    added to the fit. Each run's details are written to `run_dir/run.json` at the end.
    `built` may hold arms' models already built and initialized for `cell` and `seed`
    (`models.initialize_run`'s, untrained), in arm order; None (or none given): built here.
    """
    for arm in arms:
        files.remove_tree(arm.run_dir)
    given = list(built) or [None] * len(arms)
    built = [
        done or models.initialize_run(config, cell, data, initializer=arm.initializer, seed=seed)
        for arm, done in zip(arms, given, strict=True)
    ]
    # Whatever random state the builds left (fewer when some were given) is set anew.
    keras.utils.set_random_seed(seed)
    if config.save_models:
        for arm, initialized in zip(arms, built, strict=True):
            _save(initialized.model.save_weights, arm.run_dir, INITIAL_WEIGHTS)
    cells = [arm.cell(cell) for arm in arms]
    with strategies.scope(config.strategy):
        optimizer = group_optimizer(
            [b.model for b in built],
            [own.learning_rate for own in cells],
            lambda rate: make_optimizer(
                cell.optimizer, rate, config.momentum, config.clipnorm, config.global_clipnorm
            ),
        )
        engine = _engine(
            [b.model for b in built], data.input_shape, optimizer, data.x_train.dtype.name
        )
        group = engine.model
        towers.compile_group(
            group, optimizer, steps_per_execution(config, cell, len(data.x_train))
        )
    histograms_on = config.histogram_every > 0
    logs = []
    for arm, own, initialized in zip(arms, cells, built, strict=True):
        # The same callback a user adds to their own fit, used here for its snapshots:
        # activation, gradient and weight histograms of every layer with a kernel of
        # the arm's tower, on a fixed probe batch.
        signals = SignalHistograms(
            data.x_train[: config.probe_size],
            data.y_train[: config.probe_size],
            log_dir=str(arm.run_dir),
            every_n_steps=config.histogram_every or 1,
            loss=towers.LOSS,
            subdir="",
        )
        signals.set_model(initialized.model)
        hparams.write_run(
            signals.writer,
            config,
            own,
            run_name=os.path.basename(arm.run_dir),
            initializer=arm.initializer,
            seed=seed,
            fallback=config.fallback_initializer if initialized.fallback_layers else None,
        )
        logs.append(ArmLog(initialized.model.name, signals))
    names = [log.name for log in logs]
    snapshots = GroupSnapshots(engine, names, [log.signals for log in logs])

    # Step 0, before any update.
    evaluation = GroupEvaluation(group, names, max(cell.batch_size, engine.evaluation_batch))
    train_logs = evaluation(data.x_train, data.y_train)
    test_logs = evaluation(data.x_test, data.y_test)
    for log in logs:
        test = {f"val_{key}": value for key, value in test_logs[log.name].items()}
        log.record(0, 0, {**train_logs[log.name], **test})
    initial = snapshots.take(0, names, scalars=True, histograms=histograms_on)
    spectra = [
        spectra_lib.initial_spectrum(
            initialized.model, data.x_train[: config.jacobian_spectrum], log.writer
        ) if config.jacobian_spectrum else None
        for initialized, log in zip(built, logs, strict=True)
    ]

    # XLA for the train step only (Keras's own rule keeps it off under a distribution
    # strategy); the evaluations run a few dozen batches of two shapes.
    group.jit_compile = engine.jit_compile and config.strategy == "none"
    monitor = GroupMonitor(
        logs,
        config.histogram_every,
        engine,
        snapshots,
        validate=lambda: evaluation(data.x_test, data.y_test),
    )
    started = time.perf_counter()
    group.fit(
        training_batches(data.x_train, data.y_train, cell.batch_size, seed, config.epochs),
        epochs=config.epochs,
        steps_per_epoch=batches_per_epoch(len(data.x_train), cell.batch_size),
        callbacks=[monitor, *callbacks],
        shuffle=False,  # the dataset is already shuffled, reproducibly
        verbose=config.verbose,
    )
    fit_seconds = time.perf_counter() - started
    # The trained models on the whole training set, as at step 0: Keras's epoch loss is a
    # running mean over the epoch's batches, taken while the weights moved.
    final_train = evaluation(data.x_train, data.y_train)

    engine.sync(names)
    if config.save_models:
        for arm, initialized in zip(arms, built, strict=True):
            _save(initialized.model.save, arm.run_dir, MODEL_FILE)
    finals = _final_snapshots(monitor, snapshots, histograms_on)
    results = []
    for arm, own, initialized, log, spectrum in zip(arms, cells, built, logs, spectra,
                                                     strict=True):
        log.writer.close()
        step = monitor.arm_step(log)
        first, final = initial[log.name], finals[log.name]
        entry, details = _result(arm, own, seed, initialized, log, step, first, final, monitor,
                                 config, data.prior_loss, final_train[log.name]["loss"])
        if spectrum is not None:
            entry["jacobian_mean_squared"] = spectrum["mean_squared"]
            entry["jacobian_variance_squared"] = spectrum["variance_squared"]
            details["jacobian_spectrum"] = spectrum
        results.append((entry, details))
    for arm, (_, details) in zip(arms, results, strict=True):
        files.write_text(files.join(arm.run_dir, RUN_DETAILS), json.dumps(details) + "\n")
    return [RunResult(entry, details, fit_seconds) for entry, details in results]


def _final_snapshots(
    monitor: GroupMonitor, snapshots: GroupSnapshots, histograms_on: bool
) -> dict[str, Snapshot]:
    """Each arm's signals at its last step, by tower name, its histograms logged unless
    they were at that step: the live arms' in one call, a diverged arm's from its own
    model, which holds its weights when it diverged."""
    finals = {}
    live = [log.name for log in monitor.live()]
    if live:  # they share their snapshots' steps
        logged = snapshots.last_histograms.get(live[0]) == monitor.step
        finals = snapshots.take(
            monitor.step, live, scalars=False, histograms=histograms_on and not logged
        )
    for log in monitor.arms:
        if log.name not in finals:
            step = monitor.arm_step(log)
            logged = snapshots.last_histograms.get(log.name) == step
            finals[log.name] = log.signals.snapshot(
                step, scalars=False, histograms=histograms_on and not logged
            )
    return finals


def _save(write: Callable[[str], Any], run_dir: str, name: str) -> None:
    """`write(path)` into `run_dir/name`: a model's `save` or `save_weights`.

    A model Keras cannot serialize (a layer of your own without `get_config`) costs a
    warning, not the run: its logs and numbers are kept.
    """
    files.makedirs(run_dir)
    path = files.join(run_dir, name)
    try:
        write(path)
    except (NotImplementedError, TypeError, ValueError) as error:
        # Keras's message spans lines and ends with an example class: its first part says it.
        reason = " ".join(str(error).split("Example:")[0].split())
        files.remove(path)  # Keras leaves a partial archive behind
        warnings.warn(
            f"{path} not saved ({reason}); give your layers a get_config, or pass "
            "--nosave_models.",
            stacklevel=2,
        )


def _engine(
    arms: Sequence[keras.Model],
    input_shape: tuple[int, ...],
    optimizer: keras.optimizers.Optimizer,
    dtype: str = "float32",
) -> towers.Towers | stacked.StackedArms:
    """Stacked when the arms are MLPs of one shape and the optimizer updates each weight on
    its own (`stacked.can_stack`) and the stack reproduces every arm; else towers (fed
    inputs of `dtype`)."""
    if dtype == "float32" and stacked.can_stack(arms, optimizer):
        stack = stacked.StackedArms(arms, input_shape)
        if stack.matches_arms():
            return stack
    return towers.Towers(arms, input_shape, dtype)


def _result(
    arm: Arm,
    cell: Cell,
    seed: int,
    initialized: models.Initialized,
    log: ArmLog,
    step: int,
    initial: Any,
    final: Any,
    monitor: GroupMonitor,
    config: ExperimentConfig,
    prior_loss: float,
    final_train_loss: float,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One arm's summary entry and details (with the training labels' `prior_loss`, the
    baseline a model that ignores its inputs reaches, and the trained model's loss on the
    training set, `final_train_loss`)."""
    history = {
        key: values if key in ("step", "epoch") else [_finite(float(v)) for v in values]
        for key, values in log.history.items()
    }
    fallback_layers = list(initialized.fallback_layers)
    entry = {
        "initializer": arm.initializer,
        "seed": seed,
        **cell.values(),
        "status": "ok" if log.diverged_at_step is None else "diverged",
        "steps": step,
        "train_seconds": round(monitor.train_seconds, 3),
        "histogram_seconds": round(monitor.snapshot_seconds, 3),
        "group_size": len(monitor.arms),
        "engine": monitor.engine.name,
        "initial_loss": history["loss"][0],
        "final_loss": history["loss"][-1],
        "final_train_loss": (
            _finite(float(final_train_loss)) if log.diverged_at_step is None else None
        ),
        "final_test_loss": history["test_loss"][-1],
        "final_test_accuracy": history["test_accuracy"][-1],
        "diverged_at_step": log.diverged_at_step,
        "fallback_layers": fallback_layers,
        "error": None,  # see runner.failed_entry
    }
    details = {
        "layers": initial.layers,
        "fallback": config.fallback_initializer if fallback_layers else None,
        "fallback_layers": fallback_layers,
        "prior_loss": prior_loss,
        "history": history,
        "profiles": {
            "initial": {"step": 0, **initial.profile()},
            "final": {"step": step, **final.profile()},
        },
    }
    return entry, details
