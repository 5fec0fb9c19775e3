"""`SignalHistograms` during `fit`: what lands in TensorBoard, at which steps, with which values.

Event files are read back with TensorBoard's own `EventAccumulator`, and once
(TensorFlow backend only) through a real `tensorboard` server's HTTP API.
Expected values are computed independently of the callback, from the model's
own layers on the same fixed batch.
"""

import itertools
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_inits

# The callback writes with TensorFlow's summary writer: keras-inits[harness].
tf = pytest.importorskip("tensorflow")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
tensor_util = pytest.importorskip("tensorboard.util.tensor_util")

BACKEND = keras.backend.backend()
FEATURES, CLASSES, WIDTH = 16, 4, 32
PROBE = 32  # examples in the callback's fixed batch
BATCH = 8
EVERY = 5
EPOCHS = 3
TRAIN = 64  # 8 steps per epoch: snapshots do not line up with epoch ends
STEPS = EPOCHS * TRAIN // BATCH  # 24
SNAPSHOT_STEPS = list(range(0, STEPS + 1, EVERY))  # 0, 5, 10, 15, 20
BINS = 30
HISTOGRAM_PREFIXES = ("activations/", "activation_gradients/", "weight_gradients/", "weights/")
SCALAR_PREFIXES = ("activation_std", "activation_gradient_std", "weight_gradient_std")

_rng = np.random.default_rng(0)
X = _rng.standard_normal((TRAIN, FEATURES)).astype("float32")
Y = _rng.integers(0, CLASSES, TRAIN)
X_PROBE, Y_PROBE = X[:PROBE], Y[:PROBE]


def _mlp(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(WIDTH, "tanh", name="hidden_tanh"),
            keras.layers.Dense(WIDTH, "relu", name="hidden_relu"),
            keras.layers.Dense(CLASSES, "softmax", name="output"),
        ]
    )
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    return model


def _path(layer: keras.layers.Layer) -> str:
    """The tag of a top-level Dense layer: its path in the model, i.e. its name, without
    the model's auto-numbered name (`sequential_2/`) that Keras puts in `kernel.path`."""
    assert layer.kernel.path.endswith(f"/{layer.name}/kernel")
    return layer.name


def _numpy(value) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(value))


def _events(run_dir: Path) -> event_accumulator.EventAccumulator:
    accumulator = event_accumulator.EventAccumulator(
        str(run_dir), size_guidance={event_accumulator.TENSORS: 0}
    )
    return accumulator.Reload()


def _series(events, tag: str) -> list[tuple[int, np.ndarray]]:
    return [(event.step, tensor_util.make_ndarray(event.tensor_proto)) for event in
            events.Tensors(tag)]


class StepRecorder(keras.callbacks.Callback):
    """After each train-batch end: the optimizer's step and the probe's last snapshot step."""

    def __init__(self, probe=None):
        super().__init__()
        self.probe = probe
        self.batches_begun = 0
        self.records: list[tuple[int, int | None]] = []

    def on_train_batch_begin(self, batch, logs=None):
        self.batches_begun += 1

    def on_train_batch_end(self, batch, logs=None):
        step = int(_numpy(self.model.optimizer.iterations))
        self.records.append((step, None if self.probe is None else self.probe.last_step))


# --- fit on a Sequential MLP, read back with EventAccumulator ---------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One fit with the callback; what was known before it (initial kernels, layer outputs)."""
    log_dir = tmp_path_factory.mktemp("signal_histograms")
    model = _mlp()
    layers = [layer for layer in model.layers if hasattr(layer, "kernel")]
    before = {}
    for layer in layers:
        outputs = keras.Model(model.inputs[0], layer.output)(X_PROBE, training=False)
        before[_path(layer)] = {
            "kernel": _numpy(layer.kernel).copy(),
            "outputs": _numpy(outputs).copy(),
            "activation": keras.activations.serialize(layer.activation),
        }
    initial_weights = [weight.copy() for weight in model.get_weights()]
    callback = keras_inits.SignalHistograms(
        X_PROBE, Y_PROBE, str(log_dir), every_n_steps=EVERY
    )
    model.fit(X, Y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0,
              callbacks=[callback])
    assert int(_numpy(model.optimizer.iterations)) == STEPS
    return {
        "log_dir": log_dir,
        "model": model,
        "callback": callback,
        "before": before,
        "initial_weights": initial_weights,
        "events": _events(log_dir / "train"),
    }


