"""Initialization schemes over a whole model: each kernel's scale from its role and depth.

Today's networks are initialized by schemes, not by one initializer: GPT-2 draws every
weight from N(0, 0.02) and shrinks the kernels that write into the residual stream by
the square root of their number; Fixup zeroes them; DeepNet scales the value, output and
feed-forward projections by a depth-dependent beta. Each scheme here is a function from
the model's `Roles` (see `keras_inits.roles`) to a `SchemePlan`: one `Assignment` (an
initializer, drawn with the kernel's layer-aware fans, and the formula it came from) per
kernel it writes. Kernels a scheme does not specify are kept as they are.

Apply one with `keras_inits.reinitialize(model, scheme="gpt2", seed=0)`; `scheme=` also
takes a function of your own with the same contract.

Depths, read from the roles: `branches`, the kernels that write into the residual stream
(`attention_output`, `ffn_out`, `branch_output`: 2 per Transformer layer, 1 per ResNet
block); `layers`, the Transformer layers (blocks holding an attention output; the
residual blocks when there is no attention).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

import keras

from keras_inits.base import check_choice, check_number, check_positive
from keras_inits.initializers import DeltaOrthogonal, TruncNormal
from keras_inits.roles import RESIDUAL_OUTPUTS, KernelRole, Roles
from keras_inits.theory import critical_sigma_w2

# The kernels of a feed-forward branch: keras-hub's named sublayers, or a Functional
# branch's kernels (a Dense -> activation -> Dense added to the stream).
FEEDFORWARD = ("ffn_in", "ffn_out", "branch_inner", "branch_output")


@dataclasses.dataclass(frozen=True)
class Assignment:
    """How a scheme draws one kernel: `initializer` (drawn with the kernel's layer-aware
    fans) and `rule`, the formula the report shows."""

    initializer: keras.initializers.Initializer
    rule: str


@dataclasses.dataclass(frozen=True)
class SchemePlan:
    """What a scheme writes: an `Assignment` per kernel path (kernels absent are kept),
    `notes`: the depths and constants it used (DeepNet's alpha, which belongs to the block,
    not to the weights), for the report, and `biases`: by kernel path, how to draw the
    biases of that kernel's layer (layers absent get their biases reset as usual)."""

    kernels: dict[str, Assignment]
    notes: dict[str, Any]
    biases: dict[str, Assignment] = dataclasses.field(default_factory=dict)


Scheme = Callable[..., SchemePlan]


# --- Initializers with their formulas ------------------------------------------------


def _normal(std: float, rule: str) -> Assignment:
    return Assignment(keras.initializers.RandomNormal(0.0, std), f"{rule} = N(0, {std:.4g})")


def _xavier(gain: float, distribution: str, rule: str = "") -> Assignment:
    """Glorot with `gain` (torch's xavier_*_(gain=...)): Var = gain^2 * 2 / (fan_in + fan_out)."""
    keras_distribution = {"normal": "untruncated_normal", "uniform": "uniform"}[distribution]
    initializer = keras.initializers.VarianceScaling(gain**2, "fan_avg", keras_distribution)
    text = f"xavier_{distribution}(gain={gain:.4g})"
    return Assignment(initializer, f"{text} {rule}".strip())


def _kaiming(mode: str, factor: float, rule: str) -> Assignment:
    """He normal: Var = 2 / fan, times factor^2."""
    initializer = keras.initializers.VarianceScaling(
        2.0 * factor**2, mode, "untruncated_normal"
    )
    return Assignment(initializer, rule)


def _zeros(rule: str) -> Assignment:
    return Assignment(keras.initializers.Zeros(), rule)


def _truncated(std: float, rule: str) -> Assignment:
    """N(0, std) cut at +-3 std, as OLMo's `init_normal` with its default cutoff."""
    return Assignment(
        TruncNormal(0.0, std, -3 * std, 3 * std), f"{rule} = N(0, {std:.4g}) cut at 3 std"
    )


# --- Depths and widths read from the roles ---------------------------------------------


