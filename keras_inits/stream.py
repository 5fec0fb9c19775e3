"""The residual stream: each residual block's output, measured on a batch.

In a residual network every block adds its branch to the stream, so the stream's scale is
set by depth as much as by any one layer: with He-initialized branches and no
normalization its variance multiplies at each block; in a pre-LN Transformer each branch
adds variance, so the stream grows with the number of blocks unless the branch outputs
are scaled by depth (GPT-2's scheme). `stream_order` finds the operation that produces each
block's output (`Roles.block_outputs`: a Transformer layer, an add, your block), which
`SignalProbe(..., stream=True)` taps beside the layers (its output and dLoss/d output, in
the same forward and backward pass); `stream_verdict` says whether the stream grows, how,
and which scheme keeps it level.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from keras_inits.roles import Roles
from keras_inits.taps import call_model, intercept, main_output

# Growth of the stream's std from the first block's output to the last's beyond which
# diagnose says so.
STREAM_GROWTH = 2.0
# The variance the later half of the blocks adds over what the earlier half adds: r^(blocks
# / 2) when each block multiplies the variance by r, about 1 when each adds the same. Above
# _MULTIPLIES the verdict says it multiplies, within _ADDS that it adds; between, neither.
_MULTIPLIES = 3.0
_ADDS = (0.5, 1.5)


@dataclasses.dataclass(frozen=True, eq=False)
class StreamOperation:
    """An operation whose output is a block's (a Transformer layer, an add, your block),
    shaped like a `taps.Tap` for `intercept`. One per operation, however many blocks it
    serves (a shared `Add` layer)."""

    layer: Any


@dataclasses.dataclass(frozen=True)
class StreamPoint:
    """A residual block's output: the `call`-th call of `operation` in the forward pass;
    `block` its index, `path` the operation's name, `attention` whether the block holds
    an attention layer."""

    operation: StreamOperation
    call: int
    block: int
    path: str
    attention: bool

    @property
    def tag(self) -> str:
        """Its TensorBoard tag, zero-padded so that blocks sort in order."""
        return f"block_{self.block:03d}"


def stream_order(
    model: keras.layers.Layer, x: Any, found: Roles, skip: Sequence[Any] = ()
) -> tuple[list[StreamPoint], list[tuple[tuple[int, ...], str]]]:
    """The blocks whose output `model` computes on `x`, in block order, and the (shape,
    dtype) of each output. Blocks sharing one operation (a reused `Add` layer) are its
    successive calls. `skip`: layers tapped already as layers with a kernel; a block whose
    output is such a layer is left out of the stream."""
    attention = {kernel.block for kernel in found.of("attention_output")}
    operations: dict[int, StreamOperation] = {}
    planned = []
    for block, operation in enumerate(found.block_outputs):
        if any(operation is layer for layer in skip):
            continue
        wrapper = operations.setdefault(id(operation), StreamOperation(operation))
        call = sum(point.operation is wrapper for point in planned)
        name = getattr(operation, "path", None) or operation.name
        planned.append(StreamPoint(wrapper, call, block, name, block in attention))
    if not planned:
        return [], []
    outputs: dict[int, list[Any]] = {}

    def record(operation, call, args, kwargs):
        result = call(*args, **kwargs)
        outputs.setdefault(id(operation), []).append(main_output(result))
        return result

    with intercept(list(operations.values()), record):
        call_model(model, x)
    points, specs = [], []
    for point in planned:
        calls = outputs.get(id(point.operation), [])
        if point.call < len(calls):
            output = calls[point.call]
            points.append(point)
            specs.append((tuple(output.shape), keras.backend.standardize_dtype(output.dtype)))
    return points, specs


def stream_verdict(
    rows: Sequence[Any], limit: float = STREAM_GROWTH, attention: bool = False
) -> str | None:
    """Says, in words, whether the stream's std grows more than `limit` times from the
    first block's output to the last's, how (multiplying at each block, or adding about
    the same variance at each), and which scheme keeps it level (`attention`: the blocks
    are Transformer layers); None when it does not grow that much."""
    stds = [row["output_std"] for row in rows]
    if len(stds) < 3 or not all(math.isfinite(s) and s > 0 for s in stds):
        return None
    growth = stds[-1] / stds[0]
    if growth <= limit:
        return None
    per_block = growth ** (1 / (len(stds) - 1))
    # What each block adds to the variance: about the same at every block when the
    # growth adds, itself growing geometrically when it multiplies.
    added = np.diff(np.square(stds))
    half = len(added) // 2
    early, late = float(np.sum(added[:half])), float(np.sum(added[-half:]))
    ratio = late / early if early > 0 else math.nan
    if ratio > _MULTIPLIES:
        how = "it multiplies at every block, each adding in proportion to the stream"
    elif _ADDS[0] < ratio < _ADDS[1]:
        how = "each block adds about the same variance, so it grows with the number of blocks"
    else:
        how = "it grows unevenly from block to block"
    if attention:
        remedy = (
            "scheme='gpt2' (or 'megatron', 'mitchell') scales the kernels that write into "
            "the stream by depth, so that their sum keeps the variance of one"
        )
    else:
        remedy = (
            "scheme='fixup' or 'zero_branch' starts each branch at zero (without "
            "normalization), or scheme='gpt2' scales the branch outputs by depth"
        )
    return (
        f"The residual stream grows {growth:.3g}x from block {rows[0]['block']}'s output to "
        f"block {rows[-1]['block']}'s ({per_block:.3g}x per block): {how}; {remedy}."
    )
