"""`trunc_normal`: torch.nn.init.trunc_normal_'s distribution (absolute bounds), checked
against scipy's truncated normal (one-sample KS and its closed-form std) and against
torch's own draw (two-sample KS), on every backend."""

import keras
import numpy as np
import pytest
import torch
from scipy import stats

import keras_inits
from tests.plugin.util import draw

ALPHA = 1e-3
SHAPE = (256, 256)  # 65,536 draws: the std's relative standard error is about 0.3%
CASES = [
    # (mean, std, a, b)
    (0.0, 1.0, -2.0, 2.0),  # torch's defaults
    (0.0, 0.02, -2.0, 2.0),  # ViT / timm: bounds far out, so untruncated in effect
    (0.0, 0.02, -0.04, 0.04),  # cut at 2 std, as Keras's TruncatedNormal cuts
    (1.0, 2.0, 0.0, 3.0),  # off-centre
    (0.0, 1.0, 0.5, 1.5),  # one side of the mean
]


def _reference(mean, std, a, b):
    return stats.truncnorm((a - mean) / std, (b - mean) / std, loc=mean, scale=std)


@pytest.mark.parametrize("mean, std, a, b", CASES)
def test_draws_follow_the_truncated_normal_and_torchs_draw(mean, std, a, b):
    values = draw(keras_inits.TruncNormal(mean, std, a, b, seed=1), SHAPE).ravel()
    assert a <= values.min() and values.max() <= b
    reference = _reference(mean, std, a, b)
    assert stats.kstest(values, reference.cdf).pvalue > ALPHA
    np.testing.assert_allclose(values.std(), reference.std(), rtol=0.02)
    torch.manual_seed(0)
    theirs = torch.nn.init.trunc_normal_(torch.empty(SHAPE), mean, std, a, b).numpy().ravel()
    assert stats.ks_2samp(values, theirs).pvalue > ALPHA


def test_a_small_std_is_not_shrunk_as_by_keras_truncated_normal():
    # torch's trunc_normal_(std=0.02) cuts at +-2: a port as Keras's TruncatedNormal(0.02)
    # (cut at 2 std) has the std of a normal cut at +-2 sigma, 0.88 x 0.02.
    ours = draw(keras_inits.get("trunc_normal(std=0.02)"), SHAPE).std()
    keras_own = draw(keras.initializers.TruncatedNormal(stddev=0.02, seed=1), SHAPE).std()
    np.testing.assert_allclose(ours, 0.02, rtol=0.02)
    np.testing.assert_allclose(keras_own, 0.02 * stats.truncnorm(-2, 2).std(), rtol=0.02)


def test_a_fixed_seed_repeats_and_16_bit_draws_keep_the_bounds():
    init = keras_inits.TruncNormal(std=0.5, a=-1.0, b=1.0, seed=3)
    np.testing.assert_array_equal(draw(init, (64, 64)), draw(init, (64, 64)))
    half = draw(init, (64, 64), "float16")
    assert half.dtype == np.float16
    assert half.min() >= -1.0 and half.max() <= 1.0


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"a": 1.0, "b": 1.0}, ValueError, "needs a < b"),
        ({"a": 2.0, "b": -2.0}, ValueError, "needs a < b"),
        ({"std": 0.0}, ValueError, "std must be finite and > 0"),
        ({"mean": float("nan")}, ValueError, "mean must be finite"),
        ({"b": "2"}, TypeError, "b must be a number"),
    ],
)
def test_bad_arguments_are_refused(kwargs, error, message):
    with pytest.raises(error, match=message):
        keras_inits.TruncNormal(**kwargs)


def test_bounds_far_in_one_tail_are_refused_when_drawing():
    init = keras_inits.TruncNormal(mean=0.0, std=1.0, a=8.0, b=9.0)
    with pytest.raises(ValueError, match="too far in a tail"):
        init((4, 4))


def test_a_uniform_draw_at_its_minval_stays_in_the_normals_body(monkeypatch):
    # keras.random.uniform includes minval: with torch's default bounds (+-2) at std 0.02 the
    # uniform's range is all of [-1, 1), and a draw of exactly -1 made erfinv infinite, which
    # the final clip put at -2, 100 std out (one such value in 65,536 lifts the std 7%).
    def at_the_ends(shape, minval, maxval, dtype=None, seed=None):
        ends = np.resize(np.array([minval, maxval], dtype=dtype), shape)
        return keras.ops.convert_to_tensor(ends, dtype=dtype)

    monkeypatch.setattr(keras.random, "uniform", at_the_ends)
    for dtype in ("float32", "float64"):
        values = draw(keras_inits.TruncNormal(0.0, 0.02, -2.0, 2.0, seed=1), (4, 4), dtype)
        assert np.all(np.isfinite(values))
        # Kept within 1 - 2^-23 of +-1: 5.3 std.
        np.testing.assert_allclose(np.abs(values), 0.02 * 5.295, rtol=1e-3)
