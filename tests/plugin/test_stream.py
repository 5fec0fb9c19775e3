"""The residual stream in `diagnose`: each block's output measured (against plain Keras
sub-models ending at that block), its growth told in words (multiplying or adding, on
closed-form profiles), and the schemes that keep it level doing so on a ResNet without
normalization and on keras-hub's GPT-2."""

import math

import keras
import numpy as np
import pytest

import keras_inits
from keras_inits.stream import stream_verdict
from tests.plugin.test_schemes import resnet
from tests.plugin.util import hub_backbone

BLOCKS = 8


@pytest.fixture(scope="module")
def batch():
    return np.random.default_rng(0).normal(size=(16, 8, 8, 3)).astype("float32")


@pytest.fixture(scope="module")
def resnet8():
    return resnet(blocks=BLOCKS)


def test_he_init_multiplies_the_stream_at_every_block_and_fixup_keeps_it_level(resnet8, batch):
    keras_inits.reinitialize(resnet8, "he_normal", seed=0)
    diagnosis = keras_inits.diagnose(resnet8, batch)
    assert [row["block"] for row in diagnosis.stream] == list(range(BLOCKS))
    # Each measured std is that of the add's output, computed by plain Keras.
    adds = [layer for layer in resnet8.layers if isinstance(layer, keras.layers.Add)]
    for row, add in zip(diagnosis.stream, adds, strict=True):
        assert row["path"] == add.name
        plain = keras.ops.convert_to_numpy(keras.Model(resnet8.input, add.output)(batch))
        assert row["output_std"] == pytest.approx(float(np.std(plain)), rel=1e-4)
    growing = [v for v in diagnosis.verdicts if v.kind == "growing_stream"]
    assert len(growing) == 1 and "scheme='fixup'" in growing[0].message
    assert growing[0].layers == (adds[0].name, adds[-1].name)

    keras_inits.reinitialize(resnet8, scheme="fixup", seed=0)
    diagnosis = keras_inits.diagnose(resnet8, batch)
    stds = [row["output_std"] for row in diagnosis.stream]
    # relu(x + 0) = x for x >= 0: level on each side of the projection shortcut's block.
    for side in (stds[: BLOCKS // 2], stds[BLOCKS // 2 + 1 :]):
        assert max(side) / min(side) < 1.001, stds
    # Zero branch outputs and head are silent by design: no verdict at all.
    assert diagnosis.verdicts == [], [str(v) for v in diagnosis.verdicts]


def _profile(variances):
    return [{"block": i, "output_std": math.sqrt(v)} for i, v in enumerate(variances)]


def test_the_verdict_tells_multiplying_from_adding_growth_on_closed_forms():
    multiplying = stream_verdict(_profile([1.5**i for i in range(8)]))  # Var *= 1.5 per block
    assert "grows 4.13x" in multiplying and "multiplies at every block" in multiplying
    assert "scheme='fixup'" in multiplying
    adding = stream_verdict(_profile([0.1 + i for i in range(24)]), attention=True)  # Var += 1
    assert "grows 15.2x" in adding and "each block adds about the same variance" in adding
    assert "scheme='gpt2'" in adding
    uneven = stream_verdict(_profile([1, 9, 10, 10.5, 30]))  # 5.5x, neither pattern
    assert "grows unevenly" in uneven
    assert stream_verdict(_profile([1 + 0.1 * i for i in range(24)])) is None  # 1.8x
    assert stream_verdict(_profile([1, 16])) is None  # two blocks: no trend


def test_gpt2s_scheme_levels_the_stream_of_keras_hubs_gpt2():
    backbone = hub_backbone("GPT2Backbone", 12, width=64)
    rng = np.random.default_rng(0)
    tokens = {"token_ids": rng.integers(0, 64, (8, 8)), "padding_mask": np.ones((8, 8), "int32")}

    def growth(**arguments):
        keras_inits.reinitialize(backbone, seed=0, **arguments)
        diagnosis = keras_inits.diagnose(backbone, tokens)
        stds = [row["output_std"] for row in diagnosis.stream]
        return stds[-1] / stds[0], diagnosis

    unscaled, diagnosis = growth(initializer=keras.initializers.RandomNormal(0.0, 0.02))
    assert len(diagnosis.stream) == 12
    last = keras.Model(backbone.inputs, backbone.get_layer("transformer_layer_11").output)
    plain = keras.ops.convert_to_numpy(last(tokens))
    assert diagnosis.stream[-1]["output_std"] == pytest.approx(float(np.std(plain)), rel=1e-4)
    assert [v.kind for v in diagnosis.verdicts] == ["growing_stream"]
    assert "each block adds about the same variance" in diagnosis.verdicts[0].message
    assert "scheme='gpt2'" in diagnosis.verdicts[0].message
    scaled, diagnosis = growth(scheme="gpt2")
    assert unscaled > 2 and scaled < 1.5, (unscaled, scaled)
    # Depth checks run on the stream: the sublayers' own scales (a query's, a scaled
    # branch output's) are not read as vanishing activations.
    assert diagnosis.verdicts == [], [str(v) for v in diagnosis.verdicts]


def test_signal_histograms_log_the_stream_at_each_block(tmp_path, batch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.util import tensor_util

    model = resnet(blocks=3)
    keras_inits.reinitialize(model, "he_normal", seed=0)
    adds = [layer for layer in model.layers if isinstance(layer, keras.layers.Add)]
    expected = [
        float(np.std(keras.ops.convert_to_numpy(keras.Model(model.input, add.output)(batch))))
        for add in adds
    ]
    model.compile("sgd", "mse")
    callback = keras_inits.SignalHistograms(batch, log_dir=str(tmp_path), every_n_steps=10)
    model.fit(batch, np.zeros((16, 10), "float32"), batch_size=16, epochs=1, verbose=0,
              callbacks=[callback])
    events = event_accumulator.EventAccumulator(
        str(tmp_path / "train"), size_guidance={event_accumulator.TENSORS: 0}
    ).Reload()
    tags = set(events.Tags()["tensors"])
    blocks = [f"block_{index:03d}" for index in range(3)]
    for block, std, add in zip(blocks, expected, adds, strict=True):
        assert {f"residual_stream/{block}", f"residual_stream_gradients/{block}",
                f"residual_stream_std/{block}", f"residual_stream_gradient_std/{block}"} <= tags
        (step0,) = [e for e in events.Tensors(f"residual_stream_std/{block}") if e.step == 0]
        assert float(tensor_util.make_ndarray(step0.tensor_proto)) == pytest.approx(std, rel=1e-4)
        histogram = tensor_util.make_ndarray(
            events.Tensors(f"residual_stream/{block}")[0].tensor_proto
        )
        elements = batch.shape[0] * math.prod(add.output.shape[1:])
        assert histogram[:, 2].sum() == elements  # every element counted
    # Off by flag: the layers' tags only.
    quiet = keras_inits.SignalHistograms(batch, log_dir=str(tmp_path / "off"), stream=False)
    quiet.set_model(model)
    assert not quiet.snapshot(0).blocks


def test_a_shared_add_serves_each_of_its_blocks_with_the_gradients_of_a_numpy_backprop():
    """Three blocks through one Add layer, measured against a forward and backward pass in
    NumPy of the documented surrogate loss, sum(output * g) / batch, g ~ N(0, 1) drawn by
    default_rng(0)."""
    x = keras.Input((16,))
    add = keras.layers.Add(name="shared_add")
    h = keras.layers.Dense(32, name="stem")(x)
    for index in range(3):
        branch = keras.layers.Dense(32, activation="relu", name=f"in{index}")(h)
        h = add([h, keras.layers.Dense(32, name=f"out{index}")(branch)])
    model = keras.Model(x, keras.layers.Dense(5, name="head")(h))
    batch = np.random.default_rng(3).normal(size=(64, 16)).astype("float64")
    diagnosis = keras_inits.diagnose(model, batch.astype("float32"))
    assert [(row["block"], row["path"]) for row in diagnosis.stream] == [
        (0, "shared_add"), (1, "shared_add"), (2, "shared_add")
    ]

    def weights(name):
        layer = model.get_layer(name)
        return (keras.ops.convert_to_numpy(layer.kernel).astype("float64"),
                keras.ops.convert_to_numpy(layer.bias).astype("float64"))

    w, b = weights("stem")
    stream, pre = [batch @ w + b], []
    for index in range(3):
        (w1, b1), (w2, b2) = weights(f"in{index}"), weights(f"out{index}")
        pre.append(stream[-1] @ w1 + b1)
        stream.append(stream[-1] + np.maximum(pre[-1], 0) @ w2 + b2)
    g = np.random.default_rng(0).standard_normal((64, 5))
    grad = g @ weights("head")[0].T / 64  # dL/d(last block's output)
    grads = [grad]
    for index in (2, 1):  # back through each block: identity plus the branch
        w1, w2 = weights(f"in{index}")[0], weights(f"out{index}")[0]
        grad = grad + ((grad @ w2.T) * (pre[index] > 0)) @ w1.T
        grads.insert(0, grad)
    for row, output, gradient in zip(diagnosis.stream, stream[1:], grads, strict=True):
        assert row["output_std"] == pytest.approx(np.std(output), rel=1e-4)
        assert row["gradient_std"] == pytest.approx(np.std(gradient), rel=1e-4)
