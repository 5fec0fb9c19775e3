"""The Gaussian expectations of the mean-field recursions, in float64.

Every quantity of the theory is one of five expectations over pre-activations u ~ N(0, q), or
a pair (u1, u2) with variances q1, q2 and correlation c:

    second_moment          E[phi(u)^2]
    second_moment_slope    d/dq E[phi(u)^2] = E[phi'(u)^2 + phi(u) phi''(u)]
    grad_moment            E[phi'(u)^2]
    cross_moment           E[phi(u1) phi(u2)]
    grad_cross_moment      E[phi'(u1) phi'(u2)]

Closed forms where they exist: `linear`; `relu` and `leaky_relu` through the arc-cosine
kernel of degree 1 and 0 (Cho & Saul 2009); `erf` (Williams 1997). Everything else by
quadrature, with rules whose panel edges fall where the common activations have their kinks,
at u = 0. Gauss-Hermite quadrature is not used: it integrates polynomials, and a kink or a
step (relu's derivative) makes its error large (chi_1 of relu at sigma_w^2 = 2 comes out
about 0.91 instead of 1).

- One variable: E[g(z)] = int_0^inf pdf(z) (g(z) + g(-z)) dz with composite Gauss-Legendre
  on [0, 10], graded panels near 0 (edges 2^-8 ... 1/2, then every 1/2). Its error is at
  the level of float64 rounding for every activation of `ACTIVATIONS` at q up to 100.
- Two variables: polar coordinates (z1, z2) = r (cos t, sin t). An activation with its kinks
  at 0 has them on the lines u1 = 0 and u2 = 0, which pass through the origin: rays of
  constant angle. So the angle is integrated arc by arc between those four rays (Gauss-Legendre
  on each), and the radius, along which the integrand is smooth, with the one-variable panels.
  About 1e-15 for the activations of `ACTIVATIONS` at q ~ 1, 1e-11 for a steep one (tanh at
  q ~ 50), and exact to rounding for the piecewise-linear ones.

Activations with kinks away from 0 (hard_tanh, relu6, hard_sigmoid, hard_silu) have their
derivative's step inside a panel: chi_1 and chi_c are then off by up to about 1e-2 (hard_tanh's
chi_1 at q = 0.7: 7e-3), the other quantities much less.

References:
    Cho & Saul 2009, "Kernel methods for deep learning" (the arc-cosine kernels).
    Williams 1997, "Computing with infinite networks" (erf).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from keras_inits.theory.activations import Activation

Array = np.ndarray
_RADIUS = 10.0  # pdf(10) ~ 8e-23: the Gaussian tail beyond is below float64 rounding
_NODES_PER_PANEL = 16
_NODES_PER_ARC = 48
# q = 0 is taken as the limit q -> 0+ (phi' of relu or selu jumps at 0: E[phi'(u)^2] tends
# to the mean of its two sides, not phi'(0)^2).
_Q_TINY = 1e-200
# Below this q the Stein-form slope loses digits to cancellation; it is continuous, so it is
# taken there.
_SLOPE_MIN_Q = 1e-10


@functools.cache
def _radial_rule() -> tuple[Array, Array]:
    """Nodes and Gauss-Legendre weights of int_0^RADIUS f(r) dr on graded panels."""
    edges = np.concatenate([[0.0], 2.0 ** np.arange(-8, 0), np.arange(1.0, _RADIUS + 0.25, 0.5)])
    x, w = np.polynomial.legendre.leggauss(_NODES_PER_PANEL)
    left, width = edges[:-1, None], np.diff(edges)[:, None]
    return (left + width * (x + 1.0) / 2.0).ravel(), (width * w / 2.0).ravel()


@functools.cache
def _line_rule() -> tuple[Array, Array]:
    """(z, w): E[g(z)], z ~ N(0, 1), is sum(w * (g(z) + g(-z)))."""
    z, w = _radial_rule()
    return z, w * np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


@functools.cache
def _disk_rule() -> tuple[Array, Array]:
    """(r, w): the radial part of E[g(z1, z2)] in polar coordinates, r exp(-r^2/2) dr / 2pi."""
    r, w = _radial_rule()
    return r, w * r * np.exp(-0.5 * r * r) / (2.0 * math.pi)


def _expect_line(function, q: Array) -> Array:
    """E[function(sqrt(q) z)] for each q (any shape), z ~ N(0, 1)."""
    z, w = _line_rule()
    scale = np.sqrt(np.maximum(np.asarray(q, dtype=np.float64), _Q_TINY))[..., None]
    return np.sum(w * (function(scale * z) + function(-scale * z)), axis=-1)


def _expect_pair(f1, f2, q1: Array, q2: Array, c: Array) -> Array:
    """E[f1(u1) f2(u2)], (u1, u2) centered Gaussian with variances q1, q2 and correlation c
    (broadcast together), by the polar rule of the module docstring."""
    q1, q2, c = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (q1, q2, c)))
    q1, q2 = np.maximum(q1, _Q_TINY), np.maximum(q2, _Q_TINY)
    theta0 = np.arccos(np.clip(c, -1.0, 1.0))  # u2 = sqrt(q2) r cos(t - theta0)
    half = math.pi / 2.0
    breaks = np.stack([np.full_like(c, half), np.full_like(c, 3 * half),
                       theta0 + half, theta0 + 3 * half], axis=-1) % (2 * math.pi)
    breaks = np.sort(breaks, axis=-1)
    ends = np.concatenate([breaks[..., 1:], breaks[..., :1] + 2 * math.pi], axis=-1)
    x, w = np.polynomial.legendre.leggauss(_NODES_PER_ARC)
    width = (ends - breaks)[..., None]  # [..., arc, 1]
    angles = (breaks[..., None] + width * (x + 1.0) / 2.0).reshape(*c.shape, -1)
    angle_weights = (width * w / 2.0).reshape(*c.shape, -1)
    r, radial_weights = _disk_rule()
    cos1 = np.cos(angles)[..., None] * r  # [..., angle, radius]
    cos2 = np.cos(angles - theta0[..., None])[..., None] * r
    u1 = np.sqrt(q1)[..., None, None] * cos1
    u2 = np.sqrt(q2)[..., None, None] * cos2
    inner = np.sum(f1(u1) * f2(u2) * radial_weights, axis=-1)
    return np.sum(inner * angle_weights, axis=-1)


def _arccos_kernels(c: Array) -> tuple[Array, Array]:
    """Cho & Saul's arc-cosine kernels for unit variances: (E[relu(z1) relu(z2)],
    E[1{z1 > 0} 1{z2 > 0}]) at correlation c."""
    c = np.clip(c, -1.0, 1.0)
    angle = np.arccos(c)
    degree1 = (np.sqrt(1.0 - c * c) + (math.pi - angle) * c) / (2.0 * math.pi)
    degree0 = (math.pi - angle) / (2.0 * math.pi)
    return degree1, degree0


def first_moment(activation: Activation, q: Array) -> Array:
    """E[phi(u)], u ~ N(0, q), for each q: relu's sqrt(q / 2 pi) in closed form."""
    q = np.asarray(q, dtype=np.float64)
    if activation.closed_form in ("relu", "leaky_relu"):
        return (1.0 - activation.slope) * np.sqrt(q / (2.0 * math.pi))
    if activation.closed_form in ("linear", "erf"):
        return np.zeros_like(q)
    return _expect_line(activation.phi, q)


