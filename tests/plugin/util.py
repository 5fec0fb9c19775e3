"""Shapes and conversions shared by the plugin tests."""

import keras
import numpy as np
import pytest

# Kernel shapes in Keras layout and the matching torch weight shapes (out, in, *k).
SHAPES = {
    "dense": (512, 256),
    "conv1d": (5, 64, 128),
    "conv2d": (3, 3, 64, 128),
    "conv3d": (3, 3, 3, 32, 64),
}


def torch_shape(keras_shape):
    """(*k, in, out) -> torch's (out, in, *k)."""
    *kernel, fan_in, fan_out = keras_shape
    return (fan_out, fan_in, *kernel)


def to_torch_layout(array):
    """Moves a Keras (*k, in, out) kernel to torch's (out, in, *k)."""
    rank = array.ndim
    return np.transpose(array, (rank - 1, rank - 2, *range(rank - 2)))


def draw(initializer, shape, dtype="float32"):
    return keras.ops.convert_to_numpy(initializer(shape, dtype=dtype))


class ResidualSubclassed(keras.Model):
    """A subclassed model (no graph to walk): relu -> tanh, plus a skip -> linear."""

    def __init__(self, width: int):
        super().__init__()
        self.a = keras.layers.Dense(width, activation="relu")
        self.b = keras.layers.Dense(width, activation="tanh")
        self.c = keras.layers.Dense(width)

    def call(self, x):
        h = self.a(x)
        return self.c(self.b(h) + h)


def hub_backbone(name: str, layers: int, width: int = 16, heads: int = 2):
    """A keras-hub backbone (GPT2Backbone, BertBackbone) built from constructor arguments
    (no download), skipped where keras-hub is not installed."""
    backbone = getattr(pytest.importorskip("keras_hub").models, name)
    return backbone(
        vocabulary_size=64, num_layers=layers, num_heads=heads, hidden_dim=width,
        intermediate_dim=4 * width, max_sequence_length=8,
    )


class ResidualBlock(keras.layers.Layer):
    """A subclassed residual block (no graph to read): x + proj(inner(x))."""

    def __init__(self, width, **kwargs):
        super().__init__(**kwargs)
        self.inner = keras.layers.Dense(width * 2, activation="relu", name="inner")
        self.proj = keras.layers.Dense(width, name="proj")

    def call(self, x):
        return x + self.proj(self.inner(x))
