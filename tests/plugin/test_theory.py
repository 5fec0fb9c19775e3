"""keras_inits.theory against references that share none of its code.

The references: closed forms computed here with `math`; dense Simpson integrals on a fine
grid (O(h^4) where the integrand is smooth, O(h^2) across a kink off the grid); a brute-force
fixed-point iteration of the length map; finite differences of the public maps for the
slopes; and random networks, measured layer by layer. Everything here is float64 NumPy
except the Keras network, so the tests behave the same under every backend.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from keras_inits import theory
from keras_inits.theory import moments
from keras_inits.theory.activations import SELU_ALPHA, SELU_SCALE, resolve

# ---------------------------------------------------------------- independent references

_HALF = np.linspace(0.0, 12.0, 12_001)  # h = 0.001
_HALF_PDF = np.exp(-0.5 * _HALF**2) / math.sqrt(2.0 * math.pi)
_Z2 = np.linspace(-10.0, 10.0, 2_001)  # h = 0.01, for the two-variable integrals
_PDF2 = np.exp(-0.5 * _Z2**2) / math.sqrt(2.0 * math.pi)


def simpson(values, grid, axis=-1):
    """Composite Simpson's rule on an evenly spaced grid of an odd number of points."""
    weights = np.ones(grid.size)
    weights[1:-1:2], weights[2:-1:2] = 4.0, 2.0
    return np.tensordot(values, weights * (grid[1] - grid[0]) / 3.0, axes=([axis], [0]))


def dense_expect(g, q):
    """E[g(sqrt(q) z)] by Simpson's rule on 12,001 points each side of 0, the sides apart
    (a kink or a step of g at 0, as relu's or selu's derivative has, is then integrated right)."""
    z = np.maximum(_HALF, 1e-300) * math.sqrt(q)  # 0+ and 0- at the ends
    return float(simpson((g(z) + g(-z)) * _HALF_PDF, _HALF))


def dense_expect_pair(f, q, c):
    """E[f(u1) f(u2)], variances q, correlation c, by Simpson's rule on a 2,001^2 grid."""
    z1, z2 = _Z2[:, None], _Z2[None, :]
    u1 = math.sqrt(q) * z1
    u2 = math.sqrt(q) * (c * z1 + math.sqrt(1.0 - c * c) * z2)
    inner = simpson(f(u1) * f(u2) * _PDF2[None, :], _Z2, axis=1)
    return float(simpson(inner * _PDF2, _Z2))


def numpy_relu(x):
    return np.maximum(x, 0.0)


def numpy_erf(x):
    return np.vectorize(math.erf)(x)


def numpy_selu(x):
    return SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0.0)))


def normal_cdf(x):
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


# ---------------------------------------------------------------- the papers' checks


def test_tanh_without_bias_is_critical_at_sigma_w2_1():
    """Poole et al. 2016: tanh, sigma_b = 0, is ordered below sigma_w^2 = 1, chaotic above."""
    assert theory.critical_sigma_w2("tanh") == pytest.approx(1.0, abs=1e-6)
    assert theory.mean_field("tanh", 1.0).phase == "critical"
    assert theory.mean_field("tanh", 0.9).phase == "ordered"
    assert theory.mean_field("tanh", 1.1).phase == "chaotic"


def test_relu_without_bias_is_critical_at_he_variance():
    assert theory.critical_sigma_w2("relu") == 2.0
    field = theory.mean_field("relu", 2.0)
    assert (field.phase, field.chi_1, field.xi_c) == ("critical", 1.0, math.inf)
    # The quadrature path (a callable, differentiated numerically) finds it too.
    assert theory.critical_sigma_w2(numpy_relu) == pytest.approx(2.0, rel=1e-9)
    # leaky_relu (Keras's slope 0.2): chi_1 = sigma_w2 (1 + 0.04) / 2.
    assert theory.critical_sigma_w2("leaky_relu") == pytest.approx(2.0 / 1.04, rel=1e-15)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "linear", numpy_relu])
def test_no_critical_point_with_bias_for_homogeneous_activations(activation):
    with pytest.raises(ValueError, match=r"no critical sigma_w2.*grows? without bound"):
        theory.critical_sigma_w2(activation, sigma_b2=0.05)


