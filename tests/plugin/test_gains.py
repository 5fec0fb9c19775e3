import math

import keras
import numpy as np
import pytest
import torch

from keras_inits import calculate_gain

TORCH_NAMES = [
    "linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
    "conv_transpose3d", "sigmoid", "tanh", "relu", "leaky_relu", "selu",
]


@pytest.mark.parametrize("name", TORCH_NAMES)
def test_torch_table_is_exact(name):
    assert calculate_gain(name) == torch.nn.init.calculate_gain(name)


@pytest.mark.parametrize("slope", [0.0, 0.01, 0.2, 1, -0.5])
def test_leaky_relu_slope_matches_torch(slope):
    assert calculate_gain("leaky_relu", slope) == pytest.approx(
        torch.nn.init.calculate_gain("leaky_relu", slope), rel=1e-12
    )


def test_second_moment_gain_of_relu_is_sqrt2():
    # Through the quadrature path (a callable), not the table.
    assert calculate_gain(keras.activations.relu) == pytest.approx(math.sqrt(2), rel=1e-6)


@pytest.mark.parametrize("name", ["gelu", "silu", "elu", "softsign", "tanh_shrink", "relu6"])
def test_other_keras_activations_preserve_the_second_moment(name):
    # Monte Carlo reference: 1 / sqrt(mean(f(z)^2)) over 4M normal draws.
    z = np.random.default_rng(0).standard_normal(4_000_000).astype("float32")
    values = keras.ops.convert_to_numpy(keras.activations.get(name)(z))
    expected = 1.0 / math.sqrt(float(np.mean(values.astype("float64") ** 2)))
    assert calculate_gain(name) == pytest.approx(expected, rel=3e-3)


def test_known_closed_forms():
    # E[exp(z)^2] = e^2, E[(z)^2] = 1.
    assert calculate_gain("exponential") == pytest.approx(math.exp(-1), rel=1e-6)
    assert calculate_gain(lambda x: x) == pytest.approx(1.0, rel=1e-6)


def test_bad_nonlinearities():
    with pytest.raises(ValueError, match="Unknown nonlinearity='relu7'"):
        calculate_gain("relu7")
    with pytest.raises(ValueError, match="not elementwise"):
        calculate_gain("softmax")
    with pytest.raises(ValueError, match="negative slope must be a number"):
        calculate_gain("leaky_relu", "0.1")
    with pytest.raises(TypeError, match="activation name or a callable"):
        calculate_gain(3)
    with pytest.raises(ValueError, match="no finite positive gain"):
        calculate_gain(lambda x: x * 0.0)
