"""Your own model in the harness, conv-only initializers with the fallback, the chance level
and the one-line-per-run console output (issue #7, parts 4 to 6), on tiny settings."""

import csv
import json
import re
from pathlib import Path

import keras
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from experiments import config, inspect_init, models, runner
from experiments.data import datasets as data
from experiments.engine import training
from experiments.errors import ExperimentError
from tests.experiments.cli import run_compare

OWN = "tests.experiments.custom_models:small_cnn"
OWN_LAYERS = ["conv2d", "conv2d_1", "dense"]  # automatic names, the same in every run
TINY = {
    "seeds": (0,),
    "train_size": 128,
    "test_size": 32,
    "epochs": 1,
    "batch_size": 32,
    "histogram_every": 2,
    "probe_size": 32,
    "verbose": 0,
}
BUILTIN_TINY = {**TINY, "depth": 2, "width": 8}


def _events(run_dir: Path) -> event_accumulator.EventAccumulator:
    accumulator = event_accumulator.EventAccumulator(
        str(run_dir), size_guidance={event_accumulator.TENSORS: 0}
    )
    return accumulator.Reload()


def _hparams(run_dir: Path) -> dict:
    """The HParams values a run folder holds."""
    metadata = _events(run_dir).summary_metadata["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(metadata.plugin_data.content)
    return {
        name: getattr(value, value.WhichOneof("kind"))
        for name, value in start.session_start_info.hparams.items()
    }


@pytest.fixture(scope="module")
def own_finished(tmp_path_factory):
    """dirac and xavier_normal on the custom CNN of `custom_models.small_cnn`."""
    settings = config.resolve(
        initializers=("dirac", "xavier_normal"),
        model=OWN,
        logdir=str(tmp_path_factory.mktemp("own")),
        **TINY,
    )
    lines = []
    entries = runner.compare(settings, progress=lines.append)
    return settings, entries, lines


def test_own_model_trains_and_reports_like_a_builtin(own_finished):
    settings, entries, lines = own_finished
    assert (settings.depth, settings.width, settings.activation) == ((None,),) * 3
    root = Path(settings.logdir) / settings.experiment
    assert [entry["status"] for entry in entries] == ["ok", "ok"]
    assert [entry["activation"] for entry in entries] == [None, None]
    stored = json.loads((root / "summary.json").read_text())
    assert stored["flags"]["model"] == [OWN] and stored["flags"]["depth"] == [None]
    assert [entry["model"] for entry in entries] == [OWN, OWN]
    assert [entry["depth"] for entry in entries] == [None, None]
    for entry in entries:
        details = json.loads((root / entry["run_dir"] / "run.json").read_text())
        assert details["layers"] == OWN_LAYERS  # from the callback's snapshot, not hidden_i
        tags = set(_events(root / entry["run_dir"]).Tags()["tensors"])
        assert {f"activations/{name}" for name in OWN_LAYERS} <= tags
        values = _hparams(root / entry["run_dir"])
        assert values["model"] == OWN and "depth" not in values and "activation" not in values
    # dirac cannot initialize the Dense read-out: the fallback draws it, and says so.
    assert entries[0]["fallback_layers"] == ["dense"] and entries[1]["fallback_layers"] == []
    assert _hparams(root / entries[0]["run_dir"])["fallback"] == "xavier_normal"
    assert _hparams(root / entries[1]["run_dir"])["fallback"] == "none"
    assert lines[0].endswith("; fallback xavier_normal on dense")
    report = (root / "report.md").read_text()
    assert f"your own, `{OWN}`" in report and "| `dirac` | `dense` |" in report
    for name in ("loss_curves.png", "depth_profiles.png", "activation_histograms_final.png"):
        assert (root / name).read_bytes()[:4] == b"\x89PNG"


class _WeightsAtStart(keras.callbacks.Callback):
    """Keeps the model's weights as `fit` starts, before any update."""

    def on_train_begin(self, logs=None):
        self.weights = {w.path: keras.ops.convert_to_numpy(w) for w in self.model.weights}


def _weights_at_start(spec: str, tmp_path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """The weights of a harness run of `spec` on your own model, as its training starts."""
    settings = config.resolve(model=OWN, **{**TINY, "train_size": 32, "histogram_every": 0})
    dataset = data.load(settings.dataset, settings.train_size, settings.test_size)
    kept = _WeightsAtStart()
    training.train_group(
        settings,
        dataset,
        cell=settings.cells()[0],
        seed=seed,
        arms=[training.Arm(spec, tmp_path / f"{spec}_{seed}")],
        callbacks=[kept],
    )
    return kept.weights


def test_arms_of_a_seed_differ_in_their_kernels_only(tmp_path):
    xavier = _weights_at_start("xavier_normal", tmp_path)
    orthogonal = _weights_at_start("orthogonal", tmp_path)
    assert list(xavier) == list(orthogonal)  # same architecture, same layer names
    kernels = [path for path in xavier if path.endswith("/kernel")]
    others = [path for path in xavier if not path.endswith("/kernel")]
    assert kernels == ["conv2d/kernel", "conv2d_1/kernel", "dense/kernel"]
    assert "scale/scale" in others and "batch_normalization/gamma" in others
    for path in kernels:
        assert not np.array_equal(xavier[path], orthogonal[path]), path
    for path in others:
        np.testing.assert_array_equal(xavier[path], orthogonal[path], err_msg=path)
    # The random non-kernel weight is drawn from the run's seed, alike in every arm.
    assert np.std(xavier["scale/scale"]) > 0
    other_seed = _weights_at_start("xavier_normal", tmp_path, seed=1)
    assert not np.array_equal(other_seed["scale/scale"], xavier["scale/scale"])


def test_saved_keras_model_is_retrained_from_its_architecture(tmp_path):
    from tests.experiments import custom_models

    path = tmp_path / "mine.keras"
    saved = custom_models.small_cnn((32, 32, 1), 9)
    saved.layers[-1].bias.assign(np.arange(9.0) * 3)  # "trained": reinitialize zeroes it
    saved.save(path)
    settings = config.resolve(
        initializers=("kaiming_normal",),
        model=str(path),
        logdir=str(tmp_path / "logs"),
        **{**TINY, "histogram_every": 0},
    )
    (entry,) = runner.compare(settings, progress=lambda line: None)
    assert entry["status"] == "ok" and entry["initial_loss"] == pytest.approx(np.log(9), rel=0.2)
    root = tmp_path / "logs" / settings.experiment
    assert json.loads((root / "summary.json").read_text())["flags"]["model"] == [str(path)]


def _compare_error(**settings) -> str:
    with pytest.raises(ExperimentError) as error:
        resolved = config.resolve(**{**TINY, **settings})
        runner.compare(resolved, progress=lambda line: None)
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("tests.experiments.no_such_module:net", "no module named 'tests.experiments.no_such"),
        ("tests.experiments.custom_models:no_such", "has no function 'no_such'"),
        ("tests.experiments.custom_models:NOT_A_FUNCTION", "is a int, not a function"),
        ("tests/experiments/custom_models.py:small_cnn", "not a file path"),
        ("vgg", "Unknown --model 'vgg'; choose mlp, cnn, resmlp, resnet"),
        ("/no/such/model.keras", "no such file"),
        ("tests.experiments.custom_models:a_layer", "returned a Dense; it must return a keras"),
        ("tests.experiments.custom_models:vectors_of_ten", "takes inputs of shape (None, 10)"),
        ("tests.experiments.custom_models:one_class_too_many", "outputs shape (None, 10)"),
        ("tests.experiments.custom_models:logits_mlp", "end it with a softmax"),
    ],
)
def test_bad_own_models_fail_in_one_line_before_training(model, message, tmp_path):
    assert message in _compare_error(model=model, logdir=str(tmp_path))
    assert not list(tmp_path.iterdir())  # nothing written, nothing trained


