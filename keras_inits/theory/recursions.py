"""The mean-field recursions of a deep random network and what follows from them.

A fully connected network with weights W_ij ~ N(0, sigma_w^2 / fan_in) and biases
b_i ~ N(0, sigma_b^2), in the limit of infinite width: a unit's pre-activation at layer l is
Gaussian, and two inputs' pre-activations are jointly Gaussian, with variances q1, q2 and
correlation c that follow deterministic maps from layer to layer (Poole et al. 2016):

    length map        q^l = sigma_w^2 E[phi(sqrt(q^(l-1)) z)^2] + sigma_b^2
    correlation map   c^l = (sigma_w^2 E[phi(u1) phi(u2)] + sigma_b^2) / sqrt(q1^l q2^l)

Their fixed points q* and c* and the slopes there decide the phase of the network:

    chi_1 = sigma_w^2 E[phi'(sqrt(q*) z)^2]        the slope of the correlation map at c = 1
    chi_c = sigma_w^2 E[phi'(u1) phi'(u2)] at c*   its slope at c* (chi_1 when c* = 1)
    1 / xi_q = -log(sigma_w^2 E[phi'(u)^2 + phi(u) phi''(u)])   at q*
    1 / xi_c = -log(chi_c)

chi_1 < 1: ordered (c* = 1, every input looks alike deep down); chi_1 > 1: chaotic (c* < 1,
nearby inputs decorrelate); chi_1 = 1: the edge of chaos, where xi_c diverges. Schoenholz et
al. 2017 found that networks are trainable to a depth of about 6 xi_c.

chi_1 is also the factor by which the mean squared gradient grows per layer going backwards,
which is why the edge of chaos is where gradients neither vanish nor explode.

Derivations, as checked here: the slope of the length map at q* is
d/dq sigma_w^2 E[phi(sqrt(q) z)^2] = sigma_w^2 E[z phi phi'] / sqrt(q) =
sigma_w^2 E[phi'^2 + phi phi''] (Stein's lemma, E[z g(z)] = E[g'(z)]), which is xi_q's
argument; the slope of the correlation map is sigma_w^2 E[phi'(u1) phi'(u2)], since
d E[phi(u1) phi(u2)] / d Cov(u1, u2) = E[phi'(u1) phi'(u2)] (Price's theorem), which at c = 1
is chi_1.

References:
    Poole, Lahiri, Raghu, Sohl-Dickstein & Ganguli 2016, "Exponential expressivity in deep
    neural networks through transient chaos", https://arxiv.org/abs/1606.05340
    Schoenholz, Gilmer, Ganguli & Sohl-Dickstein 2017, "Deep Information Propagation",
    https://arxiv.org/abs/1611.01232
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from keras_inits.theory import moments
from keras_inits.theory.activations import Activation, resolve

PHASES = ("ordered", "critical", "chaotic")
# Trainable depth = TRAINABLE_DEPTH_PER_XI_C * xi_c (Schoenholz et al. 2017, figures 5 and 6).
TRAINABLE_DEPTH_PER_XI_C = 6.0
# |chi_1 - 1| at or below this is the edge of chaos.
CRITICAL_TOLERANCE = 1e-9
# q^l is followed over these magnitudes; beyond Q_MAX it has no fixed point ("diverges").
Q_MIN, Q_MAX = 1e-12, 1e12
_Q_GRID = np.geomspace(Q_MIN, Q_MAX, 97)  # 4 per decade: brackets, then regula falsi


class NoFixedPointError(ValueError):
    """The length map has no finite fixed point: q^l grows without bound with depth."""


@dataclasses.dataclass(frozen=True)
class MeanField:
    """The mean-field predictions for one (activation, sigma_w^2, sigma_b^2).

    Attributes:
        activation: the activation's name.
        sigma_w2: the weights' variance times fan_in.
        sigma_b2: the biases' variance.
        q_star: the fixed point of the length map reached from `q0`: the variance of every
            pre-activation deep in the network. 0 when the signal dies out (no bias and
            phi(0) = 0 in the ordered phase); when every q is a fixed point (linear at
            sigma_w2 = 1, relu at 2, without bias), `q0` itself.
        chi_1: sigma_w2 E[phi'(u)^2] at q*: below 1 ordered, above 1 chaotic.
        c_star: the stable fixed point of the correlation map: 1 in the ordered phase and
            at the edge of chaos, below 1 in the chaotic phase.
        chi_c: the slope of the correlation map at c* (chi_1 when c* = 1).
        xi_q: the depth over which q^l approaches q*, -1 / log(slope of the length map
            at q*); `inf` where that slope is 1.
        xi_c: the depth over which c^l approaches c*, -1 / log(chi_c); `inf` at the edge
            of chaos.
        phase: "ordered", "critical" (|chi_1 - 1| <= 1e-9) or "chaotic".
    """

    activation: str
    sigma_w2: float
    sigma_b2: float
    q_star: float
    chi_1: float
    c_star: float
    chi_c: float
    xi_q: float
    xi_c: float
    phase: str

    @property
    def trainable_depth(self) -> float:
        """6 xi_c: about the deepest such network that trains (Schoenholz et al. 2017)."""
        return TRAINABLE_DEPTH_PER_XI_C * self.xi_c

    def to_dict(self) -> dict[str, Any]:
        """The fields and `trainable_depth`, as a flat dict (JSON-ready: floats and strings)."""
        return {**dataclasses.asdict(self), "trainable_depth": self.trainable_depth}

    def __str__(self) -> str:
        return (
            f"{self.activation}, sigma_w2={self.sigma_w2:g}, sigma_b2={self.sigma_b2:g}: "
            f"{self.phase}, q*={self.q_star:.4g}, chi_1={self.chi_1:.4g}, "
            f"c*={self.c_star:.4g}, xi_q={self.xi_q:.4g}, xi_c={self.xi_c:.4g}, "
            f"trainable depth ~{self.trainable_depth:.4g}"
        )


# ---------------------------------------------------------------- validation


def _number(value: Any, name: str, *, positive: bool = False) -> float:
    """A finite real `value`, >= 0 (> 0 with `positive`), as a float."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}: {value!r}.")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "positive" if positive else "non-negative"
        raise ValueError(
            f"{name} must be a finite {bound} variance, got {value!r}. It is a variance "
            f"(sigma^2), not a standard deviation: pass e.g. {name}=1.5, not a negative or "
            "infinite value."
        )
    return value


