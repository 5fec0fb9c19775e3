"""Edge cases of the model tools found in review: each was a bug before its fix."""

import json
import math

import keras
import numpy as np
import pytest

import keras_inits

L = keras.layers
BATCH = 32


def normal(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def numpy(value):
    return np.asarray(keras.ops.convert_to_numpy(value))


def test_nested_models_reusing_layer_names_get_distinct_paths():
    def branch(name):
        inputs = keras.Input((4,))
        return keras.Model(inputs, L.Dense(4, name="fc")(inputs), name=name)

    inputs = keras.Input((4,))
    merged = L.Concatenate()([branch("a")(inputs), branch("b")(inputs)])
    model = keras.Model(inputs, L.Dense(2, name="head")(merged))
    report = keras_inits.reinitialize(model, "xavier_uniform", seed=0)
    assert [row["path"] for row in report.rows if row["weight"] == "kernel"] == [
        "a/fc", "b/fc", "head"
    ]
    paths = [row["path"] for row in keras_inits.diagnose(model, normal((8, 4))).layers]
    assert paths == ["a/fc", "b/fc", "head"]


def test_time_distributed_is_measured_over_every_timestep():
    inputs = keras.Input((5, 4))
    outputs = L.TimeDistributed(L.Dense(6, activation="relu"), name="td")(inputs)
    model = keras.Model(inputs, outputs)
    row = keras_inits.diagnose(model, normal((BATCH, 5, 4))).layers[0]
    inner = model.get_layer("td").layer.name  # auto-numbered by Keras
    assert row["path"] == f"td/{inner}" and row["output_size"] == 5 * 6
    # LSUV over every timestep: test_lsuv.py, with timesteps of very different scales.


@pytest.mark.parametrize("dtype", ["bfloat16", "mixed_float16"])
def test_lsuv_with_16_bit_and_mixed_precision_layers(dtype):
    model = keras.Sequential(
        [keras.Input((16,)), L.Dense(16, dtype=dtype), L.Dense(8, dtype=dtype)]
    )
    x = normal((64, 16))
    report = keras_inits.lsuv(model, x, seed=0)
    assert [row["status"] for row in report.rows] == ["fitted", "fitted"]
    first = model.layers[0]
    pre = x @ numpy(first.kernel).astype("float32")
    assert abs(pre.var() - 1) < 0.15  # measured here in float32, fitted in 16 bits


def test_a_layer_valued_activation_is_set_aside_during_lsuv():
    model = keras.Sequential([keras.Input((16,)), L.Dense(16, activation=L.PReLU()), L.Dense(4)])
    report = keras_inits.lsuv(model, normal((64, 16)), seed=0)
    assert report.converged and isinstance(model.layers[0].activation, L.PReLU)


def test_a_failed_lsuv_leaves_the_weights_as_they_were():
    model = keras.Sequential(
        [keras.Input((8,)), L.Dense(8, activation="relu", use_bias=False), L.Dense(2)]
    )
    before = [numpy(w).copy() for w in model.weights]
    with pytest.raises(ValueError, match="variance 0"):
        keras_inits.lsuv(model, np.zeros((16, 8), "float32"))
    for old, new in zip(before, model.weights, strict=True):
        np.testing.assert_array_equal(old, numpy(new))


def test_quantized_models_are_refused_with_what_to_do():
    model = keras.Sequential([keras.Input((8,)), L.Dense(8), L.Dense(2)])
    try:
        model.quantize("int8")
    except (NotImplementedError, ValueError) as error:  # not on every backend or version
        pytest.skip(f"model.quantize('int8') unavailable here: {error}")
    for call in (
        lambda: keras_inits.reinitialize(model, "xavier_uniform"),
        lambda: keras_inits.diagnose(model, normal((8, 8))),
        lambda: keras_inits.lsuv(model, normal((8, 8))),
    ):
        with pytest.raises(ValueError, match="quantized.*before quantizing"):
            call()


def test_targets_must_match_the_batch():
    model = keras.Sequential([keras.Input((4,)), L.Dense(3)])
    x = normal((8, 4))
    with pytest.raises(ValueError, match="one target per example"):
        keras_inits.diagnose(model, x, normal((3, 3)), loss="mse")
    with pytest.raises(ValueError, match="one target per example"):
        keras_inits.diagnose(model, x, [normal((8, 3)), normal((8, 3))], loss="mse")


def test_to_dict_is_strict_json_even_when_the_signal_overflows():
    model = keras.Sequential(
        [keras.Input((4,))]
        + [L.Dense(4, kernel_initializer=keras.initializers.Constant(1e30)) for _ in range(3)]
    )
    diagnosis = keras_inits.diagnose(model, normal((8, 4)))
    assert any(not math.isfinite(row["output_std"]) for row in diagnosis.layers)
    json.dumps(diagnosis.to_dict(), allow_nan=False)
    assert diagnosis.verdicts[0].kind == "non_finite"


def test_depth_verdicts_need_three_layers():
    # A conv whose output is averaged away, then a classifier: two layers of different
    # sizes, no depth to speak of, and per-element gradients 1/(positions) apart.
    inputs = keras.Input((16, 16, 3))
    x = L.Conv2D(8, 3, activation="relu", kernel_initializer="he_normal")(inputs)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(10, kernel_initializer="he_normal")(x))
    assert keras_inits.diagnose(model, normal((16, 16, 16, 3))).verdicts == []


def test_include_that_is_not_a_selector_is_a_clear_type_error():
    model = keras.Sequential([keras.Input((4,)), L.Dense(3)])
    with pytest.raises(TypeError, match="include takes"):
        keras_inits.reinitialize(model, "xavier_uniform", include=3)


def test_signal_histograms_reused_on_another_model_starts_its_own_schedule(tmp_path):
    pytest.importorskip("tensorflow")  # the callback's summary writer (keras-inits[harness])
    callback = keras_inits.SignalHistograms(normal((16, 4)), None, str(tmp_path), 5)
    x, y = normal((40, 4)), normal((40, 2))
    seen = []
    for name in ("first", "second"):
        model = keras.Sequential([keras.Input((4,)), L.Dense(2)], name=name)
        model.compile("sgd", "mse")
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[callback])
        seen.append(callback.last_step)
    assert seen == [5, 5]  # the second model: its step 0, then step 5
