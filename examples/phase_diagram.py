"""The mean-field phase diagram of the docs' theory page: tanh over (sigma_w^2, sigma_b^2).

    python examples/phase_diagram.py [--activation tanh] [--out docs]

Computes `keras_inits.theory.phase_diagram` on a 61 x 26 grid (sigma_w^2 from 0.25 to 4,
sigma_b^2 from 0 to 0.25), writes `phase_diagram.png` (chi_1 and the trainable depth 6 xi_c,
with the edge of chaos; Schoenholz et al. 2017, figures 1 and 5) and prints the critical
sigma_w^2 at a few biases. Pure NumPy: the Keras backend does not matter. About a minute on
one core for tanh (the chaotic half of the grid needs the two-dimensional quadrature of the
correlation map).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from keras_inits import theory

SIGMA_W2 = np.linspace(0.25, 4.0, 61)
SIGMA_B2 = np.linspace(0.0, 0.25, 26)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--activation", default="tanh", help="a Keras activation name, or erf")
    parser.add_argument("--out", default="docs", help="folder for phase_diagram.png")
    arguments = parser.parse_args()
    start = time.perf_counter()
    diagram = theory.phase_diagram(arguments.activation, SIGMA_W2, SIGMA_B2)
    path = diagram.plot(Path(arguments.out) / "phase_diagram.png")
    print(f"{path} ({time.perf_counter() - start:.0f} s)")
    print("sigma_b2  critical sigma_w2")
    for sigma_b2, sigma_w2 in zip(diagram.sigma_b2, diagram.critical, strict=True):
        if round(sigma_b2 / 0.05, 6).is_integer():
            print(f"{sigma_b2:8.2f}  {sigma_w2:.6f}")


if __name__ == "__main__":
    main()
