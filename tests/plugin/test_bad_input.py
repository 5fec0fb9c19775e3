"""Every bad input gets a ValueError/TypeError that names the problem."""

import math

import keras
import numpy as np
import pytest

import keras_inits

BAD_ARGUMENTS = [
    (lambda: keras_inits.KaimingNormal(mode="fan_avg"), ValueError, "Unknown mode='fan_avg'"),
    (lambda: keras_inits.KaimingUniform(mode="in"), ValueError, "Unknown mode='in'"),
    (lambda: keras_inits.KaimingNormal(nonlinearity="relu7"), ValueError, "relu7"),
    (lambda: keras_inits.KaimingNormal(nonlinearity=np.tanh), TypeError, "activation name"),
    (lambda: keras_inits.KaimingNormal(negative_slope=0.1), ValueError, "only applies"),
    (lambda: keras_inits.XavierNormal(gain=0), ValueError, "gain must be finite and > 0"),
    (lambda: keras_inits.XavierUniform(gain=-1.0), ValueError, "gain=-1.0"),
    (lambda: keras_inits.XavierNormal(gain=math.inf), ValueError, "gain=inf"),
    (lambda: keras_inits.XavierNormal(gain=math.nan), ValueError, "gain=nan"),
    (lambda: keras_inits.XavierNormal(gain="2"), TypeError, "gain must be a number"),
    (lambda: keras_inits.DeltaOrthogonal(gain=0.0), ValueError, "gain"),
    (lambda: keras_inits.Sparse(sparsity=1.0), ValueError, r"sparsity must be in \[0, 1\)"),
    (lambda: keras_inits.Sparse(sparsity=-0.1), ValueError, "sparsity"),
    (lambda: keras_inits.Sparse(stddev=-0.01), ValueError, "stddev must be finite and >= 0"),
    (lambda: keras_inits.Dirac(groups=0), ValueError, "groups must be >= 1"),
    (lambda: keras_inits.Dirac(groups=1.5), TypeError, "groups must be an int"),
    (lambda: keras_inits.XavierNormal(layout="nchw"), ValueError, "Unknown layout"),
    (lambda: keras_inits.XavierNormal(seed="0"), TypeError, "seed must be an int or None"),
    (lambda: keras_inits.XavierNormal(seed=-1), ValueError, "seed must be in"),
]


@pytest.mark.parametrize("make, error, message", BAD_ARGUMENTS)
def test_bad_arguments(make, error, message):
    with pytest.raises(error, match=message):
        make()


BAD_CALLS = [
    (keras_inits.DeltaOrthogonal(), (64, 64), ValueError, "convolution kernels"),
    (keras_inits.Dirac(), (16,), ValueError, "convolution kernels"),
    (keras_inits.DeltaOrthogonal(), (3, 3, 64, 32), ValueError, "in_channels <= out_channels"),
    (keras_inits.Dirac(groups=3), (3, 3, 4, 8), ValueError, "divisible by groups=3"),
    (keras_inits.Sparse(), (3, 3, 4, 8), ValueError, "2-D"),
    (keras_inits.XavierNormal(), (), ValueError, "scalar shape"),
    (keras_inits.XavierNormal(), (3, -1), ValueError, "negative"),
    (keras_inits.XavierNormal(), (3, 2.5), TypeError, "ints only"),
    (keras_inits.XavierNormal(), 5, TypeError, "tuple of ints"),
]


@pytest.mark.parametrize("initializer, shape, error, message", BAD_CALLS)
def test_bad_shapes(initializer, shape, error, message):
    with pytest.raises(error, match=message):
        initializer(shape)


@pytest.mark.parametrize("dtype", ["int32", "bool", "uint8"])
@pytest.mark.parametrize("name", sorted(keras_inits.INITIALIZERS))
def test_non_float_dtypes_are_refused(name, dtype):
    with pytest.raises(TypeError, match=f"got dtype='{dtype}'"):
        keras_inits.get(name)((3, 3, 4, 4) if name != "sparse" else (4, 4), dtype=dtype)


@pytest.mark.parametrize(
    "name, shape",
    [(name, (3, 0, 4) if name in ("dirac", "delta_orthogonal") else (0, 4))
     for name in sorted(keras_inits.INITIALIZERS)],
)
def test_zero_size_shapes_give_empty_tensors(name, shape):
    values = keras_inits.get(name)(shape)
    assert tuple(values.shape) == shape
    assert keras.backend.standardize_dtype(values.dtype) == "float32"
