"""reinitialize: fans per layer type, per-block structured draws, real architectures.

Every expected fan, block shape and assembled kernel below is written by hand from
the layer's configuration, never read back from the kernel plans.

Speed on JAX: each new (sampler, shape) pair costs a compilation of about half a
second there. So layers whose build-time draws would be wasted are built with
"zeros", most re-draws are uniform (the same sampler as Keras's default
glorot_uniform), and the small RNNs share one size (4 units on 3 features).
"""

import dataclasses
import hashlib
import json
import math
import os
import pathlib
import subprocess
import sys
import warnings
from collections.abc import Callable

import keras
import numpy as np
import pytest

import keras_inits
from keras_inits.kernels import relative_path

L = keras.layers
ROOT = pathlib.Path(__file__).resolve().parents[2]


# --- helpers ---------------------------------------------------------------------------


def numpy(value):
    return np.array(keras.ops.convert_to_numpy(value))


def sequential(input_shape, *layers, dtype="float32"):
    return keras.Sequential([keras.Input(input_shape, dtype=dtype), *layers])


def snapshot(model):
    return {v.path: numpy(v) for v in model.weights}


def perturb(model, seed=0):
    """Overwrites every float weight with N(3, 1) noise, so that "kept", "zeroed" and
    "rewritten" are checked against values no initializer would produce."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        if "float" in str(variable.dtype):
            values = rng.standard_normal(tuple(variable.shape)) + 3.0
            variable.assign(values.astype(variable.dtype))


def kernel_rows(report):
    return [row for row in report.rows if row["layout"] != "bias"]


def fans(report):
    """(weight name, fan_in, fan_out) of every kernel row, in model order."""
    return [(row["weight"], row["fan_in"], row["fan_out"]) for row in kernel_rows(report)]


def row_for(report, layer_path, weight):
    (row,) = [r for r in report.rows if r["path"] == layer_path and r["weight"] == weight]
    return row


def digest(model):
    sha = hashlib.sha256()
    for variable in model.weights:
        sha.update(variable.path.rsplit("/", 1)[-1].encode())
        sha.update(numpy(variable).tobytes())
    return sha.hexdigest()


def mlp():
    """Two (8, 8) kernels: same shape, different positions in the model."""
    return sequential((8,), L.Dense(8), L.Dense(8), L.Dense(3))


def changed_everywhere(before, after):
    """Every entry changed (a fresh draw equal to the N(3, 1) noise is no coincidence)."""
    return before.shape == after.shape and not np.any(before == after)


def run(model, x):
    return numpy(model(np.asarray(x, dtype="float32")))


# --- 1. fans and blocks, layer type by layer type -----------------------------------

Z = "zeros"  # built with zeros: on JAX no sampler gets compiled for shapes drawn only here


class Recorder:
    """A plain callable initializer (no fans, no seed): draws N(0, 1) with NumPy and
    keeps every block it is asked for, so that a test can assemble the kernel by hand."""

    def __init__(self):
        self.rng = np.random.default_rng(0)
        self.blocks = []

    def __call__(self, shape, dtype=None):
        block = self.rng.standard_normal(shape).astype("float32")
        self.blocks.append(block)
        return keras.ops.convert_to_tensor(block)


def cat(blocks, axis):
    return np.concatenate(blocks, axis=axis)


def swap(block):
    return np.swapaxes(block, -1, -2)


def attention(dim, **kwargs):
    query = keras.Input((3, dim))
    layer = L.MultiHeadAttention(**kwargs)
    return keras.Model(query, layer(query, query))


@dataclasses.dataclass
class FanCase:
    make: Callable[[], keras.Model]
    fans: list  # (weight, fan_in, fan_out) per kernel, from the layer's configuration
    blocks: list  # the shape of each block drawn, in order
    kernels: Callable[[list], list]  # the blocks -> each kernel, assembled by hand


FAN_CASES = {
    "dense": FanCase(
        lambda: sequential((5,), L.Dense(7, kernel_initializer=Z)),
        [("kernel", 5, 7)],
        [(5, 7)],
        lambda b: [b[0]],
    ),
    # Conv1D(6, 3) on 4 channels: rf 3, fan_in 3 * 4, fan_out 3 * 6.
    "conv1d": FanCase(
        lambda: sequential((6, 4), L.Conv1D(6, 3, kernel_initializer=Z)),
        [("kernel", 12, 18)],
        [(3, 4, 6)],
        lambda b: [b[0]],
    ),
    "conv2d": FanCase(
        lambda: sequential((6, 6, 4), L.Conv2D(8, 3, kernel_initializer=Z)),
        [("kernel", 36, 72)],
        [(3, 3, 4, 8)],
        lambda b: [b[0]],
    ),
    # Conv3D(6, (2, 3, 1)) on 4 channels: rf 6.
    "conv3d": FanCase(
        lambda: sequential((4, 4, 4, 4), L.Conv3D(6, (2, 3, 1), kernel_initializer=Z)),
        [("kernel", 24, 36)],
        [(2, 3, 1, 4, 6)],
        lambda b: [b[0]],
    ),
    # groups=2 on 4 channels, 8 filters: each output sees rf * 4/2 = 18 inputs,
    # fan_out rf * 8/2 = 36; two (3, 3, 2, 4) blocks side by side on the out axis.
    "conv2d_groups": FanCase(
        lambda: sequential((6, 6, 4), L.Conv2D(8, 3, groups=2, kernel_initializer=Z)),
        [("kernel", 18, 36)],
        [(3, 3, 2, 4)] * 2,
        lambda b: [cat(b, -1)],
    ),
    # Transposed kernels are (*k, out, in): fans count in -> out, the block is drawn
    # as (*k, in, out) and swapped into place.
    "conv1d_transpose": FanCase(
        lambda: sequential((6, 4), L.Conv1DTranspose(6, 3, kernel_initializer=Z)),
        [("kernel", 12, 18)],
        [(3, 4, 6)],
        lambda b: [swap(b[0])],
    ),
    "conv2d_transpose": FanCase(
        lambda: sequential((6, 6, 4), L.Conv2DTranspose(8, 3, kernel_initializer=Z)),
        [("kernel", 36, 72)],
        [(3, 3, 4, 8)],
        lambda b: [swap(b[0])],
    ),
    # Conv3DTranspose(6, 2) on 4 channels: rf 8.
    "conv3d_transpose": FanCase(
        lambda: sequential((3, 3, 3, 4), L.Conv3DTranspose(6, 2, kernel_initializer=Z)),
        [("kernel", 32, 48)],
        [(2, 2, 2, 4, 6)],
        lambda b: [swap(b[0])],
    ),
    # Depthwise, multiplier 2 on 4 channels: fan_in rf, fan_out rf * 2; one
    # (*k, 1, 2) block per input channel.
    "depthwise1d": FanCase(
        lambda: sequential(
            (6, 4), L.DepthwiseConv1D(3, depth_multiplier=2, depthwise_initializer=Z)
        ),
        [("kernel", 3, 6)],
        [(3, 1, 2)] * 4,
        lambda b: [cat(b, -2)],
    ),
    "depthwise2d": FanCase(
        lambda: sequential(
            (6, 6, 4), L.DepthwiseConv2D(3, depth_multiplier=2, depthwise_initializer=Z)
        ),
        [("kernel", 9, 18)],
        [(3, 3, 1, 2)] * 4,
        lambda b: [cat(b, -2)],
    ),
    # Separable: the depthwise part as above, then a 1x1 conv from 4 * 2 channels to 10.
    "separable2d": FanCase(
        lambda: sequential(
            (6, 6, 4),
            L.SeparableConv2D(
                10, 3, depth_multiplier=2, depthwise_initializer=Z, pointwise_initializer=Z
            ),
        ),
        [("depthwise_kernel", 9, 18), ("pointwise_kernel", 8, 10)],
        [(3, 3, 1, 2)] * 4 + [(1, 1, 8, 10)],
        lambda b: [cat(b[:4], -2), b[4]],
    ),
    "einsum_dense": FanCase(
        lambda: sequential(
            (3, 5),
            L.EinsumDense("abc,cd->abd", output_shape=(None, 7), kernel_initializer=Z),
        ),
        [("kernel", 5, 7)],
        [(5, 7)],
        lambda b: [b[0]],
    ),
    # Kernel axis b is in the input and the output: 3 independent (5, 7) maps.
    "einsum_dense_per_position": FanCase(
        lambda: sequential(
            (3, 5), L.EinsumDense("abc,bcd->abd", output_shape=(3, 7), kernel_initializer=Z)
        ),
        [("kernel", 5, 7)],
        [(5, 7)] * 3,
        lambda b: [np.stack(b)],
    ),
    # MHA(num_heads=2, key_dim=4) on 6-dim inputs: query/key/value (6, 2, 4) map 6
    # inputs to 2 * 4 outputs; the output projection (2, 4, 6) maps 8 to 6.
    "multi_head_attention": FanCase(
        lambda: attention(6, num_heads=2, key_dim=4, kernel_initializer=Z),
        [("kernel", 6, 8)] * 3 + [("kernel", 8, 6)],
        [(6, 8)] * 3 + [(8, 6)],
        lambda b: (
            [b[0].reshape(6, 2, 4), b[1].reshape(6, 2, 4), b[2].reshape(6, 2, 4)]
            + [b[3].reshape(2, 4, 6)]
        ),
    ),
    # RNNs on 3 features, 4 units: per gate fan_out is 4, not gates * 4; gate g is
    # columns [4g, 4g + 4).
    "lstm": FanCase(
        lambda: sequential((5, 3), L.LSTM(4, kernel_initializer=Z, recurrent_initializer=Z)),
        [("kernel", 3, 4), ("recurrent_kernel", 4, 4)],
        [(3, 4)] * 4 + [(4, 4)] * 4,
        lambda b: [cat(b[:4], -1), cat(b[4:], -1)],
    ),
    "gru": FanCase(
        lambda: sequential((5, 3), L.GRU(4, kernel_initializer=Z, recurrent_initializer=Z)),
        [("kernel", 3, 4), ("recurrent_kernel", 4, 4)],
        [(3, 4)] * 3 + [(4, 4)] * 3,
        lambda b: [cat(b[:3], -1), cat(b[3:], -1)],
    ),
    "simple_rnn": FanCase(
        lambda: sequential((5, 3), L.SimpleRNN(4, kernel_initializer=Z, recurrent_initializer=Z)),
        [("kernel", 3, 4), ("recurrent_kernel", 4, 4)],
        [(3, 4), (4, 4)],
        lambda b: [b[0], b[1]],
    ),
    # ConvLSTM2D(4, 3) on 3 channels: each gate a 3x3 conv from 3 (input) or 4
    # (state) channels to 4.
    "conv_lstm2d": FanCase(
        lambda: sequential(
            (2, 5, 5, 3), L.ConvLSTM2D(4, 3, kernel_initializer=Z, recurrent_initializer=Z)
        ),
        [("kernel", 27, 36), ("recurrent_kernel", 36, 36)],
        [(3, 3, 3, 4)] * 4 + [(3, 3, 4, 4)] * 4,
        lambda b: [cat(b[:4], -1), cat(b[4:], -1)],
    ),
    # A lookup: each output coordinate is one weight, so (1, dim).
    "embedding": FanCase(
        lambda: sequential((3,), L.Embedding(10, 6, embeddings_initializer=Z), dtype="int32"),
        [("embeddings", 1, 6)],
        [(10, 6)],
        lambda b: [b[0]],
    ),
}


@pytest.mark.parametrize("name", sorted(FAN_CASES))
def test_fans_and_blocks_per_layer_type(name):
    case = FAN_CASES[name]
    model = case.make()
    recorder = Recorder()
    report = keras_inits.reinitialize(model, recorder, recurrent=recorder, seed=0)
    assert fans(report) == case.fans
    assert [block.shape for block in recorder.blocks] == case.blocks
    variables = {relative_path(model, v): v for v in model.weights}
    written = [numpy(variables[f"{row['path']}/{row['weight']}"]) for row in kernel_rows(report)]
    expected = case.kernels(recorder.blocks)
    assert len(written) == len(expected)
    for kernel, assembled in zip(written, expected, strict=True):
        np.testing.assert_array_equal(kernel, assembled)


# --- 2. the std drawn follows the fans ----------------------------------------------


@dataclasses.dataclass
class StdCase:
    make: Callable[[], keras.Model]
    fan: float  # the fan the std divides by, from the layer's configuration
    keras_fan: float  # the one Keras's (..., in, out) reading would give


# Kaiming (relu gain, fan_in): std = sqrt(2 / fan_in).
KAIMING_CASES = {
    # Conv2DTranspose(8, 3) on 64 channels: kernel (3, 3, 8, 64); fan_in 9 * 64,
    # where Keras reads 9 * 8.
    "conv2d_transpose": StdCase(
        lambda: sequential((4, 4, 64), L.Conv2DTranspose(8, 3, kernel_initializer=Z)),
        9 * 64,
        9 * 8,
    ),
    # MHA(8 heads, key_dim 32) on 64-dim inputs: query (64, 8, 32) sees 64 inputs;
    # Keras reads rf 64 * in 8.
    "multi_head_attention": StdCase(
        lambda: attention(64, num_heads=8, key_dim=32, kernel_initializer=Z),
        64,
        64 * 8,
    ),
}
# Xavier (fan_avg): std = sqrt(2 / (fan_in + fan_out)); fan = fan_in + fan_out.
XAVIER_CASES = {
    # DepthwiseConv2D(5, depth_multiplier=2) on 64 channels: kernel (5, 5, 64, 2);
    # fans (25, 50), where Keras reads (1600, 50).
    "depthwise2d": StdCase(
        lambda: sequential(
            (6, 6, 64), L.DepthwiseConv2D(5, depth_multiplier=2, depthwise_initializer=Z)
        ),
        25 + 50,
        25 * 64 + 50,
    ),
    # Conv2D(64, 3, groups=4) on 64 channels: kernel (3, 3, 16, 64); fans (144, 144),
    # where Keras reads (144, 576).
    "conv2d_groups": StdCase(
        lambda: sequential((4, 4, 64), L.Conv2D(64, 3, groups=4, kernel_initializer=Z)),
        144 + 144,
        144 + 576,
    ),
    # LSTM(64) on 256 features: kernel (256, 256), per gate (256, 64).
    "lstm": StdCase(
        lambda: sequential((2, 256), L.LSTM(64, kernel_initializer=Z, recurrent_initializer=Z)),
        256 + 64,
        256 + 256,
    ),
    # Embedding(1000, 16): fans (1, 16), where Keras reads (1000, 16).
    "embedding": StdCase(
        lambda: sequential((2,), L.Embedding(1000, 16, embeddings_initializer=Z), dtype="int32"),
        1 + 16,
        1000 + 16,
    ),
}
STD_CASES = [
    *[
        (name, init, KAIMING_CASES[name])
        for name in KAIMING_CASES
        for init in ("kaiming_normal", "he_normal")
    ],
    *[
        (name, init, XAVIER_CASES[name])
        for name in XAVIER_CASES
        for init in ("xavier_uniform", "glorot_uniform")
    ],
]


@pytest.mark.parametrize(
    "name, initializer, case", STD_CASES, ids=[f"{n}-{i}" for n, i, _ in STD_CASES]
)
def test_std_follows_the_layer_fans(name, initializer, case):
    # kaiming_normal is untruncated, he_normal Keras's truncated VarianceScaling;
    # xavier_uniform is ours, glorot_uniform Keras's. All four must get our fans.
    model = case.make()
    report = keras_inits.reinitialize(model, initializer, seed=1, recurrent="keep")
    row = kernel_rows(report)[0]
    variables = {relative_path(model, v): v for v in model.weights}
    kernel = numpy(variables[f"{row['path']}/{row['weight']}"])
    assert kernel.size >= 3000
    std = kernel.std()
    expected = math.sqrt(2.0 / case.fan)
    keras_own = math.sqrt(2.0 / case.keras_fan)
    # Thousands of draws: the sample std is within ~1.5% of the true one.
    assert std / expected == pytest.approx(1.0, abs=0.05)
    assert abs(std / keras_own - 1.0) > 0.15
    assert abs(kernel.mean()) < 0.1 * expected
    assert row["std"] == pytest.approx(std, rel=1e-4)
    if "uniform" in initializer:
        # U(-a, a) with a = sqrt(3) * std: nothing beyond the limit.
        assert np.abs(kernel).max() <= math.sqrt(3.0) * expected * (1 + 1e-6)


# --- 3. structured initializers, block by block --------------------------------------


def test_orthogonal_recurrent_kernel_is_orthogonal_per_gate():
    units = 4
    model = sequential((5, 3), L.LSTM(units, kernel_initializer=Z, recurrent_initializer=Z))
    keras_inits.reinitialize(model, "xavier_uniform", seed=0, recurrent="orthogonal")
    recurrent = numpy(model.layers[0].cell.recurrent_kernel)
    assert recurrent.shape == (units, 4 * units)
    blocks = [recurrent[:, g * units : (g + 1) * units] for g in range(4)]
    for block in blocks:
        np.testing.assert_allclose(block.T @ block, np.eye(units), atol=1e-5)
    # Each gate has its own draw.
    assert not np.allclose(blocks[0], blocks[1])


def test_dirac_depthwise_is_identity():
    x = np.random.default_rng(0).standard_normal((2, 7, 7, 5))
    model = sequential((7, 7, 5), L.DepthwiseConv2D(3, padding="same", depthwise_initializer=Z))
    perturb(model)  # a non-zero bias that the call must reset
    keras_inits.reinitialize(model, "dirac")
    np.testing.assert_allclose(run(model, x), x, atol=1e-6)


def test_dirac_depthwise_multiplier_two_copies_each_channel_once():
    x = np.random.default_rng(1).standard_normal((2, 7, 7, 3))
    model = sequential(
        (7, 7, 3),
        L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, depthwise_initializer=Z),
    )
    perturb(model)
    keras_inits.reinitialize(model, "dirac")
    y = run(model, x)
    # Output channel c * m + j comes from input channel c.
    np.testing.assert_allclose(y[..., 0::2], x, atol=1e-6)
    np.testing.assert_allclose(y[..., 1::2], 0.0, atol=1e-6)


def test_dirac_conv_transpose_is_identity():
    x = np.random.default_rng(2).standard_normal((2, 6, 6, 5))
    model = sequential((6, 6, 5), L.Conv2DTranspose(5, 3, padding="same", kernel_initializer=Z))
    perturb(model)
    keras_inits.reinitialize(model, "dirac")
    np.testing.assert_allclose(run(model, x), x, atol=1e-6)


def test_dirac_grouped_conv_is_identity():
    x = np.random.default_rng(3).standard_normal((2, 6, 6, 6))
    model = sequential((6, 6, 6), L.Conv2D(6, 3, groups=2, padding="same", kernel_initializer=Z))
    perturb(model)
    keras_inits.reinitialize(model, "dirac")
    np.testing.assert_allclose(run(model, x), x, atol=1e-6)


# --- 4. a real architecture ----------------------------------------------------------

KERNEL_LAYERS = (L.Conv2D, L.DepthwiseConv2D, L.Dense)


@pytest.fixture(scope="module")
def mobilenet():
    with warnings.catch_warnings():
        # "input_shape is not one of (96, 128, 160, 192, 224)": intended, to stay small.
        warnings.simplefilter("ignore", UserWarning)
        return keras.applications.MobileNetV2(
            input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10
        )


def config_fans(layer):
    """(fan_in, fan_out) of a Conv2D / DepthwiseConv2D / Dense kernel, from the layer's
    configuration and the channels of its input."""
    config = layer.get_config()
    channels = layer.input.shape[-1]
    if isinstance(layer, L.DepthwiseConv2D):
        field = math.prod(config["kernel_size"])
        return field, field * config["depth_multiplier"]
    if isinstance(layer, L.Conv2D):
        field = math.prod(config["kernel_size"])
        groups = config["groups"]
        return field * channels // groups, field * config["filters"] // groups
    if isinstance(layer, L.Dense):
        return channels, config["units"]
    raise AssertionError(f"no fan rule for {layer}")


def test_application_rewrites_kernels_and_keeps_batchnorm(mobilenet):
    kernel_layers = [layer for layer in mobilenet.layers if isinstance(layer, KERNEL_LAYERS)]
    norms = [layer for layer in mobilenet.layers if isinstance(layer, L.BatchNormalization)]
    biased = [layer for layer in kernel_layers if layer.bias is not None]
    assert {type(layer) for layer in kernel_layers} == set(KERNEL_LAYERS)
    assert len(norms) > 30 and biased

    perturb(mobilenet, seed=10)
    before = snapshot(mobilenet)
    report = keras_inits.reinitialize(mobilenet, "xavier_uniform", seed=0)
    after = snapshot(mobilenet)

    for layer in kernel_layers:
        path = layer.kernel.path
        assert changed_everywhere(before[path], after[path]), path
    for layer in norms:
        assert len(layer.weights) == 4
        for variable in layer.weights:
            np.testing.assert_array_equal(after[variable.path], before[variable.path])
    for layer in biased:
        assert not after[layer.bias.path].any()
    written = {f"{row['path']}/{row['weight']}" for row in report.rows}
    untouched = set(before) - written
    assert len(untouched) == report.kept
    for path in untouched:
        np.testing.assert_array_equal(after[path], before[path])


def test_application_keeps_biases_on_request(mobilenet):
    biased = [
        layer
        for layer in mobilenet.layers
        if isinstance(layer, KERNEL_LAYERS) and layer.bias is not None
    ]
    perturb(mobilenet, seed=11)
    before = snapshot(mobilenet)
    report = keras_inits.reinitialize(mobilenet, "xavier_uniform", seed=1, biases="keep")
    after = snapshot(mobilenet)
    assert all(row["layout"] != "bias" for row in report.rows)
    for layer in biased:
        np.testing.assert_array_equal(after[layer.bias.path], before[layer.bias.path])
        assert changed_everywhere(before[layer.kernel.path], after[layer.kernel.path])


def test_application_report_fans_match_the_layer_configs(mobilenet):
    report = keras_inits.reinitialize(mobilenet, "xavier_uniform", seed=2)
    kernel_layers = [layer for layer in mobilenet.layers if isinstance(layer, KERNEL_LAYERS)]
    rows = kernel_rows(report)
    assert [row["path"] for row in rows] == [layer.name for layer in kernel_layers]
    for layer, row in zip(kernel_layers, rows, strict=True):
        assert row["weight"] == "kernel"
        assert (row["fan_in"], row["fan_out"]) == config_fans(layer), layer.name
    biased = [layer for layer in kernel_layers if layer.bias is not None]
    assert len(report.rows) == len(kernel_layers) + len(biased)


# --- 5. determinism ------------------------------------------------------------------


def test_same_seed_same_weights_and_different_seed_different():
    model = mlp()
    keras_inits.reinitialize(model, "xavier_uniform", seed=5)
    first = snapshot(model)
    keras_inits.reinitialize(model, "xavier_uniform", seed=5)
    again = snapshot(model)
    keras_inits.reinitialize(model, "xavier_uniform", seed=6)
    other = snapshot(model)
    kernels = [path for path in first if path.endswith("kernel")]
    for path in kernels:
        np.testing.assert_array_equal(again[path], first[path])
        assert not np.array_equal(other[path], first[path]), path


def test_second_build_with_other_names_gets_the_same_weights():
    one, two = mlp(), mlp()
    assert [layer.name for layer in one.layers] != [layer.name for layer in two.layers]
    keras_inits.reinitialize(one, "xavier_uniform", seed=7)
    keras_inits.reinitialize(two, "xavier_uniform", seed=7)
    for a, b in zip(one.weights, two.weights, strict=True):
        np.testing.assert_array_equal(numpy(a), numpy(b))


def test_kernels_of_the_same_shape_differ():
    model = mlp()
    keras_inits.reinitialize(model, "xavier_uniform", seed=8)
    first, second = (numpy(layer.kernel) for layer in model.layers[:2])
    assert first.shape == second.shape == (8, 8)
    assert not np.any(first == second)


def test_seed_none_follows_keras_set_random_seed():
    model = mlp()
    keras.utils.set_random_seed(123)
    keras_inits.reinitialize(model, "xavier_uniform")
    first = digest(model)
    keras.utils.set_random_seed(123)
    keras_inits.reinitialize(model, "xavier_uniform")
    assert digest(model) == first
    keras_inits.reinitialize(model, "xavier_uniform")
    assert digest(model) != first


def test_same_seed_same_weights_in_another_process():
    model = mlp()
    keras_inits.reinitialize(model, "xavier_uniform", seed=9)
    code = (
        "import keras_inits\n"
        "from tests.plugin.test_reinit import digest, mlp\n"
        "model = mlp()\n"
        "keras_inits.reinitialize(model, 'xavier_uniform', seed=9)\n"
        "print('digest', digest(model))\n"
    )
    env = {**os.environ, "KERAS_BACKEND": keras.backend.backend()}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("digest ")]
    assert line.split()[1] == digest(model)


# --- 6. model kinds ------------------------------------------------------------------


class Block(L.Layer):
    """A custom layer holding two Dense sublayers."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.first = L.Dense(6)
        self.second = L.Dense(3)

    def call(self, x):
        return self.second(self.first(x))


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.hidden = L.Dense(6)
        self.head = L.Dense(2)

    def call(self, x):
        return self.head(self.hidden(x))