def test_a_file_that_does_not_load_and_architecture_flags(tmp_path):
    broken = tmp_path / "broken.keras"
    broken.write_text("not a zip file")
    assert "cannot load it" in _compare_error(model=str(broken), logdir=str(tmp_path / "l"))
    assert "--depth, --activation do not apply to --model" in _compare_error(
        model=OWN, depth=3, activation=("relu",)
    )
    # A preset's depth, width and activation are dropped, not refused.
    assert config.resolve("he2015", model=OWN).depth == (None,)


@pytest.fixture(scope="module")
def conv_only(tmp_path_factory):
    settings = config.resolve(
        initializers=("dirac", "delta_orthogonal", "xavier_normal"),
        model="cnn",
        logdir=str(tmp_path_factory.mktemp("conv")),
        **{**BUILTIN_TINY, "histogram_every": 0},
    )
    return settings, runner.compare(settings, progress=lambda line: None)


def test_conv_only_initializers_run_on_the_cnn_with_the_fallback(conv_only):
    settings, entries = conv_only
    root = Path(settings.logdir) / settings.experiment
    assert [entry["status"] for entry in entries] == ["ok"] * 3
    assert [entry["fallback_layers"] for entry in entries] == [["output"], ["output"], []]
    stored = json.loads((root / "summary.json").read_text())
    assert stored["flags"]["fallback_initializer"] == "xavier_normal"
    rows = list(csv.DictReader((root / "summary.csv").open()))
    assert [row["fallback_layers"] for row in rows] == ["output", "output", ""]
    fallbacks = [_hparams(root / entry["run_dir"])["fallback"] for entry in entries]
    assert fallbacks == ["xavier_normal", "xavier_normal", "none"]
    report = (root / "report.md").read_text()
    assert "## Fallback initializer" in report
    assert "| `dirac` | `output` |" in report and "| `delta_orthogonal` | `output` |" in report
    assert "`xavier_normal` | `output`" not in report
    # The arms differ from step 0: dirac's convolutions pass the input through.
    assert entries[0]["initial_loss"] != entries[2]["initial_loss"]


