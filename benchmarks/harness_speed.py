"""The harness's fixed costs: whole comparisons against their own bare training steps.

Three workloads, each run whole through the harness and as its bare steps:

- `lesson`: the 1-seed lesson comparison (6 initializers, a 5 x 256 tanh MLP, histograms
  every 100 steps): the arms train as one stack (`experiments.engine.stacked`);
- `ten arms`: the same MLP and data with ten arms, ten gains of `xavier_normal`: the
  group size of a learning-rate or sigma_w sweep;
- `towers`: a 6-arm group of a 32-layer vanilla tanh CNN (32 tanh 3x3 convolutions,
  `experiments.papers.architectures:tanh_cnn_32`, the xiao2018 preset's network at a
  quarter of its depth) on 2,048 Shapeset images, trained as towers
  (`experiments.engine.towers`, the engine of every architecture that does not stack).

`harness` is `experiments.runner.compare` timed from its call to its return: data,
models, step-0 evaluation and snapshot, training with per-epoch metrics and periodic
histograms, saved models, summary and report. `bare steps` is the least any engine
does: the same arms' training steps and nothing else (no metrics, evaluation,
histograms, saving or report), hand-written in TensorFlow: SGD with momentum on the
sum of the arms' losses, one compiled loop per epoch, over the same batches in the same
order; the MLP arms stacked (`kernel (arms, in, out)`, XLA), the CNN arms side by side
(no XLA, as the towers). Its final losses are printed next to the harness's: both do the
same work. The variants alternate (`--repeats` rounds), after one untimed run of each on
a tiny set, so that machine noise and the process's start-up costs fall on neither.

Targets: `harness` within 1.5x of `bare steps` for `lesson` and `ten arms`. A second
table splits the harness's time into its parts (medians over the rounds).

Usage: KERAS_BACKEND=tensorflow python benchmarks/harness_speed.py [--repeats=3]
       [--workloads=lesson,ten arms,towers] [--plain]   (--plain: also the lesson as a
       plain Keras loop, one `fit` per initializer with `TensorBoard(histogram_freq=1)`)
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import functools
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

import keras
import numpy as np
import tensorflow as tf

from experiments import config as config_lib
from experiments import models, runner
from experiments.data import datasets as data_lib
from experiments.engine import evaluation, snapshots, training
from experiments.results import report

TEN_GAINS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0)
TOWER_INITIALIZERS = (
    "delta_orthogonal", "lecun_normal", "orthogonal", "xavier_normal", "kaiming_normal",
    "random_normal(stddev=0.1)",
)


def workloads() -> dict[str, config_lib.ExperimentConfig]:
    lesson = config_lib.resolve(seeds=(0,), verbose=0, overwrite=True)
    return {
        "lesson": lesson,
        "ten arms": dataclasses.replace(
            lesson,
            experiment="ten_arms",
            initializers=tuple(f"xavier_normal(gain={gain})" for gain in TEN_GAINS),
        ),
        "towers": config_lib.resolve(
            preset="xiao2018",
            # The workload measured before xiao2018 went to 128 layers on MNIST digits.
            model=("experiments.papers.architectures:tanh_cnn_32",),
            dataset="shapeset",
            learning_rate=(0.01,),
            initializers=TOWER_INITIALIZERS,
            seeds=(0,),
            train_size=2048,
            test_size=512,
            epochs=2,
            histogram_every=32,
            verbose=0,
            overwrite=True,
        ),
    }


FIT = "fit: the steps (and Keras's per-step metrics)"
# The harness's parts timed in the breakdown: (module or class, function, label).
PARTS = (
    (data_lib, "load", "data"),
    (runner, "_check_initializers_fit", "models built to check they fit"),
    (models, "initialize_run", "models built and initialized"),
    (training, "_engine", "group engine built"),
    (training, "_save", "models saved"),
    (keras.Model, "fit", FIT),
    (report, "write", "report (figures)"),
)


@contextlib.contextmanager
def timed_parts() -> Iterator[dict[str, float]]:
    """The seconds spent in each of `PARTS` (and in the first and the other snapshots)
    while the block runs."""
    seconds: dict[str, float] = collections.defaultdict(float)
    running: set[str] = set()
    patches = []

    def timer(function: Callable, label: str) -> Callable:
        @functools.wraps(function)
        def timed(*args, **kwargs):
            started = time.perf_counter()
            running.add(label)
            try:
                return function(*args, **kwargs)
            finally:
                running.discard(label)
                seconds[label] += time.perf_counter() - started

        return timed

    for owner, name, label in PARTS:
        patches.append(mock.patch.object(owner, name, timer(getattr(owner, name), label)))
    take = snapshots.GroupSnapshots.take

    def take_timed(self, *args, **kwargs):
        first = self._compiled is None
        label = "snapshot: the first (tracing)" if first else "snapshots: the others"
        return timer(take, label)(self, *args, **kwargs)

    patches.append(mock.patch.object(snapshots.GroupSnapshots, "take", take_timed))
    evaluate = evaluation.GroupEvaluation.__call__

    def evaluate_timed(self, *args, **kwargs):
        # Within fit: the test set after each epoch.
        within_fit = FIT in running
        label = "validation (each epoch)" if within_fit else "step-0 evaluation"
        return timer(evaluate, label)(self, *args, **kwargs)

    patches.append(mock.patch.object(evaluation.GroupEvaluation, "__call__", evaluate_timed))
    with contextlib.ExitStack() as stack:
        for patch in patches:
            stack.enter_context(patch)
        yield seconds


def harness(
    settings: config_lib.ExperimentConfig, logdir: Path
) -> tuple[float, float, list[float], dict[str, float]]:
    """Seconds of one whole comparison through the harness, its training loop's seconds
    per arm and step (`train_seconds / steps / arms`), the runs' final training losses
    and the seconds of each part, with the histograms' overhead on the training loop
    (`train_seconds / (train_seconds - histogram_seconds)`) as the part "histograms x"."""
    with timed_parts() as parts:
        started = time.perf_counter()
        entries = runner.compare(
            dataclasses.replace(settings, logdir=str(logdir)), progress=lambda _: None
        )
        seconds = time.perf_counter() - started
    parts = dict(parts)
    # Within fit, timed on their own: the periodic snapshots and the validations.
    for inner in ("snapshots: the others", "validation (each epoch)"):
        parts[FIT] -= parts.get(inner, 0.0)
    per_arm_step = [e["train_seconds"] / e["steps"] / e["group_size"] for e in entries]
    first = entries[0]
    parts["histograms x"] = first["train_seconds"] / (
        first["train_seconds"] - first["histogram_seconds"]
    )
    return seconds, statistics.median(per_arm_step), [e["final_loss"] for e in entries], parts


def bare_steps(
    settings: config_lib.ExperimentConfig, dataset: data_lib.Dataset
) -> tuple[float, float, list[float]]:
    """Seconds of the comparison's training steps alone, hand-written (see the module
    docstring), the seconds per arm and step of their loop alone (after compilation),
    and each run's mean training loss over the last epoch."""
    cell = settings.cells()[0]
    started = time.perf_counter()
    arms = [
        models.initialize_run(settings, cell, dataset, initializer=spec, seed=0).model
        for spec in settings.initializers
    ]
    batches = training.training_batches(
        dataset.x_train, dataset.y_train, cell.batch_size, 0, settings.epochs
    )
    steps = training.batches_per_epoch(len(dataset.x_train), cell.batch_size)
    train = _stacked_mlp_step(arms, cell, settings) if cell.model == "mlp" else (
        _towers_step(arms, cell, settings)
    )

    @tf.function
    def epoch(iterator):
        total = tf.zeros([len(arms)])
        for _ in tf.range(steps):
            x, y = next(iterator)
            total += train(x, y) * tf.cast(tf.shape(y)[0], tf.float32)
        return total / len(dataset.x_train)

    iterator = iter(batches)
    loop = 0.0
    for index in range(settings.epochs):
        epoch_started = time.perf_counter()
        losses = epoch(iterator).numpy()
        if index:  # the first epoch holds the tracing and compilation
            loop += time.perf_counter() - epoch_started
    seconds = time.perf_counter() - started
    per_arm_step = loop / max(settings.epochs - 1, 1) / steps / len(arms)
    return seconds, per_arm_step, [float(loss) for loss in losses]


