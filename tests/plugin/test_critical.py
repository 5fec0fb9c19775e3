"""Mean-field theory's schemes: `reinitialize(model, scheme="critical" | "mean_field")`, and
the activation each kernel's input went through (keras_inits.input_activations)."""

import math

import keras
import numpy as np
import pytest
from scipy import stats

import keras_inits
from keras_inits import theory

TANH_CRITICAL_005 = 1.760955  # Schoenholz et al. 2017, Fig. 1: sigma_b2 = 0.05


def _tanh_mlp(width=256, depth=4, inputs=64):
    return keras.Sequential(
        [keras.Input((inputs,))]
        + [keras.layers.Dense(width, activation="tanh") for _ in range(depth)]
        + [keras.layers.Dense(10)]
    )


def _numpy(variable):
    return keras.ops.convert_to_numpy(variable).astype(np.float64)


def _per_unit_variance(kernel, x):
    """The variance of x @ kernel per output unit, over units and examples."""
    return float(np.mean((x @ kernel) ** 2))


def test_critical_tanh_kernels_and_biases_follow_the_edge_of_chaos():
    """Every kernel N(0, sigma_w2* / fan_in) with sigma_w2* tanh's critical value at
    sigma_b2 = 0.05 (read off the paper's phase diagram as ~1.76), every bias N(0, 0.05):
    Kolmogorov-Smirnov against those normals, all weights of a kind pooled."""
    model = _tanh_mlp()
    report = keras_inits.reinitialize(model, scheme="critical", sigma_b2=0.05, seed=0)
    assert report.notes["critical sigma_w2"] == {"tanh": pytest.approx(TANH_CRITICAL_005, 1e-5)}
    kernels = np.concatenate(
        [_numpy(layer.kernel).ravel() * math.sqrt(layer.kernel.shape[0]) for layer in model.layers]
    )
    biases = np.concatenate([_numpy(layer.bias) for layer in model.layers])
    assert stats.kstest(kernels, "norm", args=(0, math.sqrt(1.76))).pvalue > 0.01
    assert stats.kstest(biases, "norm", args=(0, math.sqrt(0.05))).pvalue > 0.01
    # A wrong variance is told apart: the test can fail.
    assert stats.kstest(kernels, "norm", args=(0, 1.0)).pvalue < 1e-6
    rows = [row for row in report.rows if row["weight"] == "bias"]
    assert rows and all(row["initializer"] == "N(0, sigma_b2=0.05)" for row in rows)


def test_critical_without_bias_is_lecun_for_tanh_and_he_for_relu():
    tanh = _tanh_mlp(depth=2)
    relu = keras.Sequential([
        keras.Input((8, 8, 3)), keras.layers.Conv2D(64, 3), keras.layers.BatchNormalization(),
        keras.layers.ReLU(), keras.layers.Conv2D(64, 3), keras.layers.Activation("relu"),
        keras.layers.Flatten(), keras.layers.Dense(10),
    ])
    assert keras_inits.reinitialize(tanh, scheme="critical", seed=0).notes[
        "critical sigma_w2"] == {"tanh": pytest.approx(1.0, abs=1e-6)}
    report = keras_inits.reinitialize(relu, scheme="critical", seed=0)
    assert report.notes["critical sigma_w2"] == {"relu": 2.0}
    for layer in (relu.layers[0], relu.layers[3], relu.layers[6]):
        fan_in = math.prod(layer.kernel.shape[:-1])
        assert np.var(_numpy(layer.kernel)) * fan_in == pytest.approx(2.0, rel=0.1)
        assert not np.any(_numpy(layer.bias))


def test_orthogonal_kernels_have_the_gaussians_per_unit_variance_and_are_orthogonal():
    """A (64, 256) and a (256, 256) and a (256, 10) kernel: orthogonal up to the gain, and
    x @ W has the per-unit variance sigma_w2 * E[x^2] the Gaussian kernel gives."""
    model = _tanh_mlp(depth=2)
    keras_inits.reinitialize(
        model, scheme="critical", sigma_b2=0.05, distribution="orthogonal", seed=0
    )
    x = np.random.default_rng(0).standard_normal((4096, 256))
    for layer in model.layers:
        w = _numpy(layer.kernel)
        rows, cols = w.shape
        gram = w.T @ w if rows >= cols else w @ w.T
        np.testing.assert_allclose(gram / gram[0, 0], np.eye(min(rows, cols)), atol=1e-5)
        measured = _per_unit_variance(w, x[:, :rows]) / np.mean(x[:, :rows] ** 2)
        assert measured == pytest.approx(TANH_CRITICAL_005, rel=0.03)


