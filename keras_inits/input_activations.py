"""Which activation each kernel's input went through: what mean-field theory's sigma_w^2 is about.

In a network h^l = W^l phi(h^(l-1)) + b^l, the variance that keeps the signal at the edge of
chaos depends on the activation phi applied to the kernel's *input*, so `scheme="critical"`
reads it for every kernel from the model's graph:

- Sequential and Functional models (nested ones included): from the kernel's layer, up the
  graph to the nearest operation that applies an activation: a layer's own `activation`
  (Dense(64, activation="tanh"); "linear" when it has none), an `Activation`, `ReLU`,
  `LeakyReLU`, `ELU` or `Softmax` layer, or a `keras.ops` activation (`keras.ops.tanh`).
  Every other operation (normalization, dropout, pooling, reshapes, adds) passes the walk
  through to its inputs; where the inputs disagree (an add of a linear shortcut and a ReLU
  branch) the one non-linear activation wins.
- A kernel fed by the model's input has no activation before it: it takes the activation
  of its own output (a homogeneous network's convention), else the model's most common one.
- A subclassed model has no graph to read: it is read as a chain in weight order, each
  kernel's input being the previous kernel layer's own activation.
- Embedding tables are lookups, not products with an activation: they have none.

A name that mean-field theory cannot resolve (a PReLU's learned slopes, a custom layer) is
kept as the layer's class name; the critical scheme then asks for `activation=`.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Sequence
from typing import Any

import keras

from keras_inits.kernels import Kernel

# The activation layers whose activation is not an `activation` attribute.
_LAYER_ACTIVATIONS = {"ELU": "elu", "Softmax": "softmax"}


def input_activations(kernels: Sequence[Kernel]) -> dict[int, str | None]:
    """`id(kernel.variable)` -> the name of the activation its input went through (None for
    embedding tables), for the kernels of one model (`keras_inits.kernels.find_kernels`)."""
    found: dict[int, str | None] = {}
    graphless = set()
    for kernel in kernels:
        if kernel.role == "embeddings":
            found[id(kernel.variable)] = None
        elif kernel.owner._inbound_nodes:
            found[id(kernel.variable)] = _upstream(kernel.owner)
        else:
            graphless.add(id(kernel.variable))
    previous = None
    for kernel in kernels:
        if id(kernel.variable) in graphless:
            found[id(kernel.variable)] = previous
        if kernel.primary and kernel.role != "embeddings":
            previous = own_activation(kernel.owner)
    common = collections.Counter(
        name for name in found.values() if name not in (None, "", "linear")
    ).most_common(1)
    for kernel in kernels:
        if found.get(id(kernel.variable)) == "":  # fed by the model's input
            own = own_activation(kernel.owner)
            found[id(kernel.variable)] = (
                own if own != "linear" else common[0][0] if common else "linear"
            )
        elif found.get(id(kernel.variable)) is None and kernel.role != "embeddings":
            found[id(kernel.variable)] = own_activation(kernel.owner)
    return found


def own_activation(layer: Any) -> str | None:
    """The name of the activation `layer` (or a `keras.ops` operation) applies to its output;
    "linear" for a layer with an `activation` attribute set to none; None when it applies
    none (it passes its input's activation on)."""
    function = getattr(layer, "activation", None)
    if callable(function):
        name = keras.activations.serialize(function)
        return name if isinstance(name, str) else getattr(function, "__name__", "<callable>")
    kind = type(layer).__name__
    if kind == "ReLU":
        return _relu_layer(layer)
    if kind == "LeakyReLU":
        return f"leaky_relu({layer.negative_slope:g})"
    if kind in _LAYER_ACTIVATIONS:
        return _LAYER_ACTIVATIONS[kind]
    if kind == "PReLU":
        return kind
    if not isinstance(layer, keras.layers.Layer):
        # A keras.ops operation in a Functional graph: keras.ops.tanh is a `Tanh`.
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", kind).lower()
        if getattr(keras.activations, name, None) is not None:
            return name
    return None


def _relu_layer(layer: Any) -> str:
    slope, limit, threshold = layer.negative_slope, layer.max_value, layer.threshold
    if threshold:
        return f"ReLU(threshold={threshold:g})"
    if slope and limit is None:
        return f"leaky_relu({slope:g})"
    if limit is None:
        return "relu"
    return "relu6" if float(limit) == 6.0 and not slope else f"ReLU(max_value={limit:g})"


def _upstream(layer: keras.layers.Layer) -> str:
    """The activation on `layer`'s input, walking its first call's graph upwards; "" when
    only the model's input is found."""
    names: set[str] = set()
    stack, seen = list(layer._inbound_nodes[0].parent_nodes), set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        name = own_activation(node.operation)
        if name is not None:
            names.add(name)
        elif node.parent_nodes:
            stack.extend(node.parent_nodes)
        else:
            names.add("")  # an input
    nonlinear = names - {"", "linear"}
    if len(nonlinear) == 1:
        return nonlinear.pop()
    if len(nonlinear) > 1:
        return " | ".join(sorted(nonlinear))
    return "linear" if "linear" in names else ""
