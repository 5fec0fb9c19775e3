"""`.keras` round trips and seeded draws, checked in fresh processes."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np

import keras_inits


def run_python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def build_model():
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(8, 3, padding="same", kernel_initializer="delta_orthogonal")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", kernel_initializer="dirac")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(
        16, activation="tanh",
        kernel_initializer=keras_inits.KaimingNormal(nonlinearity="tanh", seed=3),
    )(x)
    x = keras.layers.Dense(16, kernel_initializer=keras_inits.get("sparse(sparsity=0.5)"))(x)
    outputs = keras.layers.Dense(3, kernel_initializer=keras_inits.XavierUniform(gain=2.0))(x)
    return keras.Model(inputs, outputs)


def test_keras_file_reloads_bit_identically_in_a_fresh_process(tmp_path):
    model = build_model()
    path = tmp_path / "model.keras"
    model.save(path)
    np.savez(tmp_path / "weights.npz", *[keras.ops.convert_to_numpy(w) for w in model.weights])

    out = run_python(f"""
        import json, numpy as np, keras, keras_inits
        model = keras.models.load_model({str(path)!r})
        saved = np.load({str(tmp_path / "weights.npz")!r})
        same = all(np.array_equal(keras.ops.convert_to_numpy(w), saved[f"arr_{{i}}"])
                   for i, w in enumerate(model.weights))
        inits = [type(layer.kernel_initializer).__name__ for layer in model.layers
                 if hasattr(layer, "kernel_initializer")]
        configs = [layer.kernel_initializer.get_config() for layer in model.layers
                   if hasattr(layer, "kernel_initializer")]
        print(json.dumps({{"same": same, "inits": inits, "configs": configs}}))
    """)
    result = json.loads(out)
    assert result["same"]
    assert result["inits"] == [
        "DeltaOrthogonal", "Dirac", "KaimingNormal", "Sparse", "XavierUniform"
    ]
    assert result["configs"][2] == {
        "negative_slope": 0.0, "mode": "fan_in", "nonlinearity": "tanh",
        "layout": "default", "seed": 3,
    }
    assert result["configs"][0]["seed"] is None


def test_seeded_draws_are_identical_across_processes():
    code = """
        import keras, keras_inits, numpy as np
        values = [keras.ops.convert_to_numpy(keras_inits.get(spec)(shape)).sum()
                  for spec, shape in [("xavier_normal(seed=7)", (32, 16)),
                                      ("sparse(seed=7)", (32, 16)),
                                      ("delta_orthogonal(seed=7)", (3, 8, 8))]]
        print(repr([float(v) for v in values]))
    """
    assert run_python(code) == run_python(code)