def count_residual_outputs(found: Roles) -> int:
    """The kernels that write into the residual stream (2 per Transformer layer)."""
    return len(found.of(*RESIDUAL_OUTPUTS))


def layer_index(found: Roles) -> dict[int, int]:
    """Each residual block -> its Transformer layer (from 0): a block holding an attention
    output starts a layer, and the blocks up to the next one (its feed-forward add, in a
    Functional Transformer) belong to it. Without attention, each block is a layer."""
    attention = {kernel.block for kernel in found.of("attention_output")}
    index, layer = {}, -1
    for block in range(found.blocks):
        if block in attention or not attention or layer < 0:
            layer += 1
        index[block] = layer
    return index


def count_layers(found: Roles) -> int:
    return len(set(layer_index(found).values()))


def stream_width(found: Roles) -> int:
    """The residual stream's width: what a residual output writes (its kernel's last axis:
    units or channels), else the widest embedding's."""
    for kernel in found.of(*RESIDUAL_OUTPUTS):
        return kernel.shape[-1]
    for kernel in sorted(found.of("embedding"), key=lambda k: -k.shape[-1]):
        return kernel.shape[-1]
    raise ValueError(
        "Cannot tell the residual stream's width: the model has no residual output and no "
        "embedding. Give width=..."
    )


def _depth(given: int | None, counted: int, name: str) -> int:
    if given is None:
        return counted
    if isinstance(given, bool) or not isinstance(given, int) or given < 1:
        raise ValueError(f"{name} must be a positive int, got {name}={given!r}.")
    return given


# --- The schemes ------------------------------------------------------------------------


def gpt2(found: Roles, *, sigma: float = 0.02, branches: int | None = None) -> SchemePlan:
    """GPT-2's (and Megatron-LM's): every kernel N(0, sigma), the kernels that write into
    the residual stream N(0, sigma / sqrt(2 L)), biases zero.

    With L Transformer layers the stream receives 2 L branch outputs (attention and
    feed-forward), each of variance sigma^2 / (2 L): their sum keeps the variance of one,
    whatever the depth. In general the divisor is the number of residual outputs.

    Args:
        sigma: the std of every kernel (0.02, GPT-2's `initializer_range`).
        branches: the divisor's count; None counts the model's residual outputs.

    Reference:
        Radford et al. 2019, "Language Models are Unsupervised Multitask Learners", 2.3;
        Hugging Face `GPT2PreTrainedModel._init_weights`, nanoGPT `model.py`,
        Megatron-LM `init_method_normal` / `scaled_init_method_normal`.
    """
    sigma = check_positive("sigma", sigma)
    found.require(RESIDUAL_OUTPUTS, "gpt2")
    count = _depth(branches, count_residual_outputs(found), "branches")
    scaled = sigma / math.sqrt(count)
    kernels = {}
    for kernel in found.kernels:
        if kernel.role in RESIDUAL_OUTPUTS:
            kernels[kernel.path] = _normal(scaled, f"sigma/sqrt({count})")
        else:
            kernels[kernel.path] = _normal(sigma, "sigma")
    return SchemePlan(kernels, {"sigma": sigma, "residual outputs": count})