def _stacked_mlp_step(arms, cell, settings) -> Callable:
    """SGD with momentum on the MLP arms' Dense layers, stacked, XLA-compiled."""
    layers = [
        [layer for layer in arm.layers if isinstance(layer, keras.layers.Dense)] for arm in arms
    ]
    depth = len(layers[0])
    kernels = [tf.Variable(np.stack([a[i].kernel.numpy() for a in layers])) for i in range(depth)]
    biases = [
        tf.Variable(np.stack([a[i].bias.numpy() for a in layers])[:, None]) for i in range(depth)
    ]
    weights = kernels + biases
    velocities = [tf.Variable(tf.zeros_like(w)) for w in weights]
    activation = keras.activations.get(cell.activation)

    @tf.function(jit_compile=True)
    def step(x, y):
        x = tf.reshape(x, (tf.shape(x)[0], -1))
        # The input copied per arm: of the forms tried (an einsum, one product with every
        # arm's columns side by side), XLA runs this batched product fastest here.
        x = tf.broadcast_to(x[None], tf.concat([[len(arms)], tf.shape(x)], axis=0))
        with tf.GradientTape() as tape:
            hidden = tf.matmul(x, kernels[0]) + biases[0]
            for kernel, bias in zip(kernels[1:], biases[1:], strict=True):
                hidden = tf.matmul(activation(hidden), kernel) + bias
            labels = tf.broadcast_to(y[None], tf.shape(hidden)[:2])
            losses = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels, hidden), axis=1
            )
            total = tf.reduce_sum(losses)
        _momentum_step(tape.gradient(total, weights), weights, velocities, cell, settings)
        return losses

    return step