def functional_with_nested_sequential():
    x = keras.Input((4,))
    inner = keras.Sequential([L.Dense(5), L.Dense(3)], name="inner")
    return keras.Model(x, inner(L.Dense(6)(x)))


def subclassed():
    model = Subclassed()
    model(np.zeros((1, 4), "float32"))
    return model


# name -> (model factory, [(weight, fan_in, fan_out)] by hand, in model order).
MODEL_KINDS = {
    "sequential": (
        lambda: sequential((4,), L.Dense(6), L.Dense(3)),
        [("kernel", 4, 6), ("kernel", 6, 3)],
    ),
    "functional_nested": (
        functional_with_nested_sequential,
        [("kernel", 4, 6), ("kernel", 6, 5), ("kernel", 5, 3)],
    ),
    "subclassed": (subclassed, [("kernel", 4, 6), ("kernel", 6, 2)]),
    "custom_layer": (
        lambda: sequential((4,), Block()),
        [("kernel", 4, 6), ("kernel", 6, 3)],
    ),
    "bidirectional_lstm": (
        lambda: sequential((5, 3), L.Bidirectional(L.LSTM(4))),
        [("kernel", 3, 4), ("recurrent_kernel", 4, 4)] * 2,
    ),
    "time_distributed": (
        lambda: sequential((5, 3), L.TimeDistributed(L.Dense(2))),
        [("kernel", 3, 2)],
    ),
}