def fixup(found: Roles, *, mode: str = "fan_out", branches: int | None = None) -> SchemePlan:
    """Fixup: each residual branch's last kernel and the head zero; the branch's other
    kernels on its linear path He-initialized times L^(-1/(2m-2)), with L residual branches
    and m kernels per branch; every other kernel He-initialized.

    A ResNet basic block (m = 2) gets L^(-1/2), a bottleneck (m = 3) L^(-1/4). Only the
    last kernel of a deeper head is zeroed (the others would get no gradient). Fixup's
    scalar biases and multiplier belong to the block, not to the weights: add them to your
    blocks. On a Transformer this is the same rule with each attention branch's value
    projection and each feed-forward input as the inner kernel of a 2-kernel branch (query
    and key He); the authors' own fairseq port differs (Xavier query, key and value scaled
    by L^(-1/6)).

    Args:
        mode: the He fan, "fan_out" as the reference code (`fixup_resnet_cifar.py`:
            std = sqrt(2 / (out_channels * k * k))), or "fan_in".
        branches: L; None counts the model's residual outputs.

    Reference:
        Zhang, Dauphin & Ma 2019, "Fixup Initialization: Residual Learning Without
        Normalization", arXiv 1901.09321; github.com/hongyi-zhang/Fixup (which leaves
        its stem at PyTorch's default; here the stem is He-initialized too).
    """
    check_choice("mode", mode, ("fan_in", "fan_out"))
    found.require(RESIDUAL_OUTPUTS, "fixup")
    count = _depth(branches, count_residual_outputs(found), "branches")
    inner_per_block: dict[int, int] = {}
    for kernel in found.of("branch_inner"):
        inner_per_block[kernel.block] = inner_per_block.get(kernel.block, 0) + 1
    heads = found.of("head")
    kernels = {}
    for kernel in found.kernels:
        if kernel.role in RESIDUAL_OUTPUTS or (heads and kernel is heads[-1]):
            kernels[kernel.path] = _zeros("zero")
        elif kernel.role in ("value", "ffn_in", "branch_inner"):
            m = 1 + inner_per_block.get(kernel.block, 1) if kernel.role == "branch_inner" else 2
            factor = count ** (-1.0 / (2 * m - 2))
            rule = f"he_normal({mode}) * {count}^(-1/{2 * m - 2})"
            kernels[kernel.path] = _kaiming(mode, factor, rule)
        elif kernel.role != "embedding":
            kernels[kernel.path] = _kaiming(mode, 1.0, f"he_normal({mode})")
    return SchemePlan(kernels, {"residual branches": count, "mode": mode})


def zero_branch(found: Roles) -> SchemePlan:
    """Every kernel that writes into the residual stream zero, every other kernel kept: each
    block starts as the identity, the weight-only analogue of SkipInit and ReZero (which
    put a zero-initialized scalar on the branch instead).

    Reference:
        De & Smith 2020, "Batch Normalization Biases Residual Blocks Towards the Identity
        Function in Deep Networks" (SkipInit), arXiv 2002.10444; Bachlechner et al. 2020,
        "ReZero is All You Need", arXiv 2003.04887.
    """
    found.require(RESIDUAL_OUTPUTS, "zero_branch")
    kernels = {kernel.path: _zeros("zero") for kernel in found.of(*RESIDUAL_OUTPUTS)}
    return SchemePlan(kernels, {"residual outputs": len(kernels)})


def t_fixup(found: Roles, *, stack: str | None = None, layers: int | None = None) -> SchemePlan:
    """T-Fixup: Xavier everywhere, the token embeddings N(0, d^-1/2) times sqrt(d) times
    (9 N)^(-1/4); the value, output and feed-forward kernels scaled by 0.67 N^(-1/4) in an
    encoder or (9 N)^(-1/4) in a decoder, N layers. Trains without LayerNorm and without
    learning-rate warm-up.

    As the reference's fairseq layers: query and key Xavier uniform with gain 2^(-1/2), the
    head N(0, d^-1/2), other embeddings (learned positions, segments) N(0, d^-1/2). fairseq
    multiplies token embeddings by sqrt(d) in the forward pass and Keras models do not, so
    the token table is drawn with that factor in: its rows enter the first block at the
    reference's scale, (9 N)^(-1/4). The token table is the embedding with the most rows.
    An encoder-decoder model takes the scheme one stack at a time (`include=` that stack's
    layers, with `stack=` and `layers=`).

    Args:
        stack: "encoder" or "decoder"; None reads it from the model (a layer whose class
            name ends in "Decoder", keras-hub's GPT-2 blocks included, makes a decoder).
        layers: N; None counts the model's Transformer layers.

    Reference:
        Huang, Perez, Ba & Volkovs 2020, "Improving Transformer Optimization Through Better
        Initialization", ICML, Algorithm 2; github.com/layer6ai-labs/T-Fixup.
    """
    found.require(("attention_output",), "t_fixup")
    if stack is None and found.encoder and found.decoder:
        raise ValueError(_ONE_STACK.format(scheme="t_fixup", own="stack= and layers="))
    stack = stack or ("decoder" if found.decoder else "encoder")
    check_choice("stack", stack, ("encoder", "decoder"))
    n = _depth(layers, count_layers(found), "layers")
    scale = 0.67 * n ** -0.25 if stack == "encoder" else (9 * n) ** -0.25
    scale_text = "0.67 N^(-1/4)" if stack == "encoder" else "(9N)^(-1/4)"
    tables = found.of("embedding")
    tokens = max(tables, key=lambda kernel: kernel.shape[0]) if tables else None
    kernels = {}
    for kernel in found.kernels:
        if kernel is tokens:
            kernels[kernel.path] = _normal((9 * n) ** -0.25, "d^(-1/2) sqrt(d) (9N)^(-1/4)")
        elif kernel.role == "embedding":
            kernels[kernel.path] = _normal(kernel.shape[-1] ** -0.5, "d^(-1/2)")
        elif kernel.role in ("query", "key"):
            kernels[kernel.path] = _xavier(2**-0.5, "uniform")
        elif kernel.role in ("value", "attention_output", *FEEDFORWARD):
            kernels[kernel.path] = _xavier(scale, "uniform", f"= xavier * {scale_text}")
        elif kernel.role == "head":
            kernels[kernel.path] = _normal(kernel.fan_in**-0.5, "d^(-1/2)")
        else:
            kernels[kernel.path] = _xavier(1.0, "uniform")
    return SchemePlan(kernels, {"stack": stack, "layers": n, "scale": scale})


