"""Architectures of paper presets that the built-in mlp and cnn do not express, as
`--model=experiments.papers.architectures:<name>` functions
`(input_shape, num_classes) -> Model`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras

PATCH = 4  # side of the non-overlapping patches the vanilla CNN embeds
XIAO_DEPTH = 128
XIAO_WIDTH = 16
# The towers benchmark's workload (benchmarks/harness_speed.py): the depth xiao2018 trained
# before it went to 128 layers, kept so that docs/benchmarks.md's figures stay comparable.
BENCHMARK_DEPTH = 32


def vanilla_tanh_cnn(
    input_shape: tuple[int, ...], num_classes: int, depth: int, width: int
) -> keras.Model:
    """Xiao et al. (2018)'s vanilla CNN, scaled down: 4x4 patches embedded by one Dense
    layer, then `depth` 3x3 tanh convolutions of `width` filters at one resolution, global
    average pooling and a softmax.

    The patch embedding is a Dense layer, so a conv-only initializer leaves it (and the
    read-out) to the fallback: a delta kernel on a strided convolution would see one
    pixel of every 16. Image sides must be multiples of 4.
    """
    import keras  # Deferred: presets name these constants without importing TensorFlow.

    height, breadth, channels = input_shape
    if height % PATCH or breadth % PATCH:
        raise ValueError(
            f"The vanilla tanh CNN embeds {PATCH}x{PATCH} patches: it needs image sides that "
            f"are multiples of {PATCH}, got {height}x{breadth}."
        )
    rows, columns = height // PATCH, breadth // PATCH
    inputs = keras.Input(input_shape)
    x = keras.layers.Reshape((rows, PATCH, columns, PATCH * channels))(inputs)
    x = keras.layers.Permute((1, 3, 2, 4))(x)
    x = keras.layers.Reshape((rows, columns, PATCH * PATCH * channels))(x)
    x = keras.layers.Dense(width, activation="tanh", name="patches")(x)
    for index in range(1, depth + 1):
        x = keras.layers.Conv2D(
            width, 3, padding="same", activation="tanh", name=f"conv_{index}"
        )(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="output")(x)
    return keras.Model(inputs, outputs, name=f"vanilla_tanh_cnn_{depth}")


def xiao2018_cnn(input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """The `xiao2018` preset's network: `vanilla_tanh_cnn` of `XIAO_DEPTH` convolutions of
    `XIAO_WIDTH` filters."""
    return vanilla_tanh_cnn(input_shape, num_classes, XIAO_DEPTH, XIAO_WIDTH)


def tanh_cnn_32(input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """`vanilla_tanh_cnn` of `BENCHMARK_DEPTH` convolutions of `XIAO_WIDTH` filters: the
    towers benchmark's workload."""
    return vanilla_tanh_cnn(input_shape, num_classes, BENCHMARK_DEPTH, XIAO_WIDTH)
