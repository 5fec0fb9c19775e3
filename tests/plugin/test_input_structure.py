"""The model tools call a model with `x` in the structure its inputs were declared in.

Keras accepts an array for a Functional model built with `inputs=[inp]`, `[x]`
for one built with `inputs=inp`, and a list for one built with a dict of inputs,
but then warns "The structure of `inputs` doesn't match the expected structure"
on every call: once or twice per `lsuv`, `diagnose` or `SignalHistograms`
snapshot. Here that warning is an error, and the results must equal those for
`x` given in the declared structure (the same arrays reach the same inputs).
"""

import warnings

import keras
import numpy as np
import pytest

import keras_inits

L = keras.layers
BATCH = 16
STRUCTURE_WARNING = "The structure of `inputs` doesn't match the expected structure"


def normal(shape, seed):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def one_input(listed):
    inputs = keras.Input((8,), name="a")
    hidden = L.Dense(16, activation="tanh", name="hidden")(inputs)
    return keras.Model([inputs] if listed else inputs, L.Dense(4, name="out")(hidden))


def sequential(_):
    return keras.Sequential(
        [keras.Input((8,)), L.Dense(16, activation="tanh", name="hidden"), L.Dense(4, name="out")]
    )


def dict_inputs(_):
    a, b = keras.Input((8,), name="a"), keras.Input((8,), name="b")
    hidden = L.Dense(16, activation="tanh", name="hidden")(L.Concatenate()([a, b]))
    return keras.Model({"a": a, "b": b}, L.Dense(4, name="out")(hidden))


XA, XB = normal((BATCH, 8), 1), normal((BATCH, 8), 2)
# (model builder, its argument, x in the declared structure, x in another one)
CASES = {
    "list_of_one_given_an_array": (one_input, True, [XA], XA),
    "one_input_given_a_list": (one_input, False, XA, [XA]),
    "sequential_given_a_list": (sequential, None, XA, [XA]),
    "dict_given_a_list_in_key_order": (dict_inputs, None, {"a": XA, "b": XB}, [XA, XB]),
}


def build(case):
    make, argument, declared, other = CASES[case]
    keras.utils.set_random_seed(0)
    return make(argument), declared, other


@pytest.mark.parametrize("case", sorted(CASES))
def test_diagnose_passes_x_in_the_declared_structure(case):
    model, declared, other = build(case)
    expected = keras_inits.diagnose(model, declared)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=f".*{STRUCTURE_WARNING}")
        diagnosis = keras_inits.diagnose(model, other)
    assert diagnosis.layers == expected.layers


@pytest.mark.parametrize("case", sorted(CASES))
def test_lsuv_passes_x_in_the_declared_structure(case):
    model, declared, other = build(case)
    keras_inits.lsuv(model, declared, seed=0)
    expected = [np.asarray(keras.ops.convert_to_numpy(w)) for w in model.weights]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=f".*{STRUCTURE_WARNING}")
        report = keras_inits.lsuv(model, other, seed=0)
    assert [row["status"] for row in report.rows] == ["fitted", "fitted"]
    for weight, value in zip(model.weights, expected, strict=True):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(weight), value, rtol=1e-5)


@pytest.mark.parametrize("case", sorted(CASES))
def test_signal_histograms_pass_x_in_the_declared_structure(case, tmp_path):
    pytest.importorskip("tensorflow")  # its summary writer (keras-inits[harness])
    pytest.importorskip("tensorboard")
    model, declared, other = build(case)
    reference = keras_inits.SignalHistograms(declared, None, tmp_path / "declared", 1)
    reference.set_model(model)
    expected = reference.snapshot(0)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=f".*{STRUCTURE_WARNING}")
        callback = keras_inits.SignalHistograms(other, None, tmp_path / "other", 1)
        callback.set_model(model)
        snapshot = callback.snapshot(0)
    assert snapshot.statistics == expected.statistics


def test_a_list_for_dict_inputs_out_of_key_order_is_left_to_keras():
    """Keras pairs a list with a dict of inputs by sorted key, which for a dict in another
    order is ambiguous (Keras 3.8 and later refuse it); keras_inits does not guess either,
    and calls the model with the list as given."""
    a, b = keras.Input((8,), name="a"), keras.Input((8,), name="b")
    model = keras.Model({"b": b, "a": a}, L.Dense(4)(L.Concatenate()([a, b])))
    for given in ([XA, XB], {"a": XA, "b": XB}):  # a dict: Keras pairs it by name
        assert keras_inits.taps.as_declared(model, given) is given