def test_report_states_the_chance_level(conv_only):
    settings, _ = conv_only
    dataset = data.load(settings.dataset, settings.train_size, settings.test_size)
    chance = np.bincount(dataset.y_test).max() / len(dataset.y_test)
    report = (Path(settings.logdir) / settings.experiment / "report.md").read_text()
    assert f"test accuracy (chance {chance:.3f})" in report
    assert f"Chance level: test accuracy {chance:.3f}" in report and "1/9 = 0.111" in report


def test_builtin_models_keep_their_per_layer_seeds():
    # Initializers that take every kernel still go through models.build (layer_seed).
    settings = dict(input_shape=(32, 32, 1), num_classes=9, depth=2, width=8, activation="tanh")
    built = models.initialize(
        "cnn", x_sample=None, initializer="xavier_normal", fallback="zeros", seed=3, **settings
    )
    again = models.build("cnn", initializer="xavier_normal", seed=3, **settings)
    assert built.report is None and built.fallback_layers == ()
    for mine, theirs in zip(built.model.weights, again.weights, strict=True):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    with pytest.raises(ValueError, match="refuses every kernel"):
        models.initialize(
            "mlp", x_sample=None, initializer="dirac", fallback="xavier_normal", seed=0,
            **{**settings, "input_shape": (16,)},
        )


def test_diagnose_takes_your_own_model_and_the_fallback():
    settings = config.resolve(model=OWN, initializers=("dirac", "xavier_normal"), probe_size=16)
    inspection = inspect_init.inspect(settings)
    assert list(inspection.groups) == ["own model"]
    for diagnosis in inspection.groups["own model"].values():
        assert [row["name"] for row in diagnosis.layers] == OWN_LAYERS
    cnn = config.resolve(model="cnn", depth=2, width=8, initializers=("dirac",), probe_size=16)
    assert list(inspect_init.inspect(cnn).groups["tanh"]) == ["dirac"]


def test_console_shows_one_line_per_run(tmp_path, capsys):
    tiny = ["--depth=2", "--width=8", "--train_size=96", "--test_size=32", "--epochs=2"]
    tiny += ["--histogram_every=0", "--seeds=0", f"--logdir={tmp_path}"]
    run_compare(*tiny, "--initializers=xavier_normal,zeros")
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and out[2].startswith("results: ")
    for line, spec in zip(out, ("xavier_normal", "zeros"), strict=False):
        assert re.fullmatch(
            rf"run \d/2 {spec} seed 0: epoch 2/2 loss \d\.\d{{3}} test acc 0\.\d{{3}} "
            r"\(group of 2: \d+\.\d s\)",
            line,
        ), line
    run_compare(*tiny, "--initializers=xavier_normal", "--verbose=2", "--experiment=bars")
    assert "val_accuracy" in capsys.readouterr().out  # Keras's own epoch lines


def test_cli_errors_for_own_models_are_one_line(tmp_path):
    for argv, message in (
        (["--model=tests.experiments.custom_models:nope"], "has no function 'nope'"),
        ([f"--model={OWN}", "--width=3"], "--width does not apply to --model"),
        (["--fallback_initializer=nope_normal"], "--fallback_initializer: Unknown initializer"),
        (["--verbose=3"], "--verbose must be 0 (one line per run)"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            run_compare(*argv, f"--logdir={tmp_path}")
        text = str(exit_info.value.code)
        assert text.startswith("keras-inits-compare: error: ") and "\n" not in text
        assert message in text, text
