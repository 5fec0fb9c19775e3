"""Grouped signals: the statistics of several models of one architecture, computed at once
(every tensor leading with the models' axis), equal each model's own."""

import keras
import numpy as np
import pytest

from keras_inits.signals import SignalProbe, Signals, dead_units, saturation

MODELS = 3


def _model(initializer: str) -> keras.Model:
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, activation="relu", kernel_initializer=initializer)(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(8, activation="tanh", kernel_initializer=initializer)(x)
    outputs = keras.layers.Dense(3, activation="softmax", kernel_initializer=initializer)(x)
    return keras.Model(inputs, outputs)


def test_grouped_statistics_are_each_models_statistics():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 6, 6, 2)).astype("float32")
    y = rng.integers(0, 3, size=16)
    # Different scales, so that a grouped statistic mixing the models would show.
    initializers = ["he_normal", "glorot_uniform", keras.initializers.RandomNormal(stddev=2.0)]
    each = [
        SignalProbe(_model(init), x, y, loss="sparse_categorical_crossentropy").compute()
        for init in initializers
    ]
    ops = keras.ops

    def side_by_side(part):
        return [ops.stack(values) for values in zip(*part, strict=True)]

    grouped = Signals(
        taps=each[0].taps,
        loss=ops.stack([signals.loss for signals in each]),
        outputs=side_by_side([s.outputs for s in each]),
        output_gradients=side_by_side([s.output_gradients for s in each]),
        kernel_gradients=side_by_side([s.kernel_gradients for s in each]),
        kernel_values=side_by_side([s.kernels for s in each]),
        grouped=True,
    ).statistics()
    alone = [signals.statistics() for signals in each]
    checked = 0
    for layer, row in enumerate(grouped):
        for key, vector in row.items():
            if vector is None:
                assert all(stats[layer][key] is None for stats in alone)
                continue
            vector = ops.convert_to_numpy(vector)
            assert vector.shape == (MODELS,)
            for model in range(MODELS):
                own = float(ops.convert_to_numpy(alone[model][layer][key]))
                np.testing.assert_allclose(vector[model], own, rtol=1e-5, atol=1e-7)
                checked += 1
    # 3 layers x (mean, 2 stds, 2 weight stds) + dead (conv) + saturation (tanh), per model.
    assert checked == MODELS * (3 * 5 + 2)
    stds = ops.convert_to_numpy(grouped[0]["weight_std"])
    assert len(set(np.round(stds, 6))) == MODELS  # the models do differ


@pytest.mark.parametrize("channel_axis", [-1, 1])
def test_grouped_dead_units_and_saturation_count_each_models_units(channel_axis):
    rng = np.random.default_rng(1)
    outputs = np.maximum(rng.normal(size=(MODELS, 4, 5, 6)), 0).astype("float32")
    outputs[0, :, 2, :] = 0  # model 0: channel 2 of axis 1 never active
    outputs[1, :, :, 3] = 0  # model 1: unit 3 of the last axis never active
    grouped = keras.ops.convert_to_numpy(
        dead_units("relu", keras.ops.convert_to_tensor(outputs), channel_axis, grouped=True)
    )
    saturated = keras.ops.convert_to_numpy(
        saturation("tanh", keras.ops.convert_to_tensor(np.tanh(outputs)), grouped=True)
    )
    for model in range(MODELS):
        own = dead_units("relu", keras.ops.convert_to_tensor(outputs[model]), channel_axis)
        np.testing.assert_allclose(grouped[model], keras.ops.convert_to_numpy(own))
        own = saturation("tanh", keras.ops.convert_to_tensor(np.tanh(outputs[model])))
        np.testing.assert_allclose(saturated[model], keras.ops.convert_to_numpy(own), rtol=1e-6)
    assert grouped[0] == pytest.approx(1 / 5 if channel_axis == 1 else 0.0)
    assert grouped[1] == pytest.approx(1 / 6 if channel_axis == -1 else 0.0)