def test_tanh_critical_line_against_brute_force():
    """Bisection on sigma_w2 of chi_1 - 1, q* by plain iteration, all by dense Simpson."""

    def chi_1(sigma_w2, sigma_b2):
        q = 1.0
        for _ in range(2_000):
            new = sigma_w2 * dense_expect(lambda u: np.tanh(u) ** 2, q) + sigma_b2
            if abs(new - q) < 1e-15:
                break
            q = new
        return sigma_w2 * dense_expect(lambda u: (1.0 - np.tanh(u) ** 2) ** 2, q)

    for sigma_b2 in (0.05, 0.2):
        lo, hi = 1.0, 4.0
        for _ in range(45):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if chi_1(mid, sigma_b2) < 1.0 else (lo, mid)
        assert theory.critical_sigma_w2("tanh", sigma_b2) == pytest.approx(lo, rel=1e-9)


def test_selu_fixed_point_at_lecun_variance():
    """SELU's constants make E[selu(z)] = 0 and E[selu(z)^2] = 1 for z ~ N(0, 1), so at
    LeCun's sigma_w2 = 1 without bias q* = 1. chi_1 = lambda^2 (1/2 + alpha^2 e^2 Phi(-2))
    = 1.0716 (E[exp(2z) 1{z < 0}] = e^2 Phi(-2)): slightly chaotic, with c* = 0."""
    field = theory.mean_field("selu", 1.0)
    assert field.q_star == pytest.approx(1.0, abs=1e-9)
    expected = SELU_SCALE**2 * (0.5 + SELU_ALPHA**2 * math.e**2 * normal_cdf(-2.0))
    assert field.chi_1 == pytest.approx(expected, rel=1e-12)
    assert field.chi_1 == pytest.approx(1.0716, abs=1e-4)
    assert field.phase == "chaotic"
    assert field.c_star == pytest.approx(0.0, abs=1e-7)


# ---------------------------------------------------------------- the maps and moments


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "gelu", "softplus", "silu", "mish", "erf",
                                  "elu", "selu", "relu", "leaky_relu", "softsign"])
@pytest.mark.parametrize("q", [0.05, 1.0, 6.0])
def test_length_map_and_chi_1_against_dense_integrals(name, q):
    act = resolve(name)
    kinked = name in ("elu", "selu", "relu", "leaky_relu", "softsign")
    tolerance = 1e-10 if kinked else 1e-11
    expected = 1.5 * dense_expect(lambda u: act.phi(u) ** 2, q) + 0.1
    assert theory.length_map(name, q, 1.5, 0.1) == pytest.approx(expected, abs=tolerance)
    expected = dense_expect(lambda u: act.grad(u) ** 2, q)
    assert float(moments.grad_moment(act, q)) == pytest.approx(expected, abs=tolerance)


@pytest.mark.parametrize("name", ["tanh", "gelu", "erf", "selu", "relu", "softplus"])
@pytest.mark.parametrize("c", [-0.5, 0.3, 0.95])
def test_correlation_map_against_dense_integrals(name, c):
    act = resolve(name)
    q, sigma_w2, sigma_b2 = 1.3, 1.8, 0.1
    cross = dense_expect_pair(act.phi, q, c)
    length = sigma_w2 * dense_expect(lambda u: act.phi(u) ** 2, q) + sigma_b2
    expected = (sigma_w2 * cross + sigma_b2) / length
    tolerance = 1e-4 if name in ("selu", "relu") else 1e-9  # the grid crosses the kink
    assert theory.correlation_map(name, c, sigma_w2, sigma_b2, q=q) == pytest.approx(
        expected, abs=tolerance)