_ONE_STACK = (
    "{scheme} takes one stack at a time, and this model has encoder and decoder layers: "
    "apply it to each with include=<that stack's layers> and {own}."
)


def deepnet(found: Roles, *, layers: int | None = None, beta: float | None = None) -> SchemePlan:
    """DeepNet's initialization (with DeepNorm): the feed-forward, value and output
    projections Xavier normal with gain beta = (8 N)^(-1/4), query and key Xavier normal
    (gain 1), N layers of an encoder-only or decoder-only model. Embeddings and head kept.

    DeepNorm's other half, alpha = (2 N)^(1/4), multiplies the residual stream in each
    block (x <- LayerNorm(alpha x + f(x))): it belongs to the block, not to the weights;
    the report gives it. For an encoder-decoder model, pass the paper's beta for each stack.

    Args:
        layers: N; None counts the model's Transformer layers.
        beta: the gain; None computes it from N.

    Reference:
        Wang et al. 2022, "DeepNet: Scaling Transformers to 1,000 Layers", arXiv 2203.00555,
        Figure 2 and Table 1; microsoft/torchscale.
    """
    found.require(("attention_output",), "deepnet")
    if beta is None and found.encoder and found.decoder:
        raise ValueError(_ONE_STACK.format(scheme="deepnet", own="the paper's beta="))
    n = _depth(layers, count_layers(found), "layers")
    beta = (8 * n) ** -0.25 if beta is None else check_positive("beta", beta)
    alpha = (2 * n) ** 0.25
    kernels = {}
    for kernel in found.kernels:
        if kernel.role in ("value", "attention_output", *FEEDFORWARD):
            kernels[kernel.path] = _xavier(beta, "normal", "(beta)")
        elif kernel.role in ("query", "key"):
            kernels[kernel.path] = _xavier(1.0, "normal")
    return SchemePlan(kernels, {"layers": n, "alpha": alpha, "beta": beta})


def small_init(found: Roles, *, width: int | None = None) -> SchemePlan:
    """Every kernel N(0, sqrt(2 / (5 d))), d the residual stream's width: the variance
    between Xavier's for a (d, d) and a (d, 4d) kernel, GPT-NeoX's `small_init`.

    Args:
        width: d; None reads it from the model (what a residual output writes).

    Reference:
        Nguyen & Salazar 2019, "Transformers without Tears: Improving the Normalization of
        Self-Attention", arXiv 1910.05895; EleutherAI/gpt-neox `small_init_init_method`.
    """
    d = _depth(width, stream_width(found) if width is None else width, "width")
    std = math.sqrt(2 / (5 * d))
    kernels = {kernel.path: _normal(std, f"sqrt(2/(5*{d}))") for kernel in found.kernels}
    return SchemePlan(kernels, {"width": d})


