"""`diagnose` predicts and explains: mean-field theory's per-layer numbers beside the measured
ones (keras_inits.prediction), per-layer rate verdicts and the phase verdict."""

import math

import keras
import numpy as np
import pytest

import keras_inits
from keras_inits.diagnosis import THRESHOLDS, find_verdicts


def _batch(width=64, size=256, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (size, width)).astype("float32")


def _tanh_mlp(initializer, depth=5, width=256, inputs=64, head="softmax"):
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [keras.Input((inputs,))]
        + [keras.layers.Dense(width, activation="tanh", kernel_initializer=initializer)
           for _ in range(depth)]
        + [keras.layers.Dense(9, activation=head)]
    )


def test_glorot_and_bengios_standard_uniform_shrinks_057x_per_layer_and_the_theory_says_so():
    """U(-1/sqrt(n), 1/sqrt(n)) has Var = 1/(3n): sigma_w2 = 1/3, so a tanh net near 0 keeps
    sqrt(1/3) = 0.577 of its std per layer (Glorot & Bengio 2010, section 4.2.1). Five
    layers lose ~9.4x, under the 10x limit: the per-layer verdict says the rate, and the
    theory's prediction from the weights matches the measurement layer by layer."""
    model = _tanh_mlp("standard_uniform")
    diagnosis = keras_inits.diagnose(model, _batch())
    kinds = {verdict.kind: verdict for verdict in diagnosis.verdicts}
    assert "vanishing_activations" not in kinds
    shrinking = kinds["shrinking_activations"].message
    assert "0.57x per layer" in shrinking and "Mean-field theory predicts 0.5" in shrinking
    assert "shrinking_gradients" in kinds
    hidden = diagnosis.layers[:-1]
    for row in hidden:
        assert row["predicted_std"] == pytest.approx(row["output_std"], rel=0.06), row["path"]
    for row in hidden[:-1]:
        assert row["predicted_gradient_ratio"] == pytest.approx(row["gradient_ratio"], rel=0.06)
        assert row["predicted_gradient_ratio"] == pytest.approx(math.sqrt(1 / 3), rel=0.05)
    # Ordered, chi_1 = sigma_w2 phi'(0)^2 = 1/3 (q* = 0 without bias).
    assert diagnosis.phase["phase"] == "ordered"
    assert diagnosis.phase["chi_1"] == pytest.approx(1 / 3, rel=0.03)
    assert diagnosis.phase["depth"] == 6
    assert "Mean-field phase (tanh" in str(diagnosis)


def test_xavier_keeps_a_tanh_net_inside_the_rate_limit():
    diagnosis = keras_inits.diagnose(_tanh_mlp("xavier_normal"), _batch())
    assert not [v for v in diagnosis.verdicts if v.kind.endswith("_activations")]


def test_a_chaotic_net_predicts_growing_gradients_and_a_deep_ordered_one_warns():
    width, depth = 256, 24
    chaotic = _tanh_mlp("glorot_normal", depth=depth, width=width, head="linear")
    keras_inits.reinitialize(chaotic, scheme="mean_field", sigma_w2=4.0, sigma_b2=0.05, seed=0)
    diagnosis = keras_inits.diagnose(chaotic, _batch())
    rows = diagnosis.layers[:-2]
    measured = np.exp(np.mean(np.log([row["gradient_ratio"] for row in rows])))
    predicted = np.exp(np.mean(np.log([row["predicted_gradient_ratio"] for row in rows])))
    assert predicted > 1.1 and measured == pytest.approx(predicted, rel=0.03)
    assert diagnosis.phase["phase"] == "chaotic"
    ordered = _tanh_mlp("glorot_normal", depth=depth, width=width, head="linear")
    keras_inits.reinitialize(ordered, scheme="mean_field", sigma_w2=0.6, sigma_b2=0.0, seed=0)
    diagnosis = keras_inits.diagnose(ordered, _batch())
    (warning,) = [v for v in diagnosis.verdicts if v.kind == "beyond_trainable_depth"]
    trainable = diagnosis.phase["trainable_depth"]
    assert trainable < depth and f"this model has {depth + 1}" in warning.message
    assert "scheme='critical'" in warning.message