@pytest.mark.parametrize("c", [-0.9, -0.2, 0.0, 0.4, 0.99, 1.0])
def test_closed_forms_agree_with_the_quadrature(c):
    """relu, leaky_relu and erf by name (closed forms) and as plain callables (the polar
    quadrature, derivatives by central differences)."""
    leaky = resolve("leaky_relu").phi
    for name, function in [("relu", numpy_relu), ("erf", numpy_erf), ("leaky_relu", leaky)]:
        closed, quadrature = resolve(name), resolve(function)
        assert quadrature.closed_form is None
        for q1, q2 in [(0.3, 0.3), (1.0, 2.5)]:
            for moment in (moments.cross_moment, moments.grad_cross_moment):
                assert float(moment(quadrature, q1, q2, c)) == pytest.approx(
                    float(moment(closed, q1, q2, c)), rel=1e-8, abs=1e-12)
        for moment in (moments.second_moment, moments.second_moment_slope, moments.grad_moment):
            assert float(moment(quadrature, 0.7)) == pytest.approx(
                float(moment(closed, 0.7)), rel=1e-8)


def test_arc_cosine_kernel_values():
    """Cho & Saul 2009 for relu at unit variance: c = 0 gives 1 / (2 pi), c = 1 gives 1/2."""
    relu = resolve("relu")
    assert float(moments.cross_moment(relu, 1.0, 1.0, 0.0)) == pytest.approx(1 / (2 * math.pi))
    assert float(moments.cross_moment(relu, 1.0, 1.0, 1.0)) == pytest.approx(0.5)
    assert float(moments.grad_cross_moment(relu, 1.0, 1.0, 0.0)) == pytest.approx(0.25)


@pytest.mark.parametrize("name", sorted(set(theory.ACTIVATIONS) - {"erf"}))
def test_numpy_activations_match_keras(name):
    x = np.linspace(-6.0, 6.0, 1_201)
    act = resolve(name)
    keras_values = keras.ops.convert_to_numpy(keras.activations.get(name)(x.astype("float32")))
    np.testing.assert_allclose(act.phi(x), keras_values, rtol=1e-5, atol=1e-6)
    x = x[np.abs(x) > 1e-3]  # away from the kinks at 0
    step = 1e-6
    numeric = (act.phi(x + step) - act.phi(x - step)) / (2 * step)
    np.testing.assert_allclose(act.grad(x), numeric, rtol=1e-7, atol=1e-8)


# ---------------------------------------------------------------- fixed points and depth scales


@pytest.mark.parametrize(("name", "sigma_w2", "sigma_b2"), [
    ("tanh", 1.5, 0.05), ("tanh", 2.5, 0.05), ("erf", 2.0, 0.1), ("gelu", 1.9, 0.2),
    ("selu", 1.3, 0.0), ("relu", 1.5, 0.1),
])
def test_fixed_points_and_slopes_from_the_public_maps(name, sigma_w2, sigma_b2):
    """q* and c* are fixed points of the maps; exp(-1/xi_q) and chi_c are the maps' slopes
    there, by central differences of `length_map` and `correlation_map`."""
    field = theory.mean_field(name, sigma_w2, sigma_b2)
    q, c = field.q_star, field.c_star
    assert theory.length_map(name, q, sigma_w2, sigma_b2) == pytest.approx(q, rel=1e-12)
    h = 1e-5 * q
    slope = (theory.length_map(name, q + h, sigma_w2, sigma_b2)
             - theory.length_map(name, q - h, sigma_w2, sigma_b2)) / (2 * h)
    assert math.exp(-1.0 / field.xi_q) == pytest.approx(slope, rel=1e-7)
    assert theory.correlation_map(name, c, sigma_w2, sigma_b2) == pytest.approx(c, abs=1e-12)
    if c < 1:  # chaotic: the central slope; ordered: one-sided, at c = 1
        slope = (theory.correlation_map(name, c + 1e-5, sigma_w2, sigma_b2)
                 - theory.correlation_map(name, c - 1e-5, sigma_w2, sigma_b2)) / 2e-5
        assert field.phase == "chaotic"
    else:
        h = 1e-10 if name == "relu" else 1e-6  # relu's map has a (1 - c)^(3/2) term at 1
        slope = (1.0 - theory.correlation_map(name, 1.0 - h, sigma_w2, sigma_b2)) / h
        assert field.phase == "ordered"
        assert field.chi_c == field.chi_1
    assert field.chi_c == pytest.approx(slope, rel=2e-5)
    assert field.xi_c == pytest.approx(-1.0 / math.log(field.chi_c), rel=1e-12)
    assert field.trainable_depth == pytest.approx(6.0 * field.xi_c)