@pytest.mark.parametrize("kind", sorted(MODEL_KINDS))
def test_model_kinds(kind):
    make, expected = MODEL_KINDS[kind]
    model = make()
    perturb(model)
    before = snapshot(model)
    report = keras_inits.reinitialize(model, "xavier_uniform", seed=0)
    after = snapshot(model)
    assert fans(report) == expected
    kernels = [path for path in before if path.rsplit("/", 1)[-1].endswith("kernel")]
    biases = [path for path in before if path.endswith("/bias")]
    assert len(kernels) == len(expected)
    assert biases
    for path in kernels:
        assert changed_everywhere(before[path], after[path]), path
    for path in biases:
        if "lstm" not in path:
            assert not after[path].any(), path
    assert report.kept == 0


# --- 7. include ----------------------------------------------------------------------


def include_model():
    x = keras.Input((6, 4))
    y = L.Conv1D(5, 3, name="conv")(x)
    y = L.GlobalAveragePooling1D()(y)
    y = L.Dense(5, name="a")(y)
    return keras.Model(x, L.Dense(3, name="b")(y))


INCLUDES = {
    "name": ("a", {"a"}),
    "class": (L.Conv1D, {"conv"}),
    "predicate": (lambda layer: getattr(layer, "units", None) == 3, {"b"}),
    "mixed_list": (["a", L.Conv1D], {"a", "conv"}),
    "list_with_predicate": ([lambda layer: layer.name == "b", "conv"], {"b", "conv"}),
}


