"""String names everywhere Keras takes an initializer, and keras_inits.get specs."""

import keras
import numpy as np
import pytest

import keras_inits
from keras_inits import registry
from keras_inits.registry import register_names

DENSE_NAMES = ["xavier_normal", "xavier_uniform", "kaiming_normal", "kaiming_uniform",
               "standard_uniform", "sparse"]
CONV_NAMES = ["xavier_normal", "kaiming_uniform", "standard_uniform", "delta_orthogonal", "dirac"]


def numpy_of(variable):
    return keras.ops.convert_to_numpy(variable)


@pytest.mark.parametrize("name", DENSE_NAMES)
def test_names_in_dense_lstm_embedding_and_add_weight(name):
    dense = keras.layers.Dense(8, kernel_initializer=name)
    dense.build((None, 16))
    assert isinstance(dense.kernel_initializer, keras_inits.INITIALIZERS[name])
    assert numpy_of(dense.kernel).any()

    lstm = keras.layers.LSTM(4, kernel_initializer=name, recurrent_initializer=name)
    lstm.build((None, 3, 16))
    assert isinstance(lstm.cell.recurrent_initializer, keras_inits.INITIALIZERS[name])

    embedding = keras.layers.Embedding(20, 8, embeddings_initializer=name)
    embedding.build((None,))
    assert numpy_of(embedding.embeddings).shape == (20, 8)

    layer = keras.layers.Layer()
    weight = layer.add_weight(shape=(5, 6), initializer=name)
    assert numpy_of(weight).shape == (5, 6)

    assert isinstance(keras.initializers.get(name), keras_inits.INITIALIZERS[name])


@pytest.mark.parametrize("name", CONV_NAMES)
@pytest.mark.parametrize("conv, rank", [(keras.layers.Conv1D, 1), (keras.layers.Conv2D, 2),
                                        (keras.layers.Conv3D, 3)])
def test_names_in_conv_layers(name, conv, rank):
    layer = conv(8, 3, kernel_initializer=name)
    layer.build((None, *[6] * rank, 4))
    assert numpy_of(layer.kernel).shape == (*[3] * rank, 4, 8)


def test_camel_case_names_resolve_like_keras_builtins():
    assert isinstance(keras.initializers.get("XavierNormal"), keras_inits.XavierNormal)
    assert isinstance(keras.initializers.get("GlorotNormal"), keras.initializers.GlorotNormal)


@pytest.mark.parametrize("builtin, cls", [
    ("he_normal", keras.initializers.HeNormal),
    ("glorot_normal", keras.initializers.GlorotNormal),
    ("orthogonal", keras.initializers.Orthogonal),
    ("zeros", keras.initializers.Zeros),
    ("random_normal", keras.initializers.RandomNormal),
])
def test_keras_builtins_are_not_shadowed(builtin, cls):
    assert type(keras.initializers.get(builtin)) is cls
    assert type(keras_inits.get(builtin)) is cls


def test_a_name_taken_by_something_else_is_refused():
    custom_objects = keras.saving.get_custom_objects()
    original = custom_objects["xavier_normal"]

    class Impostor(keras.initializers.Initializer):
        pass

    custom_objects["xavier_normal"] = Impostor
    try:
        with pytest.raises(ValueError, match="'xavier_normal': the name is already taken"):
            register_names()
    finally:
        custom_objects["xavier_normal"] = original
    register_names()  # re-registering our own classes is fine


def test_a_keras_builtin_name_is_never_shadowed(monkeypatch):
    monkeypatch.setattr(registry, "INITIALIZERS", {"he_normal": keras_inits.XavierNormal})
    with pytest.raises(ValueError, match="'he_normal': it is a Keras built-in"):
        register_names()
    assert type(keras.initializers.get("he_normal")) is keras.initializers.HeNormal


PUBLIC_CLASSES = [
    getattr(keras_inits, name) for name in keras_inits.__all__
    if isinstance(getattr(keras_inits, name), type)
    and issubclass(getattr(keras_inits, name), keras.initializers.Initializer)
    and name not in ("CheckedInitializer", "SeededInitializer")  # abstract bases
]


@pytest.mark.parametrize("cls", PUBLIC_CLASSES, ids=lambda cls: cls.__name__)
def test_every_public_class_survives_keras_serialization(cls):
    original = cls()
    config = keras.saving.serialize_keras_object(original)
    assert config["registered_name"] == f"keras_inits>{cls.__name__}"
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is cls and restored.get_config() == original.get_config()


def test_get_config_keeps_seed_none_and_mirrors_init():
    for name, cls in keras_inits.INITIALIZERS.items():
        config = cls().get_config()
        if "seed" in config:
            assert config["seed"] is None, name
        clone = cls.from_config(config)
        assert clone.get_config() == config


def test_unseeded_clones_differ_like_multi_head_attention_needs():
    original = keras_inits.XavierUniform()
    clones = [type(original).from_config(original.get_config()) for _ in range(3)]
    kernels = [numpy_of(clone((16, 16))) for clone in clones]
    assert not np.array_equal(kernels[0], kernels[1])
    layer = keras.layers.MultiHeadAttention(2, 8, kernel_initializer="xavier_uniform")
    x = np.zeros((1, 4, 16), "float32")
    layer(x, x)
    q, k = numpy_of(layer.query_dense.kernel), numpy_of(layer.key_dense.kernel)
    assert not np.array_equal(q, k)


