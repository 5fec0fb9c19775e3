"""`jacobian_spectrum`: the singular values of a model's input-output Jacobian, and whether
they show dynamical isometry.

For each example, J_i = d f(x_i) / d x_i (input and output flattened) has n = min(n_in,
n_out) singular values sigma: how much back-propagated gradients are stretched, direction by
direction. Mean-field theory fixes their mean square, chi_1^L for L random layers
(`keras_inits.theory`): 1 at the edge of chaos. Dynamical isometry (Saxe et al. 2014;
Pennington et al. 2017) is every sigma near 1: exactly so for orthogonal linear networks,
nearly for orthogonal tanh ones at small q*, never for Gaussian weights at depth.

Two methods, both on the backend's own autodiff (`keras_inits.autodiff`):

- "exact": every J_i in one vectorized reverse-mode pass, then NumPy's SVD in float64.
- "lanczos": matrix-free; k steps of Lanczos on the n x n Gram matrix (J^T J or J J^T),
  each one Jacobian-vector and one vector-Jacobian product, from a random unit vector v
  per example. The extreme Ritz values converge fast to the extreme sigma^2 (the largest
  from below, the smallest from above); with k = n they are the whole spectrum. The mean
  and variance of sigma^2 are Hutchinson estimates, which need no convergence:
  E[v^T G v] = tr(G) / n and E[|G v|^2] = tr(G^2) / n, one probe per example (standard
  error about sqrt(2 var(sigma^2) / ((n + 2) examples))). The histogram is stochastic
  Lanczos quadrature: Ritz values weighted by the squared first entries of T's eigenvectors.

References:
    Saxe, McClelland & Ganguli 2014, "Exact solutions to the nonlinear dynamics of learning
    in deep linear neural networks", https://arxiv.org/abs/1312.6120
    Pennington, Schoenholz & Ganguli 2017, "Resurrecting the sigmoid in deep learning
    through dynamical isometry: theory and practice", https://arxiv.org/abs/1711.04735
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from keras_inits import autodiff
from keras_inits._extras import HARNESS, require, save_figure
from keras_inits.base import check_choice, check_seed
from keras_inits.kernels import walk
from keras_inits.taps import as_declared, call_model, check_batch, intercept, main_output

METHODS = ("auto", "exact", "lanczos")
EXACT_LIMIT = 2**20
"""Jacobian entries per example up to which `method="auto"` is exact (1024 x 1024: an SVD of
about 0.2 s, growing as n^3 beyond); "exact" holds at most 16 times that many at once."""
THRESHOLDS: dict[str, float] = {"mean_squared_factor": 2.0, "relative_variance": 0.5}
"""Dynamical isometry: mean sigma^2 within a factor 2 of 1 (the gradient's scale kept within
sqrt(2)), and var(sigma^2) / mean^2 at most half that of one square Gaussian matrix
(Marchenko-Pastur: 1), i.e. less spread than a single random layer has; L orthogonal linear
layers have 0, L Gaussian ones L."""


@dataclasses.dataclass(frozen=True, eq=False)
class JacobianSpectrum:
    """The singular values of a model's input-output Jacobian, pooled over a batch.

    Attributes:
        singular_values: every example's singular values ("exact") or Ritz values
            sqrt(theta) ("lanczos").
        weights: each value's share of the spectrum, summing to 1: equal for "exact", the
            quadrature weights for "lanczos".
        mean_squared: the mean of sigma^2, tr(J J^T) / n averaged over the examples.
        variance_squared: the variance of sigma^2 over the pooled spectrum.
        max: the largest singular value ("lanczos": the largest Ritz value, a lower bound).
        min: the smallest ("lanczos": an upper bound).
        method: "exact" or "lanczos".
        examples: how many examples were pooled.
        shape: (n_out, n_in) of each example's Jacobian.
        iterations: the Lanczos steps taken (None for "exact").
    """

    singular_values: np.ndarray
    weights: np.ndarray
    mean_squared: float
    variance_squared: float
    max: float
    min: float
    method: str
    examples: int
    shape: tuple[int, int]
    iterations: int | None = None

    @property
    def condition(self) -> float:
        """max / min (inf when the smallest singular value is 0)."""
        return self.max / self.min if self.min > 0 else math.inf

    @property
    def relative_variance(self) -> float:
        """var(sigma^2) / mean(sigma^2)^2: the spread, whatever the scale (NaN when J = 0)."""
        return self.variance_squared / self.mean_squared**2 if self.mean_squared else math.nan

    @property
    def isometric(self) -> bool:
        """Whether the spectrum passes both checks of `THRESHOLDS`."""
        factor = THRESHOLDS["mean_squared_factor"]
        return bool(1.0 / factor <= self.mean_squared <= factor
                    and self.relative_variance <= THRESHOLDS["relative_variance"])

    @property
    def verdict(self) -> str:
        """Dynamical isometry or not, in words, with the numbers that decide it."""
        factor, spread = THRESHOLDS["mean_squared_factor"], THRESHOLDS["relative_variance"]
        mean, relative = self.mean_squared, self.relative_variance
        numbers = (f"mean sigma^2 = {mean:.3g} (isometry: within [{1 / factor:g}, {factor:g}]), "
                   f"var(sigma^2)/mean^2 = {relative:.3g} (isometry: <= {spread:g}), "
                   f"sigma in [{self.min:.3g}, {self.max:.3g}]")
        if self.isometric:
            return f"Dynamical isometry: {numbers}."
        if mean == 0:
            return f"No dynamical isometry: {numbers}; the output does not depend on the input."
        problems = []
        if mean < 1.0 / factor:
            problems.append("gradients shrink through the network (ordered phase, chi_1 < 1?)")
        elif mean > factor:
            problems.append("gradients grow through the network (chaotic phase, chi_1 > 1?)")
        if relative > spread:
            problems.append("the singular values are spread out: some directions are "
                            "amplified, others lost (Gaussian weights at depth? try orthogonal)")
        return f"No dynamical isometry: {numbers}; {'; '.join(problems)}."

    def histogram(self, bins: int | Sequence[float] = 30) -> tuple[np.ndarray, np.ndarray]:
        """(fractions, edges): each bin's share of the spectrum; `bins` as `np.histogram`'s."""
        return np.histogram(self.singular_values, bins, weights=self.weights)

    def to_dict(self) -> dict[str, Any]:
        """The statistics, the verdict and a 30-bin histogram, JSON-ready (NaN and inf as
        None); the singular values themselves stay in the attribute."""
        fractions, edges = self.histogram()
        numbers = {key: getattr(self, key) for key in (
            "mean_squared", "variance_squared", "relative_variance", "max", "min", "condition")}
        return {
            **{key: value if math.isfinite(value) else None for key, value in numbers.items()},
            "method": self.method, "examples": self.examples, "shape": list(self.shape),
            "iterations": self.iterations, "isometric": self.isometric, "verdict": self.verdict,
            "histogram": {"fractions": fractions.tolist(), "edges": edges.tolist()},
        }

    def __str__(self) -> str:
        how = "lanczos: Hutchinson moments, Ritz extremes" if self.method == "lanczos" else "exact"
        return "\n".join([
            f"Jacobian spectrum ({how}), {self.examples} example(s) of {self.shape[0]} x "
            f"{self.shape[1]}",
            f"  mean sigma^2         {self.mean_squared:.4g}",
            f"  var sigma^2          {self.variance_squared:.4g} "
            f"(relative {self.relative_variance:.4g})",
            f"  sigma min .. max     {self.min:.4g} .. {self.max:.4g}",
            f"  condition (max/min)  {self.condition:.4g}",
            self.verdict,
        ])

    def plot(self, path: str | Path | None = None, title: str | None = None) -> Any:
        """The histogram of the singular values, as `plot_spectra` draws it (needs
        matplotlib: `pip install 'keras-inits[harness]'`)."""
        return plot_spectra({title or "model": self}, path)


def jacobian_spectrum(
    model: keras.layers.Layer,
    x: Any,
    *,
    method: str = "auto",
    output: str | None = None,
    iterations: int = 32,
    seed: int | None = 0,
) -> JacobianSpectrum:
    """The singular values of the input-output Jacobian at the model's current weights.

    J_i = d f(x_i) / d x_i per example, input and output flattened; sigma are its n =
    min(n_in, n_out) singular values pooled over the batch, and mean_squared = tr(J_i J_i^T)
    / n averaged over it (chi_1^L in mean-field theory). The model runs with
    `training=False`, so each example's output depends on its own input alone. "exact"
    computes every J_i, "lanczos" only products with it (`keras_inits.spectrum` says what is
    then exact and what estimated).

    Examples:
        >>> model = keras.Sequential([keras.Input((64,))] + [keras.layers.Dense(
        ...     64, use_bias=False, kernel_initializer="orthogonal") for _ in range(4)])
        >>> x = np.random.default_rng(0).standard_normal((8, 64)).astype("float32")
        >>> spectrum = keras_inits.jacobian_spectrum(model, x)
        >>> round(spectrum.min, 4), round(spectrum.max, 4), spectrum.isometric
        (1.0, 1.0, True)

    Args:
        model: a built Keras model with one float input tensor.
        x: one batch of inputs.
        method: "exact", "lanczos", or "auto": exact up to `EXACT_LIMIT` (2**20) Jacobian
            entries per example, Lanczos beyond.
        output: the name of a layer whose output ends the Jacobian (the logits before a
            softmax, say; its first call if it is called several times); default the
            model's output.
        iterations: Lanczos steps (at most n), each one Jacobian-vector and one
            vector-Jacobian product over the batch; ignored by "exact".
        seed: seed of the Lanczos start vectors.

    Returns:
        A `JacobianSpectrum`: `print` it, `.verdict`, `.to_dict()`, `.plot(path)`.

    Raises:
        ValueError: an unknown method or layer name, iterations < 1, x not one batch or not
            fitting the model, several inputs, or several outputs without `output`.
        TypeError: integer inputs (token ids have no derivative), a non-integer
            `iterations`, a bad seed.
    """
    check_choice("method", method, METHODS)
    if isinstance(iterations, bool) or not isinstance(iterations, int | np.integer):
        raise TypeError(f"iterations must be an int, got {iterations!r}.")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1 (Lanczos steps), got {iterations}.")
    seed = check_seed(seed)
    # Salted: x itself is often drawn from default_rng(0), and a probe along x is no random
    # direction (J x is the response to scaling the input), which would bias the estimates.
    rng = np.random.default_rng(None if seed is None else [seed, 1711_04735])
    x = _one_input(model, check_batch(x))
    flat, n_out = _flat_function(model, x, output)
    batch, n_in = x.shape[0], math.prod(x.shape[1:])
    x_flat = x.reshape(batch, n_in)
    if method == "auto":
        method = "exact" if n_in * n_out <= EXACT_LIMIT else "lanczos"
    if method == "lanczos":
        return _lanczos(flat, x_flat, model.variables, n_out, min(iterations, n_in, n_out), rng)
    chunk = max(1, 16 * EXACT_LIMIT // (n_in * n_out))
    jacobians = (_numpy(autodiff.batch_jacobian(
        flat, keras.ops.convert_to_tensor(x_flat[i:i + chunk]), model.variables))
        for i in range(0, batch, chunk))
    values = np.concatenate([np.linalg.svd(j, compute_uv=False).ravel() for j in jacobians])
    return _pooled(values, "exact", batch, (n_out, n_in))


def _flat_function(model: keras.layers.Layer, x: np.ndarray, output: str | None):
    """(f, n_out): f maps flattened inputs (batch, n_in) to flattened outputs (batch, n_out),
    the model's or the `output` layer's; checked once on `x`."""
    layer = _find_layer(model, output)

    def run(inputs: Any) -> Any:
        captured: list[Any] = []

        def hook(_, call, args, kwargs):
            result = call(*args, **kwargs)
            if not captured:
                captured.append(main_output(result))
            return result

        # intercept reads only `.layer` of what it taps: any layer can end the Jacobian.
        with intercept([types.SimpleNamespace(layer=layer)] if layer else [], hook):
            outputs = call_model(model, inputs) if isinstance(inputs, np.ndarray) else \
                model(as_declared(model, inputs), training=False)
        if layer is not None and not captured:
            raise ValueError(f"Layer {output!r} is not called when model {model.name!r} runs "
                             "on x: pass the name of a layer on the way from input to output.")
        return captured[0] if layer is not None else outputs

    outputs = keras.tree.flatten(run(x))
    if len(outputs) != 1:
        raise ValueError(f"Model {model.name!r} has {len(outputs)} outputs: pass "
                         "output=<layer name> to say which one ends the Jacobian.")
    y = outputs[0]
    if "float" not in keras.backend.standardize_dtype(y.dtype):
        raise TypeError(f"The output has dtype {y.dtype}, which has no derivative: pass "
                        "output=<name of a layer with a float output>.")
    if len(y.shape) < 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"The output has shape {tuple(y.shape)}, not one row per example of "
                         f"x ({x.shape[0]}): the Jacobian is taken per example.")
    n_out = math.prod(y.shape[1:])

    def flat(inputs: Any) -> Any:
        outputs = run(keras.ops.reshape(inputs, (inputs.shape[0], *x.shape[1:])))
        return keras.ops.reshape(outputs, (outputs.shape[0], n_out))

    return flat, n_out


def _lanczos(flat, x_flat, variables, n_out, steps, rng) -> JacobianSpectrum:
    """`steps` Lanczos steps on every example's n x n Gram matrix at once (see the module)."""
    batch, n_in = x_flat.shape
    _, jvp, vjp = autodiff.linearize(flat, keras.ops.convert_to_tensor(x_flat), variables)

    def product(function, vectors):
        return _numpy(function(keras.ops.convert_to_tensor(vectors.astype(x_flat.dtype))))

    def gram(v):  # the smaller of J^T J and J J^T: its eigenvalues are exactly the sigma^2
        return product(vjp, product(jvp, v)) if n_in <= n_out else product(jvp, product(vjp, v))

    n = min(n_in, n_out)
    basis = np.zeros((steps, batch, n))
    alpha, beta = np.zeros((batch, steps)), np.zeros((batch, steps - 1))
    v = rng.standard_normal((batch, n))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    for j in range(steps):
        basis[j] = v
        w = gram(v)
        alpha[:, j] = np.sum(v * w, axis=1)
        if j == 0:  # Hutchinson: v^T G v and |G v|^2 are unbiased for tr(G) / n, tr(G^2) / n
            first, second = alpha[:, 0].copy(), np.sum(w * w, axis=1)
        if j + 1 == steps:
            break
        w = _orthogonalize(w, basis[: j + 1])
        norm = np.linalg.norm(w, axis=1)
        # An invariant subspace (G v already in the span, as for G = I): go on from a fresh
        # random direction, decoupled from it (beta = 0), which keeps the weights right.
        stop = norm <= 1e-6 * np.maximum(np.abs(alpha[:, : j + 1]).max(axis=1), 1e-30)
        if np.any(stop):
            w[stop] = _orthogonalize(rng.standard_normal((int(stop.sum()), n)),
                                     basis[: j + 1, stop])
            norm[stop] = np.linalg.norm(w[stop], axis=1)
        beta[:, j] = np.where(stop, 0.0, norm)
        v = w / norm[:, None]
    tridiagonal = np.zeros((batch, steps, steps))
    diagonal, off = np.arange(steps), np.arange(steps - 1)
    tridiagonal[:, diagonal, diagonal] = alpha
    tridiagonal[:, off, off + 1] = tridiagonal[:, off + 1, off] = beta
    theta, vectors = np.linalg.eigh(tridiagonal)
    values = np.sqrt(np.clip(theta, 0.0, None)).ravel()
    if steps == n:  # an orthonormal basis of the space: T is G in it, with G's eigenvalues
        return _pooled(values, "lanczos", batch, (n_out, n_in), steps)
    mean = float(np.mean(first))
    return JacobianSpectrum(
        values, (vectors[:, 0, :] ** 2).ravel() / batch, mean,
        max(float(np.mean(second)) - mean**2, 0.0), float(values.max()), float(values.min()),
        "lanczos", batch, (n_out, n_in), steps)


