"""keras_inits.jacobian_spectrum against references that share none of its code.

The references: NumPy's SVD of the Jacobian written out by the chain rule from the kernels
(a linear network's is the product of its kernels); the mean-field chi_1 of
`keras_inits.theory` (the mean squared singular value of L layers at q* is chi_1^L); and the
free-probability moments of Pennington et al. (2017), computed here by Gauss-Hermite
quadrature: for L layers at q*, var(sigma^2) / mean(sigma^2)^2 = L (mu_2 / mu_1^2 - 1 - s_1)
with mu_k = E[phi'(h)^(2k)], s_1 = 0 for orthogonal and -1 for Gaussian weights. (Free
independence makes r - 1 add over the factors of a product, r = m_2 / m_1^2; r = 2 for a
square Gaussian W W^T, 1 for an orthogonal one.)
"""

from __future__ import annotations

import json
import math

import keras
import numpy as np
import pytest

import keras_inits
from keras_inits import theory

HERMITE_Z, HERMITE_W = np.polynomial.hermite_e.hermegauss(201)
HERMITE_W = HERMITE_W / HERMITE_W.sum()


def dense_net(sizes, activation=None, kernel=None, bias_std=None, seed=0):
    """Dense layers sizes[0] -> sizes[1] -> ...; kernel(i, fan_in) gives layer i's
    initializer (default N(0, 1 / fan_in)); biases N(0, bias_std^2), or none."""
    layers = [keras.Input((sizes[0],))]
    for i, (fan_in, width) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        init = kernel(i, fan_in) if kernel else keras.initializers.RandomNormal(
            stddev=fan_in**-0.5, seed=seed + i)
        layers.append(keras.layers.Dense(
            width, activation=activation, kernel_initializer=init, use_bias=bias_std is not None,
            bias_initializer=keras.initializers.RandomNormal(stddev=bias_std or 0.0,
                                                             seed=seed + 1000 + i),
            name=f"dense_{i}"))
    return keras.Sequential(layers)


def tanh_net(width, depth, sigma_w2, sigma_b2, orthogonal, seed):
    def kernel(i, fan_in):
        if orthogonal:
            return keras.initializers.Orthogonal(gain=math.sqrt(sigma_w2), seed=seed + i)
        return keras.initializers.RandomNormal(stddev=math.sqrt(sigma_w2 / fan_in), seed=seed + i)

    return dense_net([width] * (depth + 1), "tanh", kernel, math.sqrt(sigma_b2), seed)


def inputs_at(q_star, sigma_w2, sigma_b2, shape, seed):
    """Rows x with sigma_w2 mean(x^2) + sigma_b2 = q*: the first pre-activations at q*."""
    x = np.random.default_rng(seed).standard_normal(shape)
    x *= np.sqrt((q_star - sigma_b2) / sigma_w2 / np.mean(x**2, axis=1, keepdims=True))
    return x.astype("float32")


def numpy_jacobians(model, x, layers=None):
    """Each example's Jacobian by the chain rule in float64 (Dense layers, tanh or linear)."""
    jacobians = []
    for row in x.astype(np.float64):
        h, jacobian = row, np.eye(row.size)
        for layer in model.layers[:layers]:
            kernel = keras.ops.convert_to_numpy(layer.kernel).astype(np.float64)
            h = h @ kernel + (keras.ops.convert_to_numpy(layer.bias) if layer.use_bias else 0.0)
            jacobian = kernel.T @ jacobian
            if layer.activation.__name__ == "tanh":
                h = np.tanh(h)
                jacobian = (1.0 - h**2)[:, None] * jacobian
        jacobians.append(jacobian)
    return np.array(jacobians)


# ---------------------------------------------------------------- exactness


@pytest.mark.parametrize("method", ["exact", "lanczos"])
def test_deep_linear_orthogonal_network_is_an_isometry(method):
    def kernel(i, _):
        return keras.initializers.Orthogonal(seed=i)

    model = dense_net([64] * 9, kernel=kernel)
    x = np.random.default_rng(0).standard_normal((4, 64)).astype("float32")
    spectrum = keras_inits.jacobian_spectrum(model, x, method=method, iterations=8)
    assert spectrum.method == method
    assert np.abs(spectrum.singular_values - 1.0).max() < 1e-5
    assert abs(spectrum.mean_squared - 1.0) < 1e-5 and spectrum.variance_squared < 1e-9
    assert spectrum.isometric and spectrum.verdict.startswith("Dynamical isometry")