def test_a_critical_relu_net_is_not_warned_about():
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [keras.Input((64,))] + [keras.layers.Dense(128, activation="relu") for _ in range(12)]
    )
    keras_inits.reinitialize(model, scheme="critical", seed=0)
    diagnosis = keras_inits.diagnose(model, _batch())
    assert diagnosis.phase["activation"] == "relu"
    assert diagnosis.phase["sigma_w2"] == pytest.approx(2.0, rel=0.03)
    assert not [v for v in diagnosis.verdicts if v.kind == "beyond_trainable_depth"]


def test_a_convolution_chain_with_activation_layers_is_predicted():
    keras.utils.set_random_seed(2)
    model = keras.Sequential([
        keras.Input((12, 12, 4)), keras.layers.Conv2D(32, 3), keras.layers.Activation("tanh"),
        keras.layers.Conv2D(32, 3), keras.layers.Activation("tanh"), keras.layers.Flatten(),
        keras.layers.Dense(8),
    ])
    x = np.random.default_rng(3).standard_normal((64, 12, 12, 4)).astype("float32")
    diagnosis = keras_inits.diagnose(model, x)
    assert diagnosis.unpredicted is None
    for row in diagnosis.layers:  # "valid" padding: every output sees a full window
        assert row["predicted_std"] == pytest.approx(row["output_std"], rel=0.1), row["path"]
    # Through tanh layers between the kernels, and the fan ratio into the 8-unit head.
    for row in diagnosis.layers[:-1]:
        assert row["predicted_gradient_ratio"] == pytest.approx(row["gradient_ratio"], rel=0.1)


@pytest.mark.parametrize(("build", "reason"), [
    (lambda x: keras.layers.Dense(8)(keras.layers.BatchNormalization()(
        keras.layers.Dense(8)(x))), "BatchNormalization"),
    (lambda x: keras.layers.Dense(8)(keras.layers.Add()([x, keras.layers.Dense(16)(x)])),
     "an Add layer"),
    (lambda x: keras.layers.Dense(8)(keras.layers.MaxPooling1D()(keras.layers.Reshape(
        (16, 1))(keras.layers.Dense(16)(x)))), "MaxPooling1D"),
])
def test_models_outside_the_theorys_chain_say_why(build, reason):
    inputs = keras.Input((16,))
    model = keras.Model(inputs, build(inputs))
    diagnosis = keras_inits.diagnose(model, _batch(16, 32))
    assert reason in diagnosis.unpredicted
    assert diagnosis.phase is None
    assert all("predicted_q" not in row for row in diagnosis.layers)


def _rows(*stds):
    return [
        {"path": f"layer{index}", "activation": "tanh", "layout": "dense", "output_size": 16,
         "output_std": std, "gradient_std": 1.0, "saturated_fraction": None,
         "dead_fraction": None}
        for index, std in enumerate(stds)
    ]


@pytest.mark.parametrize(("rate", "kind"), [
    (1.26, "growing_activations"), (1.24, None), (1 / 1.24, None),
    (1 / 1.26, "shrinking_activations"),
])
def test_the_per_layer_rate_just_inside_and_outside_its_limit(rate, kind):
    assert THRESHOLDS["layer_rate"] == 1.25
    found = [v.kind for v in find_verdicts(_rows(*(rate**i for i in range(5))))]
    assert found == ([] if kind is None else [kind])


