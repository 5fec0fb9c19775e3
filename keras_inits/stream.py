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


@dataclasses.dataclass(frozen=True)
class StreamPoint:
    """A residual block's output operation (a Transformer layer, an add, your block), tapped
    like a `taps.Tap`: `block` its index, `path` its name, `attention` whether the block
    holds an attention layer."""

    layer: Any
    block: int
    path: str
    attention: bool

    @property
    def tag(self) -> str:
        """Its TensorBoard tag: zero-padded, so that blocks sort in order."""
        return f"block_{self.block:02d}"


def stream_order(
    model: keras.layers.Layer, x: Any, found: Roles, skip: Sequence[Any] = ()
) -> tuple[list[StreamPoint], list[tuple[tuple[int, ...], str]]]:
    """The blocks whose output operation `model` calls on `x`, in block order, and the
    (shape, dtype) of each output. `skip`: layers tapped already (a block output that is
    itself a layer with a kernel is measured there)."""
    attention = {kernel.block for kernel in found.of("attention_output")}
    points = [
        StreamPoint(operation, block, getattr(operation, "path", None) or operation.name,
                    block in attention)
        for block, operation in enumerate(found.block_outputs)
        if not any(operation is layer for layer in skip)
    ]
    if not points:
        return [], []
    first: dict[int, Any] = {}

    def record(point, call, args, kwargs):
        outputs = call(*args, **kwargs)
        first.setdefault(point.block, main_output(outputs))
        return outputs

    with intercept(points, record):
        call_model(model, x)
    called = [point for point in points if point.block in first]
    specs = [
        (tuple(first[p.block].shape), keras.backend.standardize_dtype(first[p.block].dtype))
        for p in called
    ]
    return called, specs


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