@pytest.mark.parametrize("method", ["exact", "lanczos"])
def test_gaussian_linear_network_has_the_singular_values_of_its_kernels_product(method):
    model = dense_net([24, 40, 32, 16])  # not square: 16 singular values per example
    x = np.random.default_rng(1).standard_normal((3, 24)).astype("float32")
    product = np.linalg.multi_dot([
        keras.ops.convert_to_numpy(layer.kernel).astype(np.float64) for layer in model.layers])
    reference = np.sort(np.linalg.svd(product, compute_uv=False))
    # 16 Lanczos steps on the 16 x 16 Gram matrix J J^T span it: every sigma, exactly.
    spectrum = keras_inits.jacobian_spectrum(model, x, method=method, iterations=16)
    assert spectrum.shape == (16, 24) and spectrum.singular_values.size == 3 * 16
    for values in np.sort(spectrum.singular_values.reshape(3, 16), axis=1):
        np.testing.assert_allclose(values, reference, rtol=1e-4, atol=1e-5 * reference[-1])
    assert spectrum.mean_squared == pytest.approx(np.mean(reference**2), rel=1e-4)
    assert spectrum.variance_squared == pytest.approx(np.var(reference**2), rel=1e-3)


def test_tanh_network_and_an_inner_output_match_the_chain_rule():
    model = dense_net([12, 20, 16, 10], "tanh", bias_std=0.3, seed=3)
    x = np.random.default_rng(2).standard_normal((5, 12)).astype("float32")
    for output, layers in ((None, None), ("dense_1", 2)):
        spectrum = keras_inits.jacobian_spectrum(model, x, method="exact", output=output)
        reference = np.linalg.svd(numpy_jacobians(model, x, layers), compute_uv=False)
        np.testing.assert_allclose(np.sort(spectrum.singular_values), np.sort(reference.ravel()),
                                   rtol=1e-4, atol=1e-6)


def test_inputs_of_higher_rank_are_flattened():
    # Dense on the last axis of (4, 6): J = I_4 (x) W^T, W's singular values four times each.
    model = keras.Sequential([keras.Input((4, 6)), keras.layers.Dense(5, use_bias=False)])
    x = np.random.default_rng(3).standard_normal((2, 4, 6)).astype("float32")
    spectrum = keras_inits.jacobian_spectrum(model, x)
    kernel = keras.ops.convert_to_numpy(model.layers[0].kernel).astype(np.float64)
    expected = np.repeat(np.linalg.svd(kernel, compute_uv=False), 4)
    assert spectrum.shape == (20, 24)
    np.testing.assert_allclose(np.sort(spectrum.singular_values.reshape(2, 20), axis=1),
                               np.tile(np.sort(expected), (2, 1)), rtol=1e-5)


# ---------------------------------------------------------------- against the theory


@pytest.mark.parametrize(("sigma_w2", "phase"), [(1.0, "ordered"), (4.0, "chaotic")])
def test_mean_squared_singular_value_is_chi_1_to_the_depth(sigma_w2, phase):
    sigma_b2, depth = 0.05, 8
    field = theory.mean_field("tanh", sigma_w2, sigma_b2)
    assert field.phase == phase
    expected = field.chi_1**depth  # 0.11 ordered, 10.5 chaotic: far from 1 either way
    model = tanh_net(256, depth, sigma_w2, sigma_b2, orthogonal=False, seed=10)
    x = inputs_at(field.q_star, sigma_w2, sigma_b2, (32, 256), seed=0)
    spectrum = keras_inits.jacobian_spectrum(model, x, method="exact")
    # Finite width: each example's tr(J J^T) / n scatters by ~25% over 8 layers of 256
    # units; the mean of 32 examples by ~5%, one network's weights shared by them all.
    assert spectrum.mean_squared == pytest.approx(expected, rel=0.2)
    assert ("shrink" if phase == "ordered" else "grow") in spectrum.verdict


def test_orthogonal_weights_narrow_the_spectrum_of_a_critical_tanh_network():
    sigma_b2, depth, width = 0.05, 16, 128
    sigma_w2 = theory.critical_sigma_w2("tanh", sigma_b2)
    q_star = theory.mean_field("tanh", sigma_w2, sigma_b2).q_star
    slope2 = 1.0 / np.cosh(math.sqrt(q_star) * HERMITE_Z) ** 4  # phi'(h)^2 at q*
    ratio = np.sum(HERMITE_W * slope2**2) / np.sum(HERMITE_W * slope2) ** 2  # mu_2 / mu_1^2
    x = inputs_at(q_star, sigma_w2, sigma_b2, (8, width), seed=1)
    orthogonal, gaussian = (
        keras_inits.jacobian_spectrum(
            tanh_net(width, depth, sigma_w2, sigma_b2, orthogonal=kind, seed=20), x)
        for kind in (True, False))
    for spectrum in (orthogonal, gaussian):  # at the edge of chaos chi_1^L = 1, within the
        assert 0.5 < spectrum.mean_squared < 2.0  # finite-width scatter of one network
    # Pennington et al.: 16 (mu_2/mu_1^2 - 1) = 5.5 orthogonal, 16 mu_2/mu_1^2 = 21.5 Gaussian
    # (measured on every backend over 6 seeds: 3-15% and -4-28% above, finite width adding
    # spread). The relative variance, not var(sigma^2) itself: the mean of one Gaussian
    # network scatters by 30%, and its square with it.
    assert orthogonal.relative_variance == pytest.approx(depth * (ratio - 1.0), rel=0.25)
    assert 0.8 < gaussian.relative_variance / (depth * ratio) < 1.6
    assert orthogonal.relative_variance < gaussian.relative_variance / 3.0
    assert orthogonal.max < 0.75 * gaussian.max


