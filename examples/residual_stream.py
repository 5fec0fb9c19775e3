"""The residual stream at initialization under each scheme: the figure of the docs' Schemes
section.

    KERAS_BACKEND=tensorflow python examples/residual_stream.py [--out docs]

Left: keras-hub's GPT-2 (24 pre-LN layers, width 128, built from constructor arguments,
no download) under keras-hub's own initializers and under each Transformer scheme of
`keras_inits.schemes`. Right: a Functional ResNet without normalization (16 basic blocks)
under He initialization and under Fixup, zero_branch and GPT-2's depth scaling. Each line
is `diagnose(...).stream`: the std of every block's output on one batch.

Runs offline in about a minute on 2 cores.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import keras
import keras_hub
import numpy as np

import keras_inits

TRANSFORMER_SCHEMES = {
    "keras-hub's own (N(0, 0.02), no depth scaling)": None,
    "gpt2": {"scheme": "gpt2"},
    "mitchell": {"scheme": "mitchell"},
    "small_init": {"scheme": "small_init"},
    "t_fixup": {"scheme": "t_fixup"},
    "deepnet (beta only)": {"scheme": "deepnet"},
}
RESNET_SCHEMES = {
    "he_normal": {"initializer": "he_normal"},
    "fixup": {"scheme": "fixup"},
    "zero_branch (after he_normal)": {"scheme": "zero_branch"},
    "gpt2 (sigma 0.05)": {"scheme": "gpt2", "sigma": 0.05},
}


def resnet(blocks: int = 16, width: int = 32) -> keras.Model:
    """Basic blocks (conv-relu-conv added to the stream, then relu), no normalization."""
    inputs = keras.Input((16, 16, 3))
    hidden = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(inputs)
    for _ in range(blocks):
        branch = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(hidden)
        branch = keras.layers.Conv2D(width, 3, padding="same")(branch)
        hidden = keras.layers.ReLU()(keras.layers.Add()([hidden, branch]))
    hidden = keras.layers.GlobalAveragePooling2D()(hidden)
    return keras.Model(inputs, keras.layers.Dense(10)(hidden))


def streams(build, batch, schemes: dict) -> dict[str, list[float]]:
    """Each scheme's stream std per block, on a fresh model of the same architecture."""
    found = {}
    for label, arguments in schemes.items():
        keras.utils.set_random_seed(0)
        model = build()
        if arguments is not None:
            if arguments.get("scheme") == "zero_branch":
                keras_inits.reinitialize(model, "he_normal", seed=0)
            keras_inits.reinitialize(model, seed=0, **arguments)
        diagnosis = keras_inits.diagnose(model, batch)
        found[label] = [row["output_std"] for row in diagnosis.stream]
        print(f"{label}: {found[label][0]:.3g} -> {found[label][-1]:.3g}")
        for verdict in diagnosis.verdicts:
            print(f"  - {verdict}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs", help="folder of residual_stream.png")
    out = Path(parser.parse_args().out)
    rng = np.random.default_rng(0)
    tokens = {
        "token_ids": rng.integers(0, 256, (8, 64)),
        "padding_mask": np.ones((8, 64), "int32"),
    }

    def gpt2():
        return keras_hub.models.GPT2Backbone(
            vocabulary_size=256, num_layers=24, num_heads=4, hidden_dim=128,
            intermediate_dim=512, max_sequence_length=64,
        )

    transformer = streams(gpt2, tokens, TRANSFORMER_SCHEMES)
    images = rng.standard_normal((16, 16, 16, 3)).astype("float32")
    residual = streams(resnet, images, RESNET_SCHEMES)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 5.6), layout="constrained")
    for axes, found, title in (
        (left, transformer, "GPT-2 (keras-hub, 24 pre-LN layers, width 128)"),
        (right, residual, "ResNet without normalization (16 basic blocks)"),
    ):
        for label, stds in found.items():
            axes.plot(np.arange(1, len(stds) + 1), stds, marker="o", markersize=3, label=label)
        axes.set_yscale("log")
        axes.set_xlabel("residual block")
        axes.set_ylabel("std of the block's output")
        axes.set_title(title, fontsize="medium")
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    figure.suptitle("The residual stream at initialization, under each scheme")
    out.mkdir(parents=True, exist_ok=True)
    figure.savefig(out / "residual_stream.png", dpi=110)
    print(f"wrote {out / 'residual_stream.png'}")


if __name__ == "__main__":
    main()