SPECS = [
    ("xavier_normal", keras_inits.XavierNormal, {"gain": 1.0, "seed": None}),
    ("  kaiming_normal(mode='fan_out', nonlinearity='tanh') ", keras_inits.KaimingNormal,
     {"mode": "fan_out", "nonlinearity": "tanh"}),
    ("xavier_uniform(gain=2.0, seed=3)", keras_inits.XavierUniform, {"gain": 2.0, "seed": 3}),
    ("sparse(sparsity=0.5, stddev=1e-2)", keras_inits.Sparse, {"sparsity": 0.5}),
    ("random_uniform(minval=-0.1, maxval=0.1)", keras.initializers.RandomUniform,
     {"minval": -0.1, "maxval": 0.1}),
    ("VarianceScaling(scale=2.0, mode='fan_in', distribution='untruncated_normal')",
     keras.initializers.VarianceScaling, {"scale": 2.0, "distribution": "untruncated_normal"}),
    ("zeros", keras.initializers.Zeros, {}),
    # Keras aliases that keras.initializers does not export.
    ("uniform", keras.initializers.RandomUniform, {}),
    ("normal(stddev=0.2)", keras.initializers.RandomNormal, {"stddev": 0.2}),
    ({"class_name": "XavierNormal", "config": {"gain": 3.0}}, keras_inits.XavierNormal,
     {"gain": 3.0}),
    ({"class_name": "he_uniform", "config": {"seed": 4}}, keras.initializers.HeUniform,
     {"seed": 4}),
]


@pytest.mark.parametrize("spec, cls, expected", SPECS, ids=[str(s[0]) for s in SPECS])
def test_specs(spec, cls, expected):
    initializer = keras_inits.get(spec)
    assert type(initializer) is cls
    config = initializer.get_config()
    for key, value in expected.items():
        assert config[key] == value


def test_saved_config_dicts_resolve():
    config = keras.initializers.serialize(keras_inits.KaimingUniform(mode="fan_out", seed=2))
    assert config["registered_name"] == "keras_inits>KaimingUniform"
    restored = keras_inits.get(config)
    assert restored.get_config() == keras_inits.KaimingUniform(mode="fan_out", seed=2).get_config()


def test_instances_callables_and_none_pass_through():
    instance = keras_inits.Dirac()
    assert keras_inits.get(instance) is instance
    assert keras_inits.get(None) is None

    def fn(shape, dtype=None):
        return keras.ops.ones(shape, dtype)

    assert keras_inits.get(fn) is fn


BAD_SPECS = [
    ("xavier_normall", "Unknown initializer 'xavier_normall'.*Did you mean 'xavier_normal'"),
    ("he_normel", "Did you mean.*'he_normal'"),
    ("qqqqqq", r"Unknown initializer 'qqqqqq'.*Closest names: '\w+'"),
    ("xavier_normal(gain={[1]: 2})", r"value of 'gain' \(\{\[1\]: 2\}\) is not a Python literal"),
    ("xavier_normal(gian=2)", r"takes no argument 'gian'\. Its arguments are: gain, layout, seed"),
    ("random_normal(0.1)", "positional"),
    ("xavier_normal(gain=", "Cannot parse initializer spec 'xavier_normal\\(gain='"),
    ("xavier_normal(gain=np.pi)", "'gain' \\(np.pi\\) is not a Python literal"),
    ("kaiming_normal(mode='sideways')", "Initializer spec .*Unknown mode='sideways'"),
    ("1 + 2", "Cannot parse"),
    ("", "Empty initializer spec"),
    ({"config": {}}, "needs a 'class_name'"),
]


@pytest.mark.parametrize("spec, message", BAD_SPECS, ids=[str(s[0]) for s in BAD_SPECS])
def test_bad_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        keras_inits.get(spec)


def test_bad_spec_type():
    with pytest.raises(TypeError, match="must be a name"):
        keras_inits.get(3.5)


def test_names_lists_ours_and_keras():
    names = keras_inits.names()
    for name in [*keras_inits.INITIALIZERS, "glorot_uniform", "orthogonal", "zeros"]:
        assert name in names


def test_reseed():
    spec = keras_inits.get("xavier_normal(gain=2.0, seed=5)")
    a, b = keras_inits.reseed(spec, 1), keras_inits.reseed(spec, 2)
    assert a.get_config() == {"gain": 2.0, "layout": "default", "seed": 1}
    assert not np.array_equal(numpy_of(a((8, 8))), numpy_of(b((8, 8))))
    again = keras_inits.reseed(spec, 1)
    np.testing.assert_array_equal(numpy_of(a((8, 8))), numpy_of(again((8, 8))))
    assert keras_inits.reseed(keras.initializers.get("zeros"), 3).get_config() == {}
    assert keras_inits.reseed(keras.initializers.get("orthogonal"), 3).get_config()["seed"] == 3