# ---------------------------------------------------------------- Lanczos


def test_lanczos_agrees_with_the_exact_spectrum():
    # Fewer outputs than inputs: Lanczos runs on the 128 x 128 Gram matrix J J^T.
    model = dense_net([256, 256, 256, 256, 128], "tanh", bias_std=0.2, seed=30)
    x = np.random.default_rng(4).standard_normal((32, 256)).astype("float32")
    exact = keras_inits.jacobian_spectrum(model, x, method="exact")
    lanczos = keras_inits.jacobian_spectrum(model, x, method="lanczos", iterations=24)
    assert lanczos.shape == exact.shape == (128, 256) and lanczos.iterations == 24
    # Ritz values lie inside the spectrum; the largest converges within a few steps.
    assert exact.min - 1e-6 <= lanczos.min and lanczos.max <= exact.max * (1 + 1e-6)
    assert lanczos.max == pytest.approx(exact.max, rel=1e-3)
    # Hutchinson, one probe of the sphere per example: std of the mean about
    # sqrt(2 var(sigma^2) / ((n + 2) * examples)).
    std = math.sqrt(2.0 * exact.variance_squared / (130 * 32))
    assert abs(lanczos.mean_squared - exact.mean_squared) < 4.0 * std
    assert lanczos.variance_squared == pytest.approx(exact.variance_squared, rel=0.2)
    # The quadrature is exact for polynomials of degree < 2k: its density's first two moments
    # are the Hutchinson estimates (e1' T e1 = v' G v, e1' T^2 e1 = |G v|^2).
    squares = lanczos.singular_values**2
    assert np.sum(lanczos.weights) == pytest.approx(1.0)
    assert np.sum(lanczos.weights * squares) == pytest.approx(lanczos.mean_squared, rel=1e-6)
    assert np.sum(lanczos.weights * squares**2) - lanczos.mean_squared**2 == pytest.approx(
        lanczos.variance_squared, rel=1e-4)


def test_lanczos_probes_do_not_follow_x():
    # x drawn as the probes of seed 0 would be without the module's salt: a probe along x
    # sees J x, the response to scaling the input, and Hutchinson then read 0.21 for 1.30.
    sigma_b2 = 0.05
    sigma_w2 = theory.critical_sigma_w2("tanh", sigma_b2)
    q_star = theory.mean_field("tanh", sigma_w2, sigma_b2).q_star
    model = tanh_net(128, 16, sigma_w2, sigma_b2, orthogonal=True, seed=40)
    x = np.random.default_rng(0).standard_normal((8, 128)) * math.sqrt(
        (q_star - sigma_b2) / sigma_w2)
    exact, lanczos = (keras_inits.jacobian_spectrum(model, x.astype("float32"), method=method,
                                                    iterations=4, seed=0)
                      for method in ("exact", "lanczos"))
    std = math.sqrt(2.0 * exact.variance_squared / (130 * 8))
    assert abs(lanczos.mean_squared - exact.mean_squared) < 4.0 * std


# ---------------------------------------------------------------- bad input


def _two_inputs():
    a, b = keras.Input((4,)), keras.Input((4,))
    return keras.Model([a, b], keras.layers.Dense(3)(keras.layers.Concatenate()([a, b])))


def _two_outputs():
    a = keras.Input((4,))
    return keras.Model(a, [keras.layers.Dense(3)(a), keras.layers.Dense(2)(a)])


class _Unused(keras.Model):
    def __init__(self):
        super().__init__()
        self.used, self.unused = keras.layers.Dense(3), keras.layers.Dense(3)

    def build(self, input_shape):
        self.used.build(input_shape)
        self.unused.build(input_shape)

    def call(self, x):
        return self.used(x)


def _embedding():
    return keras.Sequential([keras.Input((5,), dtype="int32"), keras.layers.Embedding(10, 4)])