@pytest.mark.parametrize("case", sorted(INCLUDES))
def test_include_selects_layers_and_keeps_the_others(case):
    include, chosen = INCLUDES[case]
    model = include_model()
    perturb(model)
    before = snapshot(model)
    report = keras_inits.reinitialize(model, "xavier_uniform", seed=0, include=include)
    after = snapshot(model)
    assert {row["path"] for row in report.rows} == chosen
    for name in ("conv", "a", "b"):
        layer = model.get_layer(name)
        kernel, bias = layer.kernel.path, layer.bias.path
        if name in chosen:
            assert changed_everywhere(before[kernel], after[kernel])
            assert not after[bias].any()
        else:
            np.testing.assert_array_equal(after[kernel], before[kernel])
            np.testing.assert_array_equal(after[bias], before[bias])
    assert report.kept == 2 * (3 - len(chosen))


def test_include_by_path_in_a_nested_model():
    model = functional_with_nested_sequential()
    inner_first = model.get_layer("inner").layers[0]
    path = inner_first.kernel.path.rsplit("/", 1)[0]
    assert path.startswith("inner/")
    report = keras_inits.reinitialize(model, "xavier_uniform", seed=0, include=path)
    assert [row["weight"] for row in report.rows] == ["kernel", "bias"]
    assert {row["path"] for row in report.rows} == {path}


