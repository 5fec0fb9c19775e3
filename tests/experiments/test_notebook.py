"""`experiments.run`: the notebook's front door trains what the command line trains."""

import json
from functools import partial

import keras
import numpy as np
import pytest
import tensorflow as tf

import experiments
import keras_inits
from experiments import notebook, specs
from experiments.errors import ExperimentError
from experiments.results import report
from tests.experiments.cli import run_compare

SPECS = ["xavier_normal", "random_normal(stddev=0.1)"]
# 70 training examples: batches of 32, 32 and 6, so the last batch is a short one.
TINY = {"epochs": 2, "seeds": [0], "batch_size": 32, "histogram_every": 2, "probe_size": 16}


def _arrays(seed: int = 0):
    rng = np.random.default_rng(seed)
    x_train = rng.normal(size=(70, 12)).astype("float32")
    y_train = (x_train[:, 0] > 0).astype("int32") + (x_train[:, 1] > 1)
    x_test = rng.normal(size=(20, 12)).astype("float32")
    y_test = (x_test[:, 0] > 0).astype("int32") + (x_test[:, 1] > 1)
    return x_train, y_train, x_test, y_test


def _built_here(input_shape, num_classes):
    """A model function no import reaches: nested in a test module's function call."""
    inputs = keras.Input(input_shape)
    hidden = keras.layers.Dense(8, activation="tanh", name="dense_a")(inputs)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="read_out")(hidden)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def from_python(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("notebook")
    lines = []

    def build(input_shape, num_classes):  # defined inside a function, as in a notebook cell
        return _built_here(input_shape, num_classes)

    results = experiments.run(
        SPECS, model=build, data=_arrays(), logdir=str(logdir), progress=lines.append, **TINY
    )
    return results, lines


def test_rows_are_the_summary_and_every_run_trained(from_python):
    results, lines = from_python
    assert [row["initializer"] for row in results] == SPECS
    assert all(row["status"] == "ok" and row["steps"] == 6 for row in results)
    saved = json.loads(tf.io.gfile.GFile(f"{results.folder}/summary.json").read())
    assert saved["runs"] == results.rows
    assert len(lines) == 3 and lines[-1].startswith("results: ")
    # The model is the function's: its own layer names reach the summary and the logs.
    (model,) = results.config.model
    assert model.startswith(f"{__name__}:from_python.<locals>.build@")
    assert tf.io.gfile.exists(f"{results.folder}/{results[0]['run_dir']}/run.json")


def test_jupyter_shows_the_report_table_and_figures(from_python):
    results, _ = from_python
    shown = results._repr_html_()
    assert shown.count("<tr>") == 1 + len(SPECS)  # header, one row per initializer
    assert "<code>random_normal(stddev=0.1)</code>" in shown
    figures = results.figures()
    assert figures[0] == (report.FIGURES["loss_curves.png"], f"{results.folder}/loss_curves.png")
    assert shown.count("data:image/png;base64,") == len(figures) >= 3
    for _, path in figures:
        assert tf.io.gfile.GFile(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert results.table().startswith("| initializer | runs | diverged |")


def test_a_second_call_resumes_instead_of_training_again(from_python):
    results, _ = from_python
    lines = []
    again = experiments.run(
        SPECS,
        model=results.config.model[0],
        data=_arrays(),
        logdir=results.config.logdir,
        progress=lines.append,
        **TINY,
    )
    assert again.rows == results.rows
    assert sum("already in summary.json, skipped" in line for line in lines) == len(SPECS)


def test_python_and_command_line_train_the_same_runs(tmp_path):
    """One implementation under both front doors: arrays passed from Python and the same
    arrays in an .npz file given to `python -m experiments.compare` give equal numbers."""
    x_train, y_train, x_test, y_test = _arrays(seed=1)
    settings = {"model": "mlp", "depth": 2, "width": 8, **TINY}
    from_python = experiments.run(
        SPECS, data=(x_train, y_train, x_test, y_test), logdir=str(tmp_path / "py"),
        progress=None, **settings,
    )
    npz = tmp_path / "data.npz"
    np.savez(npz, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    run_compare(
        f"--initializers={','.join(SPECS)}", f"--dataset=npz:{npz}", "--model=mlp",
        "--depth=2", "--width=8", "--epochs=2", "--seeds=0", "--batch_size=32",
        "--histogram_every=2", "--probe_size=16", "--train_size=70", "--test_size=20",
        f"--logdir={tmp_path / 'cli'}", "--experiment=cli",
    )
    from_cli = json.loads((tmp_path / "cli" / "cli" / "summary.json").read_text())["runs"]
    for mine, theirs in zip(from_python, from_cli, strict=True):
        assert mine["initializer"] == theirs["initializer"]
        for key in ("initial_loss", "final_loss", "final_test_loss", "final_test_accuracy"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-6), key


def test_tf_data_pipelines_give_the_arrays_they_hold():
    x_train, y_train, x_test, y_test = _arrays()
    train = tf.data.Dataset.from_tensor_slices((x_train, y_train)).batch(16)  # batched
    test = tf.data.Dataset.from_tensor_slices((x_test, y_test))  # not batched
    got = notebook._arrays((train, test), keras)
    for mine, expected in zip(got, (x_train, y_train, x_test, y_test), strict=True):
        np.testing.assert_array_equal(mine, expected)
    alone = notebook._arrays(train, keras)
    assert alone[2] is None and len(alone[0]) == 70


def test_the_same_arrays_have_the_same_name_and_others_another():
    first = experiments.notebook.datasets.register_arrays(*_arrays())
    assert experiments.notebook.datasets.register_arrays(*_arrays()) == first
    assert experiments.notebook.datasets.register_arrays(*_arrays(seed=2)) != first


def test_initializer_instances_become_specs_that_rebuild_them():
    for instance, spec in (
        (keras_inits.XavierUniform(gain=0.5), "xavier_uniform(gain=0.5)"),
        (keras_inits.KaimingNormal(), "kaiming_normal()"),
        # The seed is left out: the harness reseeds every layer from the run's seed.
        (keras.initializers.RandomNormal(stddev=0.1, seed=3), "RandomNormal(stddev=0.1)"),
        (keras.initializers.Orthogonal(gain=np.float64(2.0)), "Orthogonal(gain=2.0)"),
    ):
        assert notebook._initializer_spec(instance) == spec
        rebuilt, given = keras_inits.get(spec).get_config(), instance.get_config()
        rebuilt.pop("seed", None), given.pop("seed", None)
        assert rebuilt == notebook._plain(given)

    class Unregistered(keras.initializers.Initializer):
        def __call__(self, shape, dtype=None):
            return keras.ops.zeros(shape, dtype)

    with pytest.raises(TypeError, match="no spec string that keras_inits.get rebuilds"):
        notebook._initializer_spec(Unregistered())
    with pytest.raises(TypeError, match="expected spec strings"):
        notebook._initializer_spec(0.1)


def test_settings_from_numpy_are_plain_python():
    assert notebook._plain(np.arange(3)) == (0, 1, 2)
    assert type(notebook._plain(np.int64(4))) is int
    assert notebook._plain(range(2)) == (0, 1)
    assert notebook._plain([np.float32(0.5), 1]) == (0.5, 1)


def test_model_functions_are_named_by_import_when_an_import_reaches_them():
    assert specs.register_model(_built_here) == f"{__name__}:_built_here"
    assert specs.registered_model(f"{__name__}:_built_here") is None  # imported by name
    nested = lambda shape, classes: _built_here(shape, classes)  # noqa: E731
    spec = specs.register_model(nested)
    assert specs.registered_model(spec) is nested and specs.model_factory(spec) is nested


def _wide(input_shape, num_classes, width=8):
    return _built_here(input_shape, num_classes)


def test_different_functions_of_one_name_get_different_specs():
    """A spec names what the model computes with: two partials, two closures or two
    configured objects never resume each other's runs; the same one does."""

    def closure(width):
        def build(shape, classes):
            return _wide(shape, classes, width)

        return build

    class Builder:
        def __init__(self, width):
            self.width = width

        def __call__(self, shape, classes):
            return _wide(shape, classes, self.width)

    for first, second, again in (
        (partial(_wide, width=4), partial(_wide, width=64), partial(_wide, width=4)),
        (closure(4), closure(64), closure(4)),
        (Builder(4), Builder(64), Builder(4)),
    ):
        one, other = specs.register_model(first), specs.register_model(second)
        assert one != other and one.split("@")[0] == other.split("@")[0]
        assert specs.register_model(again) == one


def test_tf_data_pipelines_that_cannot_be_read_are_refused():
    x_train, y_train, _, _ = _arrays()
    forever = tf.data.Dataset.from_tensor_slices((x_train, y_train)).repeat()
    with pytest.raises(ExperimentError, match="repeats forever"):
        notebook._arrays(forever, keras)
    named = tf.data.Dataset.from_tensor_slices(({"features": x_train}, y_train))
    with pytest.raises(TypeError, match="pairs of single tensors"):
        notebook._arrays(named, keras)
    # Unbatched labels of shape (1,): stacked per example, not joined.
    column = tf.data.Dataset.from_tensor_slices((x_train, y_train[:, None]))
    x, y, _, _ = notebook._arrays(column, keras)
    assert x.shape == (70, 12) and y.shape == (70, 1)


def test_without_a_test_split_a_random_fifth_is_held_out():
    x = np.arange(100, dtype="float32").reshape(50, 2)
    y = np.repeat(np.arange(5), 10).astype("int32")  # sorted by class, as arrays often are
    x_train, y_train, x_test, y_test = notebook._hold_out(x, y, {})
    assert len(x_test) == 10 and len(x_train) == 40
    assert len(np.unique(y_test)) > 1  # a tail would be class 4 alone
    assert sorted(np.concatenate([x_train, x_test])[:, 0]) == sorted(x[:, 0])
    again = notebook._hold_out(x, y, {})
    np.testing.assert_array_equal(again[2], x_test)  # the same split every call
    with pytest.raises(ExperimentError, match="hold out between 1 and 49"):
        notebook._hold_out(x, y, {"test_size": 50})


def test_bad_arguments_fail_before_training(tmp_path):
    with pytest.raises(ExperimentError, match="Give data or dataset=, not both"):
        experiments.run(data=_arrays(), dataset="shapeset", logdir=str(tmp_path))
    with pytest.raises(TypeError, match="data: expected"):
        experiments.run(data=np.zeros((4, 2)), logdir=str(tmp_path))
    with pytest.raises(ExperimentError, match="inputs of shape"):
        experiments.run(data=(np.zeros((4, 2)), np.zeros(3, "int32")), logdir=str(tmp_path))
    with pytest.raises(ExperimentError, match="lives in this process only"):
        experiments.run(
            model=lambda shape, classes: _built_here(shape, classes),
            data=_arrays(),
            ray_address="local",
            logdir=str(tmp_path),
        )
    with pytest.raises(ExperimentError, match="--epochs must be an integer >= 1"):
        experiments.run(epochs=0, logdir=str(tmp_path))
    with pytest.raises(TypeError, match="got a built Functional"):
        experiments.run(model=_built_here((12,), 3), logdir=str(tmp_path))
    x_train, y_train, x_test, y_test = _arrays()
    with pytest.raises(ExperimentError, match=r"test inputs \(5,\); both splits"):
        experiments.run(
            data=(x_train, y_train, x_test[:, :5], y_test), logdir=str(tmp_path), **TINY
        )
    assert not list(tmp_path.iterdir())  # nothing was written
