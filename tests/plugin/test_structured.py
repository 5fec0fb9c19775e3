"""delta_orthogonal, dirac and sparse: structure checks and torch parity."""

import math

import keras
import numpy as np
import pytest
import torch
from scipy import stats

import keras_inits
from tests.plugin.util import draw, to_torch_layout


@pytest.mark.parametrize("shape", [(3, 32, 64), (3, 3, 32, 32), (3, 3, 3, 8, 16)])
def test_delta_orthogonal_is_an_orthogonal_centre_tap(shape):
    gain = 1.5
    kernel = draw(keras_inits.DeltaOrthogonal(gain=gain, seed=0), shape)
    centre = tuple(k // 2 for k in shape[:-2])
    tap = kernel[centre]
    np.testing.assert_allclose(tap @ tap.T, gain**2 * np.eye(shape[-2]), atol=1e-5)
    others = kernel.copy()
    others[centre] = 0.0
    assert not others.any()


def test_delta_orthogonal_preserves_norms_through_a_conv():
    layer = keras.layers.Conv2D(32, 3, padding="same", kernel_initializer="delta_orthogonal")
    x = np.random.default_rng(0).standard_normal((4, 9, 9, 16)).astype("float32")
    y = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(
        np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-4
    )


def test_delta_orthogonal_centre_is_haar_distributed():
    # The entries of a Haar-random orthogonal n x n matrix are ~ N(0, 1/n) for large n.
    n = 256
    tap = draw(keras_inits.DeltaOrthogonal(seed=3), (1, n, n))[0]
    assert stats.kstest(tap.ravel() * math.sqrt(n), "norm").pvalue > 1e-3


@pytest.mark.parametrize("groups", [1, 2, 4])
@pytest.mark.parametrize("shape", [(3, 4, 8), (3, 3, 4, 8), (3, 3, 8, 4), (1, 3, 5, 4, 8)])
def test_dirac_equals_torch(shape, groups):
    ours = draw(keras_inits.Dirac(groups=groups), shape)
    reference = torch.empty(shape[-1], shape[-2], *shape[:-2])
    torch.nn.init.dirac_(reference, groups=groups)
    np.testing.assert_array_equal(to_torch_layout(ours), reference.numpy())


def test_dirac_conv_is_the_identity():
    layer = keras.layers.Conv2D(6, 3, padding="same", kernel_initializer="dirac")
    x = np.random.default_rng(0).standard_normal((2, 7, 7, 6)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), x, atol=1e-6)


def test_dirac_grouped_conv_keeps_each_group():
    layer = keras.layers.Conv1D(
        8, 3, groups=2, padding="same", kernel_initializer=keras_inits.Dirac(groups=2)
    )
    x = np.random.default_rng(1).standard_normal((2, 5, 8)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), x, atol=1e-6)


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.9])
def test_sparse_zero_count_per_column_matches_torch(sparsity):
    fan_in, fan_out = 1000, 40
    kernel = draw(keras_inits.Sparse(sparsity=sparsity, stddev=0.05, seed=0), (fan_in, fan_out))
    # torch.nn.init.sparse_ zeros ceil(sparsity * rows) entries of each column.
    reference = torch.empty(fan_in, fan_out)
    torch.nn.init.sparse_(reference, sparsity=sparsity, std=0.05)
    expected = math.ceil(sparsity * fan_in)
    assert ((reference.numpy() == 0).sum(axis=0) >= expected).all()
    # float32 normal samplers (torch's among them) return an exact 0.0 about once
    # in 1e5 draws, so a column may hold one zero more than were masked.
    zeros = (kernel == 0).sum(axis=0)
    assert (zeros >= expected).all()
    assert (zeros - expected).sum() <= 2
    non_zero = kernel[kernel != 0]
    assert stats.kstest(non_zero, stats.norm(scale=0.05).cdf).pvalue > 1e-3


def test_sparse_picks_different_rows_per_column():
    kernel = draw(keras_inits.Sparse(sparsity=0.5, seed=0), (100, 50))
    patterns = {tuple(column) for column in (kernel == 0).T}
    assert len(patterns) == 50
    # Every row is zeroed about half the time across 50 columns.
    assert stats.binomtest(int((kernel[0] == 0).sum()), 50, 0.5).pvalue > 1e-3
