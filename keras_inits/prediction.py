"""What mean-field theory predicts for a chain-like model at its current weights.

For a chain of layers with kernels h^l = W^l x^(l-1) + b^l, x^l = phi(h^l), whose weights have
zero mean, each layer's pre-activation variance q^l follows the length map of
`keras_inits.theory` with the layer's own sigma_w^2 = fan_in * mean(W^2) and
sigma_b^2 = mean(b^2), from q^1 = sigma_w^2 E[x^2] + sigma_b^2 for the batch's inputs x. The
backward pass multiplies the gradient's second moment at each layer by
sigma_w^2 (fan_out / fan_in) E[phi'(h)^2] (the gradient-independence assumption of Schoenholz
et al. 2017). So `diagnose` can put the theory's numbers beside the measured ones:

- `predicted_q`: q^l, the pre-activation variance;
- `predicted_std`: the std of the layer's output that q^l implies (what `output_std` measures);
- `gradient_ratio` and `predicted_gradient_ratio`: dLoss/d(output)'s std at a layer over the
  next layer's, measured and predicted;
- `predicted_gradient_std`: the measured gradient std of the deepest layer with a predictable
  chain below it, carried down by the predicted ratios.

A model is chain-like when every layer with a kernel takes the previous one's output (the
first: the model's single input) through nothing but at most one elementwise activation and
shape-only or inference-time-identity layers (Flatten, Reshape, Dropout...). Normalization,
pooling, residual adds, concatenations, embeddings and subclassed models (no graph to read)
are outside the theory's chain: nothing is predicted, and `reason` says why.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from keras_inits.input_activations import own_activation
from keras_inits.kernels import own_biases
from keras_inits.taps import Tap
from keras_inits.theory import NoFixedPointError, mean_field, moments
from keras_inits.theory.activations import Activation, resolve

# Layers that change neither the values nor their statistics at inference.
_PASS_THROUGH = (
    "InputLayer", "Flatten", "Reshape", "Permute", "Identity", "Dropout", "SpatialDropout1D",
    "SpatialDropout2D", "SpatialDropout3D", "GaussianDropout", "GaussianNoise", "AlphaDropout",
)
_LINEAR = resolve("linear")


@dataclasses.dataclass(frozen=True)
class Link:
    """One layer of the chain: its own activation (applied to its output; None when not
    elementwise, as softmax), an activation layer between the previous layer's output and
    its input (linear: none), its sigma_w^2 and sigma_b^2, the mean fraction of its
    kernel's taps that fall inside the input (`coverage`: below 1 for a convolution
    whose padding reaches outside), and its output's size over its input's (per example).

    Forward, q^l = sigma_w^2 coverage E[x^2] + sigma_b^2. Backward, each input element's
    gradient sums W delta over the outputs it feeds; averaged over the input, that is
    sigma_w^2 coverage size_ratio E[delta^2] (each output feeds on coverage * fan_in
    inputs): fan_out / fan_in for a Dense layer, and the border's share for a
    convolution."""

    own: Activation | None
    between: Activation
    sigma_w2: float
    sigma_b2: float
    coverage: float
    size_ratio: float

    def input_activation(self, previous: Link | None) -> Activation | None:
        """What the layer's input went through: the layer between, else the previous
        layer's own activation (None: not elementwise)."""
        if self.between is not _LINEAR or previous is None:
            return self.between
        return previous.own


@dataclasses.dataclass(frozen=True)
class Prediction:
    """Per-layer predictions (dicts of the keys in the module docstring, in the taps'
    order), or none and the `reason`; `activation`, `sigma_w2`, `sigma_b2`: the chain's
    typical (median) hidden layer, for its phase."""

    rows: list[dict[str, float | None]]
    reason: str | None = None
    activation: str | None = None
    sigma_w2: float | None = None
    sigma_b2: float | None = None


