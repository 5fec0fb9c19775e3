"""Each kernel's role in a residual network or Transformer, and its residual block.

Initialization schemes for today's networks (GPT-2's, Fixup, T-Fixup, DeepNet...)
scale each kernel by what it does (an attention value projection, a feed-forward
output, the last kernel of a residual branch, the read-out) and by the depth. `roles`
reads that from any built Keras model, one small rule each:

- a `MultiHeadAttention` (or subclass, keras-hub's included): its query, key, value and
  output projections;
- a Transformer layer whose feed-forward sublayers are attributes (keras-hub's
  `TransformerEncoder` and `TransformerDecoder`: subclassed, so no graph to read): its
  feed-forward input and output kernels, and the layer is one residual block;
- a Functional graph: each two-input add (`keras.layers.Add` or `keras.ops.add`) of a
  shortcut and a branch holding kernels is one residual block; the branch's kernels are
  `branch_inner`, its last `branch_output` (a projection shortcut's kernel stays `other`);
- embeddings are `embedding`; the kernels after the last block, `head`;
- your own subclassed blocks: `roles(model, mapping={"block_*/proj/kernel": "branch_output"})`
  (shell-style patterns on kernel paths), which overrides the rules.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import keras

from keras_inits import tables
from keras_inits.input_activations import input_activations
from keras_inits.kernels import Kernel, find_kernels, walk

ROLES = (
    "embedding", "query", "key", "value", "attention_output", "ffn_in", "ffn_out",
    "branch_inner", "branch_output", "head", "other",
)
# The kernels whose output is added to the residual stream: what depth-scaled schemes scale.
RESIDUAL_OUTPUTS = ("attention_output", "ffn_out", "branch_output")
_ATTENTION = {
    "_query_dense": "query", "_key_dense": "key", "_value_dense": "value",
    "_output_dense": "attention_output",
}
_FEEDFORWARD = {"_feedforward_intermediate_dense": "ffn_in", "_feedforward_output_dense": "ffn_out"}


@dataclasses.dataclass(frozen=True)
class KernelRole:
    """One kernel: its path in the model, its role, its residual block (from 0; None
    outside every block), the fans of its layer type (see `keras_inits.kernels`), its
    layout there ("dense", "conv"...), and `input_activation`: the name of the activation
    its input went through (see `keras_inits.input_activations`; None for an embedding)."""

    path: str
    role: str
    block: int | None
    shape: tuple[int, ...]
    fan_in: int
    fan_out: int
    layout: str = ""
    input_activation: str | None = None


@dataclasses.dataclass(frozen=True)
class Roles:
    """Every kernel's role, in the order of `model.weights`, the number of residual
    blocks (`blocks`: Transformer layers, or residual adds), and whether the model holds
    decoder layers (`decoder`: a layer whose class name ends in "Decoder", as keras-hub's
    `TransformerDecoder`) and encoder layers (`encoder`: "Encoder")."""

    kernels: list[KernelRole]
    blocks: int
    decoder: bool = False
    encoder: bool = False
    # Each block's output operation (a Transformer layer, an add, your block), by block:
    # what `diagnose` taps to measure the residual stream.
    block_outputs: tuple[Any, ...] = dataclasses.field(default=(), repr=False, compare=False)

    def of(self, *roles: str) -> list[KernelRole]:
        """The kernels of the roles named."""
        return [kernel for kernel in self.kernels if kernel.role in roles]

    def require(self, roles: Iterable[str], scheme: str) -> None:
        """Refuses, in one line, a scheme that needs a role this model lacks."""
        wanted = list(roles)
        if not self.of(*wanted):
            raise ValueError(
                f"{scheme} scales {' or '.join(wanted)} kernels, and none was found in this "
                f"model (found: {self._found()}). Name them with roles(model, mapping="
                "{'<path pattern>': '<role>'})."
            )

    def _found(self) -> str:
        counts: dict[str, int] = {}
        for kernel in self.kernels:
            counts[kernel.role] = counts.get(kernel.role, 0) + 1
        return ", ".join(f"{count} {role}" for role, count in counts.items()) or "no kernel"

    def to_dict(self) -> dict[str, Any]:
        return {
            "blocks": self.blocks,
            "decoder": self.decoder,
            "encoder": self.encoder,
            "kernels": [dataclasses.asdict(kernel) for kernel in self.kernels],
        }

    def __str__(self) -> str:
        rows = [
            {
                "kernel": k.path, "shape": k.shape, "role": k.role, "block": k.block,
                "input": k.input_activation,
            }
            for k in self.kernels
        ]
        columns = [
            ("kernel", "kernel"), ("shape", "shape"), ("role", "role"), ("block", "block"),
            ("input", "input activation"),
        ]
        return f"{self.blocks} residual blocks\n" + tables.render(rows, columns)


def roles(model: keras.layers.Layer, mapping: Mapping[str, str] | None = None) -> Roles:
    """Every kernel's role and residual block in the built `model` (see the module
    docstring for the rules). `mapping`: kernel path pattern -> role, for your own
    subclassed blocks; it overrides the rules.

    Raises:
        TypeError, ValueError: not a built Keras model, or a role `mapping` does not know.
    """
    mapping = dict(mapping or {})
    for pattern, name in mapping.items():
        if name not in ROLES:
            raise ValueError(f"roles mapping {pattern!r}: unknown role {name!r}; one of {ROLES}.")
    kernels = find_kernels(model)
    role = {id(k.variable): "embedding" if k.role == "embeddings" else "other" for k in kernels}
    block: dict[int, int] = {}
    outputs: dict[int, Any] = {}
    _attention(kernels, role)
    transformer_blocks = _transformer_layers(model, kernels, role, block, outputs)
    if not transformer_blocks:
        _residual_adds(model, kernels, role, block, outputs)
    _mapped(kernels, mapping, role, block, outputs)
    # Blocks numbered 0, 1... in the order of their first kernel.
    firsts: dict[int, int] = {}
    for kernel in kernels:
        if id(kernel.variable) in block:
            firsts.setdefault(block[id(kernel.variable)], kernel.position)
    number = {old: new for new, old in enumerate(sorted(firsts, key=firsts.get))}
    block = {key: number[value] for key, value in block.items()}
    blocks = len(number)
    if blocks:
        last = max(k.position for k in kernels if id(k.variable) in block)
        for kernel in kernels:
            if kernel.position > last and role[id(kernel.variable)] == "other":
                role[id(kernel.variable)] = "head"
    activation = input_activations(kernels)
    return Roles(
        [
            KernelRole(
                k.path, role[id(k.variable)], block.get(id(k.variable)),
                tuple(k.variable.shape), k.plan.fan_in, k.plan.fan_out, k.plan.layout,
                activation.get(id(k.variable)),
            )
            for k in kernels
        ],
        blocks,
        decoder=any(type(layer).__name__.endswith("Decoder") for layer in walk(model)),
        encoder=any(type(layer).__name__.endswith("Encoder") for layer in walk(model)),
        block_outputs=tuple(outputs[old] for old in sorted(number, key=number.get)),
    )


def _attention(kernels: Sequence[Kernel], role: dict[int, str]) -> None:
    for kernel in kernels:
        for container in kernel.containers:
            if isinstance(container, keras.layers.MultiHeadAttention):
                for attribute, name in _ATTENTION.items():
                    if getattr(container, attribute, None) is kernel.layer:
                        role[id(kernel.variable)] = name


def _transformer_layers(
    model: keras.layers.Layer,
    kernels: Sequence[Kernel],
    role: dict[int, str],
    block: dict,
    outputs: dict,
) -> int:
    """keras-hub's Transformer layers (and any layer with their feed-forward attributes):
    each is a block. Returns how many were found."""
    layers = [layer for layer in walk(model) if all(hasattr(layer, a) for a in _FEEDFORWARD)]
    index = {id(layer): i for i, layer in enumerate(layers)}
    outputs.update(enumerate(layers))
    for kernel in kernels:
        for container in kernel.containers:
            if id(container) in index:
                block[id(kernel.variable)] = index[id(container)]
                for attribute, name in _FEEDFORWARD.items():
                    if getattr(container, attribute) is kernel.layer:
                        role[id(kernel.variable)] = name
    return len(layers)


def _residual_adds(
    model: keras.layers.Layer,
    kernels: Sequence[Kernel],
    role: dict[int, str],
    block: dict,
    outputs: dict,
) -> None:
    """Each add of a Functional graph (the model's or a nested one's) that joins a shortcut
    and a branch holding kernels is a block. A branch that holds another residual block
    (a block of blocks) leaves that block's kernels to it: the innermost add counts."""
    branches = []
    for functional in walk(model):
        if not hasattr(functional, "_nodes_by_depth"):
            continue
        owner = _graph_layers(functional, kernels)
        for nodes in functional._nodes_by_depth.values():
            for node in nodes:
                if type(node.operation).__name__ != "Add" or len(node.input_tensors) != 2:
                    continue
                branch = _branch(node, owner)
                if branch:
                    branches.append((branch, node.operation))
    start = len(set(block.values()))
    for index, (branch, operation) in sorted(
        enumerate(branches), key=lambda item: len(item[1][0])
    ):
        outputs[start + index] = operation
        for position, kernel in enumerate(branch):
            if id(kernel.variable) in block:
                continue  # an inner block's
            block[id(kernel.variable)] = start + index
            if role[id(kernel.variable)] == "other":
                last = position == len(branch) - 1
                role[id(kernel.variable)] = "branch_output" if last else "branch_inner"