def second_moment(activation: Activation, q: Array) -> Array:
    """E[phi(u)^2], u ~ N(0, q), for each q."""
    q = np.asarray(q, dtype=np.float64)
    kind = activation.closed_form
    if kind in PIECEWISE_LINEAR:
        return piecewise_constant(activation) * q
    if kind == "erf":
        return 2.0 / math.pi * np.arcsin(2.0 * q / (1.0 + 2.0 * q))
    return _expect_line(lambda u: activation.phi(u) ** 2, q)


PIECEWISE_LINEAR = ("linear", "relu", "leaky_relu")


def piecewise_constant(activation: Activation) -> float:
    """For the piecewise-linear activations (slope 1 for x > 0, a below), E[phi'(u)^2],
    d/dq E[phi(u)^2] and E[phi(u)^2] / q are the same constant (1 + a^2) / 2 whatever q:
    phi is homogeneous of degree 1. Linear is a = 1."""
    return (1.0 + activation.slope**2) / 2.0


def second_moment_slope(activation: Activation, q: Array) -> Array:
    """d/dq E[phi(u)^2], u ~ N(0, q) = E[phi'(u)^2 + phi(u) phi''(u)] (Stein's lemma), computed
    as E[z phi(sqrt(q) z) phi'(sqrt(q) z)] / sqrt(q), which needs no second derivative."""
    q = np.asarray(q, dtype=np.float64)
    kind = activation.closed_form
    if kind in PIECEWISE_LINEAR:
        return np.full_like(q, piecewise_constant(activation))
    if kind == "erf":
        return 4.0 / math.pi / ((1.0 + 2.0 * q) * np.sqrt(1.0 + 4.0 * q))
    q = np.maximum(q, _SLOPE_MIN_Q)
    z, w = _line_rule()
    scale = np.sqrt(q)[..., None]

    def g(u):
        return activation.phi(u) * activation.grad(u)

    return np.sum(w * z * (g(scale * z) - g(-scale * z)), axis=-1) / np.sqrt(q)


