"""The coordinate check of the docs' muP page: muP flat, the standard parametrization growing.

    KERAS_BACKEND=tensorflow python examples/mup_coord_check.py [--out docs]

An MLP 32 -> width -> width -> 10 (ReLU, He-normal kernels, a `keras_inits.mup.Readout`) at
widths 64 to 2,048, trained 3 steps with Adam at 0.01 on one repeated batch of 64 Gaussian
inputs, mean |activation| of every layer averaged over 3 seeds. Writes
`coord_check_mup.png` and `coord_check_sp.png` and prints each layer's slope of log mean
|activation| against log width per step (0: flat). Runs offline in under a minute on 2 cores.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import keras
import numpy as np

import keras_inits

WIDTHS = (64, 128, 256, 512, 1024, 2048)


def mlp(width: int) -> keras.Model:
    return keras.Sequential([
        keras.Input((32,)),
        keras.layers.Dense(width, "relu", kernel_initializer="he_normal", name="hidden_1"),
        keras.layers.Dense(width, "relu", kernel_initializer="he_normal", name="hidden_2"),
        keras_inits.mup.Readout(10, kernel_initializer="he_normal", name="logits"),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs", help="folder for the PNGs")
    out = Path(parser.parse_args().out)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 32)).astype("float32")
    y = rng.integers(0, 10, size=64)
    for parametrization in ("mup", "sp"):
        check = keras_inits.mup.coord_check(
            mlp, WIDTHS, x, y, keras.optimizers.Adam(0.01), parametrization=parametrization,
            readout_zero_init=parametrization == "mup", seeds=(0, 1, 2),
        )
        title = {"mup": "muP", "sp": "standard parametrization"}[parametrization]
        path = check.plot(out / f"coord_check_{parametrization}.png", title=f"{title}, Adam 0.01")
        print(f"{path}: slope of log mean |activation| vs log width, per step and layer")
        for step, slopes in enumerate(check.slopes(), start=1):
            cells = ", ".join(f"{layer} {slope:+.2f}" for layer, slope in
                              zip(check.layers, slopes, strict=True))
            print(f"  step {step}: {cells}")


if __name__ == "__main__":
    main()
