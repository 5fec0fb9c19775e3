"""The shared machinery: argument checks, seeds, and the one variance-scaling engine.

Every named initializer in `initializers.py` is either a `FanScaling` with a
fixed (scale, mode, distribution), or a `CheckedInitializer` with its own
`_generate`. Checks live here so that all of them refuse bad input the same way.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import keras
import numpy as np

from keras_inits.fans import Layout, check_layout, compute_fans

MODES = ("fan_in", "fan_out", "fan_avg")
DISTRIBUTIONS = ("normal", "uniform")
_MAX_SEED = 2**31 - 1
# keras.random's samplers and ops.qr do not cover 16-bit floats on every
# backend; those dtypes are drawn in float32 and cast.
_SAMPLING_DTYPES = ("float32", "float64")


def check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """Returns `shape` as a tuple of ints, refusing scalars and negative sizes."""
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(
            f"shape must be a tuple of ints such as (64, 32), got {shape!r}."
        ) from None
    for dim in dims:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
            raise TypeError(f"shape must contain ints only, got {shape!r}.")
        if dim < 0:
            raise ValueError(f"shape must not contain negative sizes, got {shape!r}.")
    if not dims:
        raise ValueError(
            "Weight initializers need a shape of rank >= 1 (fans are undefined for a "
            "scalar shape ()). Use keras.initializers.Constant for scalars."
        )
    return tuple(int(dim) for dim in dims)


def check_float_dtype(dtype: str | None) -> str:
    """Returns the standardized dtype name, or `keras.config.floatx()` for None."""
    name = keras.backend.standardize_dtype(dtype or keras.config.floatx())
    if not (name.startswith("float") or name == "bfloat16"):
        raise TypeError(
            f"Weight initializers produce floating-point tensors; got dtype={name!r}. "
            "Use a float dtype such as 'float32'."
        )
    return name


def check_seed(seed: int | None) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(
            f"seed must be an int or None, got {type(seed).__name__}: {seed!r}."
        )
    if not 0 <= seed <= _MAX_SEED:
        raise ValueError(f"seed must be in [0, 2**31 - 1], got {seed}.")
    return int(seed)


def check_number(name: str, value: float) -> float:
    """Refuses anything but a real number (bools included) for argument `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}: {value!r}.")
    return float(value)


def check_positive(name: str, value: float) -> float:
    """Refuses non-numbers, non-finite and non-positive values of argument `name`."""
    check_number(name, value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {name}={value!r}.")
    return float(value)


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"Unknown {name}={value!r}. Use one of {tuple(choices)}.")
    return value


def split_seed(seed: int, count: int) -> list[int]:
    """`count` independent seeds derived from one, the same in every process."""
    state = np.random.SeedSequence(seed).generate_state(count)
    return [int(s) % _MAX_SEED for s in state]


class CheckedInitializer(keras.initializers.Initializer):
    """Base class: the argument checks and zero-size shapes shared by every initializer.

    Subclasses implement `_generate(shape, dtype, seed)` for non-empty shapes
    (dtype is float32 or float64; 16-bit results are cast afterwards), may refuse
    ranks in `_check_shape`, and give a `get_config` whose keys are exactly the
    constructor's arguments.
    """

    def __call__(self, shape: Sequence[int], dtype: str | None = None):
        shape = check_shape(shape)
        dtype = check_float_dtype(dtype)
        self._check_shape(shape)
        if math.prod(shape) == 0:
            return keras.ops.zeros(shape, dtype=dtype)
        sampling_dtype = dtype if dtype in _SAMPLING_DTYPES else "float32"
        values = self._generate(shape, sampling_dtype, self._call_seed())
        return values if sampling_dtype == dtype else keras.ops.cast(values, dtype)

    def _call_seed(self) -> int | None:
        return None

    def _check_shape(self, shape: tuple[int, ...]) -> None:
        """Hook for initializers that accept only some ranks (conv kernels, matrices)."""

    def _generate(self, shape: tuple[int, ...], dtype: str, seed: int | None):
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in self.get_config().items())
        return f"{type(self).__name__}({args})"


class SeededInitializer(CheckedInitializer):
    """Base class of the random initializers: seed checks and per-call seeds.

    An int seed gives the same values on every call and in every process.
    `seed=None` draws a fresh seed from Python's `random` on every call, so two
    unseeded instances differ, one unseeded instance shared by two layers gives
    them different kernels (in Keras 3 it gives identical ones), and
    `keras.utils.set_random_seed` still makes a whole program reproducible.
    `get_config` stores the seed as passed: None stays None, so clones made
    through `from_config(get_config())` (as `MultiHeadAttention` does) differ.
    """

    def __init__(self, seed: int | None = None):
        self.seed = check_seed(seed)

    def _call_seed(self) -> int:
        return self.seed if self.seed is not None else random.randint(0, _MAX_SEED)

    def get_config(self) -> dict:
        return {"seed": self.seed}


@keras.saving.register_keras_serializable(package="keras_inits")
class FanScaling(SeededInitializer):
    """Zero-mean weights with `Var(W) = scale / fan`: the engine behind every fan-based scheme.

    `fan` is `fan_in`, `fan_out`, or `(fan_in + fan_out) / 2` (`mode`), read
    from the kernel shape by `compute_fans(shape, layout)`. `distribution`
    `"normal"` draws from the untruncated N(0, scale / fan) (as torch, unlike
    Keras's truncated "normal"); `"uniform"` from U(-a, a), a = sqrt(3 * scale / fan).

    Args:
        scale: the variance numerator, > 0 (gain^2 for Xavier and Kaiming).
        mode: "fan_in", "fan_out" or "fan_avg".
        distribution: "normal" or "uniform".
        layout: "default", "transpose" or "depthwise", see `compute_fans`.
        seed: int or None.
    """

    def __init__(
        self,
        scale: float = 1.0,
        mode: str = "fan_in",
        distribution: str = "normal",
        layout: Layout = "default",
        seed: int | None = None,
    ):
        self.scale = check_positive("scale", scale)
        self.mode = check_choice("mode", mode, MODES)
        self.distribution = check_choice("distribution", distribution, DISTRIBUTIONS)
        self.layout = check_layout(layout)
        super().__init__(seed=seed)

    def stddev(self, shape: Sequence[int]) -> float:
        """The standard deviation of the weights drawn for `shape`."""
        fan_in, fan_out = compute_fans(shape, self.layout)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}
        return math.sqrt(self.scale / max(1.0, fan[self.mode]))

    def _generate(self, shape: tuple[int, ...], dtype: str, seed: int):
        stddev = self.stddev(shape)
        if self.distribution == "normal":
            return keras.random.normal(
                shape, mean=0.0, stddev=stddev, dtype=dtype, seed=seed
            )
        limit = math.sqrt(3.0) * stddev
        return keras.random.uniform(
            shape, minval=-limit, maxval=limit, dtype=dtype, seed=seed
        )

    def get_config(self) -> dict:
        return {
            "scale": self.scale,
            "mode": self.mode,
            "distribution": self.distribution,
            "layout": self.layout,
            "seed": self.seed,
        }
