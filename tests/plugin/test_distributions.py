"""Each fan-based initializer against its formula and against torch.nn.init.

Expected standard deviations are computed from torch's fans and gains (an
outside reference), and each draw is compared with the target distribution
(one-sample KS) and with torch's own draw (two-sample KS). Seeds are fixed, so
the tests are deterministic; alpha = 1e-3 and a 2% std tolerance (over 4e4+
samples the std's relative standard error is < 0.4%).
"""

import math

import numpy as np
import pytest
import torch
from scipy import stats

import keras_inits
from tests.plugin.util import draw, torch_shape

ALPHA = 1e-3
STD_TOLERANCE = 0.02


def torch_fans(shape):
    return torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(torch_shape(shape)))


def torch_draw(fill, shape):
    torch.manual_seed(0)
    weight = torch.empty(torch_shape(shape))
    fill(weight)
    return weight.numpy().ravel()


CASES = {
    # name: (ours, torch's in-place init, distribution, expected std from torch fans)
    "xavier_normal": (
        keras_inits.XavierNormal(seed=1),
        torch.nn.init.xavier_normal_,
        "normal",
        lambda fi, fo: math.sqrt(2.0 / (fi + fo)),
    ),
    "xavier_normal_gain": (
        keras_inits.XavierNormal(gain=5 / 3, seed=2),
        lambda w: torch.nn.init.xavier_normal_(w, gain=5 / 3),
        "normal",
        lambda fi, fo: 5 / 3 * math.sqrt(2.0 / (fi + fo)),
    ),
    "xavier_uniform": (
        keras_inits.XavierUniform(seed=3),
        torch.nn.init.xavier_uniform_,
        "uniform",
        lambda fi, fo: math.sqrt(2.0 / (fi + fo)),
    ),
    "kaiming_normal": (
        keras_inits.KaimingNormal(seed=4),
        lambda w: torch.nn.init.kaiming_normal_(w, nonlinearity="relu"),
        "normal",
        lambda fi, fo: math.sqrt(2.0 / fi),
    ),
    "kaiming_normal_fan_out_tanh": (
        keras_inits.KaimingNormal(mode="fan_out", nonlinearity="tanh", seed=5),
        lambda w: torch.nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="tanh"),
        "normal",
        lambda fi, fo: 5 / 3 / math.sqrt(fo),
    ),
    "kaiming_uniform_leaky": (
        keras_inits.KaimingUniform(negative_slope=0.2, nonlinearity="leaky_relu", seed=6),
        lambda w: torch.nn.init.kaiming_uniform_(w, a=0.2, nonlinearity="leaky_relu"),
        "uniform",
        lambda fi, fo: math.sqrt(2.0 / (1 + 0.04) / fi),
    ),
    "standard_uniform": (
        keras_inits.StandardUniform(seed=7),
        # PyTorch's default nn.Linear / nn.ConvNd weight init.
        lambda w: torch.nn.init.kaiming_uniform_(w, a=math.sqrt(5)),
        "uniform",
        lambda fi, fo: 1.0 / math.sqrt(3.0 * fi),
    ),
}


def reference(distribution, std):
    if distribution == "normal":
        return stats.norm(scale=std).cdf
    bound = math.sqrt(3.0) * std
    return stats.uniform(loc=-bound, scale=2 * bound).cdf


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_formula_and_torch(case, shape):
    ours, torch_fill, distribution, expected_std = CASES[case]
    std = expected_std(*torch_fans(shape))
    values = draw(ours, shape).ravel()

    assert values.std() / std == pytest.approx(1.0, abs=STD_TOLERANCE)
    assert abs(values.mean()) < 5 * std / math.sqrt(values.size)
    assert stats.kstest(values, reference(distribution, std)).pvalue > ALPHA
    assert stats.ks_2samp(values, torch_draw(torch_fill, shape)).pvalue > ALPHA
    if distribution == "uniform":
        assert np.abs(values).max() <= math.sqrt(3.0) * std * (1 + 1e-6)


def test_normal_is_untruncated_unlike_keras_glorot_normal():
    values = draw(keras_inits.XavierNormal(seed=0), (512, 512)).ravel()
    std = math.sqrt(2.0 / 1024)
    # Beyond 2 std lie 4.55% of an untruncated normal; Keras's truncated one has none.
    assert np.mean(np.abs(values) > 2 * std) == pytest.approx(0.0455, abs=0.003)


def test_transpose_layout_gives_the_right_std():
    # Conv2DTranspose kernel (k, k, out, in) with out=256, in=16.
    shape = (3, 3, 256, 16)
    values = draw(keras_inits.KaimingNormal(layout="transpose", seed=0), shape).ravel()
    assert values.std() / math.sqrt(2.0 / (16 * 9)) == pytest.approx(1.0, abs=STD_TOLERANCE)


def test_seeded_draws_repeat_and_unseeded_differ():
    shape = (64, 32)
    seeded = keras_inits.XavierNormal(seed=11)
    np.testing.assert_array_equal(draw(seeded, shape), draw(seeded, shape))
    a, b = keras_inits.XavierNormal(), keras_inits.XavierNormal()
    assert not np.array_equal(draw(a, shape), draw(b, shape))
    # One unseeded instance shared by two layers gives them different kernels.
    assert not np.array_equal(draw(a, shape), draw(a, shape))


@pytest.mark.filterwarnings("ignore:Explicitly requested dtype float64")
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_other_float_dtypes(dtype):
    import keras

    values = keras_inits.KaimingNormal(seed=0)((256, 256), dtype=dtype)
    # The dtype the backend itself gives (JAX without x64 has no float64).
    backend_dtype = keras.ops.zeros((1,), dtype=dtype).dtype
    assert keras.backend.standardize_dtype(values.dtype) == keras.backend.standardize_dtype(
        backend_dtype
    )
    std = float(np.std(keras.ops.convert_to_numpy(keras.ops.cast(values, "float32"))))
    assert std / math.sqrt(2.0 / 256) == pytest.approx(1.0, abs=STD_TOLERANCE)
