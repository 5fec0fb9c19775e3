"""The harness against the loop a Keras user would write for the same comparison.

All variants compare the lesson's initializers on the same 5 x 256 tanh MLP, the
same Shapeset batches in the same order and the same number of epochs, each timed
from building the first model to the end of its logging:

- `harness`: `experiments.runner.compare` with the lesson's settings and `--seeds`
  (default one seed): the arms of a seed train together as one stack
  (`experiments.engine.stacked`), with activation, gradient and weight histograms of every
  layer every 100 steps, per-epoch metrics, HParams, summary and report.
- `harness, towers`: the same, the arms trained as towers of one model
  (`experiments.engine.towers`, the engine of every architecture that does not stack).
- `plain keras`: for each initializer, build the same model, `compile` with
  Keras's defaults (the same optimizer, loss and accuracy metric), `fit` with the
  test set as validation data and `keras.callbacks.TensorBoard(histogram_freq=1)`
  (weight histograms once per epoch). Keras's progress bar goes to /dev/null.
- `steps alone`: the least any engine does: the training steps and nothing else
  (no metrics, evaluation, histograms or report), hand-written in TensorFlow: the
  six arms' layers stacked, one XLA-compiled loop of SGD-with-momentum steps per
  epoch. Its final losses are printed next to the harness's, to show it does the
  same work.

The variants alternate (`--repeats` rounds), so that machine noise hits them alike;
the table gives each one's median and its speed-up over the plain loop. Target:
the harness at least 4x faster. `plain keras` over `steps alone` bounds what any
engine with the same steps can reach on this machine.

Usage: KERAS_BACKEND=tensorflow python benchmarks/harness_speed.py [--repeats=3] [--seeds=0]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

import keras
import numpy as np
import tensorflow as tf

from experiments import config as config_lib
from experiments import models, runner
from experiments.data import datasets as data_lib
from experiments.engine import towers, training

VARIANTS = ("harness", "harness, towers", "plain keras", "steps alone")


def harness(
    settings: config_lib.ExperimentConfig, logdir: Path, engine: str = "stacked"
) -> tuple[float, float, list[float]]:
    """Seconds of one whole comparison through the harness, its training loop's seconds
    per arm and step (`train_seconds` of a group / steps / arms), and the runs' final
    losses. `engine="towers"` trains the arms as towers even though they stack."""
    towers_only = mock.patch.object(
        training, "_engine", lambda arms, shape, optimizer: towers.Towers(arms, shape)
    )
    started = time.perf_counter()
    with towers_only if engine == "towers" else contextlib.nullcontext():
        entries = runner.compare(
            dataclasses.replace(settings, logdir=str(logdir)), progress=lambda _: None
        )
    seconds = time.perf_counter() - started
    per_arm_step = [e["train_seconds"] / e["steps"] / e["group_size"] for e in entries]
    return seconds, statistics.median(per_arm_step), [e["final_loss"] for e in entries]


def steps_alone(
    settings: config_lib.ExperimentConfig, dataset: data_lib.Dataset
) -> tuple[float, list[float]]:
    """Seconds of the comparison's training steps alone, hand-written (see the module
    docstring), and each run's mean training loss over the last epoch."""
    cell = settings.cells()[0]
    started = time.perf_counter()
    finals = []
    for seed in settings.seeds:
        arms = [
            models.initialize_run(settings, cell, dataset, initializer=spec, seed=seed).model
            for spec in settings.initializers
        ]
        batches = training.training_batches(
            dataset.x_train, dataset.y_train, cell.batch_size, seed, settings.epochs
        )
        finals += _train_by_hand(arms, batches, cell, settings, len(dataset.x_train))
    return time.perf_counter() - started, finals


def _train_by_hand(arms, batches, cell, settings, size: int) -> list[float]:
    """SGD with momentum on the arms' Dense layers, stacked; the last epoch's mean losses."""
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
    steps = training.batches_per_epoch(size, cell.batch_size)

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
        gradients = tape.gradient(total, weights)
        for weight, velocity, gradient in zip(weights, velocities, gradients, strict=True):
            # Keras's SGD with momentum (not Nesterov).
            velocity.assign(velocity * settings.momentum - gradient * cell.learning_rate)
            weight.assign_add(velocity)
        return losses

    @tf.function
    def epoch(iterator):
        total = tf.zeros([len(arms)])
        for _ in tf.range(steps):
            x, y = next(iterator)
            total += step(x, y) * tf.cast(tf.shape(y)[0], tf.float32)
        return total / size

    iterator = iter(batches)
    for _ in range(settings.epochs):
        losses = epoch(iterator)
    return [float(loss) for loss in losses]


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