def test_orthogonal_convolutions_are_delta_orthogonal_when_they_widen():
    model = keras.Sequential([
        keras.Input((9, 9, 8)), keras.layers.Conv2D(16, 3, activation="tanh"),
        keras.layers.Conv2D(4, 3, activation="tanh"), keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3),
    ])
    report = keras_inits.reinitialize(
        model, scheme="critical", sigma_b2=0.05, distribution="orthogonal", seed=0
    )
    widen, narrow = (_numpy(layer.kernel) for layer in model.layers[:2])
    # Widening 8 -> 16: only the centre tap, an (8, 16) matrix with orthogonal rows whose
    # per-unit variance is sigma_w2 * E[x^2] (8 inputs, entries of variance gain^2 / 16).
    assert not np.any(np.delete(widen.reshape(9, 8, 16), 4, axis=0))
    centre = widen[1, 1]
    np.testing.assert_allclose(
        centre @ centre.T, np.eye(8) * TANH_CRITICAL_005 * 2, rtol=1e-4, atol=1e-5
    )
    # Narrowing 16 -> 4: the flattened (144, 4) kernel has orthogonal columns.
    flat = narrow.reshape(-1, 4)
    np.testing.assert_allclose(flat.T @ flat, np.eye(4) * TANH_CRITICAL_005, rtol=1e-4, atol=1e-5)
    rules = [row["initializer"] for row in report.rows if row["weight"] == "kernel"]
    assert rules[0].startswith("delta_orthogonal") and rules[1].startswith("orthogonal")


def test_a_wide_critical_network_keeps_its_length_and_correlation():
    """At the edge of chaos the prediction is a fixed point: q^l stays at q* and the
    correlation of two inputs decays only polynomially. A 20-layer tanh MLP of width 1,024,
    critical at sigma_b2 = 0.05, inputs scaled so that q^1 = q*: the measured q^l stays
    within 12% of q* at every layer (finite-width error ~ sqrt(2 / width) = 4.4% per
    layer, which the length map damps only slowly near q*) and within 4% on average, while
    the same net at 2.5x the variance (chaotic) decorrelates the pair to c < 0.5."""
    sigma_b2, width, depth = 0.05, 1024, 20
    field = theory.mean_field("tanh", TANH_CRITICAL_005, sigma_b2)
    rng = np.random.default_rng(3)
    a = rng.standard_normal((8, width))
    b = 0.95 * a + math.sqrt(1 - 0.95**2) * rng.standard_normal((8, width))
    scale = math.sqrt((field.q_star - sigma_b2) / TANH_CRITICAL_005)
    x = (np.concatenate([a, b]) * scale).astype("float32")

    def measure(spec, **params):
        model = keras.Sequential(
            [keras.Input((width,))]
            + [keras.layers.Dense(width, activation="tanh") for _ in range(depth)]
        )
        keras_inits.reinitialize(model, scheme=spec, seed=1, **params)
        h, qs, cs = x, [], []
        for layer in model.layers:
            pre = _numpy(keras.ops.matmul(h, layer.kernel) + layer.bias)
            qs.append(np.mean(pre**2))
            h1, h2 = pre[:8], pre[8:]
            cs.append(np.mean(np.sum(h1 * h2, 1) / np.sqrt(np.sum(h1**2, 1) * np.sum(h2**2, 1))))
            h = np.tanh(pre).astype("float32")
        return np.array(qs), np.array(cs)

    q, c = measure("critical", sigma_b2=sigma_b2)
    np.testing.assert_allclose(q, field.q_star, rtol=0.12)
    assert np.mean(q) == pytest.approx(field.q_star, rel=0.04)
    assert c[-1] > 0.8
    _, c_chaotic = measure("mean_field", sigma_w2=2.5 * TANH_CRITICAL_005, sigma_b2=sigma_b2)
    assert c_chaotic[-1] < 0.5


def test_mean_field_scheme_draws_the_variances_it_is_given():
    model = _tanh_mlp(depth=2)
    report = keras_inits.reinitialize(model, scheme="mean_field", sigma_w2=3.0, sigma_b2=0.2,
                                      seed=2)
    kernel = _numpy(model.layers[1].kernel)
    assert np.var(kernel) * 256 == pytest.approx(3.0, rel=0.03)
    biases = np.concatenate([_numpy(layer.bias) for layer in model.layers])
    assert np.var(biases) == pytest.approx(0.2, rel=0.25)
    assert report.notes == {"sigma_b2": 0.2, "distribution": "normal", "sigma_w2": 3.0}
    again = _tanh_mlp(depth=2)
    keras_inits.reinitialize(again, scheme="mean_field", sigma_w2=3.0, sigma_b2=0.2, seed=2)
    np.testing.assert_array_equal(_numpy(again.layers[0].bias), _numpy(model.layers[0].bias))


