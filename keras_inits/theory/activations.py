"""Activations as the theory needs them: float64 NumPy functions with their derivatives.

The mean-field recursions are expectations of phi and phi' under a Gaussian, computed to near
machine precision; a Keras activation evaluated through the backend would give float32 values
under JAX's default configuration, and its derivative would have to come from a
backend-specific autodiff. So the activations named here are rewritten in NumPy (float64, with
the defaults of `keras.activations`, which the tests check), each with its exact derivative.
Four of them, the positively homogeneous `linear`, `relu` and `leaky_relu` and `erf`, also
have closed-form Gaussian integrals (`keras_inits.theory.moments`).

Any other elementwise activation, a Keras name not in the table or a callable, is evaluated
on float64 NumPy arrays (through `keras.ops.convert_to_numpy` when it returns a tensor) and
differentiated by central differences with the step `eps ** (1 / 3) * |x|`, `eps` the
precision of the dtype it returns: about 1e-10 relative error for a float64 result, about
1e-5 for a float32 one. The step is relative to |x| so that it never straddles a kink at 0
(relu's, elu's), where the quadrature of `keras_inits.theory.moments` puts its panel edges.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable

import keras
import numpy as np

Array = np.ndarray
Function = Callable[[Array], Array]

# keras.activations.selu's constants (Klambauer et al. 2017).
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
# keras.activations.leaky_relu's default negative slope.
LEAKY_RELU_SLOPE = 0.2
# Keras activations that are not elementwise: no mean-field recursion of this form.
NOT_ELEMENTWISE = ("softmax", "log_softmax", "glu", "sparsemax")

_erf = np.frompyfunc(math.erf, 1, 1)
_erfc = np.frompyfunc(math.erfc, 1, 1)


def erf(x: Array) -> Array:
    """The error function of float64 NumPy arrays (NumPy has none; `math.erf` per element)."""
    return np.asarray(_erf(np.asarray(x, dtype=np.float64)), dtype=np.float64)


def normal_cdf(x: Array) -> Array:
    """Phi(x) = P(z <= x), z ~ N(0, 1), accurate in both tails (through `math.erfc`)."""
    return np.asarray(_erfc(-np.asarray(x, dtype=np.float64) / math.sqrt(2.0)), np.float64) / 2


def _normal_pdf(x: Array) -> Array:
    return np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def _sigmoid(x: Array) -> Array:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _elu(x: Array, alpha: float = 1.0) -> Array:
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))


def _elu_grad(x: Array, alpha: float = 1.0) -> Array:
    return np.where(x > 0, 1.0, alpha * np.exp(np.minimum(x, 0.0)))


def _mish(x: Array) -> Array:
    return x * np.tanh(np.logaddexp(0.0, x))


def _mish_grad(x: Array) -> Array:
    t = np.tanh(np.logaddexp(0.0, x))
    return t + x * (1.0 - t * t) * _sigmoid(x)


def _silu_grad(x: Array) -> Array:
    s = _sigmoid(x)
    return s * (1.0 + x * (1.0 - s))


# name -> (phi, phi'), float64 NumPy, Keras's defaults.
_TABLE: dict[str, tuple[Function, Function]] = {
    "linear": (lambda x: x, np.ones_like),
    "relu": (lambda x: np.maximum(x, 0.0), lambda x: (x > 0).astype(np.float64)),
    "leaky_relu": (
        lambda x: np.where(x > 0, x, LEAKY_RELU_SLOPE * x),
        lambda x: np.where(x > 0, 1.0, LEAKY_RELU_SLOPE),
    ),
    "erf": (erf, lambda x: 2.0 / math.sqrt(math.pi) * np.exp(-x * x)),
    "tanh": (np.tanh, lambda x: 1.0 - np.tanh(x) ** 2),
    "sigmoid": (_sigmoid, lambda x: _sigmoid(x) * (1.0 - _sigmoid(x))),
    "softplus": (lambda x: np.logaddexp(0.0, x), _sigmoid),
    "softsign": (lambda x: x / (1.0 + np.abs(x)), lambda x: 1.0 / (1.0 + np.abs(x)) ** 2),
    "elu": (_elu, _elu_grad),
    "selu": (
        lambda x: SELU_SCALE * _elu(x, SELU_ALPHA),
        lambda x: SELU_SCALE * _elu_grad(x, SELU_ALPHA),
    ),
    "gelu": (
        lambda x: x * normal_cdf(x),
        lambda x: normal_cdf(x) + x * _normal_pdf(x),
    ),
    "silu": (lambda x: x * _sigmoid(x), _silu_grad),
    "mish": (_mish, _mish_grad),
}
_TABLE["swish"] = _TABLE["silu"]

# The activations of the table, which the theory evaluates exactly (see the module docstring).
ACTIVATIONS: tuple[str, ...] = tuple(sorted(_TABLE))
# Those whose Gaussian integrals have closed forms.
CLOSED_FORMS: tuple[str, ...] = ("erf", "leaky_relu", "linear", "relu")


@dataclasses.dataclass(frozen=True)
class Activation:
    """An activation resolved for the theory.

    Attributes:
        name: the table's name, or the callable's `__name__` (`"<callable>"` if none).
        phi: x -> phi(x) on float64 NumPy arrays.
        grad: x -> phi'(x) on float64 NumPy arrays.
        closed_form: the name of its closed-form family, or None (quadrature).
        slope: for the piecewise-linear family, phi's slope on the negative half line
            (relu 0, leaky_relu its negative slope, linear 1).
    """

    name: str
    phi: Function
    grad: Function
    closed_form: str | None = None
    slope: float = 0.0


def _keras_name(function: Callable) -> str | None:
    """The table's name of `function` if it is that `keras.activations` function."""
    for name in ACTIVATIONS:
        if getattr(keras.activations, name, None) is function:
            return name
    return None