def test_same_padding_counts_the_taps_that_fall_on_the_border():
    """5x5 kernels on an 8x8 map with "same" padding: per axis the outputs see 3, 4, 5, 5, 5,
    5, 4, 3 of their 5 taps, so 0.85^2 = 72% of the taps land on the signal. Linear layers
    on standard normal inputs: the prediction with that count matches the measured std to
    3%, and so after a stride-2 layer, whose input is itself weaker at the border (the
    field of each position's variance carries that; a uniform 72% was 5% off there); the
    naive one (every tap on a signal) is 18% high."""
    keras.utils.set_random_seed(4)
    model = keras.Sequential([
        keras.Input((8, 8, 16)), keras.layers.Conv2D(32, 5, padding="same"),
        keras.layers.Conv2D(32, 5, padding="same", strides=2), keras.layers.Flatten(),
        keras.layers.Dense(8),
    ])
    x = np.random.default_rng(5).standard_normal((128, 8, 8, 16)).astype("float32")
    first, second, _ = keras_inits.diagnose(model, x).layers
    assert first["predicted_std"] == pytest.approx(first["output_std"], rel=0.03)
    assert second["predicted_std"] == pytest.approx(second["output_std"], rel=0.03)
    assert first["predicted_gradient_ratio"] == pytest.approx(first["gradient_ratio"], rel=0.05)
    naive = first["predicted_std"] / 0.85
    assert naive > 1.15 * first["output_std"]


def test_a_deep_same_padded_stack_follows_the_border_field_not_its_mean():
    """30 critical tanh convolutions (3x3, "same") on 7x7: only 82% of the taps land inside,
    but after a few layers the signal sits away from the border, where every tap reads it.
    Carrying each position's variance (the field) predicts the 30-layer decay of the std
    and of the gradient to 30%; a prediction that scales every layer by the mean share
    inside (0.82) compounds its error to less than half the measured std."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((7, 7, 16))
    x = inputs
    for _ in range(30):
        x = keras.layers.Conv2D(16, 3, padding="same", activation="tanh")(x)
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(x)))
    keras_inits.reinitialize(model, scheme="critical", sigma_b2=1e-5)
    batch = np.random.default_rng(0).standard_normal((64, 7, 7, 16)).astype("float32")
    rows = keras_inits.diagnose(model, batch).layers[:-1]
    for row in rows:
        assert row["predicted_std"] == pytest.approx(row["output_std"], rel=0.3), row["path"]
    measured = rows[-1]["output_std"] / rows[0]["output_std"]
    assert rows[-1]["predicted_std"] / rows[0]["predicted_std"] == pytest.approx(
        measured, rel=0.3)
    gradient = math.prod(row["gradient_ratio"] for row in rows[:-1])
    predicted = math.prod(row["predicted_gradient_ratio"] for row in rows[:-1])
    assert predicted == pytest.approx(gradient, rel=0.35)
    # The mean-share recursion, q <- sigma_w2 * 0.82 * E[tanh(h)^2] + sigma_b2, from the
    # first layer's q: far below what is measured.
    sigma_w2 = keras_inits.theory.critical_sigma_w2("tanh", 1e-5)
    inside = (19 / 21) ** 2  # per axis: 5 outputs see 3 taps, the 2 border ones 2
    z = np.random.default_rng(1).standard_normal(200_000)
    q = rows[0]["predicted_q"]
    stds = [np.tanh(np.sqrt(q) * z).std()]
    for _ in rows[1:]:
        q = sigma_w2 * inside * np.mean(np.tanh(np.sqrt(q) * z) ** 2) + 1e-5
        stds.append(np.tanh(np.sqrt(q) * z).std())
    assert stds[-1] / stds[0] < 0.5 * measured


def test_open_spatial_sizes_are_outside_the_chain():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="tanh")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(
        keras.layers.Conv2D(8, 3, activation="tanh")(x))))
    batch = np.random.default_rng(0).standard_normal((8, 9, 9, 3)).astype("float32")
    diagnosis = keras_inits.diagnose(model, batch)
    assert "a size the graph leaves open" in diagnosis.unpredicted