def test_include_unknown_name_lists_the_layers():
    model = include_model()
    before = snapshot(model)
    with pytest.raises(ValueError, match="nope") as error:
        keras_inits.reinitialize(model, "xavier_uniform", include=["a", "nope"])
    for name in ("a", "b", "conv"):
        assert name in str(error.value)
    after = snapshot(model)
    for path in before:
        np.testing.assert_array_equal(after[path], before[path])


@pytest.mark.parametrize("include", [[3], ["a", 2.5], [None]])
def test_include_bad_item_type(include):
    with pytest.raises(TypeError, match="include"):
        keras_inits.reinitialize(include_model(), "xavier_uniform", include=include)


def test_include_accepts_a_generator():
    model = include_model()
    report = keras_inits.reinitialize(
        model, "xavier_uniform", seed=0, include=(name for name in ["a", "b"])
    )
    assert {row["path"] for row in report.rows} == {"a", "b"}


def test_include_by_container_selects_what_is_inside():
    inputs = keras.Input((5, 4))
    x = L.Bidirectional(L.LSTM(3, return_sequences=True), name="bi")(inputs)
    x = L.TimeDistributed(L.Dense(2), name="td")(x)
    model = keras.Model(inputs, L.Dense(1, name="head")(x))
    for include in ("bi", L.Bidirectional, [model.get_layer("bi")]):
        report = keras_inits.reinitialize(model, "xavier_uniform", seed=0, include=include)
        paths = {row["path"] for row in report.rows}
        assert paths and all(path.startswith("bi/") for path in paths), (include, paths)
        assert len([r for r in report.rows if r["weight"] == "kernel"]) == 2  # both directions
    report = keras_inits.reinitialize(model, "xavier_uniform", seed=0, include="td")
    assert {row["path"] for row in report.rows} == {"td/dense"} or all(
        row["path"].startswith("td") for row in report.rows
    )


