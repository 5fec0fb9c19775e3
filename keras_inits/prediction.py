"""What mean-field theory predicts for a chain-like model at its current weights.

For a chain of layers with kernels h^l = W^l x^(l-1) + b^l, x^l = phi(h^l), whose weights have
zero mean, each layer's pre-activation variance q^l follows the length map of
`keras_inits.theory` with the layer's own sigma_w^2 = fan_in * mean(W^2) and
sigma_b^2 = mean(b^2), from q^1 = sigma_w^2 E[x^2] + sigma_b^2 for the batch's inputs x. The
backward pass multiplies the gradient's second moment at each layer by
sigma_w^2 (fan_out / fan_in) E[phi'(h)^2] (the gradient-independence assumption of Schoenholz
et al. 2017). A convolution's statistics are fields over its spatial positions: with "same"
padding the border reads fewer taps than the centre (see `Link`). So `diagnose` can put the
theory's numbers beside the measured ones:

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
    its input (linear: none), its sigma_w^2 and sigma_b^2, and where its outputs read their
    inputs.

    The statistics are fields over the layer's spatial positions (a scalar for a flat
    Dense layer), because a convolution's padding makes the border weaker than the centre,
    and over a deep stack the field's shape, not only its mean, decides the next layer's.
    `tap_counts`: per spatial axis of a convolution, an (outputs, inputs) matrix counting the
    kernel taps by which each output position reads each input position (zero padding:
    the taps outside the input read nothing); None for a Dense layer, which reads each
    position's channels where it stands (on a flat input: everything). `kernel_taps`: the
    kernel's taps per channel (1 for Dense). `in_shape`, `out_shape`: the spatial shapes
    of its input and output fields; `channel_ratio`: output over input channels (units).

    Forward, at an output position o, q^l[o] = sigma_w^2 (1/K) sum over its taps of
    E[x^2] at the input positions read, + sigma_b^2. Backward, each input position's
    gradient sums W delta over the outputs that read it: E[g_in^2][i] = sigma_w^2
    channel_ratio (1/K) sum over the taps reading i of E[phi'^2 g_out^2] (Schoenholz et
    al.'s gradient independence)."""

    own: Activation | None
    between: Activation
    sigma_w2: float
    sigma_b2: float
    tap_counts: tuple[np.ndarray, ...] | None
    kernel_taps: int
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    channel_ratio: float

    def forward(self, second: np.ndarray) -> np.ndarray:
        """q^l's field from the field of E[x^2] over the input's positions."""
        read = _along_axes(self.tap_counts or (), second)
        return self.sigma_w2 * read / self.kernel_taps + self.sigma_b2

    def backward(self, delta2: np.ndarray) -> np.ndarray:
        """E[g^2] over the input's positions from E[(dL/dh)^2] over the output's."""
        spread = _along_axes([counts.T for counts in self.tap_counts or ()], delta2)
        return self.sigma_w2 * self.channel_ratio * spread / self.kernel_taps

    def input_activation(self, previous: Link | None) -> Activation | None:
        """What the layer's input went through: the layer between, else the previous
        layer's own activation (None: not elementwise)."""
        if self.between is not _LINEAR or previous is None:
            return self.between
        return previous.own


def _along_axes(matrices: Sequence[np.ndarray], field: np.ndarray) -> np.ndarray:
    """`field` with matrix i applied along its axis i (the taps are separable by axis)."""
    for axis, matrix in enumerate(matrices):
        field = np.moveaxis(np.tensordot(matrix, field, axes=(1, axis)), 0, axis)
    return field


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
    q: list[np.ndarray] = []  # each layer's field of pre-activation variances
    second = _input_field(inputs**2, links[0].in_shape)
    inputs_through = [None, *(
        link.input_activation(previous)
        for previous, link in zip(links[:-1], links[1:], strict=True)
    )]
    for index, link in enumerate(links):
        if index:
            through = inputs_through[index]
            if through is None:
                return Prediction([], f"{taps[index - 1].path}'s activation is not elementwise")
            second = _fit(moments.second_moment(through, q[-1]), link.in_shape)
        q.append(link.forward(second))
    rows: list[dict[str, float | None]] = []
    for link, q_l in zip(links, q, strict=True):
        own = link.own
        std = None
        if own is not None:
            mean = float(np.mean(moments.first_moment(own, q_l)))
            variance = float(np.mean(moments.second_moment(own, q_l))) - mean**2
            std = math.sqrt(max(variance, 0.0))
        rows.append({"predicted_q": float(np.mean(q_l)), "predicted_std": std})
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
    links: Sequence[Link], q: Sequence[np.ndarray], measured: Sequence[dict[str, Any]],
    rows: list[dict[str, float | None]],
) -> None:
    """The measured and predicted ratios of dLoss/d(output) std between consecutive layers,
    and the predicted std carried down from the deepest anchor. The gradient's field is
    carried down from a uniform one at the top (and again below a layer whose activation
    is not elementwise, where the theory restarts)."""
    ratios: list[float | None] = [None] * len(links)
    above = np.ones(links[-1].out_shape)
    for index in range(len(links) - 2, -1, -1):
        after = links[index + 1]
        high, low = measured[index + 1]["gradient_std"], measured[index]["gradient_std"]
        rows[index]["gradient_ratio"] = low / high if high and low is not None else None
        if after.own is None:
            above = np.ones(links[index].out_shape)
            continue
        # dL/dy^l = phi_between'(h^l) W^T (phi_own'(h^(l+1)) dL/dy^(l+1)): one factor each.
        below = _fit(after.backward(moments.grad_moment(after.own, q[index + 1]) * above),
                     links[index].out_shape) * moments.grad_moment(after.between, q[index])
        ratios[index] = math.sqrt(float(np.mean(below)) / float(np.mean(above)))
        above = below
    rows[-1]["gradient_ratio"] = None
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


