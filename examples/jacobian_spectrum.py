"""The Jacobian spectra of the docs' dynamical-isometry page: deep tanh networks at the edge
of chaos, orthogonal against Gaussian weights.

    python examples/jacobian_spectrum.py [--depth 32] [--width 256] [--out docs]

Four tanh MLPs of the same depth and width, each at its critical sigma_w^2
(`keras_inits.theory.critical_sigma_w2`), with inputs scaled so that the first
pre-activations have variance q*: Gaussian and orthogonal weights, with sigma_b^2 = 0.05
(q* = 0.57) and with sigma_b^2 = 1e-4 (a small q*: tanh nearly linear). Writes
`jacobian_spectrum.png` (histograms of `keras_inits.jacobian_spectrum`'s singular values)
and prints each spectrum's numbers beside Pennington et al.'s (2017) prediction of the
relative variance, L (mu_2 / mu_1^2 - 1 - s_1) with mu_k = E[tanh'(h)^(2k)] at q*, s_1 = -1
for Gaussian and 0 for orthogonal weights. Any backend; about 10 s on 2 cores.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import keras
import numpy as np

import keras_inits
from keras_inits import theory
from keras_inits.spectrum import plot_spectra

ARMS = [  # (orthogonal, sigma_b^2)
    (False, 0.05), (True, 0.05), (False, 1e-4), (True, 1e-4),
]


def tanh_mlp(width: int, depth: int, sigma_w2: float, sigma_b2: float,
             orthogonal: bool) -> keras.Model:
    """Dense-tanh layers, kernels of variance sigma_w2 / width (orthogonal with that gain, or
    Gaussian), biases N(0, sigma_b2)."""
    def kernel():
        if orthogonal:
            return keras.initializers.Orthogonal(gain=math.sqrt(sigma_w2))
        return keras.initializers.RandomNormal(stddev=math.sqrt(sigma_w2 / width))

    return keras.Sequential([keras.Input((width,))] + [
        keras.layers.Dense(width, activation="tanh", kernel_initializer=kernel(),
                           bias_initializer=keras.initializers.RandomNormal(
                               stddev=math.sqrt(sigma_b2)))
        for _ in range(depth)])


def slope_moment_ratio(q_star: float) -> float:
    """mu_2 / mu_1^2, mu_k = E[tanh'(h)^(2k)] for h ~ N(0, q*), by Gauss-Hermite quadrature."""
    z, weights = np.polynomial.hermite_e.hermegauss(201)
    slope2 = 1.0 / np.cosh(math.sqrt(q_star) * z) ** 4
    weights = weights / weights.sum()
    return float(np.sum(weights * slope2**2) / np.sum(weights * slope2) ** 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=32)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--out", default="docs", help="folder for jacobian_spectrum.png")
    arguments = parser.parse_args()
    depth, width = arguments.depth, arguments.width
    keras.utils.set_random_seed(0)
    spectra = {}
    print(f"tanh, depth {depth}, width {width}, {arguments.examples} examples "
          f"(backend {keras.backend.backend()})")
    print(f"{'weights':10} {'sigma_b2':>8} {'sigma_w2':>8} {'q*':>6} {'mean s^2':>8} "
          f"{'var/mean^2':>10} {'predicted':>9} {'max s':>6}  isometric  seconds")
    for orthogonal, sigma_b2 in ARMS:
        sigma_w2 = theory.critical_sigma_w2("tanh", sigma_b2)
        q_star = theory.mean_field("tanh", sigma_w2, sigma_b2).q_star
        x = np.random.default_rng(0).standard_normal((arguments.examples, width))
        x *= np.sqrt((q_star - sigma_b2) / sigma_w2 / np.mean(x**2, axis=1, keepdims=True))
        model = tanh_mlp(width, depth, sigma_w2, sigma_b2, orthogonal)
        start = time.perf_counter()
        spectrum = keras_inits.jacobian_spectrum(model, x.astype("float32"))
        seconds = time.perf_counter() - start
        predicted = depth * (slope_moment_ratio(q_star) - (1.0 if orthogonal else 0.0))
        weights = "orthogonal" if orthogonal else "Gaussian"
        spectra[f"{weights}, $\\sigma_b^2$ = {sigma_b2:g}, $q^*$ = {q_star:.2g}"] = spectrum
        print(f"{weights:10} {sigma_b2:8.4g} {sigma_w2:8.4f} {q_star:6.3f} "
              f"{spectrum.mean_squared:8.3f} "
              f"{spectrum.relative_variance:10.3f} {predicted:9.3f} {spectrum.max:6.2f}  "
              f"{'yes' if spectrum.isometric else 'no':9}  {seconds:.2f}")
    path = Path(arguments.out) / "jacobian_spectrum.png"
    figure = plot_spectra(spectra)
    figure.suptitle(f"Input-output Jacobian of a critical tanh network, depth {depth}, "
                    f"width {width}")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    print(path)


if __name__ == "__main__":
    main()