def test_include_that_selects_nothing_is_refused():
    model = include_model()
    before = [keras.ops.convert_to_numpy(w).copy() for w in model.weights]
    with pytest.raises(ValueError, match="selects no layer"):
        keras_inits.reinitialize(model, "xavier_uniform", include=L.Conv2D)
    for old, new in zip(before, model.weights, strict=True):
        np.testing.assert_array_equal(old, keras.ops.convert_to_numpy(new))


def test_an_initializer_refusing_one_kernel_leaves_the_model_untouched():
    model = keras.Sequential(
        [keras.Input((6, 4)), L.Conv1D(4, 3), L.Flatten(), L.Dense(3)]
    )
    before = [keras.ops.convert_to_numpy(w).copy() for w in model.weights]
    with pytest.raises(ValueError, match="convolution"):
        keras_inits.reinitialize(model, "dirac", seed=0)
    for old, new in zip(before, model.weights, strict=True):
        np.testing.assert_array_equal(old, keras.ops.convert_to_numpy(new))


def test_paths_leave_out_the_models_auto_numbered_name():
    first = keras.Sequential([keras.Input((4,)), L.Dense(3, name="dense_a")])
    second = keras.Sequential([keras.Input((4,)), L.Dense(3, name="dense_a")])
    assert first.name != second.name
    rows = [keras_inits.reinitialize(m, "xavier_uniform", seed=0).rows for m in (first, second)]
    assert [r["path"] for r in rows[0]] == [r["path"] for r in rows[1]] == ["dense_a"] * 2