def test_propagate_converges_at_the_rate_xi_c():
    """The gap c^l - c* shrinks by chi_c = exp(-1 / xi_c) per layer."""
    field = theory.mean_field("tanh", 2.5, 0.05)
    _, _, c = theory.propagate("tanh", field.q_star, 0.95, 2.5, 0.05, depth=200)
    gaps = c - field.c_star
    assert 0 < gaps[-1] < 1e-6
    assert gaps[191] / gaps[190] == pytest.approx(math.exp(-1.0 / field.xi_c), rel=1e-5)


def test_signal_dying_out():
    """No bias and chi_1 < 1 with phi(0) = 0: q* = 0, and the slopes are sigma_w2 phi'(0)^2."""
    field = theory.mean_field("tanh", 0.5)
    assert (field.q_star, field.chi_1, field.c_star, field.phase) == (0.0, 0.5, 1.0, "ordered")
    assert field.xi_q == pytest.approx(1.0 / math.log(2.0))
    # selu's derivative jumps at 0: the limit q -> 0+ averages its two sides.
    field = theory.mean_field("selu", 0.3)
    assert field.q_star == 0.0
    assert field.chi_1 == pytest.approx(0.3 * SELU_SCALE**2 * (1 + SELU_ALPHA**2) / 2)


def test_erf_critical_point_closed_form():
    """erf'(0)^2 = 4 / pi, so without bias chi_1 = 1 where q* leaves 0: sigma_w2 = pi / 4."""
    assert theory.critical_sigma_w2("erf") == pytest.approx(math.pi / 4, rel=1e-6)


# ---------------------------------------------------------------- measured random networks


def _pair_inputs(pairs, dim, c0, rng):
    """`pairs` input pairs with |x|^2 / dim = 1 and x1 . x2 / dim = c0 exactly."""
    a = rng.standard_normal((pairs, dim))
    a /= np.sqrt(np.mean(a * a, axis=1, keepdims=True))
    e = rng.standard_normal((pairs, dim))
    e -= np.mean(e * a, axis=1, keepdims=True) * a
    e /= np.sqrt(np.mean(e * e, axis=1, keepdims=True))
    return a, c0 * a + math.sqrt(1 - c0 * c0) * e


def test_keras_network_follows_the_prediction():
    """A 12-layer tanh MLP of width 2,000 in the chaotic phase (Keras Dense layers, kernels
    N(0, sigma_w2 / fan_in) by VarianceScaling, biases N(0, sigma_b2)), 16 input pairs at
    correlation 0.9: the measured q^l (mean over units) and c^l, averaged over the pairs,
    follow `propagate` within the finite-width error (relative std ~ sqrt(2 / width) per
    layer: measured at most 3.4% for q and 0.017 for c over 15 seeds and the 3 backends)."""
    sigma_w2, sigma_b2, c0, width, depth, pairs, dim = 2.5, 0.05, 0.9, 2_000, 12, 16, 256
    a, b = _pair_inputs(pairs, dim, c0, np.random.default_rng(0))
    h = np.concatenate([a, b]).astype("float32")
    q_measured, c_measured = [], []
    for layer_index in range(depth):
        dense = keras.layers.Dense(
            width,
            kernel_initializer=keras.initializers.VarianceScaling(
                sigma_w2, "fan_in", "untruncated_normal", seed=layer_index),
            bias_initializer=keras.initializers.RandomNormal(
                stddev=math.sqrt(sigma_b2), seed=100 + layer_index),
        )
        h = dense(keras.activations.tanh(h) if layer_index else h)
        values = keras.ops.convert_to_numpy(h).astype(np.float64)
        h1, h2 = values[:pairs], values[pairs:]
        q1, q2 = np.mean(h1 * h1, axis=1), np.mean(h2 * h2, axis=1)
        q_measured.append(np.mean(np.concatenate([q1, q2])))
        c_measured.append(np.mean(np.mean(h1 * h2, axis=1) / np.sqrt(q1 * q2)))
    q1 = sigma_w2 + sigma_b2  # the first layer's, for |x|^2 / dim = 1
    q, _, c = theory.propagate("tanh", q1, (sigma_w2 * c0 + sigma_b2) / q1, sigma_w2, sigma_b2,
                               depth - 1)
    assert c[-1] < 0.75  # the prediction moves: the test can tell
    np.testing.assert_allclose(q_measured, q, rtol=0.05)
    np.testing.assert_allclose(c_measured, c, atol=0.03)