def _towers_step(arms, cell, settings) -> Callable:
    """SGD with momentum on the arms side by side (any architecture), no XLA."""
    weights = [w.value for arm in arms for w in arm.trainable_weights]
    velocities = [tf.Variable(tf.zeros_like(w)) for w in weights]

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            losses = tf.stack([
                tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, arm(x)))
                for arm in arms
            ])
            total = tf.reduce_sum(losses)
        _momentum_step(tape.gradient(total, weights), weights, velocities, cell, settings)
        return losses

    return step


def _momentum_step(gradients, weights, velocities, cell, settings) -> None:
    """Keras's SGD with momentum (not Nesterov)."""
    for weight, velocity, gradient in zip(weights, velocities, gradients, strict=True):
        velocity.assign(velocity * settings.momentum - gradient * cell.learning_rate)
        weight.assign_add(velocity)


def plain_keras(
    settings: config_lib.ExperimentConfig, dataset: data_lib.Dataset, logdir: Path
) -> float:
    """Seconds of the comparison as a Keras user's loop: per initializer, build, `compile`
    with Keras's defaults, `fit` with the test set as validation data and
    `keras.callbacks.TensorBoard(histogram_freq=1)` (progress bar to /dev/null)."""
    cell = settings.cells()[0]
    started = time.perf_counter()
    for index, spec in enumerate(settings.initializers):
        model = models.initialize_run(settings, cell, dataset, initializer=spec, seed=0).model
        model.compile(
            optimizer=training.make_optimizer(
                cell.optimizer, cell.learning_rate, settings.momentum
            ),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
            model.fit(
                training.training_batches(
                    dataset.x_train, dataset.y_train, cell.batch_size, 0, settings.epochs
                ),
                epochs=settings.epochs,
                steps_per_epoch=training.batches_per_epoch(
                    len(dataset.x_train), cell.batch_size
                ),
                validation_data=(dataset.x_test, dataset.y_test),
                shuffle=False,  # the batches are in their order already
                callbacks=[
                    keras.callbacks.TensorBoard(str(logdir / str(index)), histogram_freq=1)
                ],
            )
    return time.perf_counter() - started


def matmul_gflops(size: int = 2048, calls: int = 10) -> float:
    """The float32 rate of a large matrix product: about the best these cores reach."""
    a = tf.random.normal((size, size))
    product = tf.function(lambda: tf.linalg.matmul(a, a))
    product().numpy()
    started = time.perf_counter()
    for _ in range(calls):
        result = product()
    result.numpy()
    return 2 * size**3 * calls / (time.perf_counter() - started) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workloads", default="lesson,ten arms,towers")
    parser.add_argument("--plain", action="store_true", help="also the plain Keras loop")
    args = parser.parse_args()
    chosen = {name: settings for name, settings in workloads().items()
              if name in args.workloads.split(",")}
    data = {
        name: data_lib.load(s.dataset, s.train_size, s.test_size) for name, s in chosen.items()
    }
    print(f"a 2048x2048 float32 matmul runs at {matmul_gflops():.0f} GFLOP/s here; "
          f"medians of {args.repeats} alternating rounds")
    # One-time costs of the process (TensorFlow's and XLA's start-up, matplotlib's
    # import) would fall on whichever variant runs first: pay them on tiny runs first.
    with tempfile.TemporaryDirectory() as root:
        for name, settings in chosen.items():
            tiny = dataclasses.replace(settings, train_size=256, test_size=64, epochs=1)
            harness(tiny, Path(root) / name)
            bare_steps(tiny, data_lib.load(tiny.dataset, tiny.train_size, tiny.test_size))
    times = {name: collections.defaultdict(list) for name in chosen}
    arm_steps = {name: collections.defaultdict(list) for name in chosen}
    parts = {name: collections.defaultdict(list) for name in chosen}
    finals: dict[str, dict[str, list[float]]] = {name: {} for name in chosen}
    with tempfile.TemporaryDirectory() as root:
        for repeat in range(args.repeats):
            for name, settings in chosen.items():
                seconds, per_step, finals[name]["harness"], split = harness(
                    settings, Path(root) / f"{name}{repeat}"
                )
                times[name]["harness"].append(seconds)
                arm_steps[name]["harness"].append(per_step)
                for part, value in split.items():
                    parts[name][part].append(value)
                seconds, per_step, finals[name]["bare steps"] = bare_steps(settings, data[name])
                times[name]["bare steps"].append(seconds)
                arm_steps[name]["bare steps"].append(per_step)
                if args.plain and name == "lesson":
                    times[name]["plain keras"].append(
                        plain_keras(settings, data[name], Path(root) / f"plain{repeat}")
                    )
                done = ", ".join(f"{v} {s[-1]:.1f} s" for v, s in times[name].items())
                print(f"  round {repeat + 1}, {name}: {done}", flush=True)

    # The ratio of each round's pair, side by side in time, is steadier on a shared machine
    # than the ratio of the medians; both are printed.
    print(f"\n{'':<10}{'arms':>5}{'steps':>7}{'harness s':>11}{'bare s':>8}{'ratio':>7}"
          f"{'per round':>11}{'harness ms/arm-step':>21}{'bare':>6}")
    for name, settings in chosen.items():
        median = {variant: statistics.median(values) for variant, values in times[name].items()}
        per_step = {v: statistics.median(values) * 1000 for v, values in arm_steps[name].items()}
        pairs = zip(times[name]["harness"], times[name]["bare steps"], strict=True)
        rounds = [harness_seconds / bare for harness_seconds, bare in pairs]
        cell = settings.cells()[0]
        steps = settings.epochs * training.batches_per_epoch(settings.train_size, cell.batch_size)
        print(f"{name:<10}{len(settings.initializers):>5}{steps:>7}{median['harness']:>11.1f}"
              f"{median['bare steps']:>8.1f}{median['harness'] / median['bare steps']:>6.2f}x"
              f"{statistics.median(rounds):>10.2f}x"
              f"{per_step['harness']:>21.2f}{per_step['bare steps']:>6.2f}")
        if "plain keras" in median:
            print(f"{'':<10}plain Keras loop: {median['plain keras']:.1f} s "
                  f"({median['plain keras'] / median['bare steps']:.2f}x the bare steps)")
    for name in chosen:
        print(f"\n{name}: the harness's parts (median s)")
        overhead = statistics.median(parts[name].pop("histograms x"))
        for part, values in sorted(parts[name].items(), key=lambda kv: -statistics.median(kv[1])):
            print(f"  {part:<40}{statistics.median(values):>7.2f}")
        print(f"  histograms' overhead on the training loop (train_seconds over train_seconds "
              f"less histogram_seconds): {overhead:.2f}x")
        print("  final training losses (last round):")
        for variant, losses in finals[name].items():
            print(f"    {variant:<12}" + ", ".join(f"{loss:.4f}" for loss in losses))


if __name__ == "__main__":
    main()