def _pooled(values, method, batch, shape, iterations=None) -> JacobianSpectrum:
    squares = values**2
    return JacobianSpectrum(
        values, np.full(values.size, 1.0 / values.size), float(np.mean(squares)),
        float(np.var(squares)), float(values.max()), float(values.min()), method, batch,
        shape, iterations)


def _orthogonalize(w: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """w minus its projection on the basis, twice: the products come in float32, and plain
    Lanczos would lose orthogonality within a few steps (and repeat Ritz values)."""
    for _ in range(2):
        w = w - np.einsum("kbn,bk->bn", basis, np.einsum("kbn,bn->bk", basis, w))
    return w


def _numpy(tensor: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(tensor), dtype=np.float64)


def _one_input(model: keras.layers.Layer, x: Any) -> np.ndarray:
    """The batch as one float NumPy array, in the model's input dtype."""
    arrays = keras.tree.flatten(x)
    try:
        declared = keras.tree.flatten(model.inputs or [])
    except (AttributeError, ValueError):  # a subclassed model declares no inputs
        declared = []
    if len(arrays) != 1 or len(declared) > 1:
        raise ValueError(
            f"jacobian_spectrum needs a model with one input tensor and x one array; got "
            f"{max(len(arrays), len(declared))} inputs. Wrap the model so that the others are "
            "fixed, e.g. keras.Model(inp, model([inp, constant])).")
    array = np.asarray(keras.ops.convert_to_numpy(arrays[0]))
    dtype = keras.backend.standardize_dtype(declared[0].dtype) if declared else None
    for where, kind in (("x", keras.backend.standardize_dtype(array.dtype)),
                        ("the model's input", dtype or "float32")):
        if "float" not in kind:
            raise TypeError(
                f"{where} has dtype {kind}: there is no derivative with respect to integer "
                "inputs such as token ids. Measure from the first float tensor instead, e.g. "
                "keras.Model(embedding.output, model.output).")
    if array.ndim < 2 or array.shape[0] == 0:
        raise ValueError(f"x must be a batch (examples on the first axis), got shape "
                         f"{array.shape}; for one example pass x[None].")
    return array.astype(dtype or keras.config.floatx())


def _find_layer(model: keras.layers.Layer, name: str | None) -> keras.layers.Layer | None:
    if name is None:
        return None
    if not isinstance(name, str):
        raise TypeError(f"output must be a layer's name (a str) or None, got {name!r}.")
    layers = [layer for layer in walk(model)[1:]
              if not isinstance(layer, keras.layers.InputLayer)]
    for layer in layers:
        if layer.name == name:
            return layer
    names = ", ".join(repr(layer.name) for layer in layers[:12])
    raise ValueError(f"Model {model.name!r} has no layer named {name!r}; its layers: "
                     f"{names}{'...' if len(layers) > 12 else ''}.")


def plot_spectra(spectra: Mapping[str, JacobianSpectrum], path: str | Path | None = None,
                 bins: int = 60) -> Any:
    """Histograms of several spectra's singular values on shared log-spaced bins, saved to
    `path` (PNG, PDF... by its suffix; returns the `Path`) or returned as a
    `matplotlib.figure.Figure` (`path=None`). Values below 1e-6 of the largest, beyond what
    float32 products resolve, fall in the first bin. Needs matplotlib
    (`pip install 'keras-inits[harness]'`)."""
    mpl_figure = require("matplotlib.figure", HARNESS, "JacobianSpectrum.plot draws with "
                         "matplotlib")
    values = np.concatenate([spectrum.singular_values for spectrum in spectra.values()])
    high = max(float(values.max()), 1.0) * 1.05
    low = max(min(float(values[values > 0].min(initial=1.0)), 1.0) / 1.05, high * 1e-6)
    edges = np.geomspace(low, high, bins + 1)
    figure = mpl_figure.Figure(figsize=(7.5, 4.0), layout="constrained")
    axes = figure.subplots()
    for label, spectrum in spectra.items():
        fractions, _ = np.histogram(np.clip(spectrum.singular_values, low, high), edges,
                                    weights=spectrum.weights)
        axes.stairs(fractions, edges, label=f"{label}: mean $\\sigma^2$ = "
                    f"{spectrum.mean_squared:.3g}, var/mean$^2$ = "
                    f"{spectrum.relative_variance:.3g}")
    axes.axvline(1.0, color="k", linestyle="--", linewidth=1)
    axes.set(xscale="log", xlabel=r"singular value $\sigma$ (the leftmost bin holds all below)",
             ylabel="fraction of the singular values")
    axes.legend(fontsize="small")
    axes.grid(alpha=0.3)
    if path is None:
        return figure
    return save_figure(figure, path)
