"""`calculate_gain`: the factor that scales an initializer's std for an activation.

For the names in `torch.nn.init.calculate_gain`'s table the value is exactly
torch's, so code ported from PyTorch gets the same weights' scale. Any other
Keras activation, or any elementwise callable, gets the gain that preserves
the second moment through the layer: if pre-activations are z ~ N(0, 1), a
layer with Var(W) = gain^2 / fan_in keeps E[y^2] = 1 when
gain = 1 / sqrt(E[f(z)^2]) (He et al. 2015, eq. 10, for a general f).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import keras
import numpy as np

# torch.nn.init.calculate_gain's table; leaky_relu is computed from its slope.
TORCH_GAINS: dict[str, float] = {
    "linear": 1.0,
    "conv1d": 1.0,
    "conv2d": 1.0,
    "conv3d": 1.0,
    "conv_transpose1d": 1.0,
    "conv_transpose2d": 1.0,
    "conv_transpose3d": 1.0,
    "sigmoid": 1.0,
    "tanh": 5.0 / 3.0,
    "relu": math.sqrt(2.0),
    # torch's value: chosen empirically to keep gradients stable, not 1/sqrt(E[selu^2]).
    "selu": 0.75,
}
DEFAULT_LEAKY_RELU_SLOPE = 0.01

# Keras activations that are not elementwise have no per-unit second moment.
_NOT_ELEMENTWISE = ("softmax", "log_softmax", "glu", "sparsemax")

# Composite Gauss-Legendre on [-12, 12]: panel edges fall on every multiple of
# 0.25, where common activations have their kinks (relu at 0, hard_tanh at +-1,
# hard_sigmoid at +-3, relu6 at 6, the shrinks at +-0.5), so each panel
# integrates a smooth function and the rule is accurate to float32 precision.
_PANEL_WIDTH = 0.25
_HALF_RANGE = 12.0
_NODES_PER_PANEL = 16


def _quadrature() -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights for E[g(z)], z ~ N(0, 1), as a weighted sum."""
    unit_nodes, unit_weights = np.polynomial.legendre.leggauss(_NODES_PER_PANEL)
    edges = np.arange(-_HALF_RANGE, _HALF_RANGE, _PANEL_WIDTH)
    half = _PANEL_WIDTH / 2.0
    nodes = (edges[:, None] + half + half * unit_nodes[None, :]).ravel()
    weights = np.tile(unit_weights * half, len(edges))
    weights = weights * np.exp(-0.5 * nodes**2) / math.sqrt(2.0 * math.pi)
    return nodes, weights


def second_moment(activation: Callable) -> float:
    """E[f(z)^2] for z ~ N(0, 1), computed deterministically by quadrature."""
    nodes, weights = _quadrature()
    values = activation(keras.ops.convert_to_tensor(nodes.astype("float32")))
    values = np.asarray(keras.ops.convert_to_numpy(values), dtype=np.float64)
    if values.shape != nodes.shape:
        raise ValueError(
            "calculate_gain needs an elementwise activation: applied to a vector of "
            f"shape {nodes.shape} it returned shape {values.shape}."
        )
    moment = float(np.sum(weights * values**2))
    if not math.isfinite(moment) or moment <= 0.0:
        raise ValueError(
            f"E[f(z)^2] = {moment} for this activation: no finite positive gain exists."
        )
    return moment


@functools.cache
def _named_second_moment_gain(name: str) -> float:
    return 1.0 / math.sqrt(second_moment(keras.activations.get(name)))


def _leaky_relu_gain(param: float | None) -> float:
    if param is None:
        slope = DEFAULT_LEAKY_RELU_SLOPE
    elif isinstance(param, bool) or not isinstance(param, (int, float)):
        raise ValueError(f"leaky_relu's negative slope must be a number, got {param!r}.")
    else:
        slope = float(param)
    if not math.isfinite(slope):
        raise ValueError(f"leaky_relu's negative slope must be finite, got {param!r}.")
    return math.sqrt(2.0 / (1.0 + slope**2))


def calculate_gain(nonlinearity: str | Callable, param: float | None = None) -> float:
    """Returns the recommended gain for an activation function.

    For torch's names the values are torch's table:

    | nonlinearity | gain |
    |---|---|
    | linear, conv1d/2d/3d, conv_transpose1d/2d/3d, sigmoid | 1 |
    | tanh | 5/3 |
    | relu | sqrt(2) |
    | leaky_relu | sqrt(2 / (1 + negative_slope^2)), slope `param` (default 0.01) |
    | selu | 3/4 |

    Any other Keras activation name (`"gelu"`, `"silu"`, `"elu"`, `"softsign"`,
    ...) or elementwise callable gets `1 / sqrt(E[f(z)^2])`, z ~ N(0, 1), which
    keeps the second moment of a layer's output equal to that of its input
    (for relu this is sqrt(2), torch's value).

    Examples:
        >>> keras_inits.calculate_gain("tanh")
        1.6666666666666667
        >>> keras_inits.calculate_gain("leaky_relu", 0.2)
        1.3867504905630728

    Args:
        nonlinearity: a name from the table, a Keras activation name, or a
            callable mapping a tensor to a tensor of the same shape.
        param: the negative slope for `"leaky_relu"`; ignored otherwise, as in
            torch.

    Returns:
        The gain, a positive float.

    Reference:
        torch.nn.init.calculate_gain; He et al., 2015,
        https://arxiv.org/abs/1502.01852
    """
    if callable(nonlinearity) and not isinstance(nonlinearity, str):
        return 1.0 / math.sqrt(second_moment(nonlinearity))
    if not isinstance(nonlinearity, str):
        raise TypeError(
            "nonlinearity must be an activation name or a callable, got "
            f"{type(nonlinearity).__name__}: {nonlinearity!r}."
        )
    if nonlinearity in TORCH_GAINS:
        return TORCH_GAINS[nonlinearity]
    if nonlinearity == "leaky_relu":
        return _leaky_relu_gain(param)
    if nonlinearity in _NOT_ELEMENTWISE:
        raise ValueError(
            f"nonlinearity={nonlinearity!r} is not elementwise, so it has no gain. "
            "Use the gain of the layer's other activation, or 'linear'."
        )
    try:
        keras.activations.get(nonlinearity)
    except ValueError:
        raise ValueError(
            f"Unknown nonlinearity={nonlinearity!r}. Use one of torch's names "
            f"({', '.join([*TORCH_GAINS, 'leaky_relu'])}), a Keras activation name "
            "(keras.activations), or a callable."
        ) from None
    return _named_second_moment_gain(nonlinearity)
