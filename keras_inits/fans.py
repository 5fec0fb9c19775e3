"""Fan-in and fan-out of a kernel shape, for each kernel layout Keras uses.

Keras kernels put the spatial (receptive-field) axes first and the two
channel axes last. Which of the last two axes is the input depends on the
layer, and Keras's own `compute_fans` always assumes `(..., in, out)`: right
for `Dense` and `Conv*`, wrong for `Conv*Transpose` kernels `(..., out, in)`
(tensorflow#31192) and for depthwise kernels `(..., in, multiplier)`
(keras#11773). The `layout` argument says which one a kernel has.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

Layout = Literal["default", "transpose", "depthwise"]
LAYOUTS: tuple[str, ...] = ("default", "transpose", "depthwise")


def check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise ValueError(
            f"Unknown layout={layout!r}. Use one of {LAYOUTS}: 'default' for Dense/Conv "
            "kernels (..., in, out), 'transpose' for Conv*Transpose kernels (..., out, in), "
            "'depthwise' for DepthwiseConv/SeparableConv depthwise kernels "
            "(..., in, multiplier)."
        )
    return layout


def compute_fans(shape: Sequence[int], layout: Layout = "default") -> tuple[int, int]:
    """Returns `(fan_in, fan_out)` of a kernel of the given shape.

    With `receptive_field = prod(shape[:-2])`:

    - `"default"` `(..., in, out)`: `fan_in = in * rf`, `fan_out = out * rf`
      (Keras's and torch's convention for `Dense` and `Conv*` kernels).
    - `"transpose"` `(..., out, in)`: `fan_in = in * rf`, `fan_out = out * rf`,
      reading the channel axes the other way round.
    - `"depthwise"` `(..., in, multiplier)`: each output channel sees one
      input channel, so `fan_in = rf` and `fan_out = multiplier * rf`.
      (torch, whose depthwise weight is `(in * multiplier, 1, *k)`, gives the
      same `fan_in`.)

    Shapes of rank 1 (a bias, say) use `fan_in = fan_out = shape[0]`, as Keras
    does.

    Args:
        shape: the kernel shape, rank >= 1.
        layout: which of the last two axes is the input, see above.

    Returns:
        A pair of ints.
    """
    check_layout(layout)
    shape = tuple(shape)
    if len(shape) == 0:
        raise ValueError("Fans are undefined for a scalar shape ().")
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive_field = math.prod(shape[:-2])
    if layout == "default":
        fan_in, fan_out = shape[-2], shape[-1]
    elif layout == "transpose":
        fan_out, fan_in = shape[-2], shape[-1]
    else:
        fan_in, fan_out = 1, shape[-1]
    return fan_in * receptive_field, fan_out * receptive_field