def _variances(sigma_w2: Any, sigma_b2: Any) -> tuple[float, float]:
    return _number(sigma_w2, "sigma_w2", positive=True), _number(sigma_b2, "sigma_b2")


def _array(values: Any, name: str, low: float, high: float) -> np.ndarray:
    """`values` as a float64 array with every entry in [low, high]."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"{name} must be a number or an array of numbers, got {values!r}."
        ) from None
    bad = ~np.isfinite(array) | (array < low) | (array > high)
    if np.any(bad):
        raise ValueError(
            f"{name} must lie in [{low:g}, {high:g}], got {float(np.ravel(array[bad])[0])!r}."
        )
    return array


def _scalar_or_array(array: np.ndarray) -> float | np.ndarray:
    return float(array) if array.ndim == 0 else array


# ---------------------------------------------------------------- the maps


def length_map(
    activation: str | Callable, q: Any, sigma_w2: float, sigma_b2: float = 0.0
) -> float | np.ndarray:
    """The length map: the variance of the next layer's pre-activations.

    q^l = sigma_w^2 E[phi(sqrt(q^(l-1)) z)^2] + sigma_b^2, z ~ N(0, 1)
    (Poole et al. 2016, eq. 3).

    Examples:
        >>> from keras_inits import theory
        >>> theory.length_map("relu", 1.0, sigma_w2=2.0)
        1.0
        >>> round(theory.length_map("tanh", 1.0, sigma_w2=1.0, sigma_b2=0.05), 6)
        0.444294

    Args:
        activation: a Keras activation name, `"erf"`, or an elementwise callable
            (see `keras_inits.theory.ACTIVATIONS` for the names evaluated exactly).
        q: the pre-activations' variance at layer l - 1: a number or an array.
        sigma_w2: the weights' variance times fan_in, > 0.
        sigma_b2: the biases' variance, >= 0.

    Returns:
        q^l, a float for a number `q`, else an array of `q`'s shape.

    Raises:
        ValueError: a negative or non-finite variance, an unknown activation name.
        TypeError: an activation that is neither a name nor a callable.
    """
    act = resolve(activation)
    sigma_w2, sigma_b2 = _variances(sigma_w2, sigma_b2)
    q = _array(q, "q", 0.0, math.inf)
    return _scalar_or_array(sigma_w2 * moments.second_moment(act, q) + sigma_b2)


def _length(act: Activation, q: Any, sigma_w2: float, sigma_b2: float) -> np.ndarray:
    return sigma_w2 * moments.second_moment(act, q) + sigma_b2


def _covariances(act, q1, q2, c, sigma_w2, sigma_b2):
    """One layer of the two-input recursion: (q1, q2, c) -> the next layer's."""
    next_q1 = _length(act, q1, sigma_w2, sigma_b2)
    next_q2 = _length(act, q2, sigma_w2, sigma_b2)
    cross = sigma_w2 * moments.cross_moment(act, q1, q2, c) + sigma_b2
    with np.errstate(divide="ignore", invalid="ignore"):
        return next_q1, next_q2, np.clip(cross / np.sqrt(next_q1 * next_q2), -1.0, 1.0)


