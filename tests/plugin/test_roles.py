"""`keras_inits.roles`: each kernel's role and residual block, on real architectures
(keras.applications' ResNet50: 3 + 4 + 6 + 3 bottleneck blocks of three convolutions, a
projection shortcut opening each stage), a functional Transformer block and a
subclassed block named by a mapping."""

import keras
import pytest

from keras_inits.roles import roles
from tests.plugin.util import ResidualBlock, hub_backbone


def test_a_residual_mlp_has_a_block_per_add_and_its_read_out_is_the_head():
    x = keras.Input((8,))
    h = keras.layers.Dense(16, name="stem")(x)
    for index in range(3):
        branch = keras.layers.Dense(32, activation="relu", name=f"b{index}_in")(h)
        h = keras.layers.Add()([h, keras.layers.Dense(16, name=f"b{index}_out")(branch)])
    found = roles(keras.Model(x, keras.layers.Dense(10, name="fc")(h)))
    assert found.blocks == 3
    assert [(k.path, k.role, k.block) for k in found.kernels] == [
        ("stem/kernel", "other", None),
        *[(f"b{i}_{part}/kernel", f"branch_{kind}", i)
          for i in range(3) for part, kind in (("in", "inner"), ("out", "output"))],
        ("fc/kernel", "head", None),
    ]


def test_a_block_of_blocks_leaves_the_inner_blocks_their_kernels():
    # outer = x + out(inner0(in(x))), each inner a residual block of its own
    x = keras.Input((8,))
    h = keras.layers.Dense(8, name="outer_in")(x)
    for index in range(2):
        h = keras.layers.Add()([h, keras.layers.Dense(8, name=f"inner{index}")(h)])
    outer = keras.layers.Add()([x, keras.layers.Dense(8, name="outer_out")(h)])
    found = roles(keras.Model(x, outer))
    assert found.blocks == 3
    assert [(k.path, k.role, k.block) for k in found.kernels] == [
        ("outer_in/kernel", "branch_inner", 0),
        ("inner0/kernel", "branch_output", 1),
        ("inner1/kernel", "branch_output", 2),
        ("outer_out/kernel", "branch_output", 0),
    ]


def test_resnet50_has_its_16_bottleneck_blocks():
    found = roles(keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3)))
    assert found.blocks == 16
    outputs = found.of("branch_output")
    assert [k.block for k in outputs] == list(range(16))
    assert all(k.path.endswith("_3_conv/kernel") for k in outputs)  # each branch's last conv
    assert len(found.of("branch_inner")) == 32
    # the stem and the four projection shortcuts are not in a branch
    assert sorted(k.path for k in found.of("other")) == sorted(
        ["conv1_conv/kernel"] + [f"conv{s}_block1_0_conv/kernel" for s in range(2, 6)]
    )
    assert [k.path for k in found.of("head")] == ["predictions/kernel"]


def test_attention_projections_and_the_ops_add_branch_of_a_functional_transformer_block():
    x = keras.Input((6, 16))
    h = keras.layers.Add()([x, keras.layers.MultiHeadAttention(2, 8, name="mha")(x, x)])
    ffn = keras.layers.Dense(16, name="ffn_2")(keras.layers.Dense(32, name="ffn_1")(h))
    found = roles(keras.Model(x, keras.ops.add(h, ffn)))
    assert [(k.role, k.block) for k in found.kernels] == [
        ("query", 0), ("key", 0), ("value", 0), ("attention_output", 0),
        ("branch_inner", 1), ("branch_output", 1),
    ]


def test_a_subclassed_block_is_named_by_a_mapping():
    x = keras.Input((8,))
    h = ResidualBlock(8, name="block_0")(x)
    h = ResidualBlock(8, name="block_1")(h)
    model = keras.Model(x, keras.layers.Dense(3, name="fc")(h))
    assert roles(model).blocks == 0  # no graph inside the blocks: nothing to read
    found = roles(model, {"block_*/proj/kernel": "branch_output",
                          "block_*/inner/kernel": "branch_inner"})
    assert found.blocks == 2
    assert [(k.role, k.block) for k in found.kernels] == [
        ("branch_inner", 0), ("branch_output", 0), ("branch_inner", 1), ("branch_output", 1),
        ("head", None),
    ]


def test_an_unknown_role_and_a_missing_role_are_told():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="unknown role 'output'"):
        roles(model, {"*": "output"})
    with pytest.raises(ValueError, match="fixup scales branch_output kernels.*found: 1 other"):
        roles(model).require(["branch_output"], "fixup")


def test_keras_hub_gpt2_resolves_completely():
    found = roles(hub_backbone("GPT2Backbone", 3))
    assert found.blocks == 3
    per_block = ["query", "key", "value", "attention_output", "ffn_in", "ffn_out"]
    # The token table and keras-hub's PositionEmbedding (a layer with an `embeddings` table).
    assert [(k.role, k.block) for k in found.kernels] == [("embedding", None)] * 2 + [
        (role, block) for block in range(3) for role in per_block
    ]
    assert not found.of("other", "head")


def test_keras_hub_bert_resolves_completely_its_pooler_being_the_head():
    found = roles(hub_backbone("BertBackbone", 2))
    assert found.blocks == 2
    assert [k.path for k in found.of("embedding")] == [
        "token_embedding/embeddings", "position_embedding/embeddings",
        "segment_embedding/embeddings",
    ]
    assert len(found.of("attention_output")) == len(found.of("ffn_out")) == 2
    assert [k.path for k in found.of("head")] == ["pooled_dense/kernel"]
    assert not found.of("other", "branch_inner", "branch_output")
