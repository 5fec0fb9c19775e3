"""The compared architectures: an MLP and a small CNN that differ only in their kernels.

Layers with weights are `hidden_1` ... `hidden_N` and `output` (softmax). Biases
start at zero. Every kernel initializer is a copy of the one spec reseeded with
`layer_seed(seed, index)`, so no two layers share a kernel (even when the spec
names a seed) and the same (spec, seed) always builds the same model.
"""

from __future__ import annotations

import keras
import numpy as np

import keras_inits

OUTPUT = "output"


def hidden_name(index: int) -> str:
    """Name of the `index`-th hidden layer, counting from 1."""
    return f"hidden_{index}"


def layer_seed(seed: int, index: int) -> int:
    """Seed of layer `index` (1-based; the output layer is depth + 1) in run `seed`.

    Mixed through `SeedSequence` rather than `seed + index`, so that runs with
    neighbouring seeds do not share layers shifted by one.
    """
    state = np.random.SeedSequence([seed, index]).generate_state(1)[0]
    return int(state) % (2**31 - 1)


def build(
    kind: str,
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    depth: int,
    width: int,
    activation: str,
    initializer: str,
    seed: int,
) -> keras.Model:
    """A functional model whose layers with weights are `hidden_1..N` and `output`.

    Args:
        kind: "mlp" (Flatten, then `depth` Dense layers of `width` units) or "cnn"
            (`depth` 3x3 Conv2D layers of `width` filters, stride 2 while the
            feature map is larger than 8x8, then global average pooling).
        initializer: a spec `keras_inits.get` accepts, used for every kernel.
        seed: the run's seed; layer i's initializer gets `layer_seed(seed, i)`.
    """
    base = keras_inits.get(initializer)

    def kernel(index: int) -> keras.initializers.Initializer:
        return keras_inits.reseed(base, layer_seed(seed, index))

    inputs = keras.Input(input_shape, name="inputs")
    x = inputs
    if kind == "mlp":
        x = keras.layers.Flatten(name="flatten")(x)
        for index in range(1, depth + 1):
            x = keras.layers.Dense(
                width,
                activation,
                kernel_initializer=kernel(index),
                bias_initializer="zeros",
                name=hidden_name(index),
            )(x)
    elif kind == "cnn":
        if len(input_shape) != 3:
            raise ValueError(
                f"The cnn model needs (height, width, channels) inputs, got {input_shape}."
            )
        size = min(input_shape[:2])
        for index in range(1, depth + 1):
            stride = 2 if size > 8 else 1
            size = -(-size // stride)
            x = keras.layers.Conv2D(
                width,
                3,
                strides=stride,
                padding="same",
                activation=activation,
                kernel_initializer=kernel(index),
                bias_initializer="zeros",
                name=hidden_name(index),
            )(x)
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    else:
        raise ValueError(f"Unknown model kind {kind!r}; choose mlp or cnn.")
    outputs = keras.layers.Dense(
        num_classes,
        "softmax",
        kernel_initializer=kernel(depth + 1),
        bias_initializer="zeros",
        name=OUTPUT,
    )(x)
    return keras.Model(inputs, outputs, name=f"{kind}_{depth}x{width}_{activation}")