def correlation_map(
    activation: str | Callable,
    c: Any,
    sigma_w2: float,
    sigma_b2: float = 0.0,
    q: float | None = None,
) -> float | np.ndarray:
    """The correlation map: the correlation of two inputs' pre-activations at the next layer.

    c^l = (sigma_w^2 E[phi(u1) phi(u2)] + sigma_b^2) / q^l, where u1, u2 have variance q
    and correlation c^(l-1), and q^l = `length_map(q)` (Poole et al. 2016, eq. 5; at
    q = q* the denominator is q* itself).

    Examples:
        >>> from keras_inits import theory
        >>> round(theory.correlation_map("relu", 0.0, sigma_w2=2.0, q=1.0), 6)
        0.31831

    Args:
        activation: a Keras activation name, `"erf"`, or an elementwise callable.
        c: the correlation at layer l - 1, in [-1, 1]: a number or an array.
        sigma_w2: the weights' variance times fan_in, > 0.
        sigma_b2: the biases' variance, >= 0.
        q: both inputs' pre-activation variance at layer l - 1; default q*, the fixed point
            of the length map (`mean_field(...).q_star`).

    Returns:
        c^l, a float for a number `c`, else an array of `c`'s shape.

    Raises:
        ValueError: a variance or `c` out of range; q = 0 without bias (both signals are
            zero: no correlation); no fixed point q* when `q` is not given.
    """
    act = resolve(activation)
    sigma_w2, sigma_b2 = _variances(sigma_w2, sigma_b2)
    c = _array(c, "c", -1.0, 1.0)
    q = _fixed_length(act, sigma_w2, sigma_b2, 1.0) if q is None else _number(q, "q")
    if q == 0.0 and sigma_w2 * float(act.phi(np.zeros(1))[0]) ** 2 + sigma_b2 == 0.0:
        raise ValueError(
            f"{act.name} at q={q:g} with sigma_b2=0 gives zero pre-activations: they have no "
            "correlation. Pass q > 0, or sigma_b2 > 0."
        )
    return _scalar_or_array(_covariances(act, q, q, c, sigma_w2, sigma_b2)[2])