def predict(
    taps: Sequence[Tap], x: Any, measured: Sequence[dict[str, Any]]
) -> Prediction:
    """The theory's per-layer numbers for the taps (in forward order) of a chain-like model,
    on the input batch `x`, beside the `measured` rows (`output_std`, `gradient_std`)."""
    arrays = keras.tree.flatten(x)
    links = _chain(taps) if len(arrays) == 1 else "the model takes several inputs"
    if isinstance(links, str):
        return Prediction([], links)
    inputs = keras.ops.convert_to_numpy(arrays[0]).astype(np.float64)
    q: list[float] = []
    second = float(np.mean(inputs**2))
    inputs_through = [None, *(
        link.input_activation(previous)
        for previous, link in zip(links[:-1], links[1:], strict=True)
    )]
    for index, link in enumerate(links):
        if index:
            through = inputs_through[index]
            if through is None:
                return Prediction([], f"{taps[index - 1].path}'s activation is not elementwise")
            second = float(moments.second_moment(through, q[-1]))
        q.append(link.sigma_w2 * link.coverage * second + link.sigma_b2)
    rows: list[dict[str, float | None]] = []
    for link, q_l in zip(links, q, strict=True):
        own = link.own
        std = None
        if own is not None:
            mean = float(moments.first_moment(own, q_l))
            std = math.sqrt(max(float(moments.second_moment(own, q_l)) - mean**2, 0.0))
        rows.append({"predicted_q": q_l, "predicted_std": std})
    _gradients(links, q, measured, rows)
    hidden = [(act, link) for act, link in zip(inputs_through[1:], links[1:], strict=True)
              if act is not None]
    if not hidden:
        return Prediction(rows)
    names = [act.name for act, _ in hidden]
    activation = max(sorted(set(names)), key=names.count)
    typical = [link for act, link in hidden if act.name == activation]
    return Prediction(
        rows,
        activation=activation,
        sigma_w2=float(np.median([link.sigma_w2 for link in typical])),
        sigma_b2=float(np.median([link.sigma_b2 for link in typical])),
    )


def _gradients(
    links: Sequence[Link], q: Sequence[float], measured: Sequence[dict[str, Any]],
    rows: list[dict[str, float | None]],
) -> None:
    """The measured and predicted ratios of dLoss/d(output) std between consecutive layers,
    and the predicted std carried down from the deepest anchor."""
    ratios: list[float | None] = []
    for index in range(len(links) - 1):
        after = links[index + 1]
        above, below = measured[index + 1]["gradient_std"], measured[index]["gradient_std"]
        rows[index]["gradient_ratio"] = below / above if above and below is not None else None
        if after.own is None:
            ratios.append(None)
            continue
        # dL/dy^l = phi_between'(h^l) W^T (phi_own'(h^(l+1)) dL/dy^(l+1)): one factor each.
        factor = (
            after.sigma_w2 * after.coverage * after.size_ratio
            * float(moments.grad_moment(after.own, q[index + 1]))
            * float(moments.grad_moment(after.between, q[index]))
        )
        ratios.append(math.sqrt(factor))
    rows[-1]["gradient_ratio"] = None
    ratios.append(None)
    for row, ratio in zip(rows, ratios, strict=True):
        row["predicted_gradient_ratio"] = ratio
    # Carried down from the deepest layer the ratios reach; where a ratio is unknown (below
    # a softmax layer), the measured value anchors again.
    carried = None
    for index in range(len(links) - 1, -1, -1):
        if carried is not None and ratios[index] is not None:
            carried *= ratios[index]
        else:
            carried = measured[index]["gradient_std"]
        rows[index]["predicted_gradient_std"] = carried


def _chain(taps: Sequence[Tap]) -> list[Link] | str:
    """Each tap's link, or why the model is not a chain the theory describes."""
    links: list[Link] = []
    for index, tap in enumerate(taps):
        if tap.kernel.role != "kernel" or not tap.layer._inbound_nodes:
            return f"{tap.path} is not a dense or convolution layer of a Functional graph"
        source, between = _walk_up(tap.layer)
        if isinstance(source, str):
            return f"{tap.path}'s input passes through {source}"
        if source is not (taps[index - 1].layer if index else None):
            return f"{tap.path} does not take the previous layer's output alone"
        before = links[-1].own if links else _LINEAR
        if between is not None and before is not _LINEAR:
            return f"{tap.path}'s input goes through two activations"
        kernel = keras.ops.convert_to_numpy(tap.kernel.variable.value).astype(np.float64)
        biases = [
            keras.ops.convert_to_numpy(bias.value).astype(np.float64).ravel()
            for bias in own_biases(tap.kernel.layer)
        ]
        node = tap.layer._inbound_nodes[0]
        sizes = [math.prod(tensors[0].shape[1:]) for tensors in
                 (node.input_tensors, keras.tree.flatten(node.outputs))]
        links.append(Link(
            own=_resolved(own_activation(tap.layer)),
            between=between or _LINEAR,
            sigma_w2=tap.kernel.plan.fan_in * float(np.mean(kernel**2)),
            sigma_b2=float(np.mean(np.concatenate(biases) ** 2)) if biases else 0.0,
            coverage=_coverage(tap.layer, node.input_tensors[0].shape)
            if tap.kernel.plan.layout == "conv" else 1.0,
            size_ratio=sizes[1] / sizes[0],
        ))
    return links