def mitchell(found: Roles) -> SchemePlan:
    """OLMo's depth-indexed scheme: every kernel N(0, 1/sqrt(fan_in)), embeddings
    N(0, 1/sqrt(d)), and the kernels that write into the residual stream in layer l (from
    0) N(0, 1/sqrt(2 fan_in (l + 1))); all cut at 3 std.

    Reference:
        Groeneveld et al. 2024, "OLMo: Accelerating the Science of Language Models",
        arXiv 2402.00838; allenai/OLMo `olmo/model.py` (`InitFnType.mitchell`).
    """
    index = layer_index(found)
    kernels = {}
    for kernel in found.kernels:
        if kernel.role == "embedding":
            kernels[kernel.path] = _truncated(kernel.fan_out**-0.5, "1/sqrt(d)")
        elif kernel.role in RESIDUAL_OUTPUTS and kernel.block is not None:
            layer = index[kernel.block]
            std = (2 * kernel.fan_in * (layer + 1)) ** -0.5
            kernels[kernel.path] = _truncated(std, f"1/sqrt(2 fan_in ({layer}+1))")
        else:
            kernels[kernel.path] = _truncated(kernel.fan_in**-0.5, "1/sqrt(fan_in)")
    return SchemePlan(kernels, {"layers": count_layers(found)})


# --- Mean-field theory's schemes ------------------------------------------------------------

DISTRIBUTIONS = ("normal", "orthogonal")


def _mean_field_kernel(kernel: KernelRole, sigma_w2: float, distribution: str) -> Assignment:
    """A kernel whose every output unit has variance sigma_w2 * E[x^2] for inputs x: the
    Gaussian N(0, sigma_w2 / fan_in) of mean-field theory, or an orthogonal matrix of the
    same per-unit variance (delta-orthogonal for a convolution that does not narrow).

    An orthogonal block of `rows` inputs and `cols` outputs has entries of variance
    1 / max(rows, cols), so its gain^2 is sigma_w2 * max(1, cols / rows); a delta-orthogonal
    kernel's rows are its centre tap's input channels."""
    if distribution == "normal":
        initializer = keras.initializers.VarianceScaling(
            sigma_w2, "fan_in", "untruncated_normal"
        )
        return Assignment(initializer, f"N(0, {sigma_w2:.4g}/fan_in)")
    spatial = math.prod(kernel.shape[:-2]) if kernel.layout in _SPATIAL else 1
    rows, cols = kernel.fan_in, kernel.fan_out // spatial
    if kernel.layout == "conv" and len(kernel.shape) >= 3 and rows // spatial <= cols:
        rows = kernel.fan_in // spatial
        gain = math.sqrt(sigma_w2 * cols / rows)
        return Assignment(DeltaOrthogonal(gain), f"delta_orthogonal(gain={gain:.4g})")
    gain = math.sqrt(sigma_w2 * max(1.0, cols / rows))
    return Assignment(keras.initializers.Orthogonal(gain), f"orthogonal(gain={gain:.4g})")


_SPATIAL = ("conv", "depthwise", "conv_transpose")


def _mean_field_plan(
    found: Roles, sigma_w2: Callable[[KernelRole], tuple[float, str]], sigma_b2: float,
    distribution: str,
) -> SchemePlan:
    """Every kernel but the embeddings drawn by `_mean_field_kernel` at the variance
    `sigma_w2(kernel)` gives (with the words for the report), its layer's biases
    N(0, sigma_b2)."""
    check_choice("distribution", distribution, DISTRIBUTIONS)
    bias = (
        Assignment(keras.initializers.RandomNormal(0.0, math.sqrt(sigma_b2)),
                   f"N(0, sigma_b2={sigma_b2:.4g})")
        if sigma_b2 > 0 else Assignment(keras.initializers.Zeros(), "zeros (sigma_b2=0)")
    )
    kernels, biases = {}, {}
    for kernel in found.kernels:
        if kernel.role == "embedding":
            continue
        variance, why = sigma_w2(kernel)
        assignment = _mean_field_kernel(kernel, variance, distribution)
        kernels[kernel.path] = Assignment(assignment.initializer, f"{assignment.rule}{why}")
        biases[kernel.path] = bias
    return SchemePlan(kernels, {"sigma_b2": sigma_b2, "distribution": distribution}, biases)