def _from_callable(function: Callable, name: str) -> Activation:
    """Wraps an elementwise callable: float64 NumPy in, float64 NumPy out, and a
    central-difference derivative whose step suits the precision the callable returns."""
    precision = {"eps": None}

    def phi(x: Array) -> Array:
        x = np.asarray(x, dtype=np.float64)
        out = function(x)
        if not isinstance(out, np.ndarray | float | int):
            out = keras.ops.convert_to_numpy(out)
        out = np.asarray(out)
        if out.shape != x.shape:
            raise ValueError(
                f"activation {name!r} must be elementwise: applied to an array of shape "
                f"{x.shape} it returned shape {out.shape}."
            )
        if precision["eps"] is None:
            kind = out.dtype if np.issubdtype(out.dtype, np.floating) else np.dtype(np.float64)
            precision["eps"] = float(np.finfo(kind).eps)
        return out.astype(np.float64)

    def grad(x: Array) -> Array:
        x = np.asarray(x, dtype=np.float64)
        if precision["eps"] is None:
            phi(np.zeros(1))
        step = precision["eps"] ** (1.0 / 3.0) * np.maximum(np.abs(x), 1e-300)
        return (phi(x + step) - phi(x - step)) / (2.0 * step)

    return Activation(name, phi, grad)


# A leaky ReLU of another negative slope than Keras's default: "leaky_relu(0.3)".
_LEAKY = re.compile(r"leaky_relu\((?P<slope>[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)\)")


def _leaky_relu(slope: float) -> Activation:
    if not 0.0 <= slope < 1.0:
        raise ValueError(
            f"leaky_relu({slope:g}): the theory's leaky ReLU takes a negative slope in [0, 1)."
        )
    return Activation(
        f"leaky_relu({slope:g})",
        lambda x: np.where(x > 0, x, slope * x),
        lambda x: np.where(x > 0, 1.0, slope),
        "leaky_relu",
        slope,
    )


def resolve(activation: str | Callable) -> Activation:
    """The `Activation` of a name or a callable.

    Args:
        activation: a name of `ACTIVATIONS` (exact float64 forms), `"leaky_relu(a)"` for
            a leaky ReLU of negative slope a, any other elementwise `keras.activations`
            name, or an elementwise callable that accepts a float64
            NumPy array (a Keras activation function does).

    Returns:
        The resolved `Activation`.

    Raises:
        ValueError: an unknown or non-elementwise name.
        TypeError: neither a string nor a callable.
    """
    if isinstance(activation, str):
        name = activation.lower().replace(" ", "")
        leaky = _LEAKY.fullmatch(name)
        if leaky:
            return _leaky_relu(float(leaky["slope"]))
        if name in _TABLE:
            phi, grad = _TABLE[name]
            slope = {"leaky_relu": LEAKY_RELU_SLOPE, "linear": 1.0}.get(name, 0.0)
            return Activation(name, phi, grad, name if name in CLOSED_FORMS else None, slope)
        if name in NOT_ELEMENTWISE:
            raise ValueError(
                f"activation={activation!r} is not elementwise, so no mean-field recursion of "
                "this form exists. Use an elementwise activation such as 'tanh' or 'relu'."
            )
        try:
            function = keras.activations.get(name)
        except ValueError:
            function = None
        if function is None:
            raise ValueError(
                f"Unknown activation={activation!r}. Use a Keras activation name (exact in "
                f"float64: {', '.join(ACTIVATIONS)}) or an elementwise callable."
            ) from None
        return _from_callable(function, name)
    if callable(activation):
        name = _keras_name(activation)
        if name is not None:
            return resolve(name)
        return _from_callable(activation, getattr(activation, "__name__", "<callable>"))
    raise TypeError(
        "activation must be an activation name or a callable, got "
        f"{type(activation).__name__}: {activation!r}."
    )
