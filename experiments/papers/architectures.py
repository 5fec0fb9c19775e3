"""Architectures of paper presets that the built-in mlp and cnn do not express, as
`--model=experiments.papers.architectures:<name>` functions
`(input_shape, num_classes) -> Model`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras

PATCH = 4  # side of the non-overlapping patches the vanilla CNN embeds
XIAO_DEPTH = 32
XIAO_WIDTH = 16


def xiao2018_cnn(input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """Xiao et al. (2018)'s vanilla CNN, scaled down: 4x4 patches embedded by one Dense
    layer, then `XIAO_DEPTH` 3x3 tanh convolutions of `XIAO_WIDTH` filters at one
    resolution, global average pooling and a softmax.

    The patch embedding is a Dense layer, so a conv-only initializer leaves it (and the
    read-out) to the fallback: a delta kernel on a strided convolution would see one
    pixel of every 16. Image sides must be multiples of 4.
    """
    import keras  # Deferred: presets name these constants without importing TensorFlow.

    height, breadth, channels = input_shape
    if height % PATCH or breadth % PATCH:
        raise ValueError(f"xiao2018_cnn needs image sides that are multiples of {PATCH}.")
    rows, columns = height // PATCH, breadth // PATCH
    inputs = keras.Input(input_shape)
    x = keras.layers.Reshape((rows, PATCH, columns, PATCH * channels))(inputs)
    x = keras.layers.Permute((1, 3, 2, 4))(x)
    x = keras.layers.Reshape((rows, columns, PATCH * PATCH * channels))(x)
    x = keras.layers.Dense(XIAO_WIDTH, activation="tanh", name="patches")(x)
    for index in range(1, XIAO_DEPTH + 1):
        x = keras.layers.Conv2D(
            XIAO_WIDTH, 3, padding="same", activation="tanh", name=f"conv_{index}"
        )(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="output")(x)
    return keras.Model(inputs, outputs, name="xiao2018_cnn")
