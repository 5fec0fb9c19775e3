"""Which weights of a model are kernels, and how to read each one's fans.

One walker, `find_kernels`, visits every layer of a built model once (nested
models, layers inside layers, RNN cells and wrappers included) and hands each
to a small rule chosen by layer type from `_RULES`. A rule returns one
`KernelPlan` per kernel: the fans that are right for that layer type, and how
the kernel splits into independent blocks (per group, per gate, per depthwise
channel) so that a structured initializer (orthogonal, dirac...) can be drawn
block by block in Keras's `(..., in, out)` layout.

Fans by layer type, with `rf` the product of the spatial kernel axes:

| layer | kernel shape | fan_in | fan_out | blocks |
|---|---|---|---|---|
| Dense | (in, out) | in | out | 1 |
| Conv1D/2D/3D, `groups=g` | (*k, in/g, out) | rf * in/g | rf * out/g | g |
| Conv*Transpose | (*k, out, in) | rf * in | rf * out | 1, axes swapped |
| DepthwiseConv, SeparableConv depthwise | (*k, in, m) | rf | rf * m | in |
| EinsumDense | any | contracted axes | output-only axes | kernel axes in input and output |
| LSTM/GRU/SimpleRNN/ConvLSTM kernels | (*k, in, gates * units) | rf * in | rf * units | gates |
| Embedding, any layer's `embeddings` table | (vocab, dim) | 1 | dim | 1 |

An embedding is a lookup: each output coordinate is one weight, so the fans
that keep the output's variance are (1, dim), not Keras's (vocab, dim).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence

import keras

from keras_inits.fans import compute_fans

Assemble = Callable[[object], object]


@dataclasses.dataclass(frozen=True)
class KernelPlan:
    """How one kernel is drawn.

    Attributes:
        fan_in, fan_out: the fans that are right for the kernel's layer type.
        layout: a short name of the rule, for reports ("dense", "conv_transpose"...).
        block_shape: one independent block in Keras's `(..., in, out)` layout.
        groups: how many blocks the kernel is made of.
        assemble: maps a `(groups, *block_shape)` tensor to the kernel's shape.
    """

    fan_in: int
    fan_out: int
    layout: str
    block_shape: tuple[int, ...]
    groups: int
    assemble: Assemble


@dataclasses.dataclass(frozen=True)
class Kernel:
    """A kernel variable of a model, with the layers around it.

    Attributes:
        layer: the layer that owns the variable (an RNN's cell for RNN kernels).
        owner: the layer whose output the kernel shapes, i.e. the one to call and
            tap (the RNN layer for a cell's kernels; `layer` otherwise).
        variable: the kernel itself.
        role: "kernel", "recurrent", "depthwise", "pointwise" or "embeddings".
        plan: fans and blocks.
        position: the index of `variable` in `model.weights`, stable across
            rebuilds of the same architecture (layer names are not: Keras numbers them).
        primary: whether this is the kernel that scales the owner's output
            linearly (the one LSUV rescales and diagnostics report).
        path: the variable's path inside the model, see `model_path`.
        containers: the layers of the model that contain `layer` (wrappers,
            nested models, custom layers), outermost first.
    """

    layer: keras.layers.Layer
    owner: keras.layers.Layer
    variable: keras.Variable
    role: str
    plan: KernelPlan
    position: int
    primary: bool
    path: str
    containers: tuple[keras.layers.Layer, ...] = ()


def _stack_assemble(block_shape: tuple[int, ...]) -> Assemble:
    return lambda blocks: keras.ops.reshape(blocks, block_shape)


def plain_plan(shape: Sequence[int], layout: str) -> KernelPlan:
    """`(..., in, out)` read as Keras and torch read it: one block, Keras's fans."""
    shape = tuple(shape)
    fan_in, fan_out = compute_fans(shape)
    return KernelPlan(fan_in, fan_out, layout, shape, 1, _stack_assemble(shape))


def split_last_plan(shape: Sequence[int], groups: int, layout: str) -> KernelPlan:
    """`(..., in, groups * n)`: `groups` independent `(..., in, n)` maps side by side
    on the last axis (grouped convolutions, the gates of an RNN)."""
    shape = tuple(shape)
    if groups == 1:
        return plain_plan(shape, layout)
    block = (*shape[:-1], shape[-1] // groups)
    fan_in, fan_out = compute_fans(block)

    def assemble(blocks):
        # (g, ..., in, n) -> (..., in, g, n) -> (..., in, g * n)
        return keras.ops.reshape(keras.ops.moveaxis(blocks, 0, -2), shape)

    return KernelPlan(fan_in, fan_out, layout, block, groups, assemble)


def transpose_plan(shape: Sequence[int]) -> KernelPlan:
    """`Conv*Transpose` kernels `(*k, out, in)`: drawn as `(*k, in, out)`, then swapped."""
    shape = tuple(shape)
    block = (*shape[:-2], shape[-1], shape[-2])
    fan_in, fan_out = compute_fans(shape, "transpose")

    def assemble(blocks):
        return keras.ops.swapaxes(keras.ops.reshape(blocks, block), -1, -2)

    return KernelPlan(fan_in, fan_out, "conv_transpose", block, 1, assemble)


def depthwise_plan(shape: Sequence[int]) -> KernelPlan:
    """Depthwise kernels `(*k, in, m)`: each input channel is its own `(*k, 1, m)` map."""
    shape = tuple(shape)
    channels = shape[-2]
    block = (*shape[:-2], 1, shape[-1])
    fan_in, fan_out = compute_fans(shape, "depthwise")

    def assemble(blocks):
        # (in, *k, 1, m) -> (in, *k, m) -> (*k, in, m)
        squeezed = keras.ops.reshape(blocks, (channels, *shape[:-2], shape[-1]))
        return keras.ops.moveaxis(squeezed, 0, -2)

    return KernelPlan(fan_in, fan_out, "depthwise", block, channels, assemble)


def einsum_plan(shape: Sequence[int], equation: str) -> KernelPlan:
    """`EinsumDense` kernels: fan_in from the contracted axes, fan_out from the output axes.

    Kernel axes that appear in the input and the output too index independent
    maps (blocks), like a depthwise channel. Axes in neither are summed over
    and count as inputs.
    """
    shape = tuple(shape)
    try:
        inputs, rest = equation.replace(" ", "").split(",")
        kernel_axes, output = rest.split("->")
    except ValueError:
        raise ValueError(f"Cannot read the EinsumDense equation {equation!r}.") from None
    if len(kernel_axes) != len(shape):
        raise ValueError(
            f"EinsumDense equation {equation!r} names {len(kernel_axes)} kernel axes, "
            f"but the kernel has shape {shape}."
        )
    grouped = [i for i, axis in enumerate(kernel_axes) if axis in inputs and axis in output]
    outputs = [i for i, axis in enumerate(kernel_axes) if axis in output and axis not in inputs]
    contracted = [i for i in range(len(shape)) if i not in grouped and i not in outputs]
    order = grouped + contracted + outputs
    fan_in = math.prod(shape[i] for i in contracted)
    fan_out = math.prod(shape[i] for i in outputs)
    groups = math.prod(shape[i] for i in grouped)
    permuted = tuple(shape[i] for i in order)
    inverse = [order.index(i) for i in range(len(shape))]

    def assemble(blocks):
        return keras.ops.transpose(keras.ops.reshape(blocks, permuted), inverse)

    return KernelPlan(
        fan_in, fan_out, f"einsum {equation}", (fan_in, fan_out), groups, assemble
    )


def embedding_plan(shape: Sequence[int]) -> KernelPlan:
    """`(vocab, dim)` lookups: one block, fans (1, dim) (see the module docstring)."""
    shape = tuple(shape)
    return KernelPlan(1, shape[-1], "embedding", shape, 1, _stack_assemble(shape))


# --- Rules: layer -> [(variable, role, plan, primary)] --------------------------------

Rule = Callable[[keras.layers.Layer], list[tuple[keras.Variable, str, KernelPlan, bool]]]


def _own(layer: keras.layers.Layer) -> dict[str, keras.Variable]:
    """The layer's own variables by name (not its sublayers')."""
    return {v.name: v for v in [*layer._trainable_variables, *layer._non_trainable_variables]}


def _conv(layer):
    kernel = _own(layer)["kernel"]
    return [(kernel, "kernel", split_last_plan(kernel.shape, layer.groups, "conv"), True)]


def _conv_transpose(layer):
    kernel = _own(layer)["kernel"]
    return [(kernel, "kernel", transpose_plan(kernel.shape), True)]


def _depthwise(layer):
    kernel = _own(layer)["kernel"]
    return [(kernel, "depthwise", depthwise_plan(kernel.shape), True)]


def _separable(layer):
    own = _own(layer)
    depthwise, pointwise = own["depthwise_kernel"], own["pointwise_kernel"]
    return [
        (depthwise, "depthwise", depthwise_plan(depthwise.shape), False),
        (pointwise, "pointwise", plain_plan(pointwise.shape, "conv"), True),
    ]


def _dense(layer):
    kernel = _own(layer)["kernel"]
    return [(kernel, "kernel", plain_plan(kernel.shape, "dense"), True)]


def _einsum(layer):
    kernel = _own(layer)["kernel"]
    return [(kernel, "kernel", einsum_plan(kernel.shape, layer.equation), True)]


def _embedding(layer):
    embeddings = _own(layer)["embeddings"]
    return [(embeddings, "embeddings", embedding_plan(embeddings.shape), True)]


def _recurrent(gates: int) -> Rule:
    def rule(cell):
        own = _own(cell)
        kernel, recurrent = own["kernel"], own["recurrent_kernel"]
        return [
            (kernel, "kernel", split_last_plan(kernel.shape, gates, f"rnn x{gates} gates"), True),
            (
                recurrent,
                "recurrent",
                split_last_plan(recurrent.shape, gates, f"recurrent x{gates} gates"),
                False,
            ),
        ]

    return rule


def _generic(layer):
    """A layer of a type we have no rule for, with a `kernel` of rank >= 2, or a lookup
    table called `embeddings` (keras-hub's `PositionEmbedding`, your own embedding layers)."""
    own = _own(layer)
    kernel = own.get("kernel")
    if kernel is not None and len(kernel.shape) >= 2:
        return [(kernel, "kernel", plain_plan(kernel.shape, "assumed (..., in, out)"), True)]
    table = own.get("embeddings")
    if table is not None and len(table.shape) == 2:
        return [(table, "embeddings", embedding_plan(table.shape), True)]
    return []


L = keras.layers
# Checked in order: the first matching type wins.
_RULES: list[tuple[tuple[type, ...], Rule]] = [
    ((L.SeparableConv1D, L.SeparableConv2D), _separable),
    ((L.DepthwiseConv1D, L.DepthwiseConv2D), _depthwise),
    ((L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose), _conv_transpose),
    ((L.Conv1D, L.Conv2D, L.Conv3D), _conv),
    ((L.EinsumDense,), _einsum),
    ((L.Dense,), _dense),
    ((L.Embedding,), _embedding),
    ((L.LSTMCell,), _recurrent(4)),
    ((L.GRUCell,), _recurrent(3)),
    ((L.SimpleRNNCell,), _recurrent(1)),
]
del L


def _conv_lstm_cell() -> type | None:
    # ConvLSTMCell is not exported by keras.layers; reach it through ConvLSTM2D's cell.
    import keras.src.layers.rnn.conv_lstm as conv_lstm

    return getattr(conv_lstm, "ConvLSTMCell", None)


_CONV_LSTM_CELL = _conv_lstm_cell()
if _CONV_LSTM_CELL is not None:
    _RULES.append(((_CONV_LSTM_CELL,), _recurrent(4)))


def _rule_for(layer: keras.layers.Layer) -> Rule:
    for types, rule in _RULES:
        if isinstance(layer, types):
            return rule
    return _generic


def walk(model: keras.layers.Layer) -> list[keras.layers.Layer]:
    """Every layer of `model`, itself first, each once, in a deterministic order."""
    return model._flatten_layers(include_self=True, recursive=True)


def _owners(layers: Sequence[keras.layers.Layer]) -> dict[int, keras.layers.Layer]:
    """Layers called step by step -> the layer whose output is the whole result: RNN cells
    (and stacked cells) -> their RNN, the layer inside a TimeDistributed -> the wrapper."""
    owners: dict[int, keras.layers.Layer] = {}
    for layer in layers:
        if isinstance(layer, keras.layers.RNN):
            inner = layer.cell
        elif isinstance(layer, keras.layers.TimeDistributed):
            inner = layer.layer
        else:
            continue
        for sub in inner._flatten_layers(include_self=True, recursive=True):
            owners.setdefault(id(sub), layer)
    return owners


def find_kernels(model: keras.layers.Layer) -> list[Kernel]:
    """Every kernel of a built model, in the order of `model.weights`.

    Raises:
        TypeError: `model` is not a Keras layer or model.
        ValueError: the model is not built yet, or holds quantized layers.
    """
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(
            f"Expected a keras.Model (or Layer), got {type(model).__name__}: {model!r}."
        )
    if not model.built:
        raise ValueError(
            f"Model {model.name!r} is not built, so it has no weights yet. Build it first: "
            "call it on a batch, call model.build(input_shape), or give it a keras.Input."
        )
    layers = walk(model)
    quantized = [layer.name for layer in layers if getattr(layer, "quantization_mode", None)]
    if quantized:
        raise ValueError(
            f"Layers {', '.join(quantized)} are quantized (model.quantize): their kernels are "
            "integer or scaled and their calls bypass the float path. Re-initialize, fit LSUV "
            "or diagnose before quantizing."
        )
    owners = _owners(layers)
    containers = _containers(layers[1:])
    order = {id(variable): index for index, variable in enumerate(model.weights)}
    found = []
    for layer in layers:
        for variable, role, plan, primary in _rule_for(layer)(layer):
            found.append(
                Kernel(
                    layer=layer,
                    owner=owners.get(id(layer), layer),
                    variable=variable,
                    role=role,
                    plan=plan,
                    position=order[id(variable)],
                    primary=primary,
                    path=model_path(containers.get(id(layer), ()), layer, variable),
                    containers=containers.get(id(layer), ()),
                )
            )
    return sorted(found, key=lambda kernel: kernel.position)


def model_path(
    containers: Sequence[keras.layers.Layer], layer: keras.layers.Layer, variable: keras.Variable
) -> str:
    """The variable's path inside the model: the names of the layers containing it, its
    layer's name, its own name (`block1/dense/kernel`). Unlike `variable.path` it leaves
    out the model's own auto-numbered name (`sequential_3/`), and it names nested models
    (two sub-models may each hold a layer called `fc`)."""
    return "/".join([*(c.name for c in containers), layer.name, variable.name])


def relative_path(model: keras.layers.Layer, variable: keras.Variable) -> str:
    """The `model_path` of one of `model`'s variables (a kernel's or another's)."""
    layers = walk(model)
    containers = _containers(layers[1:])
    for layer in layers:
        if any(own is variable for own in _own(layer).values()):
            return model_path(containers.get(id(layer), ()), layer, variable)
    raise ValueError(f"{variable.path} is not a variable of model {model.name!r}.")


def _containers(layers: Sequence[keras.layers.Layer]) -> dict[int, tuple]:
    """Each layer -> the layers (of `layers`) that contain it, outermost first."""
    inside: dict[int, list] = {}
    for layer in layers:  # walk() lists containers before what they contain
        for sub in layer._flatten_layers(include_self=False, recursive=True):
            inside.setdefault(id(sub), []).append(layer)
    return {key: tuple(value) for key, value in inside.items()}


def own_biases(layer: keras.layers.Layer) -> Iterator[keras.Variable]:
    """The layer's own bias variables (named "bias")."""
    variable = _own(layer).get("bias")
    if variable is not None:
        yield variable