# --- 8. errors -----------------------------------------------------------------------


def test_unbuilt_model():
    with pytest.raises(ValueError, match="build"):
        keras_inits.reinitialize(keras.Sequential([L.Dense(3)]), "xavier_uniform")


@pytest.mark.parametrize("thing", [np.zeros((3, 3)), "model", None])
def test_not_a_model(thing):
    with pytest.raises(TypeError, match="keras.Model"):
        keras_inits.reinitialize(thing, "xavier_uniform")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"initializer": "xavier_uniform", "biases": "ones"}, "biases"),
        ({"initializer": "xavier_unifrom"}, "Unknown initializer"),
        ({"initializer": None}, "initializer"),
        ({"initializer": "xavier_uniform", "seed": -1}, "seed"),
    ],
)
def test_bad_arguments_leave_the_model_untouched(kwargs, message):
    model = sequential((4,), L.Dense(3))
    perturb(model)
    before = snapshot(model)
    with pytest.raises(ValueError, match=message):
        keras_inits.reinitialize(model, **kwargs)
    after = snapshot(model)
    for path in before:
        np.testing.assert_array_equal(after[path], before[path])


def test_model_without_kernels():
    model = sequential((4,), L.BatchNormalization())
    with pytest.raises(ValueError, match="nothing to re-initialize"):
        keras_inits.reinitialize(model, "xavier_uniform")