def test_tags_are_the_four_histograms_and_the_scalars_per_layer(trained):
    before, events = trained["before"], trained["events"]
    assert trained["callback"].layers == list(before)
    assert [p.rsplit("/", 1)[-1] for p in before] == ["hidden_tanh", "hidden_relu", "output"]
    expected = set()
    for path, known in before.items():
        expected |= {
            f"activations/{path}",
            f"activation_gradients/{path}",
            f"weight_gradients/{path}/kernel",
            f"weights/{path}/kernel",
        }
        expected |= {f"{prefix}/{path}" for prefix in SCALAR_PREFIXES}
        if known["activation"] == "tanh":
            expected.add(f"saturation/{path}")
        if known["activation"] == "relu":
            expected.add(f"dead_fraction/{path}")
    tags = set(events.Tags()["tensors"])
    assert tags == expected
    for tag in expected:
        plugin = events.SummaryMetadata(tag).plugin_data.plugin_name
        is_histogram = tag.startswith(HISTOGRAM_PREFIXES)
        assert plugin == ("histograms" if is_histogram else "scalars"), tag


def test_steps_are_zero_then_every_n_optimizer_steps(trained):
    events = trained["events"]
    for tag in events.Tags()["tensors"]:
        assert [step for step, _ in _series(events, tag)] == SNAPSHOT_STEPS, tag
    assert trained["callback"].last_step == SNAPSHOT_STEPS[-1]


def test_histograms_are_30_buckets_counting_every_element(trained):
    events = trained["events"]
    for path in trained["before"]:
        layer = trained["model"].get_layer(path.rsplit("/", 1)[-1])
        output_size = PROBE * layer.units
        kernel_size = int(np.prod(layer.kernel.shape))
        sizes = {
            f"activations/{path}": output_size,
            f"activation_gradients/{path}": output_size,
            f"weight_gradients/{path}/kernel": kernel_size,
            f"weights/{path}/kernel": kernel_size,
        }
        for tag, size in sizes.items():
            for step, buckets in _series(events, tag):
                assert buckets.shape == (BINS, 3), (tag, step)
                assert buckets[:, 2].sum() == size, (tag, step)
                assert np.all(buckets[:, 1] >= buckets[:, 0]), (tag, step)
                np.testing.assert_allclose(buckets[1:, 0], buckets[:-1, 1], rtol=1e-6)