def mean_field(
    found: Roles,
    *,
    sigma_w2: float | None = None,
    sigma_b2: float = 0.0,
    distribution: str = "normal",
) -> SchemePlan:
    """Every kernel as mean-field theory draws it: N(0, sigma_w2 / fan_in) (or orthogonal
    with that per-unit variance), and every bias N(0, sigma_b2). Embeddings are kept.

    The network of Poole et al. (2016) and Schoenholz et al. (2017), for a sweep over
    (sigma_w2, sigma_b2): `keras_inits.theory.mean_field(activation, sigma_w2, sigma_b2)`
    predicts its phase and depth scales.

    Args:
        sigma_w2: the weights' variance times fan_in, > 0.
        sigma_b2: the biases' variance, >= 0.
        distribution: "normal" (Gaussian), or "orthogonal": each kernel orthogonal with
            gain sqrt(sigma_w2 * max(1, fan_out / fan_in)), the same per-unit variance; a
            convolution kernel delta-orthogonal (Xiao et al. 2018) when its output
            channels are at least its input channels.

    Reference:
        Poole et al. 2016, "Exponential expressivity in deep neural networks through
        transient chaos", arXiv 1606.05340; Schoenholz et al. 2017, "Deep Information
        Propagation", arXiv 1611.01232.
    """
    if sigma_w2 is None:
        raise ValueError(
            "The mean_field scheme needs sigma_w2=..., the weights' variance times fan_in "
            "(scheme='critical' computes it from each kernel's activation)."
        )
    sigma_w2 = check_positive("sigma_w2", sigma_w2)
    sigma_b2 = _variance("sigma_b2", sigma_b2)
    plan = _mean_field_plan(found, lambda kernel: (sigma_w2, ""), sigma_b2, distribution)
    plan.notes["sigma_w2"] = sigma_w2
    return plan


def critical(
    found: Roles,
    *,
    sigma_b2: float = 0.0,
    distribution: str = "normal",
    activation: str | Callable | Mapping[str, str | Callable] | None = None,
) -> SchemePlan:
    """Each kernel at the edge of chaos for the activation its input went through: the
    `mean_field` scheme with sigma_w2 = `keras_inits.theory.critical_sigma_w2(activation,
    sigma_b2)`, where chi_1 = 1, kernel by kernel.

    The activation is read from the model (see `keras_inits.input_activations`): a tanh
    MLP gets sigma_w2 = 1 without bias (LeCun's variance) and 1.761 at sigma_b2 = 0.05, a
    ReLU network 2 (He's). A kernel fed by a linear layer or an embedding (a Transformer's
    projections after a LayerNorm) gets the linear network's 1. A ReLU network has no
    critical point with biases: the error says so.

    Args:
        sigma_b2: the biases' variance, >= 0; every bias is drawn N(0, sigma_b2).
        distribution: "normal" or "orthogonal" (see `mean_field`). Orthogonal weights at
            the edge of chaos make the input-output Jacobian's singular values concentrate
            near 1 (dynamical isometry, Pennington et al. 2017).
        activation: overrides what is read: one activation (a Keras name or an elementwise
            callable) for every kernel, or a mapping of kernel path patterns
            (shell-style, as `roles`' mapping) to activations; unmatched kernels keep
            what is read.

    Reference:
        Schoenholz et al. 2017, "Deep Information Propagation", arXiv 1611.01232;
        Pennington, Schoenholz & Ganguli 2017, "Resurrecting the sigmoid in deep learning
        through dynamical isometry", arXiv 1711.04735.
    """
    sigma_b2 = _variance("sigma_b2", sigma_b2)
    chosen: dict[str, float] = {}

    def variance(kernel: KernelRole) -> tuple[float, str]:
        name = _activation_for(kernel, activation)
        key = name if isinstance(name, str) else getattr(name, "__name__", repr(name))
        if key not in chosen:
            if isinstance(name, str) and " | " in name:
                raise ValueError(
                    f"{kernel.path}: its input comes through several activations ({name}), so "
                    "no single critical sigma_w2 applies. Name it with activation={"
                    f"'{kernel.path}': '<activation>'}}."
                )
            try:
                chosen[key] = critical_sigma_w2(name, sigma_b2)
            except ValueError as error:
                raise ValueError(
                    f"{kernel.path} (input activation {key}): {error} To set this kernel "
                    "yourself, pass activation={'<path pattern>': '<activation>'}."
                ) from None
        return chosen[key], f" ({key} critical)"

    plan = _mean_field_plan(found, variance, sigma_b2, distribution)
    plan.notes["critical sigma_w2"] = {key: round(value, 6) for key, value in chosen.items()}
    return plan