@pytest.mark.parametrize(("name", "sigma_w2", "sigma_b2", "c0"), [
    ("relu", 1.5, 0.1, 0.2), ("selu", 1.0, 0.0, 0.8), ("softplus", 1.9, 0.2, 0.9),
])
def test_very_wide_network_follows_the_prediction(name, sigma_w2, sigma_b2, c0):
    """Width 10^6, in NumPy float64: for two inputs, a layer's W phi(h) is exactly a Gaussian
    vector with iid pairs of covariance (sigma_w2 / width) Gram(phi(h1), phi(h2)), so it is
    drawn as such (the same random variables as with the weight matrix, which would not fit in
    memory). The finite-width error is then ~0.3% per layer."""
    rng, width, depth = np.random.default_rng(1), 1_000_000, 10
    phi = resolve(name).phi
    q1 = sigma_w2 + sigma_b2
    c1 = (sigma_w2 * c0 + sigma_b2) / q1
    z1, z2 = rng.standard_normal((2, width))
    h = np.stack([z1, c1 * z1 + math.sqrt(1 - c1 * c1) * z2]) * math.sqrt(q1)
    measured = []
    for _ in range(depth):
        q = np.mean(h * h, axis=1)
        measured.append((q[0], q[1], np.mean(h[0] * h[1]) / math.sqrt(q[0] * q[1])))
        activity = phi(h)
        gram = sigma_w2 * (activity @ activity.T) / width
        h = np.linalg.cholesky(gram) @ rng.standard_normal((2, width))
        h += rng.standard_normal(width) * math.sqrt(sigma_b2)  # one bias for both inputs
    predicted = np.stack(theory.propagate(name, q1, c1, sigma_w2, sigma_b2, depth - 1), axis=1)
    measured = np.array(measured)
    np.testing.assert_allclose(measured[:, :2], predicted[:, :2], rtol=0.02)
    np.testing.assert_allclose(measured[:, 2], predicted[:, 2], atol=0.01)


# ---------------------------------------------------------------- the phase diagram


def test_phase_diagram_of_tanh(tmp_path):
    diagram = theory.phase_diagram("tanh", [0.5, 1.0, 2.0, 3.0], [0.0, 0.05])
    assert diagram.phase.shape == (2, 4)
    assert list(diagram.phase[0]) == ["ordered", "critical", "chaotic", "chaotic"]
    assert list(diagram.phase[1]) == ["ordered", "ordered", "chaotic", "chaotic"]
    assert diagram.critical[0] == pytest.approx(1.0, abs=1e-6)
    assert diagram.critical[1] == pytest.approx(theory.critical_sigma_w2("tanh", 0.05))
    rows = diagram.rows()
    assert len(rows) == 8
    field = theory.mean_field("tanh", 2.0, 0.05)
    assert rows[6] == {"sigma_w2": 2.0, "sigma_b2": 0.05, **{
        key: value for key, value in field.to_dict().items()
        if key not in ("activation", "sigma_w2", "sigma_b2")}}
    pytest.importorskip("matplotlib")  # the lowest-versions install has no harness extra
    assert diagram.plot(tmp_path / "phase.png").stat().st_size > 10_000
    figure = diagram.plot()
    assert len(figure.axes) == 4  # two panels and their color bars


def test_phase_diagram_marks_unbounded_points():
    diagram = theory.phase_diagram("relu", [1.0, 2.0, 3.0], [0.0, 0.1])
    assert list(diagram.phase[0]) == ["ordered", "critical", "unbounded"]
    assert list(diagram.phase[1]) == ["ordered", "unbounded", "unbounded"]
    assert np.isnan(diagram.q_star[1, 1]) and diagram.q_star[1, 0] == pytest.approx(0.2)
    assert diagram.critical[0] == 2.0 and np.isnan(diagram.critical[1])


# ---------------------------------------------------------------- bad input


