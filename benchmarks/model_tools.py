"""What keras_inits' model tools cost: `lsuv`, `diagnose` and the `SignalHistograms` callback.

Three tables, each from medians of interleaved repeats (every variant runs once
per repeat, in turn, so that load on a shared machine hits them alike):

(a) `lsuv` in units of one forward pass, `model(x, training=False)` on the same
    batch (eager, timed after warm-up), for ReLU MLPs of 10, 20 and 40 Dense
    layers (width 256, batch 256). `lsuv / forward` should grow linearly with
    depth, so `per layer` stays about constant. Layer calls are counted by
    wrapping `Dense.call`: one forward pass is `layers` calls; lsuv is one pass
    plus (iterations + 1) single-layer calls per layer, O(layers x iterations),
    never a forward pass per layer.
(b) `diagnose(model, x, y)` in units of one forward+backward pass (a
    `tf.GradientTape` forward in inference mode and the gradient of the same loss
    w.r.t. the trainable weights, eager, on the same batch), for the same MLPs
    and ResNet50 (64x64, batch 32, weights=None). diagnose runs a forward pass
    to find the layer order, then one forward+backward pass, so about 1.5-2x.
(c) what `SignalHistograms(every_n_steps=100)` adds to `fit`: a 5 x 256 tanh MLP
    on Shapeset (32x32 = 1024-d inputs, the harness's data), batch 32, SGD,
    about 1000 steps; plain `fit` against `fit` with the callback (and against
    Keras's `TensorBoard(histogram_freq=1)`), with the same initial weights,
    data and shuffling. The ratio of medians of fit wall time has a target of
    at most 1.15x. As in harness_overhead.py, the callback's own cost (first
    snapshot: probe set-up, tracing, writer; then each snapshot) divided by
    the plain fit time gives a steadier estimate than the ratio of two noisy
    medians.

Usage: KERAS_BACKEND=tensorflow python benchmarks/model_tools.py [--repeats=5]
       [--fit_repeats=5] [--depths 10 20 40] [--epochs=4] [--skip_resnet]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator

import keras
import numpy as np
import tensorflow as tf

import keras_inits
from experiments import models
from experiments.data import datasets as data_lib

WIDTH = 256
BATCH = 256
CLASSES = 10


def _seconds(function: Callable[[], object]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def _median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


@contextlib.contextmanager
def counting_calls(cls: type) -> Iterator[list[int]]:
    """Counts calls of `cls.call` (by any instance) within the block."""
    counter = [0]
    original = cls.call

    def call(self, *args, **kwargs):
        counter[0] += 1
        return original(self, *args, **kwargs)

    cls.call = call
    try:
        yield counter
    finally:
        cls.call = original


def relu_mlp(layers: int, seed: int = 0) -> keras.Model:
    """`layers` Dense layers: layers - 1 ReLU of width 256, then a linear 10-way output."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((WIDTH,))
    hidden = inputs
    for index in range(1, layers):
        hidden = keras.layers.Dense(WIDTH, "relu", name=f"dense_{index}")(hidden)
    outputs = keras.layers.Dense(CLASSES, name="logits")(hidden)
    return keras.Model(inputs, outputs, name=f"relu_mlp_{layers}")


def _batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((BATCH, WIDTH)).astype("float32")
    return x, rng.integers(0, CLASSES, BATCH).astype("int32")


def _forward(model: keras.Model, x) -> Callable[[], object]:
    return lambda: model(x, training=False).numpy()


def _forward_backward(model: keras.Model, x, y, loss_fn) -> Callable[[], object]:
    def run():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(loss_fn(y, model(x, training=False)))
        gradients = tape.gradient(loss, model.trainable_weights)
        return loss.numpy(), [gradient.numpy() for gradient in gradients[:1]]

    return run


# --- (a) lsuv ----------------------------------------------------------------------------