# ------------------------------------------------------------ the activation on each input


def _input_activations(model):
    return {kernel.path: kernel.input_activation for kernel in keras_inits.roles(model).kernels}


def test_the_activation_before_each_kernel_is_read_from_the_graph():
    x = keras.Input((16,))
    h = keras.layers.Dense(32, activation="tanh", name="first")(x)
    h = keras.layers.Dense(32, name="linear_out")(h)
    h = keras.layers.LayerNormalization()(h)
    h = keras.layers.Dense(32, name="after_norm")(h)
    h = keras.ops.sigmoid(h)
    h = keras.layers.Dropout(0.1)(h)
    h = keras.layers.Dense(32, name="after_op")(h)
    h = keras.layers.LeakyReLU(negative_slope=0.3)(h)
    branch = keras.layers.Dense(32, activation="relu", name="branch")(h)
    h = keras.layers.Add()([h, branch])
    out = keras.layers.Dense(4, name="head")(h)
    found = _input_activations(keras.Model(x, out))
    assert found == {
        "first/kernel": "tanh",  # fed by the input: its own activation
        "linear_out/kernel": "tanh",
        "after_norm/kernel": "linear",
        "after_op/kernel": "sigmoid",
        "branch/kernel": "leaky_relu(0.3)",
        "head/kernel": "leaky_relu(0.3) | relu",
    }


def test_a_leaky_slope_is_taken_into_the_critical_variance():
    """Leaky ReLU with slope a: chi_1 = sigma_w2 (1 + a^2) / 2, critical at 2 / (1 + a^2)."""
    model = keras.Sequential([
        keras.Input((32,)), keras.layers.Dense(64), keras.layers.LeakyReLU(negative_slope=0.3),
        keras.layers.Dense(64), keras.layers.LeakyReLU(negative_slope=0.3), keras.layers.Dense(2),
    ])
    report = keras_inits.reinitialize(model, scheme="critical", seed=0)
    (value,) = report.notes["critical sigma_w2"].values()
    assert value == pytest.approx(2 / (1 + 0.3**2), rel=1e-4)


def test_a_subclassed_model_is_read_as_a_chain_and_can_be_told():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.one = keras.layers.Dense(32, activation="tanh", name="one")
            self.two = keras.layers.Dense(32, activation="relu", name="two")
            self.out = keras.layers.Dense(2, name="out")

        def call(self, x):
            return self.out(self.two(self.one(x)))

    net = Net()
    net(np.zeros((1, 8), "float32"))
    assert list(_input_activations(net).values()) == ["tanh", "tanh", "relu"]
    report = keras_inits.reinitialize(
        net, scheme="critical", activation={"out/*": "linear", "*": "relu"}, seed=0
    )
    assert report.notes["critical sigma_w2"] == {"relu": 2.0, "linear": 1.0}


@pytest.mark.parametrize(("params", "error", "match"), [
    ({"sigma_b2": -0.1}, ValueError, "sigma_b2 must be finite and >= 0"),
    ({"sigma_b2": "0.1"}, TypeError, "sigma_b2"),
    ({"distribution": "uniform"}, ValueError, r"Unknown distribution='uniform'.*orthogonal"),
    ({"activation": 3}, TypeError, "activation takes an activation name"),
    ({"activation": "softmax"}, ValueError, "not elementwise"),
    ({"activation": "no_such_thing"}, ValueError, "Unknown activation='no_such_thing'"),
])
def test_bad_critical_requests(params, error, match):
    with pytest.raises(error, match=match):
        keras_inits.reinitialize(_tanh_mlp(depth=1), scheme="critical", **params)


def test_refusals_name_the_kernel_and_the_fix():
    relu = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                             keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"dense.*/kernel \(input activation relu\).*sigma_b2=0"):
        keras_inits.reinitialize(relu, scheme="critical", sigma_b2=0.1)
    x = keras.Input((4,))
    h = keras.layers.Dense(4, activation="tanh")(x)
    h = keras.layers.Add()([h, keras.layers.Dense(4, activation="relu")(h)])
    mixed = keras.Model(x, keras.layers.Dense(2, name="head")(h))
    with pytest.raises(ValueError, match=r"head/kernel: its input comes through several"):
        keras_inits.reinitialize(mixed, scheme="critical")
    with pytest.raises(ValueError, match="mean_field scheme needs sigma_w2"):
        keras_inits.reinitialize(relu, scheme="mean_field")
    with pytest.raises(ValueError, match="sigma_w2 must be finite and > 0"):
        keras_inits.reinitialize(relu, scheme="mean_field", sigma_w2=0.0)