def _graph_layers(functional: Any, kernels: Sequence[Kernel]) -> dict[int, list[Kernel]]:
    """Each operation of `functional`'s graph -> the kernels it holds (its own, or those of
    the layers inside it)."""
    operations = {id(op) for op in functional.operations}
    held: dict[int, list[Kernel]] = {}
    for kernel in kernels:
        for layer in (*kernel.containers, kernel.layer):
            if id(layer) in operations:
                held.setdefault(id(layer), []).append(kernel)
                break
    return held


def _ancestors(tensor: Any) -> dict[int, Any]:
    """The graph nodes that `tensor` depends on, its own producer included, by id."""
    operation, node_index, _ = tensor._keras_history
    stack, seen = [operation._inbound_nodes[node_index]], {}
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen[id(node)] = node
        stack.extend(node.parent_nodes)
    return seen


def _branch(node: Any, owner: dict[int, list[Kernel]]) -> list[Kernel]:
    """The kernels of the add `node`'s branch, in weight order: the side that only its
    branch input depends on, when the other input is on the way (identity shortcut),
    else the side holding more kernels (the other: a projection shortcut)."""
    first, second = (_ancestors(tensor) for tensor in node.input_tensors)
    shared = first.keys() & second.keys()
    sides = []
    for own in (first, second):
        held = [k for key in own.keys() - shared for k in owner.get(id(own[key].operation), [])]
        sides.append(sorted(held, key=lambda kernel: kernel.position))
    branch = max(sides, key=len)
    return branch if branch and len(branch) > min(len(side) for side in sides) else []


def _mapped(
    kernels: Sequence[Kernel],
    mapping: Mapping[str, str],
    role: dict[int, str],
    block: dict,
    outputs: dict,
) -> None:
    """`mapping`'s roles (the first pattern that matches a kernel's path). A mapped kernel
    outside every block found so far joins the block of its innermost container layer
    that holds a mapped residual output, those containers numbered after the blocks found."""
    if not mapping:
        return
    for kernel in kernels:
        for pattern, name in mapping.items():
            if fnmatch.fnmatchcase(kernel.path, pattern):
                role[id(kernel.variable)] = name
                break
    blocks = [
        kernel.containers[-1] for kernel in kernels
        if role[id(kernel.variable)] in RESIDUAL_OUTPUTS and kernel.containers
        and id(kernel.variable) not in block
    ]
    start = len(set(block.values()))
    index = {}
    for container in blocks:
        if id(container) not in index:
            index[id(container)] = start + len(index)
            outputs[index[id(container)]] = container
    for kernel in kernels:
        if id(kernel.variable) in block or role[id(kernel.variable)] == "embedding":
            continue
        for container in reversed(kernel.containers):
            if id(container) in index:
                block[id(kernel.variable)] = index[id(container)]
                break
