"""The built-in Transformer language model (`--model=transformer`), a decoder-only GPT.

Token ids `(batch, T)` in, each position's next-token probabilities `(batch, T, V)` out:
a token embedding plus a learned position embedding, `depth` layers of causal
self-attention and a feed-forward network (width `4 d`, the cell's activation), each
sublayer a residual block, and a softmax read-out `output`. No dropout, so that arms
differ only in their weights.

`layer_norm` places LayerNormalization as the two families of Transformers do:
- "pre" (GPT-2, Radford et al. 2019): `x + f(LN(x))` in every block and a final LN before
  the read-out; the residual stream itself is never normalized, so it grows with depth
  unless the branches' outputs are scaled down (the `gpt2` scheme);
- "post" (the original Transformer, BERT): `LN(alpha x + f(x))`; alpha = 1 but for
  DeepNorm (Wang et al. 2022), whose arm (`scheme:deepnet`) sets it to (2 N)^(1/4).

Alpha is a non-trainable weight of each block's `ResidualScale` layer (on the shortcut),
not a constant of the graph, so that arms of one architecture with different alphas
train together (every tower is computed from its own weights) and save with it.

Layer names: `token_embedding`, `position_embedding`, then per layer i (from 1)
`block<i>_attention` (a `MultiHeadAttention`), `block<i>_attention_add`, `block<i>_ffn_in`,
`block<i>_ffn_out`, `block<i>_ffn_add`, their LayerNorms `block<i>_attention_norm` and
`block<i>_ffn_norm`, and `final_norm` (pre) before `output`. `keras_inits.roles` reads it
as 2 depth residual blocks: q/k/v/attention_output, and branch_inner/branch_output for the
feed-forward network.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import keras

import keras_inits.mup
from experiments.specs import LAYER_NORMS

# keras.saving needs the package to find these layers in a saved model.
_PACKAGE = "keras_inits_harness"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned embedding of each position to its input `(batch, T, d)`.

    Its table `embeddings` `(T, d)` is what `keras_inits` finds as an embedding (as
    keras-hub's `PositionEmbedding`'s).
    """

    def __init__(self, initializer: Any = "zeros", **kwargs: Any):
        super().__init__(**kwargs)
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.embeddings = self.add_weight(
            name="embeddings", shape=tuple(input_shape[-2:]), initializer=self.initializer
        )

    def call(self, inputs: Any) -> Any:
        return inputs + keras.ops.cast(self.embeddings, inputs.dtype)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "initializer": keras.initializers.serialize(self.initializer),
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ResidualScale(keras.layers.Layer):
    """Multiplies the residual stream by `alpha` on a block's shortcut (DeepNorm's alpha),
    held as a non-trainable weight."""

    def __init__(self, alpha: float = 1.0, **kwargs: Any):
        super().__init__(**kwargs)
        self.initial_alpha = float(alpha)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.alpha = self.add_weight(
            name="alpha",
            shape=(),
            initializer=keras.initializers.Constant(self.initial_alpha),
            trainable=False,
        )

    def call(self, inputs: Any) -> Any:
        return inputs * keras.ops.cast(self.alpha, inputs.dtype)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "alpha": self.initial_alpha}


def build(
    *,
    sequence_length: int,
    vocabulary_size: int,
    depth: int,
    width: int,
    heads: int,
    activation: str,
    layer_norm: str,
    kernel: Callable[[int], Any],
    mup: bool = False,
) -> keras.Model:
    """The Transformer LM described in the module docstring; `kernel(i)` is the initializer
    of the i-th layer with weights (from 1: embeddings, attention layers, dense layers, in
    order), so that no two layers share a seeded draw. A `MultiHeadAttention` clones its
    initializer for its four projections, so those start alike when it is seeded: the
    harness re-draws every kernel with `keras_inits.reinitialize`, which seeds each one
    apart and knows the attention kernels' fans. With `mup`, the attention layers and the
    read-out are `keras_inits.mup`'s (plain ones until `keras_inits.mup.parametrize`).

    Raises:
        ValueError: `heads` does not divide `width`, or an unknown `layer_norm`.
    """
    if layer_norm not in LAYER_NORMS:
        raise ValueError(f"layer_norm must be one of {', '.join(LAYER_NORMS)}, got {layer_norm!r}.")
    if width % heads:
        raise ValueError(
            f"--heads={heads} must divide --width={width}: each head has width / heads units."
        )
    layers = keras.layers
    inputs = keras.Input((sequence_length,), dtype="int32", name="inputs")
    index = itertools.count(1)
    x = layers.Embedding(
        vocabulary_size, width, embeddings_initializer=kernel(next(index)),
        name="token_embedding",
    )(inputs)
    x = PositionEmbedding(kernel(next(index)), name="position_embedding")(x)

    def dense(units: int, name: str, act: str | None = None) -> keras.layers.Dense:
        return layers.Dense(
            units, act, kernel_initializer=kernel(next(index)), bias_initializer="zeros",
            name=name,
        )

    attention_layer = keras_inits.mup.MultiHeadAttention if mup else layers.MultiHeadAttention

    def attention(h: Any, block: int) -> Any:
        return attention_layer(
            heads, width // heads, kernel_initializer=kernel(next(index)),
            name=f"block{block}_attention",
        )(h, h, use_causal_mask=True)

    def feedforward(h: Any, block: int) -> Any:
        h = dense(4 * width, f"block{block}_ffn_in", activation)(h)
        return dense(width, f"block{block}_ffn_out")(h)

    for block in range(1, depth + 1):
        for part, branch in (("attention", attention), ("ffn", feedforward)):
            norm = layers.LayerNormalization(name=f"block{block}_{part}_norm")
            add = layers.Add(name=f"block{block}_{part}_add")
            if layer_norm == "pre":
                x = add([x, branch(norm(x), block)])
            else:
                shortcut = ResidualScale(name=f"block{block}_{part}_scale")(x)
                x = norm(add([shortcut, branch(x, block)]))
    if layer_norm == "pre":
        x = layers.LayerNormalization(name="final_norm")(x)
    if mup:
        outputs = keras_inits.mup.Readout(
            vocabulary_size, "softmax", kernel_initializer=kernel(next(index)), name="output"
        )(x)
    else:
        outputs = dense(vocabulary_size, "output", "softmax")(x)
    return keras.Model(
        inputs, outputs, name=f"transformer_{depth}x{width}_{layer_norm}ln_{activation}"
    )


def set_residual_scale(model: keras.Model, alpha: float) -> int:
    """Sets every `ResidualScale` of `model` to `alpha`; returns how many there are."""
    scales = [layer for layer in model.layers if isinstance(layer, ResidualScale)]
    for layer in scales:
        layer.alpha.assign(alpha)
    return len(scales)
