"""End-to-end comparisons on tiny settings: logs, summaries, report, divergence, resume."""

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from experiments import config, runner
from experiments.data import datasets as data
from experiments.engine import strategies, training
from experiments.errors import ExperimentError
from experiments.results import summary

TINY = {
    "seeds": (0,),
    "depth": 2,
    "width": 8,
    "train_size": 96,
    "test_size": 32,
    "epochs": 2,
    "batch_size": 32,
    "histogram_every": 2,
    "probe_size": 32,
    "verbose": 0,
}
LAYERS = ("hidden_1", "hidden_2", "output")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A two-initializer comparison, run once for the tests of this module."""
    settings = config.resolve(
        initializers=("xavier_normal", "random_uniform(minval=-0.1, maxval=0.1)"),
        logdir=str(tmp_path_factory.mktemp("logs")),
        **TINY,
    )
    lines = []
    entries = runner.compare(settings, progress=lines.append)
    return settings, entries, lines


def _events(run_dir: Path) -> event_accumulator.EventAccumulator:
    accumulator = event_accumulator.EventAccumulator(
        str(run_dir), size_guidance={event_accumulator.TENSORS: 0}
    )
    return accumulator.Reload()


def test_runs_finish_with_progress_lines(finished):
    settings, entries, lines = finished
    # One line per run, when it ends, then the results line.
    assert len(lines) == 3 and lines[2].startswith("results: ")
    for line, spec in zip(lines, settings.initializers, strict=False):
        match = re.fullmatch(
            r"run (\d)/2 (.+) seed 0: epoch 2/2 loss (\S+) test acc (\S+) "
            r"\(group of 2: \d+\.\d s\)",
            line,
        )
        assert match and match[2] == spec, line
    assert lines[0].startswith("run 1/2 xavier_normal seed 0: ")
    assert [entry["status"] for entry in entries] == ["ok", "ok"]
    steps = TINY["epochs"] * TINY["train_size"] // TINY["batch_size"]
    for entry in entries:
        assert entry["steps"] == steps and entry["diverged_at_step"] is None
        assert entry["train_seconds"] > 0 and entry["initial_loss"] > 0
        assert entry["group_size"] == 2 and entry["depth"] == 2 and entry["activation"] == "tanh"
        assert 0 <= entry["final_test_accuracy"] <= 1


def test_event_files_hold_histograms_scalars_and_hparams(finished):
    settings, entries, _ = finished
    root = Path(settings.logdir) / settings.experiment
    events = _events(root / entries[0]["run_dir"])
    tags = set(events.Tags()["tensors"])
    for layer in LAYERS:
        for tag in (
            f"activations/{layer}",
            f"activation_gradients/{layer}",
            f"weight_gradients/{layer}/kernel",
            f"weights/{layer}/kernel",
        ):
            assert tag in tags
            assert events.SummaryMetadata(tag).plugin_data.plugin_name == "histograms"
        for tag in ("activation_std", "activation_gradient_std", "weight_gradient_std"):
            assert f"{tag}/{layer}" in tags
    assert {"saturation/hidden_1", "saturation/hidden_2"} <= tags  # tanh saturates
    assert {"loss/train", "loss/test", "accuracy/train", "accuracy/test"} <= tags
    assert "_hparams_/session_start_info" in events.summary_metadata
    histogram = events.Tensors("activations/hidden_1")
    assert [event.step for event in histogram] == [0, 2, 4, 6]  # step 0, then every 2
    buckets = [np.frombuffer(e.tensor_proto.tensor_content).reshape(-1, 3) for e in histogram]
    assert all(b.shape == (30, 3) for b in buckets)
    assert buckets[0][:, 2].sum() == TINY["probe_size"] * TINY["width"]
    assert [event.step for event in events.Tensors("loss/test")] == [0, 3, 6]  # start, epochs
    root_events = _events(root)
    assert "_hparams_/experiment" in root_events.summary_metadata


def test_summary_report_and_plots_exist(finished):
    settings, entries, _ = finished
    root = Path(settings.logdir) / settings.experiment
    stored = json.loads((root / "summary.json").read_text())
    assert stored["runs"] == entries and stored["flags"]["depth"] == [2]
    assert set(summary.FIELDS) <= set(entries[0])
    assert (root / "summary.csv").read_text().count("\n") == 3
    report = (root / "report.md").read_text()
    assert "only the kernel initializer differs" in report
    assert "`random_uniform(minval=-0.1, maxval=0.1)`" in report
    for name in (
        "loss_curves.png",
        "depth_profiles.png",
        "activation_histograms_initial.png",
        "activation_histograms_final.png",
    ):
        assert (root / name).read_bytes()[:4] == b"\x89PNG" and f"]({name})" in report


def test_rerun_skips_finished_runs_and_overwrite_redoes_them(finished):
    settings, entries, _ = finished
    lines = []
    assert runner.compare(settings, progress=lines.append) == entries  # nothing retrained
    assert all("skipped" in line for line in lines[:2])
    changed = config.resolve(
        **{**TINY, "epochs": 3}, logdir=settings.logdir, experiment=settings.experiment
    )
    with pytest.raises(ExperimentError, match="holds runs with other settings"):
        runner.compare(changed)


def test_an_interrupted_comparison_resumes_with_the_missing_run_only(finished, tmp_path):
    settings, entries, _ = finished
    # Copy the finished experiment, then forget its second run as an interrupt would.
    root = tmp_path / settings.experiment
    shutil.copytree(Path(settings.logdir) / settings.experiment, root)
    document = json.loads((root / "summary.json").read_text())
    document["runs"] = document["runs"][:1]
    (root / "summary.json").write_text(json.dumps(document))
    resumed = dataclasses.replace(settings, logdir=str(tmp_path))
    lines = []
    again = runner.compare(resumed, progress=lines.append)
    assert "skipped" in lines[0] and lines[1].startswith(
        entries[1]["initializer"].join(["run 2/2 ", " seed 0: epoch 2/2 loss "])
    )
    assert [entry["initializer"] for entry in again] == [e["initializer"] for e in entries]
    # The retrained run is the same run: identical seeds, data and order.
    assert again[1]["final_loss"] == pytest.approx(entries[1]["final_loss"], rel=1e-6)


def test_a_logdir_uri_gets_everything_through_tensorflows_file_systems(finished):
    """`ram://` is a file system of TensorFlow's (in this process's memory): a comparison
    written there, as to gs://, has its summary, run details, models, report, figures and events,
    and resumes; nothing lands on the local disk under that name."""
    settings, entries, _ = finished
    uri = dataclasses.replace(settings, logdir="ram://logs")
    again = runner.compare(uri, progress=lambda _: None)
    for mine, local in zip(again, entries, strict=True):
        assert mine["final_loss"] == pytest.approx(local["final_loss"], rel=1e-6)
    root = f"ram://logs/{settings.experiment}"
    stored = json.loads(tf.io.gfile.GFile(f"{root}/summary.json").read())
    assert [entry["run_dir"] for entry in stored["runs"]] == [e["run_dir"] for e in entries]
    for entry in entries:
        run = f"{root}/{entry['run_dir']}"
        assert json.loads(tf.io.gfile.GFile(f"{run}/run.json").read())["history"]["step"]
        assert tf.io.gfile.glob(f"{run}/events.out.tfevents.*")
        assert tf.io.gfile.exists(f"{run}/{training.INITIAL_WEIGHTS}")
        model = keras.saving.load_model(f"{run}/{training.MODEL_FILE}")
        assert model.output_shape == (None, 9)
    assert "## Results" in tf.io.gfile.GFile(f"{root}/report.md").read()
    assert tf.io.gfile.GFile(f"{root}/loss_curves.png", "rb").read()[:4] == b"\x89PNG"
    lines = []
    runner.compare(uri, progress=lines.append)
    assert sum("already in summary.json" in line for line in lines) == len(entries)
    assert not Path("ram:").exists()


def test_overwrite_removes_the_earlier_runs_folders(tmp_path):
    first = config.resolve(
        initializers=("xavier_normal", "zeros"), logdir=str(tmp_path), experiment="x",
        **{**TINY, "epochs": 1, "histogram_every": 0},
    )
    runner.compare(first, progress=lambda line: None)
    second = dataclasses.replace(first, initializers=("xavier_normal",), overwrite=True)
    runner.compare(second, progress=lambda line: None)
    folders = sorted(path.name for path in (tmp_path / "x").iterdir() if path.is_dir())
    assert folders == ["xavier_normal_seed0"]


def test_same_initializer_and_seed_give_identical_runs(tmp_path):
    settings = config.resolve(**{**TINY, "histogram_every": 0})
    dataset = data.load(settings.dataset, settings.train_size, settings.test_size)
    runs = [
        training.train_group(
            settings,
            dataset,
            cell=settings.cells()[0],
            seed=1,
            arms=[training.Arm("random_normal(stddev=0.3, seed=7)", tmp_path / str(index))],
        )[0]
        for index in range(2)
    ]
    assert runs[0].details["history"] == runs[1].details["history"]
    assert runs[0].details["profiles"] == runs[1].details["profiles"]
    assert "activations/hidden_1" not in _events(tmp_path / "0").Tags()["tensors"]


def test_training_batches_depend_on_the_seed_only():
    x = np.arange(40, dtype=np.float32)[:, None]
    y = np.arange(40)

    def epochs(seed):
        batches = training.training_batches(x, y, batch_size=8, seed=seed, epochs=2)
        labels = np.concatenate([batch[1].numpy() for batch in batches])
        assert np.array_equal(np.concatenate([batch[0].numpy()[:, 0] for batch in batches]), labels)
        return labels.reshape(2, 40)

    first, again, other = epochs(3), epochs(3), epochs(4)
    np.testing.assert_array_equal(first, again)  # any initializer sees these batches
    for order in first:  # every example once per epoch
        np.testing.assert_array_equal(np.sort(order), y)
    assert not np.array_equal(first[0], first[1])  # reshuffled each epoch
    assert not np.array_equal(first[0], other[0])


def test_training_batches_are_the_same_under_a_distribution_strategy():
    """A strategy rebatches the dataset; a seeded tf.data shuffle loses its seed state
    there, the order drawn up front does not."""
    x = np.arange(64, dtype=np.float32)[:, None]
    batches = training.training_batches(x, np.arange(64), batch_size=16, seed=0, epochs=2)
    # The harness's own strategy: two MirroredStrategy objects in one process clash over
    # their collective ops' instance keys.
    strategy = strategies.get("mirrored")
    assert strategy.num_replicas_in_sync == 2
    distributed = strategy.experimental_distribute_dataset(batches)
    seen = [np.sort(strategy.gather(batch[1], axis=0).numpy()) for batch in distributed]
    expected = [np.sort(batch[1].numpy()) for batch in batches]
    np.testing.assert_array_equal(seen, expected)


def test_layers_get_distinct_seeds_even_when_the_spec_names_one():
    from experiments import models

    model = models.build(
        "mlp",
        input_shape=(8,),
        num_classes=8,
        depth=3,
        width=8,
        activation="tanh",
        initializer="random_normal(seed=5)",
        seed=0,
    )
    kernels = [model.get_layer(name).kernel.numpy() for name in ("hidden_2", "hidden_3", "output")]
    assert not np.array_equal(kernels[0], kernels[1]) and not np.array_equal(kernels[1], kernels[2])


def test_divergence_is_recorded_and_the_comparison_goes_on(tmp_path):
    settings = config.resolve(
        initializers=("random_normal(stddev=1e4)", "xavier_normal"),
        activation=("linear",),
        learning_rate=0.01,
        momentum=0.0,
        logdir=str(tmp_path),
        **{**TINY, "epochs": 3},
    )
    lines = []
    diverged, ok = runner.compare(settings, progress=lines.append)
    assert diverged["status"] == "diverged" and diverged["diverged_at_step"] >= 1
    assert diverged["steps"] == diverged["diverged_at_step"] and diverged["final_loss"] is None
    assert any("diverged at step" in line for line in lines)
    assert ok["status"] == "ok" and ok["steps"] == 9
    root = tmp_path / settings.experiment
    assert "activations/hidden_1" in _events(root / diverged["run_dir"]).Tags()["tensors"]
    assert "diverged at step" in (root / "report.md").read_text()


def test_cli_lists_presets_and_reports_bad_flags_in_one_line():
    listing = subprocess.run(
        [sys.executable, "-m", "experiments.compare", "--list_presets"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    assert "he2015:" in listing.stdout and "glorot2010:" in listing.stdout
    # As from a shell: importing TensorFlow in this process set TF_CPP_MIN_LOG_LEVEL here.
    shell = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    bad = subprocess.run(
        [sys.executable, "-m", "experiments.compare", "--depth=0"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=shell,
    )
    assert bad.returncode == 1
    # The one line, and nothing from TensorFlow's start before it (a quiet start).
    assert bad.stderr.strip().splitlines() == [
        "keras-inits-compare: error: --depth must be integers >= 1, got 0."
    ]
    other_backend = subprocess.run(
        [sys.executable, "-m", "experiments.compare", "--depth=1"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "KERAS_BACKEND": "jax"},
    )
    assert other_backend.returncode == 1 and "Traceback" not in other_backend.stderr
    assert "runs on the TensorFlow backend" in other_backend.stderr.strip().splitlines()[-1]


def test_conv_only_initializer_on_an_mlp_fails_before_training(tmp_path):
    settings = config.resolve(initializers=("dirac",), logdir=str(tmp_path), **TINY)
    with pytest.raises(ExperimentError, match="dirac cannot initialize the model"):
        runner.compare(settings)
    assert not (tmp_path / settings.experiment / "summary.json").exists()