def lsuv_table(depths: list[int], repeats: int, forwards: int = 5) -> list[str]:
    x, _ = _batch()
    tensor = tf.constant(x)
    cases = {depth: relu_mlp(depth) for depth in depths}
    counts = {}
    for depth, model in cases.items():  # warm-up, and the call counts
        _forward(model, tensor)()
        keras_inits.lsuv(model, x, seed=0)
        with counting_calls(keras.layers.Dense) as forward_calls:
            _forward(model, tensor)()
        with counting_calls(keras.layers.Dense) as lsuv_calls:
            report = keras_inits.lsuv(model, x, seed=0)
        counts[depth] = (
            forward_calls[0],
            lsuv_calls[0],
            sum(row["iterations"] for row in report.rows),
            report.converged,
        )
    times = {depth: ([], [], []) for depth in depths}
    for _ in range(repeats):
        for depth, model in cases.items():
            forward = _forward(model, tensor)
            times[depth][0].append(statistics.mean(_seconds(forward) for _ in range(forwards)))
            times[depth][1].append(
                _seconds(lambda model=model: keras_inits.reinitialize(model, "orthogonal", seed=0))
            )
            times[depth][2].append(_seconds(lambda model=model: keras_inits.lsuv(model, x, seed=0)))
    lines = [
        f"(a) lsuv vs one forward pass: ReLU MLPs, width {WIDTH}, batch {BATCH}, eager; "
        f"medians of {repeats} interleaved repeats",
        f"{'layers':>6}{'forward ms':>12}{'lsuv ms':>10}{'ms/layer':>10}{'lsuv/forward':>14}"
        f"{'ratio/layer':>13}{'of it reinit':>14}{'forward calls':>15}{'lsuv calls':>12}"
        f"{'rescalings':>12}",
    ]
    for depth in depths:
        forward, reinit, fitted = (_median_ms(values) for values in times[depth])
        forward_calls, lsuv_calls, rescalings, converged = counts[depth]
        ratio = fitted / forward
        lines.append(
            f"{depth:>6}{forward:>12.2f}{fitted:>10.1f}{fitted / depth:>10.2f}{ratio:>13.1f}x"
            f"{ratio / depth:>12.2f}x{reinit / fitted:>14.0%}{forward_calls:>15}{lsuv_calls:>12}"
            f"{rescalings:>12}" + ("" if converged else "  (not converged)")
        )
    lines.append(
        "lsuv calls = one pass (layers) + per layer (rescalings + 1) variance checks "
        "= 2 x layers + rescalings: O(layers x iterations) single-layer calls"
    )
    lines.append(
        "'of it reinit': the orthonormal pre-initialization (reinitialize(model, 'orthogonal'), "
        "timed alone) as a share of lsuv"
    )
    return lines


# --- (b) diagnose -----------------------------------------------------------------------


def diagnose_table(depths: list[int], repeats: int, resnet: bool) -> list[str]:
    cases = []
    x, y = _batch()
    logits_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for depth in depths:
        cases.append((f"ReLU MLP, {depth} layers", relu_mlp(depth), x, y, logits_loss))
    if resnet:
        keras.utils.set_random_seed(0)
        model = keras.applications.ResNet50(
            weights=None, input_shape=(64, 64, 3), classes=CLASSES
        )
        rng = np.random.default_rng(1)
        images = rng.standard_normal((32, 64, 64, 3)).astype("float32")
        labels = rng.integers(0, CLASSES, 32).astype("int32")
        cases.append(
            ("ResNet50 64x64, batch 32", model, images, labels,
             keras.losses.SparseCategoricalCrossentropy())
        )  # fmt: skip
    runs = []
    for name, model, inputs, labels, loss_fn in cases:
        reference = _forward_backward(model, tf.constant(inputs), tf.constant(labels), loss_fn)

        def diagnosis(model=model, inputs=inputs, labels=labels, loss_fn=loss_fn):
            return keras_inits.diagnose(model, inputs, labels, loss=loss_fn)

        reference()  # warm-up
        layers = len(diagnosis().layers)
        runs.append((name, layers, reference, diagnosis))
    times = {name: ([], []) for name, *_ in runs}
    for _ in range(repeats):
        for name, _, reference, diagnosis in runs:
            times[name][0].append(_seconds(reference))
            times[name][1].append(_seconds(diagnosis))
    lines = [
        "(b) diagnose vs one forward+backward pass (tf.GradientTape, inference mode, eager); "
        f"medians of {repeats} interleaved repeats",
        f"{'model':<26}{'kernels':>8}{'fwd+bwd ms':>12}{'diagnose ms':>13}{'ratio':>8}",
    ]
    for name, layers, *_ in runs:
        reference, diagnosis = (_median_ms(values) for values in times[name])
        lines.append(
            f"{name:<26}{layers:>8}{reference:>12.1f}{diagnosis:>13.1f}"
            f"{diagnosis / reference:>7.2f}x"
        )
    return lines


# --- (c) SignalHistograms on fit ---------------------------------------------------------

VARIANTS = ("plain fit", "SignalHistograms(every_n_steps=100)", "TensorBoard(histogram_freq=1)")
EVERY = 100
PROBE = 256


def _shapeset_model(weights: list[np.ndarray] | None, input_shape, classes) -> keras.Model:
    model = models.build(
        "mlp",
        input_shape=input_shape,
        num_classes=classes,
        depth=5,
        width=WIDTH,
        activation="tanh",
        initializer="xavier_normal",
        seed=0,
    )
    if weights is not None:
        model.set_weights(weights)
    model.compile(
        keras.optimizers.SGD(0.01, momentum=0.9), "sparse_categorical_crossentropy"
    )
    return model


def _fit(dataset, weights, variant: str, log_dir: str, epochs: int) -> float:
    model = _shapeset_model(weights, dataset.input_shape, dataset.num_classes)
    callbacks = []
    if variant.startswith("SignalHistograms"):
        callbacks = [
            keras_inits.SignalHistograms(
                dataset.x_train[:PROBE], dataset.y_train[:PROBE], log_dir, every_n_steps=EVERY
            )
        ]
    elif variant.startswith("TensorBoard"):
        callbacks = [keras.callbacks.TensorBoard(log_dir, histogram_freq=1)]
    keras.utils.set_random_seed(0)  # the same shuffling in every run
    return _seconds(
        lambda: model.fit(
            dataset.x_train, dataset.y_train, batch_size=32, epochs=epochs, verbose=0,
            callbacks=callbacks,
        )
    )  # fmt: skip


