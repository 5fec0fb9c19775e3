"""What the harness's histogram logging costs the training loop.

Trains the lesson's group of six 5 x 256 tanh MLPs (one per initializer, as the
harness trains them: towers of one compiled model) on Shapeset (SGD, batch 32) in
three ways, interleaved so that machine noise hits them alike, `--repeats` times each:

- `histograms on`: the harness's defaults (every `--histogram_every` steps, one compiled
  snapshot of every arm: 24 histograms and 23 scalars each);
- `histograms off`: the same run with `histogram_every=0`;
- `keras TensorBoard`: histograms off plus `keras.callbacks.TensorBoard(histogram_freq=1)`,
  which logs weight histograms once per epoch (no activations, no gradients).

It prints the median `train_seconds` (the harness's clock: the steps and the
periodic snapshots) and the median wall time of `model.fit` (which also holds
the epoch-end work, where Keras's callback writes its histograms), each as a
ratio to `histograms off`. Target: `histograms on` at most 1.15x.

A second table times one snapshot of the same tensors: `SignalHistograms`' probe
(`tf_histograms`: every tensor of one size in one `bincount`, written as the histogram
plugin's tensor) against `tf.summary.histogram` (TensorBoard's one-hot bucketing), both
compiled.

Identical runs on a shared machine differ by more than the histograms cost, so
the ratio of medians is noisy; the steady figure is measured inside each run:
`train_seconds` over `train_seconds` less the time the periodic snapshots took
(the summary's `histogram_seconds`).

Usage: KERAS_BACKEND=tensorflow python benchmarks/harness_overhead.py [--repeats=5]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import keras
import tensorflow as tf

from experiments import config as config_lib
from experiments import models
from experiments.data import datasets as data_lib
from experiments.engine import training
from keras_inits import SignalHistograms

VARIANTS = ("histograms on", "histograms off", "keras TensorBoard")


def _train(settings, dataset, variant: str, logdir: Path) -> tuple[float, float, float]:
    """(train_seconds, fit wall seconds, histogram_seconds) of one run of `variant`."""
    if variant != "histograms on":
        settings = dataclasses.replace(settings, histogram_every=0)
    callbacks = []
    if variant == "keras TensorBoard":
        callbacks = [keras.callbacks.TensorBoard(str(logdir / "keras"), histogram_freq=1)]
    arms = [
        training.Arm(spec, logdir / f"arm{index}")
        for index, spec in enumerate(settings.initializers)
    ]
    results = training.train_group(
        settings, dataset, cell=settings.cells()[0], seed=0, arms=arms, callbacks=callbacks
    )
    entry = results[0].entry
    return entry["train_seconds"], results[0].fit_seconds, entry["histogram_seconds"]


def training_table(settings, dataset, repeats: int) -> tuple[list[str], float]:
    """The table of medians, and the median in-run overhead of the histograms (train_seconds
    over train_seconds less the snapshots' own time, measured inside each run)."""
    times = {variant: ([], []) for variant in VARIANTS}
    in_run = []
    with tempfile.TemporaryDirectory() as root:
        for repeat in range(repeats):
            for index, variant in enumerate(VARIANTS):
                train, fit, snapshots = _train(
                    settings, dataset, variant, Path(root) / f"{repeat}_{index}"
                )
                times[variant][0].append(train)
                times[variant][1].append(fit)
                if variant == "histograms on":
                    in_run.append(train / (train - snapshots))
    base_train = statistics.median(times["histograms off"][0])
    base_fit = statistics.median(times["histograms off"][1])
    lines = [
        f"{'variant':<20}{'train_seconds':>15}{'ratio':>8}{'fit seconds':>14}{'ratio':>8}",
    ]
    for variant in VARIANTS:
        train, fit = (statistics.median(values) for values in times[variant])
        lines.append(
            f"{variant:<20}{train:>15.2f}{train / base_train:>7.2f}x"
            f"{fit:>14.2f}{fit / base_fit:>7.2f}x"
        )
    return lines, statistics.median(in_run)


def _reference_snapshot(model: keras.Model, x, y, writer, bucketing: bool):
    """The probe's tensors, bucketed by `tf.summary.histogram` (or not at all)."""
    layers = [layer for layer in model.layers if layer.name.startswith(("hidden_", "output"))]
    names = [layer.name for layer in layers]
    chain = [layer for layer in model.layers if layer.name != "inputs"]
    kernels = [layer.kernel for layer in layers]

    @tf.function
    def snapshot(step):
        with tf.GradientTape() as tape:
            outputs, hidden = [], x
            for layer in chain:
                hidden = layer(hidden, training=False)
                if layer.name in names:
                    outputs.append(hidden)
            chosen = tf.gather(outputs[-1], y, axis=1, batch_dims=1)
            loss = -tf.reduce_mean(tf.math.log(tf.maximum(chosen, keras.config.epsilon())))
        gradients = tape.gradient(loss, [*outputs, *kernels])
        stds = [tf.math.reduce_std(t) for t in [*outputs, *gradients]]
        if bucketing:
            with writer.as_default(step=step):
                for index, tensor in enumerate([*outputs, *gradients, *kernels]):
                    tf.summary.histogram(f"tensor_{index}", tensor)
        return stds

    return snapshot


def _milliseconds(function, calls: int = 20) -> float:
    function()  # trace and compile
    started = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - started) / calls * 1000