def _activation_for(
    kernel: KernelRole, activation: str | Callable | Mapping[str, Any] | None
) -> str | Callable:
    if activation is None:
        return kernel.input_activation or "linear"
    if isinstance(activation, Mapping):
        for pattern, value in activation.items():
            if fnmatch.fnmatchcase(kernel.path, pattern):
                return value
        return kernel.input_activation or "linear"
    if isinstance(activation, str) or callable(activation):
        return activation
    raise TypeError(
        "activation takes an activation name or callable, or a mapping of kernel path "
        f"patterns to them; got {type(activation).__name__}: {activation!r}."
    )


def _variance(name: str, value: Any) -> float:
    check_number(name, value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {name}={value!r}.")
    return float(value)


SCHEMES: dict[str, Scheme] = {
    "gpt2": gpt2,
    "megatron": gpt2,
    "fixup": fixup,
    "zero_branch": zero_branch,
    "t_fixup": t_fixup,
    "deepnet": deepnet,
    "small_init": small_init,
    "mitchell": mitchell,
    "mean_field": mean_field,
    "critical": critical,
}


def resolve(scheme: str | Scheme, params: Mapping[str, Any]) -> tuple[str, Scheme]:
    """The scheme's name and function, `params` checked against its parameters.

    Raises:
        ValueError: an unknown scheme name.
        TypeError: a parameter the scheme does not take; neither a name nor a function.
    """
    if isinstance(scheme, str):
        if scheme not in SCHEMES:
            raise ValueError(f"Unknown scheme {scheme!r}. Use one of {tuple(SCHEMES)}.")
        name, function = scheme, SCHEMES[scheme]
    elif callable(scheme):
        name, function = getattr(scheme, "__name__", type(scheme).__name__), scheme
    else:
        raise TypeError(
            f"scheme must be a name ({', '.join(SCHEMES)}) or a function (roles, **params) -> "
            f"SchemePlan, got {type(scheme).__name__}: {scheme!r}."
        )
    accepted = set(list(inspect.signature(function).parameters)[1:])
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise TypeError(
            f"Scheme {name!r} takes no parameter {', '.join(unknown)}; it takes "
            f"{', '.join(sorted(accepted)) or 'none'}."
        )
    return name, function


def plan(scheme: str | Scheme, found: Roles, params: Mapping[str, Any]) -> tuple[str, SchemePlan]:
    """The scheme's name and plan for a model's roles, its parameters checked.

    Raises:
        ValueError: an unknown scheme name, a role the scheme needs is missing, a bad value.
        TypeError: a parameter the scheme does not take; a scheme that returns no plan.
    """
    name, function = resolve(scheme, params)
    result = function(found, **params)
    if not isinstance(result, SchemePlan):
        raise TypeError(
            f"Scheme {name!r} returned {type(result).__name__}; a scheme returns a "
            "keras_inits.schemes.SchemePlan."
        )
    return name, result