def _snapshot_costs(dataset, weights, log_dir: str, calls: int = 20) -> tuple[float, float]:
    """Seconds of the first snapshot of a fresh callback (set-up included) and of later ones."""
    model = _shapeset_model(weights, dataset.input_shape, dataset.num_classes)
    callback = keras_inits.SignalHistograms(
        dataset.x_train[:PROBE], dataset.y_train[:PROBE], log_dir, every_n_steps=EVERY
    )
    callback.set_model(model)
    first = _seconds(lambda: callback.snapshot(0))
    later = [_seconds(lambda step=step: callback.snapshot(step)) for step in range(1, calls + 1)]
    callback.writer.close()
    return first, statistics.median(later)


def fit_table(repeats: int, epochs: int, train_size: int) -> list[str]:
    dataset = data_lib.load("shapeset", train_size, 256)
    weights = _shapeset_model(None, dataset.input_shape, dataset.num_classes).get_weights()
    steps = epochs * -(-train_size // 32)
    times = {variant: [] for variant in VARIANTS}
    with tempfile.TemporaryDirectory() as root:
        _fit(dataset, weights, VARIANTS[1], os.path.join(root, "warm-up"), 1)
        for repeat in range(repeats):
            for index, variant in enumerate(VARIANTS):
                log_dir = os.path.join(root, f"{repeat}_{index}")
                times[variant].append(_fit(dataset, weights, variant, log_dir, epochs))
        firsts, laters = zip(
            *(_snapshot_costs(dataset, weights, os.path.join(root, f"snap{i}")) for i in range(3)),
            strict=True,
        )
    first, later = statistics.median(firsts), statistics.median(laters)
    base = statistics.median(times["plain fit"])
    lines = [
        f"(c) fit overhead: 5x{WIDTH} tanh MLP, Shapeset 32x32 (1024-d), {train_size} examples, "
        f"batch 32, SGD, {epochs} epochs = {steps} steps; probe batch {PROBE}; "
        f"medians of {repeats} interleaved repeats",
        f"{'variant':<38}{'fit s':>8}{'min':>8}{'max':>8}{'ratio':>8}",
    ]
    for variant in VARIANTS:
        values = times[variant]
        median = statistics.median(values)
        lines.append(
            f"{variant:<38}{median:>8.2f}{min(values):>8.2f}{max(values):>8.2f}"
            f"{median / base:>7.3f}x"
        )
    snapshots = steps // EVERY + 1  # step 0, then every EVERY steps
    added = first + (snapshots - 1) * later
    lines.append(
        f"direct estimate: first snapshot (probe, tf.function trace, writer) {first * 1000:.0f} ms"
        f" + {snapshots - 1} x {later * 1000:.1f} ms = {added:.2f} s on {base:.2f} s of plain fit"
        f" = {1 + added / base:.3f}x (target <= 1.15x)"
    )
    lines.append(
        f"without the one-time first snapshot: {snapshots - 1} x {later * 1000:.1f} ms = "
        f"{1 + (snapshots - 1) * later / base:.3f}x"
    )
    per_step = base / steps  # includes fit's own set-up, so this is generous to short runs
    margin = 0.15 * per_step - later / EVERY
    if margin > 0:
        lines.append(
            f"1.15x is reached from about {first / margin:.0f} steps "
            f"({per_step * 1000:.2f} ms per plain step)"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="repeats of (a) and (b)")
    parser.add_argument("--fit_repeats", type=int, default=5, help="repeats of (c), >= 5")
    parser.add_argument("--depths", type=int, nargs="+", default=[10, 20, 40])
    parser.add_argument("--epochs", type=int, default=4, help="epochs of (c)")
    parser.add_argument("--train_size", type=int, default=8000, help="Shapeset examples of (c)")
    parser.add_argument("--skip_resnet", action="store_true", help="leave ResNet50 out of (b)")
    parser.add_argument("--only", choices=("a", "b", "c"), nargs="+", default=["a", "b", "c"])
    args = parser.parse_args()
    if keras.backend.backend() != "tensorflow":
        parser.error("run with KERAS_BACKEND=tensorflow (part (b) times a tf.GradientTape).")
    print(
        f"backend={keras.backend.backend()} keras={keras.__version__} tensorflow={tf.__version__} "
        f"cpus={os.cpu_count()} machine={platform.machine()} python={platform.python_version()}"
    )
    started = time.perf_counter()
    parts = {
        "a": lambda: lsuv_table(args.depths, args.repeats),
        "b": lambda: diagnose_table(args.depths, args.repeats, not args.skip_resnet),
        "c": lambda: fit_table(args.fit_repeats, args.epochs, args.train_size),
    }
    for part in args.only:
        print()
        print("\n".join(parts[part]()), flush=True)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
