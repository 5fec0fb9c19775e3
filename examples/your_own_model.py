"""The README's "Your own model" section, end to end: the four tools on models nobody here wrote.

    KERAS_BACKEND=tensorflow python examples/your_own_model.py [--out docs]

1. `reinitialize` a keras.applications MobileNetV2 (depthwise and pointwise
   convolutions, batch norm) with Kaiming-normal and the right fans.
2. `diagnose` a 30-layer ReLU MLP under Xavier and Kaiming (He et al. 2015),
   and a Transformer block; the depth profiles go to PNG files.
3. `lsuv` on a ResNet50 and on the Transformer block.
4. `SignalHistograms` during a short `fit`, next to Keras's own TensorBoard callback.

Runs offline in about a minute on 2 cores (no weights are downloaded).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import keras
import numpy as np

import keras_inits
from keras_inits.diagnosis import plot_profiles


def transformer_block(sequence: int = 32, dim: int = 64, heads: int = 4) -> keras.Model:
    """A pre-norm Transformer encoder block with a classification head."""
    tokens = keras.Input((sequence,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(1000, dim, name="embed")(tokens)
    h = keras.layers.LayerNormalization(name="norm_1")(x)
    h = keras.layers.MultiHeadAttention(heads, dim // heads, name="attention")(h, h)
    x = keras.layers.Add(name="residual_1")([x, h])
    h = keras.layers.LayerNormalization(name="norm_2")(x)
    h = keras.layers.Dense(4 * dim, activation="gelu", name="ffn_in")(h)
    h = keras.layers.Dense(dim, name="ffn_out")(h)
    x = keras.layers.Add(name="residual_2")([x, h])
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="head")(x)
    return keras.Model(tokens, outputs, name="transformer_block")


def deep_relu_mlp(depth: int = 30, width: int = 256) -> keras.Model:
    inputs = keras.Input((784,))
    x = inputs
    for index in range(1, depth + 1):
        x = keras.layers.Dense(width, activation="relu", name=f"dense_{index}")(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="head")(x))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs", help="folder for the PNG figures")
    out = Path(parser.parse_args().out)
    rng = np.random.default_rng(0)

    print("== 1. reinitialize: MobileNetV2 (weights=None) with kaiming_normal")
    mobilenet = keras.applications.MobileNetV2(
        weights=None, input_shape=(96, 96, 3), alpha=0.35, classes=10
    )
    report = keras_inits.reinitialize(mobilenet, "kaiming_normal", seed=0)
    lines = str(report).splitlines()
    print("\n".join(lines[:8] + ["..."] + lines[-1:]))

    print("\n== 2. diagnose: 30 ReLU layers (He et al. 2015), Xavier vs Kaiming")
    x = rng.standard_normal((256, 784)).astype("float32")
    y = rng.integers(0, 10, 256)
    diagnoses = {}
    for name in ("xavier_normal", "kaiming_normal"):
        model = deep_relu_mlp()
        keras_inits.reinitialize(model, name, seed=0)
        diagnoses[name] = keras_inits.diagnose(
            model, x, y, loss="sparse_categorical_crossentropy"
        )
        print(f"{name}:")
        for verdict in diagnoses[name].verdicts or ["no problem found"]:
            print(f"  - {verdict}")
    plot_profiles(out / "diagnose_deep_relu.png", diagnoses)

    print("\n== 2b. diagnose: a Transformer block")
    tokens = rng.integers(0, 1000, (64, 32)).astype("int32")
    block = transformer_block()
    print(keras_inits.diagnose(block, tokens).table())

    print("\n== 3. lsuv: ResNet50 (weights=None) and the Transformer block")
    resnet = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10)
    images = rng.standard_normal((32, 64, 64, 3)).astype("float32")
    report = keras_inits.lsuv(resnet, images, seed=0)
    fitted = [row for row in report.rows if row["status"] == "fitted"]
    print(f"ResNet50: {len(fitted)} of {len(report.rows)} layers fitted, converged: "
          f"{report.converged}, iterations {max(r['iterations'] for r in fitted)} at most")
    print(keras_inits.lsuv(block, tokens, seed=0))
    lsuv_diagnosis = keras_inits.diagnose(resnet, images)
    plot_profiles(
        out / "diagnose_resnet50.png",
        {"lsuv": lsuv_diagnosis, "he_normal": _resnet_default(images)},
    )

    print("\n== 4. SignalHistograms next to keras.callbacks.TensorBoard")
    model = deep_relu_mlp(depth=5)
    keras_inits.reinitialize(model, "kaiming_normal", seed=0)
    model.compile("sgd", "sparse_categorical_crossentropy")
    with tempfile.TemporaryDirectory() as logs:
        model.fit(
            x, y, batch_size=32, epochs=2, verbose=0,
            callbacks=[
                keras.callbacks.TensorBoard(logs, histogram_freq=1),
                keras_inits.SignalHistograms(x[:128], y[:128], logs, every_n_steps=8),
            ],
        )
        print(f"logged to {logs}/train: " + ", ".join(sorted(p.name[:24] for p in
                                                             Path(logs, "train").iterdir())))


def _resnet_default(images: np.ndarray) -> keras_inits.Diagnosis:
    resnet = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10)
    keras_inits.reinitialize(resnet, "he_normal", seed=0)
    return keras_inits.diagnose(resnet, images)


if __name__ == "__main__":
    main()