def test_bad_activations():
    with pytest.raises(ValueError, match="Unknown activation='relu7'.*tanh"):
        theory.mean_field("relu7", 1.0)
    with pytest.raises(ValueError, match="not elementwise"):
        theory.length_map("softmax", 1.0, 1.0)
    with pytest.raises(TypeError, match="activation name or a callable, got int"):
        theory.critical_sigma_w2(3)
    with pytest.raises(ValueError, match="must be elementwise"):
        theory.mean_field(lambda x: np.sum(x), 1.0)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"sigma_w2": -1.0}, ValueError, "sigma_w2 must be a finite positive variance, got -1.0"),
    ({"sigma_w2": 0.0}, ValueError, "sigma_w2 must be a finite positive"),
    ({"sigma_w2": math.inf}, ValueError, "sigma_w2 must be a finite"),
    ({"sigma_b2": -0.1}, ValueError, "sigma_b2 must be a finite non-negative variance"),
    ({"sigma_b2": math.nan}, ValueError, "sigma_b2 must be a finite"),
    ({"sigma_b2": "0.1"}, TypeError, "sigma_b2 must be a number, got str"),
    ({"sigma_w2": True}, TypeError, "sigma_w2 must be a number, got bool"),
])
def test_bad_variances(kwargs, error, match):
    arguments = {"sigma_w2": 1.0, "sigma_b2": 0.0, **kwargs}
    with pytest.raises(error, match=match):
        theory.mean_field("tanh", **arguments)
    with pytest.raises(error, match=match):
        theory.length_map("tanh", 1.0, **arguments)


def test_bad_arguments_of_the_maps():
    with pytest.raises(ValueError, match=r"c must lie in \[-1, 1\], got 1.5"):
        theory.correlation_map("tanh", 1.5, 1.0, 0.1)
    with pytest.raises(ValueError, match="q must lie in"):
        theory.length_map("tanh", [-1.0, 1.0], 1.0)
    with pytest.raises(ValueError, match="zero pre-activations"):
        theory.correlation_map("tanh", 0.5, 0.5)  # q* = 0 without bias
    with pytest.raises(ValueError, match="depth must be a non-negative integer"):
        theory.propagate("tanh", 1.0, 0.5, 1.0, depth=-1)
    with pytest.raises(ValueError, match="pair"):
        theory.propagate("tanh", (1.0, 2.0, 3.0), 0.5, 1.0)
    with pytest.raises(ValueError, match="sigma_w2 is empty"):
        theory.phase_diagram("tanh", [], [0.0])
    with pytest.raises(ValueError, match="sigma_b2 must be a finite non-negative"):
        theory.phase_diagram("tanh", [1.0], [-0.1])
    with pytest.raises(TypeError, match="sequence of numbers"):
        theory.phase_diagram("tanh", 1.0, [0.0])


def test_diverging_length_map():
    with pytest.raises(ValueError, match="grows without bound.*smaller sigma_w2"):
        theory.mean_field("relu", 3.0)
    with pytest.raises(theory.NoFixedPointError):
        theory.mean_field("relu", 2.0, 0.1)
    assert theory.length_map("relu", [1.0, 4.0], 3.0).tolist() == [1.5, 6.0]  # the map is fine


def test_a_leaky_relu_of_any_slope_has_its_closed_forms():
    """`leaky_relu(0.3)` (what a LeakyReLU(negative_slope=0.3) layer reads as): its closed-form
    moments against the quadrature of the same function given as a callable."""
    named = resolve("leaky_relu(0.3)")
    assert named.closed_form == "leaky_relu" and named.slope == 0.3

    def leaky(x):
        return np.where(x > 0, x, 0.3 * x)

    for c in (-0.5, 0.2, 0.9):
        exact = theory.correlation_map("leaky_relu(0.3)", c, 1.7, 0.1, q=0.8)
        numeric = theory.correlation_map(leaky, c, 1.7, 0.1, q=0.8)
        assert exact == pytest.approx(numeric, abs=1e-6)
    assert theory.critical_sigma_w2("leaky_relu(0.3)") == pytest.approx(2 / 1.09)
    with pytest.raises(ValueError, match=r"negative slope in \[0, 1\)"):
        resolve("leaky_relu(1.5)")