X = np.zeros((2, 4), "float32")
BAD = [
    (lambda m: keras_inits.jacobian_spectrum(m, X, method="svd"), ValueError,
     r"Unknown method='svd'. Use one of \('auto', 'exact', 'lanczos'\)"),
    (lambda m: keras_inits.jacobian_spectrum(m, X, iterations=0), ValueError,
     r"iterations must be >= 1"),
    (lambda m: keras_inits.jacobian_spectrum(m, X, iterations=2.5), TypeError,
     r"iterations must be an int"),
    (lambda m: keras_inits.jacobian_spectrum(m, X, seed="a"), TypeError, r"seed must be an int"),
    (lambda m: keras_inits.jacobian_spectrum(m, None), ValueError, r"x is None"),
    (lambda m: keras_inits.jacobian_spectrum(m, iter([X])), TypeError, r"one batch of arrays"),
    (lambda m: keras_inits.jacobian_spectrum(m, X[0]), ValueError,
     r"x must be a batch .* got shape \(4,\)"),
    (lambda m: keras_inits.jacobian_spectrum(m, np.zeros((2, 5), "float32")), ValueError,
     r"x does not fit model"),
    (lambda m: keras_inits.jacobian_spectrum(m, X.astype("int32")), TypeError,
     r"dtype int32: .* no derivative with respect to integer inputs"),
    (lambda m: keras_inits.jacobian_spectrum(m, X, output="nope"), ValueError,
     r"has no layer named 'nope'; its layers: 'dense_0'"),
    (lambda m: keras_inits.jacobian_spectrum(m, X, output=3), TypeError,
     r"output must be a layer's name"),
    (lambda m: keras_inits.jacobian_spectrum(_two_inputs(), [X, X]), ValueError,
     r"one input tensor .* got 2 inputs"),
    (lambda m: keras_inits.jacobian_spectrum(_two_outputs(), X), ValueError,
     r"has 2 outputs: pass output=<layer name>"),
    (lambda m: _spectrum_of_unused_layer(), ValueError, r"is not called when model .* runs on x"),
    (lambda m: keras_inits.jacobian_spectrum(_embedding(), np.zeros((2, 5), "float32")),
     TypeError, r"the model's input has dtype int32"),
]


def _spectrum_of_unused_layer():
    model = _Unused()
    model(X)
    return keras_inits.jacobian_spectrum(model, X, output=model.unused.name)


@pytest.mark.parametrize(("call", "error", "message"), BAD, ids=range(len(BAD)))
def test_bad_input_is_refused_with_the_fix(call, error, message):
    with pytest.raises(error, match=message):
        call(dense_net([4, 3]))


# ---------------------------------------------------------------- the verdict


def spectrum_with(mean_squared, relative_variance):
    """A spectrum with these statistics (the verdict reads nothing else)."""
    return keras_inits.JacobianSpectrum(
        np.ones(1), np.ones(1), mean_squared, relative_variance * mean_squared**2, 1.0, 1.0,
        "exact", 1, (1, 1))


@pytest.mark.parametrize(("mean_squared", "isometric", "words"), [
    (0.5 * (1 - 1e-9), False, "gradients shrink"), (0.5, True, ""), (2.0, True, ""),
    (2.0 * (1 + 1e-9), False, "gradients grow"),
])
def test_mean_squared_threshold(mean_squared, isometric, words):
    spectrum = spectrum_with(mean_squared, 0.1)
    assert spectrum.isometric is isometric
    assert spectrum.verdict.startswith("Dynamical isometry" if isometric else "No dynamical")
    assert words in spectrum.verdict and "spread out" not in spectrum.verdict


@pytest.mark.parametrize(("relative_variance", "isometric"), [
    (0.5 * (1 - 1e-9), True), (0.5, True), (0.5 * (1 + 1e-9), False),
])
def test_relative_variance_threshold(relative_variance, isometric):
    spectrum = spectrum_with(1.0, relative_variance)
    assert spectrum.isometric is isometric
    assert ("spread out" in spectrum.verdict) is not isometric
    assert "gradients" not in spectrum.verdict


# ---------------------------------------------------------------- reports


def test_report_is_json_ready_and_printable():
    model = dense_net([16, 16, 16], "tanh")
    spectrum = keras_inits.jacobian_spectrum(model, np.ones((3, 16), "float32"))
    report = json.loads(json.dumps(spectrum.to_dict(), allow_nan=False))
    assert report["method"] == "exact" and report["shape"] == [16, 16]
    assert sum(report["histogram"]["fractions"]) == pytest.approx(1.0)
    assert report["verdict"] == spectrum.verdict
    assert "mean sigma^2" in str(spectrum) and spectrum.verdict in str(spectrum)


def test_plot_writes_a_figure(tmp_path):
    pytest.importorskip("matplotlib")
    spectrum = keras_inits.jacobian_spectrum(dense_net([16, 16], "tanh"),
                                             np.ones((2, 16), "float32"))
    path = spectrum.plot(tmp_path / "figures" / "spectrum.png", title="tanh")
    assert path.stat().st_size > 1000