def plain_keras(
    settings: config_lib.ExperimentConfig, dataset: data_lib.Dataset, logdir: Path
) -> float:
    """Seconds of the same comparison as a Keras user's loop (see the module docstring)."""
    cell = settings.cells()[0]
    started = time.perf_counter()
    for seed in settings.seeds:
        for index, spec in enumerate(settings.initializers):
            model = models.initialize_run(
                settings, cell, dataset, initializer=spec, seed=seed
            ).model
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
                        dataset.x_train, dataset.y_train, cell.batch_size, seed, settings.epochs
                    ),
                    epochs=settings.epochs,
                    steps_per_epoch=training.batches_per_epoch(
                        len(dataset.x_train), cell.batch_size
                    ),
                    validation_data=(dataset.x_test, dataset.y_test),
                    shuffle=False,  # the batches are in their order already
                    callbacks=[
                        keras.callbacks.TensorBoard(
                            str(logdir / f"{index}_seed{seed}"), histogram_freq=1
                        )
                    ],
                )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seeds", default="0", help="comma-separated, as the harness takes")
    args = parser.parse_args()
    seeds = tuple(int(seed) for seed in args.seeds.split(","))
    settings = config_lib.resolve(seeds=seeds, verbose=0, overwrite=True)
    dataset = data_lib.load(settings.dataset, settings.train_size, settings.test_size)
    steps = settings.epochs * -(-settings.train_size // settings.batch_size[0])
    runs = len(settings.initializers) * len(seeds)
    print(
        f"lesson: {runs} runs ({len(settings.initializers)} initializers x {len(seeds)} "
        f"seed(s)) of a 5x256 tanh MLP, {steps} steps each, histograms every "
        f"{settings.histogram_every} steps; medians of {args.repeats} alternating repeats"
    )
    # One-time costs of the process (TensorFlow's and XLA's start-up, matplotlib's
    # import) would fall on whichever variant runs first: pay them on a tiny run first.
    tiny = dataclasses.replace(settings, train_size=320, test_size=64, epochs=1)
    tiny_data = data_lib.load(tiny.dataset, tiny.train_size, tiny.test_size)
    with tempfile.TemporaryDirectory() as root:
        harness(tiny, Path(root) / "stacked")
        harness(tiny, Path(root) / "towers", "towers")
        plain_keras(tiny, tiny_data, Path(root) / "plain")
        steps_alone(tiny, tiny_data)
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    arm_steps: dict[str, list[float]] = {"harness": [], "harness, towers": []}
    final_losses: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as root:
        for repeat in range(args.repeats):
            for name in ("harness", "harness, towers"):
                engine = "towers" if name.endswith("towers") else "stacked"
                seconds, per_arm_step, final_losses[name] = harness(
                    settings, Path(root) / f"{engine}{repeat}", engine
                )
                times[name].append(seconds)
                arm_steps[name].append(per_arm_step)
            times["plain keras"].append(
                plain_keras(settings, dataset, Path(root) / f"plain{repeat}")
            )
            seconds, final_losses["steps alone"] = steps_alone(settings, dataset)
            times["steps alone"].append(seconds)
            done = ", ".join(f"{name} {values[-1]:.1f} s" for name, values in times.items())
            print(f"  repeat {repeat + 1}: {done}", flush=True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"{'':<17}{'median s':>10}{'s per run':>11}{'vs plain':>10}")
    for name, median in medians.items():
        ratio = medians["plain keras"] / median
        print(f"{name:<17}{median:>10.1f}{median / runs:>11.1f}{ratio:>9.2f}x")
    print("\nfinal training losses (the last round's):")
    for name, losses in final_losses.items():
        gap = max(abs(a - b) for a, b in zip(losses, final_losses["harness"], strict=True))
        values = ", ".join(f"{value:.4f}" for value in losses)
        print(f"  {name:<17}{values}  (largest difference from the harness: {gap:.1e})")
    cell = settings.cells()[0]
    model = models.build(
        "mlp",
        input_shape=dataset.input_shape,
        num_classes=dataset.num_classes,
        depth=cell.depth,
        width=cell.width,
        activation=cell.activation,
        initializer="xavier_normal",
        seed=0,
    )
    flops = 6 * cell.batch_size * sum(int(np.prod(w.shape)) for w in model.weights)
    peak = matmul_gflops()
    per_arm_step = {name: statistics.median(values) for name, values in arm_steps.items()}
    per_arm_step["steps alone"] = medians["steps alone"] / (steps * runs)
    print(f"\nper arm and step ({flops / 1e6:.0f} MFLOP; a 2048x2048 float32 matmul here "
          f"runs at {peak:.0f} GFLOP/s):")
    for name, seconds in per_arm_step.items():
        rate = flops / seconds / 1e9
        print(f"  {name:<17}{seconds * 1000:>6.2f} ms  {rate:>4.0f} GFLOP/s ({rate / peak:.0%})")
    print(
        f"the steps alone (models built, step compiled, nothing logged) are "
        f"{medians['plain keras'] / medians['steps alone']:.1f}x faster than the plain loop: "
        "an engine that also evaluates and logs cannot be more on this machine"
    )


if __name__ == "__main__":
    main()