def test_recurrent_keep_leaves_recurrent_kernels():
    model = sequential((5, 3), L.GRU(4))
    perturb(model)
    cell = model.layers[0].cell
    before = snapshot(model)
    report = keras_inits.reinitialize(model, "xavier_uniform", seed=0, recurrent="keep")
    after = snapshot(model)
    np.testing.assert_array_equal(
        after[cell.recurrent_kernel.path], before[cell.recurrent_kernel.path]
    )
    assert changed_everywhere(before[cell.kernel.path], after[cell.kernel.path])
    assert not after[cell.bias.path].any()
    assert [row["weight"] for row in report.rows] == ["kernel", "bias"]
    assert report.kept == 1


# --- 9. LSTM forget-gate bias --------------------------------------------------------


@pytest.mark.parametrize("unit_forget_bias", [True, False])
def test_lstm_bias_forget_gate(unit_forget_bias):
    units = 4
    model = sequential((5, 3), L.LSTM(units, unit_forget_bias=unit_forget_bias))
    perturb(model)
    keras_inits.reinitialize(model, "xavier_uniform", seed=0)
    bias = numpy(model.layers[0].cell.bias)
    expected = np.zeros(4 * units)
    if unit_forget_bias:
        expected[units : 2 * units] = 1.0  # gates i, f, c, o
    np.testing.assert_array_equal(bias, expected)


# --- 10. the report ------------------------------------------------------------------


def test_report_table_and_dict():
    model = sequential((4,), L.Dense(6, name="d1"), L.BatchNormalization(), L.Dense(3))
    report = keras_inits.reinitialize(model, "xavier_uniform", seed=0)
    # Two kernels and two biases written; the four BatchNormalization weights kept.
    assert len(report) == len(report.rows) == 4
    assert report.kept == 4

    lines = str(report).splitlines()
    header = lines[0].split()
    for column in ("layer", "weight", "shape", "fan_in", "fan_out", "initializer"):
        assert column in header
    assert set(lines[1].replace(" ", "")) == {"-"}
    body = lines[2 : 2 + len(report.rows)]
    for line, row in zip(body, report.rows, strict=True):
        assert line.split()[:2] == [row["path"], row["weight"]]
    assert lines[2 + len(report.rows) :] == [
        "4 weights written; 4 other weights kept as they were."
    ]
    d1 = row_for(report, report.rows[0]["path"], "kernel")
    assert d1["path"].endswith("d1")
    assert (d1["fan_in"], d1["fan_out"]) == (4, 6)

    data = json.loads(json.dumps(report.to_dict()))
    assert data["kept"] == 4
    assert [(r["path"], r["weight"]) for r in data["rows"]] == [
        (r["path"], r["weight"]) for r in report.rows
    ]
    kernel = numpy(model.layers[0].kernel)
    assert data["rows"][0]["std"] == pytest.approx(float(kernel.std()), rel=1e-4)
    assert data["rows"][0]["shape"] == [4, 6]


def test_fallback_takes_the_kernels_the_initializer_refuses():
    model = keras.Sequential([keras.Input((6, 4)), L.Conv1D(4, 3), L.Flatten(), L.Dense(3)])
    report = keras_inits.reinitialize(model, "dirac", seed=0, fallback="xavier_uniform")
    kernels = [row for row in report.rows if row["weight"] == "kernel"]
    assert kernels[0]["initializer"] == "Dirac"
    assert kernels[1]["initializer"].startswith("XavierUniform (fallback: Dirac")
    conv = numpy(model.layers[0].kernel)
    np.testing.assert_array_equal(conv[1], np.eye(4))  # the identity at the centre tap
    dense = numpy(model.layers[2].kernel)
    limit = np.sqrt(6 / (dense.shape[0] + dense.shape[1]))
    assert 0 < np.abs(dense).max() <= limit


def test_a_refused_kernel_without_fallback_names_the_layer():
    model = keras.Sequential([keras.Input((6, 4)), L.Conv1D(4, 3), L.Flatten(), L.Dense(3)])
    with pytest.raises(ValueError, match="dense.*convolution"):
        keras_inits.reinitialize(model, "dirac", seed=0)