def test_step_zero_is_before_the_first_update(trained):
    events = trained["events"]
    for path, known in trained["before"].items():
        kernel = known["kernel"]
        series = _series(events, f"weights/{path}/kernel")
        first, last = series[0][1], series[-1][1]
        # Step 0's weights histogram spans exactly the initial kernel...
        np.testing.assert_allclose(first[0, 0], kernel.min(), rtol=1e-6)
        np.testing.assert_allclose(first[-1, 1], kernel.max(), rtol=1e-6)
        # ...and holds the same counts as bucketing that kernel independently.
        counts, _ = np.histogram(kernel, bins=BINS, range=(first[0, 0], first[-1, 1]))
        assert np.abs(counts - first[:, 2]).sum() <= 2
        # Training moved the weights: the last snapshot's histogram differs.
        assert not np.array_equal(first, last)
        # The activations at step 0 are the initial model's outputs on the fixed batch.
        outputs = known["outputs"]
        activations = _series(events, f"activations/{path}")[0][1]
        np.testing.assert_allclose(activations[0, 0], outputs.min(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(activations[-1, 1], outputs.max(), rtol=1e-5, atol=1e-6)


def test_step_zero_activation_std_is_the_layer_output_std(trained):
    events = trained["events"]
    for path, known in trained["before"].items():
        series = _series(events, f"activation_std/{path}")
        step, value = series[0]
        assert step == 0 and value.shape == ()
        np.testing.assert_allclose(float(value), known["outputs"].std(), rtol=1e-5)
        # The std after training differs from the initial one (the scalar is live).
        assert float(series[-1][1]) != float(value)
        if known["activation"] == "relu":
            dead = _series(events, f"dead_fraction/{path}")[0][1]
            expected = 1.0 - np.mean(known["outputs"].max(axis=0) > 0)
            np.testing.assert_allclose(float(dead), expected, atol=1e-6)
        if known["activation"] == "tanh":
            saturated = _series(events, f"saturation/{path}")[0][1]
            expected = np.mean(np.abs(known["outputs"]) > 0.9)
            np.testing.assert_allclose(float(saturated), expected, atol=1e-6)


# --- step 0's gradients against diagnose and a tf.GradientTape -------------------------


def crossentropy(y, probabilities):
    """Keras's sparse crossentropy on probabilities: renormalized, clipped, mean over the batch."""
    p = probabilities / tf.reduce_sum(probabilities, axis=-1, keepdims=True)
    p = tf.clip_by_value(p, keras.config.epsilon(), 1 - keras.config.epsilon())
    return -tf.reduce_mean(tf.math.log(tf.gather(p, y, axis=-1, batch_dims=1)))


def tape_reference(weights, x, y, loss):
    """The MLP redone in float64 TensorFlow from its weights (as NumPy, so this works under
    every Keras backend), and tf.GradientTape's gradients of `loss(y, probabilities)`
    with respect to each layer's output and kernel: per layer (output, d output, d kernel,
    kernel), the tensors of that layer's four histograms in `histogram_tags` order."""
    kernels = [tf.constant(kernel, tf.float64) for kernel in weights[0::2]]
    biases = [tf.constant(bias, tf.float64) for bias in weights[1::2]]
    activations = [tf.tanh, tf.nn.relu, tf.nn.softmax]  # _mlp's, in order
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(kernels)
        h, outputs = tf.constant(x, tf.float64), []
        for kernel, bias, activation in zip(kernels, biases, activations, strict=True):
            h = activation(h @ kernel + bias)
            outputs.append(h)
        value = loss(tf.constant(y), h)
    d_outputs = tape.gradient(value, outputs)
    d_kernels = tape.gradient(value, kernels)
    return [
        tuple(np.asarray(tensor) for tensor in layer)
        for layer in zip(outputs, d_outputs, d_kernels, kernels, strict=True)
    ]


def assert_buckets_hold(buckets, values, bins, tag):
    """The histogram has `bins` buckets from values.min() to values.max(), and counts what
    np.histogram counts over that range (up to values that float32 rounding moves across
    an edge: the callback computes in float32, the reference in float64)."""
    values = values.reshape(-1)
    assert buckets.shape == (bins, 3), tag
    np.testing.assert_allclose(buckets[0, 0], values.min(), rtol=1e-4, err_msg=tag)
    np.testing.assert_allclose(buckets[-1, 1], values.max(), rtol=1e-4, err_msg=tag)
    low, high = buckets[0, 0], buckets[-1, 1]
    counts, _ = np.histogram(np.clip(values, low, high), bins=bins, range=(low, high))
    assert buckets[:, 2].sum() == values.size, tag
    assert np.abs(counts - buckets[:, 2]).sum() <= 4, (tag, counts, buckets[:, 2])


def test_step_zero_gradient_scalars_equal_diagnose_on_the_same_model_and_batch(trained):
    # diagnose's numbers are checked against torch.autograd in test_diagnose.py.
    model = _mlp()
    model.set_weights(trained["initial_weights"])
    rows = {row["name"]: row for row in keras_inits.diagnose(model, X_PROBE, Y_PROBE).layers}
    assert list(rows) == [path.rsplit("/", 1)[-1] for path in trained["before"]]
    for path in trained["before"]:
        row = rows[path.rsplit("/", 1)[-1]]
        for prefix, key in (("activation_gradient_std", "gradient_std"),
                            ("weight_gradient_std", "weight_gradient_std")):
            step, value = _series(trained["events"], f"{prefix}/{path}")[0]
            assert step == 0 and row[key] > 0
            np.testing.assert_allclose(float(value), row[key], rtol=1e-5, err_msg=prefix)


def test_step_zero_gradients_are_those_of_a_gradient_tape(trained):
    events = trained["events"]
    reference = tape_reference(trained["initial_weights"], X_PROBE, Y_PROBE, crossentropy)
    for path, (_, d_output, d_kernel, _) in zip(trained["before"], reference, strict=True):
        for tag, values in ((f"activation_gradients/{path}", d_output),
                            (f"weight_gradients/{path}/kernel", d_kernel)):
            step, buckets = _series(events, tag)[0]
            assert step == 0
            assert_buckets_hold(buckets, values, BINS, tag)
        for prefix, values in (("activation_gradient_std", d_output),
                               ("weight_gradient_std", d_kernel)):
            value = float(_series(events, f"{prefix}/{path}")[0][1])
            np.testing.assert_allclose(value, values.std(), rtol=1e-4, err_msg=prefix)


# --- bins= and loss= --------------------------------------------------------------------

OTHER_BINS = 7  # not a divisor of the default 30


def squared_error_to_one_hot(y_true, y_pred):
    """A custom loss (keras.ops, per example) unlike the compiled crossentropy."""
    one_hot = keras.ops.one_hot(keras.ops.cast(y_true, "int32"), CLASSES)
    return 10.0 * keras.ops.sum(keras.ops.square(one_hot - y_pred), axis=-1)


def squared_error_reference(y, probabilities):
    """The same loss written in TensorFlow for the tape, mean over the batch."""
    one_hot = tf.one_hot(y, CLASSES, dtype=tf.float64)
    return tf.reduce_mean(10.0 * tf.reduce_sum((one_hot - probabilities) ** 2, axis=-1))


@pytest.fixture(scope="module")
def custom(tmp_path_factory):
    """Step 0 of a callback with bins=7 and loss=a custom callable, and its model's weights.

    The callback is driven through the hooks fit calls first and last (step 0 needs no
    training step, and a fit would compile one)."""
    log_dir = tmp_path_factory.mktemp("custom_signal_histograms")
    model = _mlp(seed=1)
    callback = keras_inits.SignalHistograms(
        X_PROBE, Y_PROBE, str(log_dir), loss=squared_error_to_one_hot, bins=OTHER_BINS
    )
    callback.set_model(model)
    callback.on_train_begin()
    callback.on_train_end()
    return {"weights": model.get_weights(), "events": _events(log_dir / "train"),
            "paths": callback.layers}


def test_bins_sets_the_bucket_count_and_the_buckets_span_each_tensor(custom):
    events = custom["events"]
    reference = tape_reference(custom["weights"], X_PROBE, Y_PROBE, squared_error_reference)
    assert len(reference) == len(custom["paths"]) == 3
    for path, tensors in zip(custom["paths"], reference, strict=True):
        for tag, values in zip(keras_inits.callbacks.histogram_tags(path), tensors, strict=True):
            ((step, buckets),) = _series(events, tag)
            assert step == 0
            assert_buckets_hold(buckets, values, OTHER_BINS, tag)


def test_a_custom_loss_gives_the_gradients_of_a_gradient_tape_of_that_loss(custom):
    events = custom["events"]
    ours = tape_reference(custom["weights"], X_PROBE, Y_PROBE, squared_error_reference)
    compiled = tape_reference(custom["weights"], X_PROBE, Y_PROBE, crossentropy)
    for path, mine, theirs in zip(custom["paths"], ours, compiled, strict=True):
        for prefix, index in (("activation_gradient_std", 1), ("weight_gradient_std", 2)):
            value = float(_series(events, f"{prefix}/{path}")[0][1])
            np.testing.assert_allclose(value, mine[index].std(), rtol=1e-4, err_msg=prefix)
            # The compiled crossentropy's gradients are far from these: the loss counted.
            assert abs(value / theirs[index].std() - 1) > 0.1, (prefix, path)


# --- steps_per_execution ----------------------------------------------------------------


@pytest.mark.skipif(
    BACKEND == "torch",
    reason="Keras's torch trainer requires steps_per_execution=1 (it raises otherwise)",
)
def test_steps_per_execution_snapshots_at_first_step_past_each_multiple(tmp_path):
    every, execution, batches_per_epoch, epochs = 10, 4, 13, 3
    model = _mlp()
    model.compile(
        keras.optimizers.SGD(0.1),
        "sparse_categorical_crossentropy",
        steps_per_execution=execution,
    )
    x = np.concatenate([X, X[: batches_per_epoch * BATCH - TRAIN]])
    y = np.concatenate([Y, Y[: batches_per_epoch * BATCH - TRAIN]])
    callback = keras_inits.SignalHistograms(X_PROBE, Y_PROBE, str(tmp_path), every_n_steps=every)
    recorder = StepRecorder(callback)
    model.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0,
              callbacks=[callback, recorder])

    seen = [step for step, _ in recorder.records]
    assert seen[-1] == epochs * batches_per_epoch and seen == sorted(seen)
    expected = [0]
    for multiple in range(every, seen[-1] + 1, every):
        first = min(step for step in seen if step >= multiple)
        if first != expected[-1]:
            expected.append(first)
    # 13 steps per epoch in executions of 4: optimizer steps 4, 8, 12, 13, 17, 21, ...
    assert expected == [0, 12, 21, 30]

    events = _events(tmp_path / "train")
    for tag in events.Tags()["tensors"]:
        assert [step for step, _ in _series(events, tag)] == expected, tag
    # Each snapshot is taken before the next execution starts (or at the epoch's end), so
    # a batch-end recorder first sees it one execution later, and its step is the
    # optimizer's step at the end of the execution before: the weights it measured.
    new_snapshots, previous = [], 0
    for (before, _), (_, last) in itertools.pairwise(recorder.records):
        if last != previous:
            new_snapshots.append((before, last))
            previous = last
    assert new_snapshots == [(step, step) for step in expected[1:]]


# --- sharing a folder with keras.callbacks.TensorBoard ----------------------------------


def test_shares_the_train_folder_with_keras_tensorboard(tmp_path):
    model = _mlp()
    callbacks = [
        keras.callbacks.TensorBoard(str(tmp_path), histogram_freq=1),
        keras_inits.SignalHistograms(X_PROBE, Y_PROBE, str(tmp_path), every_n_steps=EVERY),
    ]
    model.fit(X, Y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0,
              callbacks=callbacks)
    events = _events(tmp_path / "train")
    tags = set(events.Tags()["tensors"])
    path = _path(model.get_layer("hidden_tanh"))
    ours = {f"activations/{path}", f"weights/{path}/kernel", f"activation_std/{path}"}
    # Keras's callback tags by the full variable path, model name included.
    keras_path = model.get_layer("hidden_tanh").kernel.path.rsplit("/", 1)[0]
    keras_own = {"epoch_loss", f"{keras_path}/kernel/histogram", f"{keras_path}/bias/histogram"}
    assert ours <= tags and keras_own <= tags
    assert [step for step, _ in _series(events, f"activations/{path}")] == SNAPSHOT_STEPS
    assert [step for step, _ in _series(events, f"{keras_path}/kernel/histogram")] == list(
        range(EPOCHS)
    )
    assert [step for step, _ in _series(events, "epoch_loss")] == list(range(EPOCHS))


# --- a real TensorBoard server ----------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(port: int, route: str, **query) -> object:
    url = f"http://127.0.0.1:{port}{route}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _wait_for(port: int, server: subprocess.Popen, log: Path, ready, deadline: float):
    """Polls until `ready()` returns a truthy value; fails at `deadline` or if the server dies."""
    while True:
        if server.poll() is not None:
            pytest.fail(f"tensorboard exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            value = ready()
            if value:
                return value
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"tensorboard did not answer within 60 s:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


@pytest.mark.skipif(
    BACKEND != "tensorflow",
    reason="the server reads the same event files on every backend; run it once, under "
    "tensorflow, to keep the suite short",
)
def test_a_tensorboard_server_serves_the_histograms_and_scalars(trained, tmp_path):
    path = _path(trained["model"].get_layer("hidden_tanh"))
    tag = f"activations/{path}"
    port = _free_port()
    log = tmp_path / "tensorboard.log"
    command = [
        sys.executable, "-m", "tensorboard.main",
        "--logdir", str(trained["log_dir"]),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--load_fast=false",
        "--reload_interval", "1",
    ]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    with log.open("wb") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        plugins = _wait_for(port, server, log, lambda: _get(port, "/data/plugins_listing"),
                            deadline)
        assert plugins["histograms"]["enabled"] and plugins["scalars"]["enabled"]
        tags = _wait_for(
            port, server, log,
            lambda: (lambda t: t if tag in t.get("train", {}) else None)(
                _get(port, "/data/plugin/histograms/tags")
            ),
            deadline,
        )  # fmt: skip
        expected = {
            f"activations/{p}" for p in trained["before"]
        } | {f"weights/{p}/kernel" for p in trained["before"]}
        assert expected <= set(tags["train"])

        histograms = _get(port, "/data/plugin/histograms/histograms", run="train", tag=tag)
        assert [step for _, step, _ in histograms] == SNAPSHOT_STEPS
        for _, step, buckets in histograms:
            buckets = np.asarray(buckets)
            assert buckets.shape == (BINS, 3) and buckets[:, 2].sum() == PROBE * WIDTH, step
        outputs = trained["before"][path]["outputs"]
        first = np.asarray(histograms[0][2])
        np.testing.assert_allclose([first[0, 0], first[-1, 1]], [outputs.min(), outputs.max()],
                                   rtol=1e-5, atol=1e-6)

        scalars = _get(port, "/data/plugin/scalars/scalars", run="train",
                       tag=f"activation_std/{path}")
        assert [step for _, step, _ in scalars] == SNAPSHOT_STEPS
        np.testing.assert_allclose(scalars[0][2], outputs.std(), rtol=1e-5)
        stored = [float(value) for _, value in _series(trained["events"],
                                                       f"activation_std/{path}")]
        np.testing.assert_allclose([value for _, _, value in scalars], stored, rtol=1e-6)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


# --- bad arguments ----------------------------------------------------------------------


@pytest.mark.parametrize("every", [0, -5, 2.5, True, "10"])
def test_every_n_steps_must_be_a_positive_int(every, tmp_path):
    with pytest.raises(ValueError, match="every_n_steps must be an int >= 1"):
        keras_inits.SignalHistograms(X_PROBE, Y_PROBE, str(tmp_path), every_n_steps=every)


def test_bins_must_be_a_positive_int(tmp_path):
    with pytest.raises(ValueError, match="bins must be an int >= 1"):
        keras_inits.SignalHistograms(X_PROBE, Y_PROBE, str(tmp_path), bins=0)


@pytest.mark.parametrize("log_dir", [123, None, ["logs"]])
def test_log_dir_must_be_a_path(log_dir):
    with pytest.raises(TypeError, match="log_dir must be a path"):
        keras_inits.SignalHistograms(X_PROBE, Y_PROBE, log_dir)


def test_pathlib_log_dir_is_accepted(tmp_path):
    callback = keras_inits.SignalHistograms(X_PROBE, Y_PROBE, tmp_path)
    assert callback.log_dir == str(tmp_path)


def test_x_of_the_wrong_shape_fails_at_train_begin(tmp_path):
    model = _mlp()
    wrong = X_PROBE[:, : FEATURES - 3]
    callback = keras_inits.SignalHistograms(wrong, Y_PROBE, str(tmp_path), every_n_steps=EVERY)
    recorder = StepRecorder()
    with pytest.raises(ValueError, match="x does not fit model") as error:
        model.fit(X, Y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[callback, recorder])
    assert str(FEATURES - 3) in str(error.value)
    assert recorder.batches_begun == 0  # before any training step
    assert int(_numpy(model.optimizer.iterations)) == 0


# --- a subclassed model -----------------------------------------------------------------


class TwoLayers(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(WIDTH, "relu", name="hidden")
        self.classify = keras.layers.Dense(CLASSES, name="logits")

    def call(self, inputs):
        return self.classify(self.hidden(inputs))


def test_subclassed_model(tmp_path):
    keras.utils.set_random_seed(0)
    model = TwoLayers()
    model(X_PROBE)  # build
    model.compile(
        keras.optimizers.SGD(0.1),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    hidden_outputs = _numpy(model.hidden(X_PROBE)).copy()
    logits = _numpy(model(X_PROBE)).copy()
    callback = keras_inits.SignalHistograms(X_PROBE, Y_PROBE, str(tmp_path), every_n_steps=EVERY)
    model.fit(X, Y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0,
              callbacks=[callback])

    hidden, classify = _path(model.hidden), _path(model.classify)
    assert callback.layers == [hidden, classify]
    events = _events(tmp_path / "train")
    tags = set(events.Tags()["tensors"])
    for path in (hidden, classify):
        for prefix in ("activations", "activation_gradients", "activation_std",
                       "activation_gradient_std", "weight_gradient_std"):
            assert f"{prefix}/{path}" in tags
        assert {f"weights/{path}/kernel", f"weight_gradients/{path}/kernel"} <= tags
    assert f"dead_fraction/{hidden}" in tags and f"dead_fraction/{classify}" not in tags
    assert not any(tag.startswith("saturation/") for tag in tags)
    for tag in tags:
        assert [step for step, _ in _series(events, tag)] == SNAPSHOT_STEPS, tag
    for path, outputs in ((hidden, hidden_outputs), (classify, logits)):
        value = _series(events, f"activation_std/{path}")[0][1]
        np.testing.assert_allclose(float(value), outputs.std(), rtol=1e-5)