def snapshot_table(settings, dataset) -> tuple[list[str], float]:
    """The table of per-snapshot costs, and the harness probe's milliseconds."""
    model = models.build(
        "mlp",
        input_shape=dataset.input_shape,
        num_classes=dataset.num_classes,
        depth=settings.depth[0],
        width=settings.width[0],
        activation="tanh",
        initializer="xavier_normal",
        seed=0,
    )
    x = tf.constant(dataset.x_train[: settings.probe_size])
    y = tf.constant(dataset.y_train[: settings.probe_size])
    with tempfile.TemporaryDirectory() as root:
        signals = SignalHistograms(
            x.numpy(), y.numpy(), root, loss="sparse_categorical_crossentropy", subdir=""
        )
        signals.set_model(model)
        writer = signals.writer
        step = tf.constant(1, tf.int64)
        plain = _reference_snapshot(model, x, y, writer, bucketing=False)
        tensorboard = _reference_snapshot(model, x, y, writer, bucketing=True)
        rows = {
            "forward+backward, no histograms": _milliseconds(lambda: plain(step)),
            "SignalHistograms snapshot (batched buckets)": _milliseconds(
                lambda: signals.snapshot(1, scalars=True, histograms=True)
            ),
            "tf.summary.histogram": _milliseconds(lambda: tensorboard(step), calls=5),
        }
        writer.close()
    count = 4 * len(signals.layers)
    lines = [f"one snapshot: {count} histograms, probe batch {settings.probe_size}"]
    lines += [f"{name:<40}{ms:>8.1f} ms" for name, ms in rows.items()]
    return lines, rows["SignalHistograms snapshot (batched buckets)"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--probe_size", type=int, default=config_lib.ExperimentConfig.probe_size)
    args = parser.parse_args()
    settings = config_lib.resolve(
        depth=5, width=256, epochs=args.epochs, probe_size=args.probe_size, verbose=0
    )
    dataset = data_lib.load(settings.dataset, settings.train_size, settings.test_size)
    batch_size = settings.batch_size[0]
    steps = args.epochs * -(-settings.train_size // batch_size)
    arms = len(settings.initializers)
    print(
        f"{arms} arms of a 5x256 tanh MLP trained together, {settings.train_size} shapeset "
        f"examples, batch {batch_size}, {steps} steps, histograms every "
        f"{settings.histogram_every} steps; medians of {args.repeats} interleaved repeats"
    )
    lines, in_run = training_table(settings, dataset, args.repeats)
    print("\n".join(lines))
    print(
        f"measured inside each run (train_seconds / (train_seconds - the snapshots' time)), "
        f"median: {in_run:.3f}x (target <= 1.15x)"
    )
    print()
    lines, probe_ms = snapshot_table(settings, dataset)
    print("\n".join(lines))
    # On a shared machine identical runs differ by 10-20% in train_seconds, more than
    # the histograms cost: the in-run measure above and this estimate are steadier.
    snapshots = steps // settings.histogram_every * arms
    print(
        f"\nestimated from the table above: {snapshots} snapshots ({arms} arms) x "
        f"{probe_ms:.1f} ms = {snapshots * probe_ms / 1000:.2f} s"
    )


if __name__ == "__main__":
    main()
