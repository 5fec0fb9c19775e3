"""The named initializers. Each is registered as `keras_inits>ClassName` for saving.

Kernel layout is Keras's: `(..., fan_in_axis, fan_out_axis)`, e.g. `(in, out)`
for `Dense` and `(kh, kw, in, out)` for `Conv2D`. `seed` behaves as described
in `SeededInitializer`: an int gives the same values every call and in every
process; None draws fresh values every call.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from keras_inits.base import (
    CheckedInitializer,
    FanScaling,
    SeededInitializer,
    check_choice,
    check_number,
    check_positive,
    split_seed,
)
from keras_inits.fans import Layout
from keras_inits.gains import calculate_gain

_register = keras.saving.register_keras_serializable(package="keras_inits")


def _check_conv_kernel(name: str, shape: tuple[int, ...]) -> None:
    if len(shape) < 3:
        raise ValueError(
            f"{name} is for convolution kernels (rank >= 3: (*kernel_size, in, out)), "
            f"got shape {shape}. Use it as a Conv1D/2D/3D kernel_initializer."
        )


class _Xavier(FanScaling):
    """Var(W) = gain^2 * 2 / (fan_in + fan_out); subclasses fix the distribution."""

    distribution = "normal"

    def __init__(self, gain: float = 1.0, layout: Layout = "default", seed: int | None = None):
        self.gain = check_positive("gain", gain)
        super().__init__(
            scale=self.gain**2,
            mode="fan_avg",
            distribution=self.distribution,
            layout=layout,
            seed=seed,
        )

    def get_config(self) -> dict:
        return {"gain": self.gain, "layout": self.layout, "seed": self.seed}


@_register
class XavierNormal(_Xavier):
    """Xavier/Glorot normal initializer (untruncated), as `torch.nn.init.xavier_normal_`.

    Draws from N(0, std^2) with `std = gain * sqrt(2 / (fan_in + fan_out))`.
    Unlike Keras's `glorot_normal`, which is truncated at two std, this is the
    distribution of the paper and of PyTorch.

    Examples:
        >>> layer = keras.layers.Dense(64, kernel_initializer="xavier_normal")
        >>> init = keras_inits.XavierNormal(gain=keras_inits.calculate_gain("tanh"), seed=0)
        >>> values = init(shape=(256, 128))

    Args:
        gain: scaling factor, > 0 (see `calculate_gain`).
        layout: "default", "transpose" or "depthwise", see `compute_fans`.
        seed: int or None.

    Reference:
        Glorot & Bengio, 2010, "Understanding the difficulty of training deep
        feedforward neural networks", https://proceedings.mlr.press/v9/glorot10a.html
    """

    distribution = "normal"


@_register
class XavierUniform(_Xavier):
    """Xavier/Glorot uniform initializer, as `torch.nn.init.xavier_uniform_`.

    Draws from U(-a, a) with `a = gain * sqrt(6 / (fan_in + fan_out))`: the
    "normalized initialization" of Glorot & Bengio (2010), eq. 16. Same
    distribution as Keras's `glorot_uniform` for `gain=1`.

    Examples:
        >>> layer = keras.layers.Dense(64, kernel_initializer="xavier_uniform")

    Args:
        gain: scaling factor, > 0 (see `calculate_gain`).
        layout: "default", "transpose" or "depthwise", see `compute_fans`.
        seed: int or None.

    Reference:
        Glorot & Bengio, 2010, https://proceedings.mlr.press/v9/glorot10a.html
    """

    distribution = "uniform"


class _Kaiming(FanScaling):
    """Var(W) = gain^2 / fan, gain = calculate_gain(nonlinearity, negative_slope)."""

    distribution = "normal"

    def __init__(
        self,
        negative_slope: float = 0.0,
        mode: str = "fan_in",
        nonlinearity: str = "relu",
        layout: Layout = "default",
        seed: int | None = None,
    ):
        if not isinstance(nonlinearity, str):
            raise TypeError(
                "nonlinearity must be an activation name (so the initializer can be "
                f"saved), got {nonlinearity!r}. For a custom function, compute "
                "g = calculate_gain(fn) and use FanScaling(scale=g**2, mode='fan_in')."
            )
        if negative_slope != 0 and nonlinearity != "leaky_relu":
            raise ValueError(
                f"negative_slope={negative_slope!r} only applies to "
                f"nonlinearity='leaky_relu', got nonlinearity={nonlinearity!r}."
            )
        gain = calculate_gain(nonlinearity, negative_slope)
        self.negative_slope = negative_slope
        self.nonlinearity = nonlinearity
        super().__init__(
            scale=gain**2,
            mode=check_choice("mode", mode, ("fan_in", "fan_out")),
            distribution=self.distribution,
            layout=layout,
            seed=seed,
        )

    def get_config(self) -> dict:
        return {
            "negative_slope": self.negative_slope,
            "mode": self.mode,
            "nonlinearity": self.nonlinearity,
            "layout": self.layout,
            "seed": self.seed,
        }


@_register
class KaimingNormal(_Kaiming):
    """Kaiming/He normal initializer (untruncated), as `torch.nn.init.kaiming_normal_`.

    Draws from N(0, std^2) with `std = gain / sqrt(fan)`, `gain =
    calculate_gain(nonlinearity, negative_slope)` and `fan` the fan_in or
    fan_out (`mode`). With the defaults (relu, fan_in) `Var(W) = 2 / fan_in`.
    Keras's `he_normal` is the truncated variant for relu only.

    Examples:
        >>> layer = keras.layers.Dense(64, activation="relu", kernel_initializer="kaiming_normal")
        >>> init = keras_inits.KaimingNormal(mode="fan_out", nonlinearity="leaky_relu",
        ...                                  negative_slope=0.2)

    Args:
        negative_slope: the slope of `leaky_relu` for x < 0; only used (and only
            allowed to be non-zero) with `nonlinearity="leaky_relu"`.
        mode: "fan_in" preserves the variance of activations in the forward
            pass, "fan_out" that of gradients in the backward pass.
        nonlinearity: any name `calculate_gain` accepts: torch's ("relu",
            "leaky_relu", "tanh", "selu", "linear", ...) or any elementwise Keras
            activation ("gelu", "silu", "elu", ...).
        layout: "default", "transpose" or "depthwise", see `compute_fans`.
        seed: int or None.

    Reference:
        He et al., 2015, "Delving Deep into Rectifiers",
        https://arxiv.org/abs/1502.01852
    """

    distribution = "normal"


@_register
class KaimingUniform(_Kaiming):
    """Kaiming/He uniform initializer, as `torch.nn.init.kaiming_uniform_`.

    Draws from U(-a, a) with `a = gain * sqrt(3 / fan)`, `gain =
    calculate_gain(nonlinearity, negative_slope)`.

    Examples:
        >>> layer = keras.layers.Conv2D(32, 3, activation="relu",
        ...                             kernel_initializer="kaiming_uniform")

    Args:
        negative_slope: as `KaimingNormal`.
        mode: as `KaimingNormal`.
        nonlinearity: as `KaimingNormal`.
        layout: as `KaimingNormal`.
        seed: as `KaimingNormal`.

    Reference:
        He et al., 2015, https://arxiv.org/abs/1502.01852
    """

    distribution = "uniform"


@_register
class StandardUniform(FanScaling):
    """The "standard" heuristic U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    `Var(W) = 1 / (3 * fan_in)`, i.e. `fan_in * Var(W) = 1/3`: the pre-2010
    default that Glorot & Bengio (2010, eq. 1) show makes activations and
    back-propagated gradients shrink with depth. It is also PyTorch's default
    weight initialization of `nn.Linear` and `nn.ConvNd`
    (`kaiming_uniform_(a=sqrt(5))`), so use it to reproduce a PyTorch model.

    Examples:
        >>> layer = keras.layers.Dense(64, kernel_initializer="standard_uniform")

    Args:
        layout: "default", "transpose" or "depthwise", see `compute_fans`.
        seed: int or None.

    Reference:
        Glorot & Bengio, 2010, https://proceedings.mlr.press/v9/glorot10a.html
    """

    def __init__(self, layout: Layout = "default", seed: int | None = None):
        super().__init__(
            scale=1.0 / 3.0, mode="fan_in", distribution="uniform", layout=layout, seed=seed
        )

    def get_config(self) -> dict:
        return {"layout": self.layout, "seed": self.seed}


@_register
class DeltaOrthogonal(SeededInitializer):
    """Delta-orthogonal initializer for convolution kernels.

    Every tap of the `(*kernel_size, in, out)` kernel is zero except the centre
    one (index `k // 2` on each spatial axis), which is `gain * H` with `H` an
    `(in, out)` matrix with orthonormal rows drawn from the Haar measure (QR of a
    Gaussian matrix with sign correction). The convolution then starts as an
    orthogonal, norm-preserving map, which lets very deep vanilla CNNs train.
    Needs `in <= out`.

    Examples:
        >>> layer = keras.layers.Conv2D(64, 3, padding="same",
        ...                             kernel_initializer="delta_orthogonal")

    Args:
        gain: scaling factor of the centre tap, > 0.
        seed: int or None.

    Reference:
        Xiao et al., 2018, "Dynamical Isometry and a Mean Field Theory of CNNs:
        How to Train 10,000-Layer Vanilla Convolutional Neural Networks",
        https://arxiv.org/abs/1806.05393
    """

    def __init__(self, gain: float = 1.0, seed: int | None = None):
        self.gain = check_positive("gain", gain)
        super().__init__(seed=seed)

    def _check_shape(self, shape: tuple[int, ...]) -> None:
        _check_conv_kernel("delta_orthogonal", shape)
        fan_in, fan_out = shape[-2], shape[-1]
        if fan_in > fan_out:
            raise ValueError(
                f"delta_orthogonal needs in_channels <= out_channels, got shape {shape} "
                f"({fan_in} > {fan_out}): a wider input cannot map orthogonally to fewer "
                "channels. Use 'orthogonal' or more filters."
            )

    def _generate(self, shape: tuple[int, ...], dtype: str, seed: int):
        fan_in, fan_out = shape[-2], shape[-1]
        gaussian = keras.random.normal((fan_out, fan_in), dtype=dtype, seed=seed)
        q, r = keras.ops.qr(gaussian, mode="reduced")
        # Sign correction makes Q Haar-distributed (Mezzadri 2007).
        signs = keras.ops.sign(keras.ops.diagonal(r))
        signs = keras.ops.where(signs == 0, 1.0, signs)
        centre_matrix = keras.ops.transpose(q * signs) * self.gain
        spatial = shape[:-2]
        centre_tap = np.zeros(spatial + (1, 1), dtype=dtype)
        centre_tap[tuple(k // 2 for k in spatial)] = 1.0
        return keras.ops.convert_to_tensor(centre_tap) * centre_matrix

    def get_config(self) -> dict:
        return {"gain": self.gain, "seed": self.seed}


@_register
class Dirac(CheckedInitializer):
    """Dirac (identity-convolution) initializer, as `torch.nn.init.dirac_`.

    For a `(*kernel_size, in, out)` kernel with `groups` groups, sets
    `kernel[centre, i, g * out_per_group + i] = 1` for every group `g` and
    `i < min(out_per_group, in)`, and zero elsewhere (`centre` is `k // 2` on
    each spatial axis). The convolution then passes the first
    `min(out_per_group, in)` input channels of each group through unchanged.
    Deterministic: it takes no seed.

    Examples:
        >>> layer = keras.layers.Conv2D(16, 3, padding="same", kernel_initializer="dirac")
        >>> grouped = keras.layers.Conv2D(8, 3, groups=2, kernel_initializer=keras_inits.Dirac(2))

    Args:
        groups: the layer's number of groups; `out` must be divisible by it.

    Reference:
        torch.nn.init.dirac_; Zagoruyko & Komodakis, 2017, "DiracNets",
        https://arxiv.org/abs/1706.00388
    """

    def __init__(self, groups: int = 1):
        if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)):
            raise TypeError(f"groups must be an int, got {groups!r}.")
        if groups < 1:
            raise ValueError(f"groups must be >= 1, got groups={groups}.")
        self.groups = int(groups)

    def _check_shape(self, shape: tuple[int, ...]) -> None:
        _check_conv_kernel("dirac", shape)
        if shape[-1] % self.groups:
            raise ValueError(
                f"dirac: out_channels ({shape[-1]}, shape {shape}) must be divisible by "
                f"groups={self.groups}."
            )

    def _generate(self, shape: tuple[int, ...], dtype: str, seed: None):
        fan_in, fan_out = shape[-2], shape[-1]
        out_per_group = fan_out // self.groups
        kernel = np.zeros(shape, dtype=dtype)
        centre = tuple(k // 2 for k in shape[:-2])
        for group in range(self.groups):
            for channel in range(min(out_per_group, fan_in)):
                kernel[centre + (channel, group * out_per_group + channel)] = 1.0
        return keras.ops.convert_to_tensor(kernel, dtype=dtype)

    def get_config(self) -> dict:
        return {"groups": self.groups}


@_register
class Sparse(SeededInitializer):
    """Sparse initializer, as `torch.nn.init.sparse_` on the `(fan_in, fan_out)` matrix.

    In each output column of a 2-D kernel, exactly `ceil(sparsity * fan_in)`
    incoming weights, chosen uniformly at random, are zero; the others are drawn
    from N(0, stddev^2). Each unit thus gets a fixed number of non-zero inputs,
    whatever the layer's width.

    Examples:
        >>> layer = keras.layers.Dense(256, kernel_initializer="sparse")
        >>> init = keras_inits.Sparse(sparsity=0.8, stddev=0.05, seed=1)

    Args:
        sparsity: the fraction of zeros per column, in [0, 1).
        stddev: the standard deviation of the non-zero weights, >= 0.
        seed: int or None.

    Reference:
        Martens, 2010, "Deep learning via Hessian-free optimization",
        https://www.cs.toronto.edu/~jmartens/docs/Deep_HessianFree.pdf
    """

    def __init__(self, sparsity: float = 0.9, stddev: float = 0.01, seed: int | None = None):
        check_number("sparsity", sparsity)
        check_number("stddev", stddev)
        if not 0 <= sparsity < 1:
            raise ValueError(f"sparsity must be in [0, 1), got sparsity={sparsity!r}.")
        if not (math.isfinite(stddev) and stddev >= 0):
            raise ValueError(f"stddev must be finite and >= 0, got stddev={stddev!r}.")
        self.sparsity = float(sparsity)
        self.stddev = float(stddev)
        super().__init__(seed=seed)

    def _check_shape(self, shape: tuple[int, ...]) -> None:
        if len(shape) != 2:
            raise ValueError(
                f"sparse is for 2-D (fan_in, fan_out) kernels such as Dense's, got shape "
                f"{shape}."
            )

    def _generate(self, shape: tuple[int, ...], dtype: str, seed: int):
        fan_in = shape[0]
        num_zeros = math.ceil(self.sparsity * fan_in)
        mask_seed, value_seed = split_seed(seed, 2)
        # Ranking uniform noise down each column picks num_zeros rows uniformly
        # at random, exactly num_zeros per column, with tensor ops only.
        noise = keras.random.uniform(shape, dtype=dtype, seed=mask_seed)
        ranks = keras.ops.argsort(keras.ops.argsort(noise, axis=0), axis=0)
        keep = keras.ops.cast(ranks >= num_zeros, dtype)
        values = keras.random.normal(shape, stddev=self.stddev, dtype=dtype, seed=value_seed)
        return values * keep

    def get_config(self) -> dict:
        return {"sparsity": self.sparsity, "stddev": self.stddev, "seed": self.seed}


@_register
class TruncNormal(SeededInitializer):
    """N(mean, std^2) truncated to [a, b], absolute bounds, as `torch.nn.init.trunc_normal_`.

    Values outside [a, b] are not redrawn one by one: a uniform value between the normal's
    CDF at a and at b goes through the inverse CDF (torch's method), so every draw lands in
    [a, b] and the density inside is the normal's, renormalized. The normal's tails beyond
    5.3 std (a mass of 1e-7) are not drawn, as float32 keeps torch's own draws within 5.4.

    The bounds are values, not multiples of `std`: with the defaults (+-2) and a small
    std (ViT's and timm's `trunc_normal_(std=0.02)`), hardly anything is cut and the
    weights' std is `std`. Keras's `TruncatedNormal(stddev=s)` cuts at 2 s instead, so its
    weights' std is 0.88 s: porting `trunc_normal_(std=0.02)` as `TruncatedNormal(0.02)`
    shrinks every weight's scale by 12%.

    Examples:
        >>> layer = keras.layers.Dense(768, kernel_initializer=keras_inits.TruncNormal(std=0.02))
        >>> init = keras_inits.get("trunc_normal(std=0.02, a=-0.04, b=0.04)")

    Args:
        mean: the normal's mean.
        std: the normal's standard deviation (before truncation), > 0.
        a: the lower bound, a value (not a multiple of `std`).
        b: the upper bound, > a.
        seed: int or None.

    Reference:
        PyTorch `torch.nn.init.trunc_normal_`, after "Truncated Normal Distribution"
        (Burkardt, 2014), https://people.sc.fsu.edu/~jburkardt/presentations/truncated_normal.pdf
    """

    def __init__(
        self,
        mean: float = 0.0,
        std: float = 1.0,
        a: float = -2.0,
        b: float = 2.0,
        seed: int | None = None,
    ):
        self.mean = check_number("mean", mean)
        self.std = check_positive("std", std)
        self.a, self.b = check_number("a", a), check_number("b", b)
        for name, value in (("mean", self.mean), ("std", self.std), ("a", self.a), ("b", self.b)):
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {name}={value!r}.")
        if not self.a < self.b:
            raise ValueError(
                f"trunc_normal needs a < b (absolute bounds), got a={self.a!r}, b={self.b!r}."
            )
        super().__init__(seed=seed)

    def _generate(self, shape: tuple[int, ...], dtype: str, seed: int):
        low, high = (_normal_cdf((bound - self.mean) / self.std) for bound in (self.a, self.b))
        if high - low < 1e-6:
            # Both bounds in one tail: the inverse CDF has no float precision left there.
            raise ValueError(
                f"trunc_normal(mean={self.mean}, std={self.std}, a={self.a}, b={self.b}): the "
                f"interval holds {high - low:.1e} of the normal's mass, too far in a tail to "
                "draw from; move the bounds toward the mean or widen std."
            )
        uniform = keras.random.uniform(
            shape, minval=2 * low - 1, maxval=2 * high - 1, dtype=dtype, seed=seed
        )
        # The uniform's range includes its minval: a draw of exactly -1 (bounds far out, as
        # torch's default +-2 at std 0.02) made erfinv infinite, and the clip below put it on
        # the bound, 100 std out. Kept inside +-(1 - 2^-23): every backend's erfinv is finite
        # there in float32 and float64 (TensorFlow's is not at float32's last value below 1),
        # so draws reach 5.3 std at most, as torch's float32 draws reach 5.4.
        uniform = keras.ops.clip(uniform, _UNIFORM_EDGE - 1.0, 1.0 - _UNIFORM_EDGE)
        values = keras.ops.erfinv(uniform) * (self.std * math.sqrt(2.0)) + self.mean
        return keras.ops.clip(values, self.a, self.b)  # round-off at the bounds

    def get_config(self) -> dict:
        return {"mean": self.mean, "std": self.std, "a": self.a, "b": self.b, "seed": self.seed}


_UNIFORM_EDGE = 2.0**-23


def _normal_cdf(x: float) -> float:
    return (1.0 + math.erf(x / math.sqrt(2.0))) / 2.0