def _fit(field: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """`field` where it has `shape`; else (a Flatten or Reshape in between, whose position
    mapping the chain does not follow) its mean, spread evenly over `shape`."""
    field = np.asarray(field, dtype=np.float64)
    return field if field.shape == shape else np.full(shape, float(np.mean(field)))


def _input_field(squares: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """E[x^2] of the model's input per position of the first layer's input field: the mean
    over the batch and the channels (the last axis) when the input has that layout."""
    if squares.ndim >= 2 and squares.shape[1:-1] == shape:
        return squares.mean(axis=(0, squares.ndim - 1))
    return _fit(squares, shape)


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
        shapes = [tuple(tensors[0].shape[1:]) for tensors in
                  (node.input_tensors, keras.tree.flatten(node.outputs))]
        if None in shapes[0] + shapes[1]:
            return f"{tap.path}'s input or output has a size the graph leaves open"
        links.append(Link(
            own=_resolved(own_activation(tap.layer)),
            between=between or _LINEAR,
            sigma_w2=tap.kernel.plan.fan_in * float(np.mean(kernel**2)),
            sigma_b2=float(np.mean(np.concatenate(biases) ** 2)) if biases else 0.0,
            **_geometry(tap.layer, tap.kernel.plan.layout, *shapes),
        ))
    return links


def _geometry(
    layer: Any, layout: str, input_shape: tuple[int, ...], output_shape: tuple[int, ...]
) -> dict[str, Any]:
    """A link's fields and where its outputs read its inputs (see `Link`), from the
    per-example shapes of its input and output."""
    spatial = _spatial(layer, input_shape) if layout == "conv" else None
    if spatial is not None and "Transpose" not in type(layer).__name__:
        channels_first = getattr(layer, "data_format", None) == "channels_first"
        channels = (input_shape[0], output_shape[0]) if channels_first else (
            input_shape[-1], output_shape[-1])
        counts = tuple(_axis_taps(layer, axis, n) for axis, n in enumerate(spatial))
        return {"tap_counts": counts, "kernel_taps": math.prod(layer.kernel_size),
                "in_shape": spatial, "out_shape": tuple(m.shape[0] for m in counts),
                "channel_ratio": channels[1] / channels[0]}
    if (type(layer).__name__ == "Dense" and len(input_shape) > 1
            and input_shape[:-1] == output_shape[:-1]):  # a Dense layer on each position
        return {"tap_counts": None, "kernel_taps": 1, "in_shape": input_shape[:-1],
                "out_shape": output_shape[:-1],
                "channel_ratio": output_shape[-1] / input_shape[-1]}
    return {"tap_counts": None, "kernel_taps": 1, "in_shape": (), "out_shape": (),
            "channel_ratio": math.prod(output_shape) / math.prod(input_shape)}


def _spatial(layer: Any, input_shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """A convolution's input positions per spatial axis (None where unknown)."""
    channels_first = getattr(layer, "data_format", "channels_last") == "channels_first"
    spatial = tuple(input_shape[1:] if channels_first else input_shape[:-1])
    if not hasattr(layer, "kernel_size") or len(spatial) != len(layer.kernel_size) or any(
        n is None for n in spatial
    ):
        return None
    return spatial


def _axis_taps(layer: Any, axis: int, n: int) -> np.ndarray:
    """(outputs, n): how many of a convolution's kernel taps along `axis` read each input
    position, for each output position. "valid" padding: every tap lands inside; "same"
    and "causal" padding put some outside at the borders (the zeros there carry no
    signal), as Keras pads: the padding split left-first for "same", all left for
    "causal"."""
    k, stride = layer.kernel_size[axis], layer.strides[axis]
    dilation = layer.dilation_rate[axis]
    span = (k - 1) * dilation + 1
    if layer.padding == "valid":
        outputs, left = (n - span) // stride + 1, 0
    elif layer.padding == "causal":
        outputs, left = -(-n // stride), span - 1
    else:  # "same": as many outputs as ceil(n / stride)
        outputs = -(-n // stride)
        left = max((outputs - 1) * stride + span - n, 0) // 2
    positions = np.arange(outputs)[:, None] * stride - left + np.arange(k)[None, :] * dilation
    counts = np.zeros((outputs, n))
    rows, columns = np.nonzero((positions >= 0) & (positions < n))
    np.add.at(counts, (rows, positions[rows, columns]), 1.0)
    return counts


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
