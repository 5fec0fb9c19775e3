"""Serialization: every initializer with non-default arguments through get_config/from_config,
Keras's serialize/deserialize and a `.keras` file, in this process; and `.keras` round trips and
seeded draws in fresh processes."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_inits
from tests.plugin.util import SHAPES


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


# --- Non-default arguments, class by class ----------------------------------------------

# Shapes other plugin tests draw too (test_distributions, test_structured): under JAX each
# new shape of a random draw costs a compilation of several seconds.
KERNEL = SHAPES["conv2d"]  # (3, 3, 64, 128)
# Every constructor argument away from its default, chosen so that each one changes the
# draw (or, for layout under Xavier's symmetric fan_avg, at least the config): an argument
# lost on the way back would show in the config, the draw, or both.
NON_DEFAULT = [
    (keras_inits.FanScaling, KERNEL, dict(scale=2.5, mode="fan_out", distribution="uniform",
                                          layout="transpose", seed=11)),
    (keras_inits.XavierNormal, KERNEL, dict(gain=1.7, layout="depthwise", seed=12)),
    (keras_inits.XavierUniform, KERNEL, dict(gain=0.6, layout="transpose", seed=13)),
    (keras_inits.KaimingNormal, KERNEL, dict(negative_slope=0.2, mode="fan_out",
                                             nonlinearity="leaky_relu", layout="transpose",
                                             seed=14)),
    (keras_inits.KaimingUniform, KERNEL, dict(negative_slope=0.3, mode="fan_out",
                                              nonlinearity="leaky_relu", layout="depthwise",
                                              seed=15)),
    (keras_inits.StandardUniform, KERNEL, dict(layout="transpose", seed=16)),
    (keras_inits.DeltaOrthogonal, (3, 3, 32, 32), dict(gain=1.4, seed=17)),
    (keras_inits.Dirac, KERNEL, dict(groups=2)),
    (keras_inits.Sparse, (1000, 40), dict(sparsity=0.5, stddev=0.2, seed=18)),
    (keras_inits.TruncNormal, KERNEL, dict(mean=0.1, std=0.5, a=-0.3, b=0.9, seed=19)),
]
PARAMS = [pytest.param(cls, shape, args, id=cls.__name__) for cls, shape, args in NON_DEFAULT]


def test_every_initializer_class_is_covered():
    classes = {cls for cls, _, _ in NON_DEFAULT}
    assert set(keras_inits.INITIALIZERS.values()) | {keras_inits.FanScaling} == classes


def draw(initializer, shape):
    return keras.ops.convert_to_numpy(initializer(shape, dtype="float32"))


@pytest.mark.parametrize(("cls", "shape", "args"), PARAMS)
def test_non_default_arguments_survive_get_config_and_serialize(cls, shape, args):
    original = cls(**args)
    # The config is the constructor's arguments, exactly as given.
    assert original.get_config() == args
    same_seed = {"seed": args["seed"]} if "seed" in args else {}
    assert not np.array_equal(draw(cls(**same_seed), shape), draw(original, shape))
    # Through JSON, as a .keras file stores it.
    serialized = json.loads(json.dumps(keras.initializers.serialize(original)))
    for restored in (cls.from_config(original.get_config()),
                     keras.initializers.deserialize(serialized)):
        assert type(restored) is cls
        assert restored.get_config() == args
        np.testing.assert_array_equal(draw(restored, shape), draw(original, shape))


def test_non_default_arguments_survive_a_keras_file(tmp_path):
    # One input and one layer per initializer, whose kernel has the initializer's shape
    # (Dirac's grouped Conv2D sees in / groups input channels).
    inputs, outputs = [], []
    for cls, shape, args in NON_DEFAULT:
        if len(shape) == 2:
            inputs.append(keras.Input((shape[0],)))
            layer = keras.layers.Dense(shape[1], kernel_initializer=cls(**args))
        else:
            inputs.append(keras.Input((5, 5, shape[-2])))
            layer = keras.layers.Conv2D(shape[-1], shape[:2], groups=args.get("groups", 1),
                                        kernel_initializer=cls(**args))
        outputs.append(layer(inputs[-1]))
    model = keras.Model(inputs, outputs)
    path = tmp_path / "inits.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    layers = [layer for layer in model.layers if hasattr(layer, "kernel_initializer")]
    for layer, (cls, _, args) in zip(layers, NON_DEFAULT, strict=True):
        restored = reloaded.get_layer(layer.name).kernel_initializer
        assert type(restored) is cls and restored.get_config() == args, cls.__name__
        shape = tuple(layer.kernel.shape)
        np.testing.assert_array_equal(draw(restored, shape), draw(cls(**args), shape))