def propagate(
    activation: str | Callable,
    q: float | Sequence[float],
    c: float,
    sigma_w2: float,
    sigma_b2: float = 0.0,
    depth: int = 10,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The layer-by-layer prediction for two inputs: their variances and correlation.

    Starts from the first layer's pre-activations (for inputs x1, x2 of dimension n,
    q_i = sigma_w^2 |x_i|^2 / n + sigma_b^2 and c = (sigma_w^2 x1.x2 / n + sigma_b^2) /
    sqrt(q1 q2)) and applies the length and correlation maps `depth` times, the inputs'
    lengths allowed to differ.

    Examples:
        >>> from keras_inits import theory
        >>> q1, q2, c = theory.propagate("tanh", 1.0, 0.5, sigma_w2=2.5, sigma_b2=0.05, depth=3)
        >>> [round(float(value), 4) for value in c]
        [0.5, 0.498, 0.495, 0.4917]

    Args:
        activation: a Keras activation name, `"erf"`, or an elementwise callable.
        q: the first layer's pre-activation variance, for both inputs or as (q1, q2).
        c: their correlation, in [-1, 1].
        sigma_w2: the weights' variance times fan_in, > 0.
        sigma_b2: the biases' variance, >= 0.
        depth: how many layers to follow.

    Returns:
        (q1, q2, c): three arrays of length `depth + 1`, index 0 the given first layer.

    Raises:
        ValueError: a variance or `c` out of range, a negative depth.
    """
    act = resolve(activation)
    sigma_w2, sigma_b2 = _variances(sigma_w2, sigma_b2)
    pair = tuple(q) if isinstance(q, Sequence | np.ndarray) else (q, q)
    if len(pair) != 2:
        raise ValueError(f"q must be a number or a pair (q1, q2), got {q!r}.")
    q1, q2 = (_number(value, "q") for value in pair)
    c = float(_array(c, "c", -1.0, 1.0))
    if isinstance(depth, bool) or not isinstance(depth, int | np.integer) or depth < 0:
        raise ValueError(f"depth must be a non-negative integer, got {depth!r}.")
    trajectory = [(q1, q2, c)]
    for _ in range(depth):
        trajectory.append(tuple(float(v) for v in _covariances(act, *trajectory[-1],
                                                               sigma_w2, sigma_b2)))
    q1s, q2s, cs = (np.array(column) for column in zip(*trajectory, strict=True))
    return q1s, q2s, cs


# ---------------------------------------------------------------- fixed points


def _bracketed_root(f: Callable[[float], float], lo: float, hi: float, f_lo: float,
                    f_hi: float, tolerance: float) -> float:
    """A root of f in [lo, hi] (f_lo, f_hi of opposite signs): the Illinois variant of
    regula falsi, with a bisection step whenever the bracket fails to halve."""
    side = 0
    for _ in range(200):
        width = hi - lo
        if width <= tolerance:
            break
        x = (lo * f_hi - hi * f_lo) / (f_hi - f_lo)
        if not lo < x < hi:
            x = 0.5 * (lo + hi)
        f_x = f(x)
        if f_x == 0.0:
            return x
        if (f_x > 0) == (f_lo > 0):
            lo, f_lo = x, f_x
            if side == 1:
                f_hi /= 2.0
            side = 1
        else:
            hi, f_hi = x, f_x
            if side == -1:
                f_lo /= 2.0
            side = -1
        if hi - lo > 0.5 * width:  # a slow step: bisect
            mid = 0.5 * (lo + hi)
            f_mid = f(mid)
            if (f_mid > 0) == (f_lo > 0):
                lo, f_lo = mid, f_mid
            else:
                hi, f_hi = mid, f_mid
            side = 0
    return 0.5 * (lo + hi)


def _fixed_length(act: Activation, sigma_w2: float, sigma_b2: float, q0: float) -> float:
    """The fixed point of the length map that q^l reaches from q^0 = q0.

    The length map of a common activation increases with q, so the iteration moves
    monotonically to the nearest fixed point in the direction of L(q0) - q0: that root is
    bracketed on a log grid of q in [1e-12, 1e12] and refined.

    Raises:
        NoFixedPointError: q^l grows past 1e12.
    """
    def gap(q):
        return float(_length(act, q, sigma_w2, sigma_b2)) - q

    gap0 = gap(q0)
    if abs(gap0) <= 1e-14 * max(q0, 1.0):
        return q0
    grid = _Q_GRID
    gaps = _length(act, grid, sigma_w2, sigma_b2) - grid
    if gap0 < 0:  # q^l decreases: the largest root below q0
        below = np.flatnonzero((grid < q0) & (gaps >= 0))
        if below.size == 0:
            floor = sigma_w2 * float(act.phi(np.zeros(1))[0]) ** 2 + sigma_b2  # L(0)
            if floor <= 0.0:
                return 0.0
            lo, hi, f_lo, f_hi = 0.0, grid[0], floor, gaps[0]
        else:
            i = below[-1]
            lo, f_lo = grid[i], gaps[i]
            hi, f_hi = (grid[i + 1], gaps[i + 1]) if grid[i + 1] < q0 else (q0, gap0)
    else:  # q^l increases: the smallest root above q0
        above = np.flatnonzero((grid > q0) & (gaps <= 0))
        if above.size == 0:
            raise NoFixedPointError(
                f"{act.name} at sigma_w2={sigma_w2:g}, sigma_b2={sigma_b2:g}: the length map "
                f"q -> sigma_w2 E[phi(sqrt(q) z)^2] + sigma_b2 has no fixed point above "
                f"q0={q0:g}; q^l grows without bound with depth (past {Q_MAX:g}). Use a "
                "smaller sigma_w2, or a bounded activation."
            )
        i = above[0]
        hi, f_hi = grid[i], gaps[i]
        lo, f_lo = (grid[i - 1], gaps[i - 1]) if i > 0 and grid[i - 1] > q0 else (q0, gap0)
    if f_hi == 0.0:
        return float(hi)
    if f_lo == 0.0:
        return float(lo)
    return _bracketed_root(gap, float(lo), float(hi), float(f_lo), float(f_hi),
                           1e-15 * float(hi))


def _fixed_correlation(act: Activation, q: float, sigma_w2: float, sigma_b2: float) -> float:
    """The stable fixed point c* < 1 of the correlation map in the chaotic phase (chi_1 > 1).

    With equal variances E[phi(u1) phi(u2)] is a power series in c with non-negative
    coefficients (Mehler's expansion), so c -> C(c) - c is convex on [0, 1], vanishes at 1
    with slope chi_1 - 1 > 0 and is >= 0 at 0: it has exactly one root in [0, 1).
    """
    def gap(c):
        return float(_covariances(act, q, q, c, sigma_w2, sigma_b2)[2]) - c

    gap0 = gap(0.0)
    if gap0 <= 1e-15:
        return 0.0
    lo, f_lo = 0.0, gap0
    for k in range(1, 48):
        c = 1.0 - 2.0**-k
        f_c = gap(c)
        if f_c < 0:
            return _bracketed_root(gap, lo, c, f_lo, f_c, 1e-14)
        lo, f_lo = c, f_c
    return 1.0  # chi_1 - 1 below resolution: at the edge of chaos


def _depth_scale(slope: float) -> float:
    """-1 / log(slope): inf for a slope of 1 (or above: no stable fixed point), 0 for 0."""
    if slope >= 1.0:
        return math.inf
    if slope <= 0.0:
        return 0.0
    return -1.0 / math.log(slope)


def _mean_field(act: Activation, sigma_w2: float, sigma_b2: float, q0: float) -> MeanField:
    q_star = _fixed_length(act, sigma_w2, sigma_b2, q0)
    chi_1 = sigma_w2 * float(moments.grad_moment(act, q_star))
    # At q* = 0 (no bias, phi(0) = 0) the slope of the length map is sigma_w2 phi'(0)^2 = chi_1.
    length_slope = chi_1 if q_star == 0.0 else sigma_w2 * float(
        moments.second_moment_slope(act, q_star))
    if abs(chi_1 - 1.0) <= CRITICAL_TOLERANCE:
        phase, c_star, chi_c = "critical", 1.0, chi_1
    elif chi_1 < 1.0 or q_star == 0.0:
        phase, c_star, chi_c = "ordered" if chi_1 < 1.0 else "chaotic", 1.0, chi_1
    else:
        phase = "chaotic"
        c_star = _fixed_correlation(act, q_star, sigma_w2, sigma_b2)
        chi_c = sigma_w2 * float(moments.grad_cross_moment(act, q_star, q_star, c_star))
    return MeanField(
        activation=act.name, sigma_w2=sigma_w2, sigma_b2=sigma_b2, q_star=q_star,
        chi_1=chi_1, c_star=c_star, chi_c=chi_c,
        xi_q=_depth_scale(length_slope),
        xi_c=math.inf if phase == "critical" else _depth_scale(chi_c), phase=phase,
    )


def mean_field(
    activation: str | Callable, sigma_w2: float, sigma_b2: float = 0.0, *, q0: float = 1.0
) -> MeanField:
    """The fixed points, depth scales and phase of a deep random network.

    Weights N(0, sigma_w2 / fan_in), biases N(0, sigma_b2), activation phi, infinite width
    (see the module `keras_inits.theory.recursions` for the formulas and their sources).

    Examples:
        >>> from keras_inits import theory
        >>> theory.mean_field("relu", sigma_w2=2.0).phase
        'critical'
        >>> field = theory.mean_field("tanh", sigma_w2=1.5, sigma_b2=0.05)
        >>> field.phase, round(field.chi_1, 4), round(field.xi_c, 2)
        ('ordered', 0.9386, 15.79)

    Args:
        activation: a Keras activation name, `"erf"`, or an elementwise callable.
        sigma_w2: the weights' variance times fan_in, > 0 (1 for LeCun's initialization,
            2 for He's, with their default gain).
        sigma_b2: the biases' variance, >= 0.
        q0: the first layer's pre-activation variance, where the iteration of the length
            map starts (it matters only when the map has several fixed points, or a line
            of them as relu's at sigma_w2 = 2 without bias).

    Returns:
        A `MeanField`.

    Raises:
        ValueError: a negative or non-finite variance, an unknown activation name, or no
            fixed point q* (the length map diverges: q^l grows without bound with depth,
            e.g. relu with sigma_w2 > 2).
        TypeError: an activation that is neither a name nor a callable.
    """
    act = resolve(activation)
    sigma_w2, sigma_b2 = _variances(sigma_w2, sigma_b2)
    q0 = _number(q0, "q0", positive=True)
    return _mean_field(act, sigma_w2, sigma_b2, q0)


# ---------------------------------------------------------------- the edge of chaos

_SCAN = np.geomspace(1e-2, 1e3, 26)
# A q* above this many times max(1, sigma_b2) is on its way to infinity, not a fixed point.
_BOUNDED_Q = 1e6


def _no_critical_homogeneous(name: str, sigma_b2: float, moment: float) -> ValueError:
    critical = 1.0 / moment
    return ValueError(
        f"{name} with sigma_b2={sigma_b2:g} has no critical sigma_w2. Its chi_1 = sigma_w2 * "
        f"{moment:g} reaches 1 only at sigma_w2={critical:g}, where the length map "
        f"q -> sigma_w2 * {moment:g} * q + sigma_b2 has no fixed point: q^l grows without bound "
        f"with depth. Below it the network is ordered (chi_1 < 1). A {name} network is "
        f"critical only without bias: use sigma_b2=0 (sigma_w2={critical:g})."
    )


def critical_sigma_w2(activation: str | Callable, sigma_b2: float = 0.0) -> float:
    """The weight variance at the edge of chaos: the sigma_w^2 where chi_1 = 1 for this bias.

    At the edge of chaos the correlation depth scale xi_c diverges and gradients neither
    vanish nor explode (Schoenholz et al. 2017): tanh is critical at sigma_w2 = 1 without
    bias, relu at 2 (He et al.'s initialization).

    For relu, leaky_relu and linear, chi_1 does not depend on q*, and the exact value is
    returned. Otherwise sigma_w2 is scanned on [0.01, 1000] (26 log-spaced values) for the
    first at which chi_1 >= 1, and refined by regula falsi to about 1e-10 relative; near a
    point where q* leaves 0 (tanh without bias) chi_1 - 1 grows only as (sigma_w2 - 1)^2,
    which limits the accuracy to about 1e-7.

    Examples:
        >>> from keras_inits import theory
        >>> theory.critical_sigma_w2("relu")
        2.0
        >>> round(theory.critical_sigma_w2("tanh", sigma_b2=0.05), 4)
        1.761

    Args:
        activation: a Keras activation name, `"erf"`, or an elementwise callable.
        sigma_b2: the biases' variance, >= 0.

    Returns:
        The critical sigma_w^2, the smallest if there are several.

    Raises:
        ValueError: no critical point exists (the error says why: e.g. relu with
            sigma_b2 > 0, whose q^l diverges exactly where chi_1 would reach 1), a
            negative or non-finite sigma_b2, an unknown activation name.
        TypeError: an activation that is neither a name nor a callable.
    """
    act = resolve(activation)
    sigma_b2 = _number(sigma_b2, "sigma_b2")
    # chi_1 = sigma_w^2 E[phi'^2] does not depend on q for these: critical only without bias.
    if act.closed_form in moments.PIECEWISE_LINEAR:
        moment = moments.piecewise_constant(act)
        if sigma_b2 > 0:
            raise _no_critical_homogeneous(act.name, sigma_b2, moment)
        return 1.0 / moment

    def state(sigma_w2: float) -> float:
        """chi_1 - 1, or +inf where the length map has no fixed point."""
        try:
            q_star = _fixed_length(act, sigma_w2, sigma_b2, 1.0)
        except NoFixedPointError:
            return math.inf
        return sigma_w2 * float(moments.grad_moment(act, q_star)) - 1.0

    previous, f_previous = None, None
    for sigma_w2 in _SCAN:
        f = state(float(sigma_w2))
        if f >= 0:
            break
        previous, f_previous = float(sigma_w2), f
    else:
        raise ValueError(
            f"{act.name} with sigma_b2={sigma_b2:g} has no critical sigma_w2 up to "
            f"{_SCAN[-1]:g}: chi_1 stays below 1 (ordered) throughout."
        )
    sigma_w2 = float(sigma_w2)
    if previous is None:
        raise ValueError(
            f"{act.name} with sigma_b2={sigma_b2:g} is chaotic (chi_1 >= 1) already at "
            f"sigma_w2={_SCAN[0]:g}: no critical sigma_w2 in [{_SCAN[0]:g}, {_SCAN[-1]:g}]."
        )
    if math.isfinite(f):
        return _bracketed_root(state, previous, sigma_w2, f_previous, f, 1e-12 * sigma_w2)
    # Between `previous` (ordered) and `sigma_w2` the length map stops having a fixed point:
    # find where, and whether chi_1 reaches 1 first.
    lo, hi, f_lo = previous, sigma_w2, f_previous
    while hi - lo > 1e-12 * hi:
        mid = 0.5 * (lo + hi)
        f_mid = state(mid)
        if f_mid < 0:
            lo, f_lo = mid, f_mid
        elif f_mid < math.inf:
            lo = _bracketed_root(state, lo, mid, f_lo, f_mid, 1e-12 * mid)
            break
        else:
            hi = mid
    # Critical only if q* stays finite there (a bias-free homogeneous activation: q* = 0);
    # otherwise chi_1 reaches 1 only in the limit where q* diverges (relu with a bias).
    q_star = _fixed_length(act, lo, sigma_b2, 1.0)
    chi_1 = lo * float(moments.grad_moment(act, q_star))
    if abs(chi_1 - 1.0) < 1e-6 and q_star < _BOUNDED_Q * max(1.0, sigma_b2):
        return lo
    advice = "Use sigma_b2=0, or a bounded activation" if sigma_b2 > 0 else (
        "Use a bounded activation (tanh, erf), or choose sigma_w2 yourself"
    )
    raise ValueError(
        f"{act.name} with sigma_b2={sigma_b2:g} has no critical sigma_w2: chi_1 stays below 1 "
        f"(ordered) for every sigma_w2 at which q^l has a fixed point, and reaches 1 only as "
        f"sigma_w2 -> {hi:.6g}, where q* grows without bound (q*={q_star:.3g} at "
        f"sigma_w2={lo:.12g}). {advice}."
    )