def _coverage(layer: Any, input_shape: Sequence[int]) -> float:
    """The mean fraction of a convolution's kernel taps that land inside its input, over
    its output positions: 1 for "valid" padding, less at the borders of "same" and
    "causal" padding (the zeros there carry no signal). Axis by axis, as Keras pads."""
    channels_last = getattr(layer, "data_format", "channels_last") == "channels_last"
    spatial = input_shape[1:-1] if channels_last else input_shape[2:]
    fraction = 1.0
    for n, k, stride, dilation in zip(spatial, layer.kernel_size, layer.strides,
                                      layer.dilation_rate, strict=True):
        if layer.padding == "valid":
            continue
        span = (k - 1) * dilation + 1
        if layer.padding == "causal":
            outputs, left = -(-n // stride), span - 1
        else:  # "same": as many outputs as ceil(n / stride), the padding split left-first
            outputs = -(-n // stride)
            left = max((outputs - 1) * stride + span - n, 0) // 2
        positions = (np.arange(outputs)[:, None] * stride - left
                     + np.arange(k)[None, :] * dilation)
        fraction *= float(np.mean((positions >= 0) & (positions < n)))
    return fraction


def _walk_up(layer: keras.layers.Layer) -> tuple[Any, Activation | None]:
    """From `layer`'s input up to the previous layer with a kernel (or None at the model's
    input): that layer, and the one elementwise activation met on the way; or a string
    naming what breaks the chain."""
    node = layer._inbound_nodes[0]
    between = None
    while True:
        if len(node.parent_nodes) != 1:
            return "an operation with several inputs" if node.parent_nodes else None, between
        node = node.parent_nodes[0]
        operation = node.operation
        kind = type(operation).__name__
        if getattr(operation, "kernel", None) is not None:
            return operation, between
        name = own_activation(operation)
        if name is not None:
            if between is not None:
                return "two activations", between
            between = _resolved(name)
            if between is None:
                return f"{kind} ({name}), which is not elementwise", between
        elif kind == "InputLayer":
            return None, between
        elif kind not in _PASS_THROUGH:
            return f"{'an' if kind[0] in 'AEIOU' else 'a'} {kind} layer", between


def _resolved(name: str | None) -> Activation | None:
    if name is None or name == "linear":
        return _LINEAR
    try:
        return resolve(name)
    except (ValueError, TypeError):
        return None


def phase(
    prediction: Prediction, layers: Sequence[str]
) -> tuple[dict[str, Any] | None, str | None]:
    """The chain's mean-field phase at its typical hidden layer's (activation, sigma_w^2,
    sigma_b^2), as a dict (`MeanField.to_dict()` and the model's `depth`: its number of
    `layers` with a kernel), and a warning when the model is deeper than the 6 xi_c that
    trains (None otherwise)."""
    depth = len(layers)
    if prediction.activation is None:
        return None, None
    where = _where(prediction.activation, prediction.sigma_w2, prediction.sigma_b2)
    try:
        field = mean_field(prediction.activation, prediction.sigma_w2, prediction.sigma_b2)
    except NoFixedPointError:
        return {"phase": "unbounded", "activation": prediction.activation,
                "sigma_w2": prediction.sigma_w2, "sigma_b2": prediction.sigma_b2,
                "depth": depth}, None
    except (ValueError, TypeError):
        return None, None
    found = {**field.to_dict(), "depth": depth}
    trainable = field.trainable_depth
    if field.phase == "critical" or trainable >= depth:
        return found, None
    fix = (
        "toward the edge of chaos: scheme='critical'"
        if field.phase == "ordered" else "back to the edge of chaos: scheme='critical'"
    )
    how = (
        "Without bias the signal's variance decays toward 0 by chi_1 per layer"
        if field.q_star == 0 else
        f"Two inputs' correlation {'converges' if field.phase == 'ordered' else 'decays'}"
    )
    return found, (
        f"Mean-field phase: {field.phase} ({where}: chi_1={field.chi_1:.3g}). {how} over "
        f"xi_c={field.xi_c:.3g} layers, so about {trainable:.3g} layers can be trained "
        f"(6 xi_c, Schoenholz et al. 2017), and this model has {depth}, from {layers[0]} to "
        f"{layers[-1]}. Move {fix} (see "
        "keras_inits.theory)."
    )


def describe_phase(found: dict[str, Any]) -> str:
    """One line for the table: the phase, chi_1, xi_c and the trainable depth."""
    where = _where(found["activation"], found["sigma_w2"], found["sigma_b2"])
    if found["phase"] == "unbounded":
        return (f"Mean-field phase ({where}): unbounded, q^l grows without bound with depth "
                "(the length map has no fixed point).")
    return (
        f"Mean-field phase ({where}): {found['phase']}, chi_1={found['chi_1']:.3g}, "
        f"xi_c={found['xi_c']:.3g} layers, trainable depth ~{found['trainable_depth']:.3g} "
        f"(6 xi_c) for this model's {found['depth']}."
    )


def _where(activation: str, sigma_w2: float, sigma_b2: float) -> str:
    """The point of the phase diagram, in the words of the phase lines."""
    return f"{activation}, sigma_w2={sigma_w2:.3g}, sigma_b2={sigma_b2:.3g}"
