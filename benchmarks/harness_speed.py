"""The harness against the loop a Keras user would write for the same comparison.

Both compare the lesson's initializers on the same 5 x 256 tanh MLP, the same
Shapeset batches in the same order and the same number of epochs, each timed from
building the first model to the end of its logging:

- `harness`: `experiments.runner.compare` with the lesson's settings and
  `--seeds` (default one seed): the arms of a seed train together as towers of one
  compiled model, with activation, gradient and weight histograms of every layer
  every 100 steps, per-epoch metrics, HParams, summary and report.
- `plain keras`: for each initializer, build the same model, `compile` with
  Keras's defaults (the same optimizer, loss and accuracy metric), `fit` with the
  test set as validation data and `keras.callbacks.TensorBoard(histogram_freq=1)`
  (weight histograms once per epoch). Keras's progress bar goes to /dev/null.

The two alternate (`--repeats` rounds), so that machine noise hits both alike;
the table gives each one's median and their ratio. Target: the harness at least
4x faster.

The last lines say how close the harness's training steps come to the
machine's arithmetic: a training step of an MLP costs about 6 floating-point
operations per weight per example (2 forward, 4 backward), and a large float32
matrix product shows the rate this machine's cores reach at best. Where the
plain loop's own steps are already within a small factor of that rate, no
engine can be much more than that factor faster.

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

import keras
import numpy as np
import tensorflow as tf

from experiments import config as config_lib
from experiments import data as data_lib
from experiments import models, runner, training


def harness(settings: config_lib.ExperimentConfig, logdir: Path) -> tuple[float, float]:
    """Seconds of one whole comparison through the harness, and its training loop's
    seconds per arm and step (`train_seconds` of a group / steps / arms)."""
    started = time.perf_counter()
    entries = runner.compare(
        dataclasses.replace(settings, logdir=str(logdir)), progress=lambda _: None
    )
    seconds = time.perf_counter() - started
    per_arm_step = [e["train_seconds"] / e["steps"] / e["group_size"] for e in entries]
    return seconds, statistics.median(per_arm_step)


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
    times: dict[str, list[float]] = {"harness": [], "plain keras": []}
    arm_steps = []
    with tempfile.TemporaryDirectory() as root:
        for repeat in range(args.repeats):
            seconds, per_arm_step = harness(settings, Path(root) / f"harness{repeat}")
            times["harness"].append(seconds)
            arm_steps.append(per_arm_step)
            times["plain keras"].append(
                plain_keras(settings, dataset, Path(root) / f"plain{repeat}")
            )
            done = ", ".join(f"{name} {values[-1]:.1f} s" for name, values in times.items())
            print(f"  repeat {repeat + 1}: {done}", flush=True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"{'':<14}{'median s':>10}{'s per run':>11}{'speed-up':>10}")
    for name, median in medians.items():
        ratio = medians["plain keras"] / median
        print(f"{name:<14}{median:>10.1f}{median / runs:>11.1f}{ratio:>9.2f}x")
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
    arm_step = statistics.median(arm_steps)
    rate, peak = flops / arm_step / 1e9, matmul_gflops()
    print(
        f"\nharness training loop: {arm_step * 1000:.2f} ms per arm and step, "
        f"{flops / 1e6:.0f} MFLOP each: {rate:.0f} GFLOP/s; a 2048x2048 float32 matmul "
        f"here: {peak:.0f} GFLOP/s ({rate / peak:.0%} of it)"
    )
    floor = steps * runs * flops / peak / 1e9
    print(
        f"the lesson's steps at that matmul rate: {floor:.1f} s, so at best "
        f"{medians['plain keras'] / floor:.1f}x faster than the plain loop on this machine"
    )


if __name__ == "__main__":
    main()