def grad_moment(activation: Activation, q: Array) -> Array:
    """E[phi'(u)^2], u ~ N(0, q), for each q."""
    q = np.asarray(q, dtype=np.float64)
    kind = activation.closed_form
    if kind in PIECEWISE_LINEAR:
        return np.full_like(q, piecewise_constant(activation))
    if kind == "erf":
        return 4.0 / math.pi / np.sqrt(1.0 + 4.0 * q)
    return _expect_line(lambda u: activation.grad(u) ** 2, q)


def cross_moment(activation: Activation, q1: Array, q2: Array, c: Array) -> Array:
    """E[phi(u1) phi(u2)], variances q1, q2, correlation c (broadcast together)."""
    q1, q2, c = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (q1, q2, c)))
    kind = activation.closed_form
    scale = np.sqrt(q1 * q2)
    if kind == "linear":
        return scale * c
    if kind in ("relu", "leaky_relu"):
        degree1, _ = _arccos_kernels(c)
        if kind == "relu":
            return scale * degree1
        # phi(x) = (1 - a) relu(x) + a x, and E[relu(u1) u2] = sqrt(q1 q2) c / 2.
        slope = activation.slope
        return scale * ((1.0 - slope) ** 2 * degree1 + slope * c)
    if kind == "erf":
        ratio = 2.0 * scale * c / np.sqrt((1.0 + 2.0 * q1) * (1.0 + 2.0 * q2))
        return 2.0 / math.pi * np.arcsin(np.clip(ratio, -1.0, 1.0))
    return _expect_pair(activation.phi, activation.phi, q1, q2, c)


def grad_cross_moment(activation: Activation, q1: Array, q2: Array, c: Array) -> Array:
    """E[phi'(u1) phi'(u2)], variances q1, q2, correlation c (broadcast together)."""
    q1, q2, c = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (q1, q2, c)))
    kind = activation.closed_form
    if kind == "linear":
        return np.ones_like(c)
    if kind in ("relu", "leaky_relu"):
        _, degree0 = _arccos_kernels(c)
        slope = activation.slope
        # phi' = a + (1 - a) 1{x > 0}.
        return slope + (1.0 - slope) ** 2 * degree0
    if kind == "erf":
        # E[exp(-u1^2 - u2^2)] = det(I + 2 Sigma)^(-1/2).
        det = (1.0 + 2.0 * q1) * (1.0 + 2.0 * q2) - 4.0 * q1 * q2 * c * c
        return 4.0 / math.pi / np.sqrt(det)
    return _expect_pair(activation.grad, activation.grad, q1, q2, c)
