"""Sweeps: every swept setting's value is a cell of runs, in summary, HParams and report,
and the optimizer flags reach the optimizer each run trains with."""

import contextlib
import csv
import io
import json
import re
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from experiments import config, runner
from tests.experiments.cli import run_compare
from tests.experiments.test_own_models import _hparams
from tests.experiments.test_settings_reach import TrainingSeen

TINY = dict(
    seeds=(0,),
    width=8,
    train_size=96,
    test_size=32,
    epochs=2,
    histogram_every=0,
    probe_size=32,
)
SPECS = ("xavier_normal", "kaiming_normal")


@pytest.fixture(scope="module")
def depth_sweep(tmp_path_factory):
    settings = config.resolve(
        **TINY,
        initializers=SPECS,
        depth=(1, 3),
        batch_size=(16, 32),
        logdir=str(tmp_path_factory.mktemp("sweep")),
    )
    lines = []
    return settings, runner.compare(settings, progress=lines.append), lines


def test_the_grid_is_every_cell_times_every_initializer(depth_sweep):
    settings, entries, lines = depth_sweep
    assert [(e["depth"], e["batch_size"], e["initializer"]) for e in entries] == [
        (depth, batch, spec) for depth in (1, 3) for batch in (16, 32) for spec in SPECS
    ]
    # A cell's batch size sets its steps: 96 examples, 2 epochs.
    assert [e["steps"] for e in entries] == [12, 12, 6, 6] * 2
    assert all(e["group_size"] == 2 and e["status"] == "ok" for e in entries)
    assert entries[0]["run_dir"] == "xavier_normal_depth1_batch_size16_seed0"
    assert len({e["run_dir"] for e in entries}) == 8
    assert lines[0].startswith("run 1/8 xavier_normal depth=1 batch_size=16 seed 0: epoch 2/2")
    # Deeper nets start from another loss: the cells are really different models.
    assert entries[0]["initial_loss"] != entries[4]["initial_loss"]


def test_swept_settings_are_in_summary_hparams_and_report(depth_sweep):
    settings, entries, _ = depth_sweep
    root = Path(settings.logdir) / settings.experiment
    assert settings.experiment == (
        "lesson-initializers=xavier_normal,kaiming_normal-depth=1,3-width=8-train_size=96-"
        "test_size=32-epochs=2-batch_size=16,32-seeds=0-histogram_every=0-probe_size=32"
    )
    with open(root / "summary.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["depth"] for row in rows] == ["1", "1", "1", "1", "3", "3", "3", "3"]
    assert {row["batch_size"] for row in rows} == {"16", "32"}
    stored = json.loads((root / "summary.json").read_text())
    assert stored["flags"]["depth"] == [1, 3]
    values = _hparams(root / entries[7]["run_dir"])
    assert values["depth"] == 3 and values["batch_size"] == 32
    assert values["initializer"] == "kaiming_normal"
    report = (root / "report.md").read_text()
    assert "](sweep_depth.png)" in report and "](sweep_batch_size.png)" in report
    assert (root / "sweep_depth.png").read_bytes()[:4] == b"\x89PNG"
    # Results grouped by the swept settings: a row per (depth, batch size, initializer).
    assert len(re.findall(r"^\| 3 \| 32 \| `kaiming_normal` \|", report, re.MULTILINE)) == 2


def test_adding_a_value_trains_only_the_new_cell(depth_sweep, tmp_path):
    settings, entries, _ = depth_sweep
    grown = config.resolve(
        **TINY,
        initializers=SPECS,
        depth=(1, 3, 2),
        batch_size=(16, 32),
        logdir=settings.logdir,
        experiment=settings.experiment,
    )
    lines = []
    again = runner.compare(grown, progress=lines.append)
    assert sum("skipped" in line for line in lines) == 8
    assert sorted({e["depth"] for e in again}) == [1, 2, 3] and len(again) == 12
    assert [e["final_loss"] for e in again if e["depth"] != 2] == [
        e["final_loss"] for e in entries
    ]


@pytest.fixture(scope="module")
def flag_sweep(tmp_path_factory):
    """`compare --optimizer=sgd,adam --learning_rate=0.1,0.01 --momentum=0.5 --nogroup_arms`
    on one initializer: what it prints, the config the flags made, the summary entries, and
    what each run's fit trained with (`runner.compare` wrapped to add the callback)."""
    seen, made = TrainingSeen(), {}
    real_compare = runner.compare

    def watched_compare(settings, **kwargs):
        made["settings"] = settings
        made["entries"] = real_compare(settings, callbacks=[seen], **kwargs)
        return made["entries"]

    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setattr(runner, "compare", watched_compare)
        run_compare(
            "--initializers=xavier_normal",
            "--learning_rate=0.1,0.01",
            "--optimizer=sgd,adam",
            "--momentum=0.5",
            "--depth=1",
            "--width=8",
            "--train_size=96",  # 3 steps: the train function runs one step per call
            "--test_size=32",
            "--epochs=1",
            "--histogram_every=0",
            "--seeds=0",
            "--nogroup_arms",
            f"--logdir={tmp_path_factory.mktemp('flags')}",
        )
    return printed.getvalue().splitlines(), made["settings"], made["entries"], seen.fits


def test_sweeps_come_from_comma_separated_flags(flag_sweep):
    out, settings, entries, fits = flag_sweep
    assert len(out) == 5 and out[-1].startswith("results: ")
    assert out[0].startswith("run 1/4 xavier_normal optimizer=sgd learning_rate=0.1 seed 0: ")
    assert out[3].startswith("run 4/4 xavier_normal optimizer=adam learning_rate=0.01 seed 0: ")
    # ...and reach the optimizer each run trains with.
    assert (settings.optimizer, settings.learning_rate, settings.momentum) == (
        ("sgd", "adam"),
        (0.1, 0.01),
        0.5,
    )
    runs = [(entry["optimizer"], entry["learning_rate"]) for entry in entries]
    assert runs == [(name, rate) for name in ("sgd", "adam") for rate in (0.1, 0.01)]
    classes = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam}
    for fit, (name, rate) in zip(fits, runs, strict=True):
        assert fit["optimizer"] is classes[name]
        assert fit["learning_rate"] == pytest.approx(rate)
        assert fit["momentum"] == (0.5 if name == "sgd" else None)  # Adam has none


def test_a_learning_rate_ten_times_smaller_takes_steps_ten_times_smaller(flag_sweep):
    _, _, entries, fits = flag_sweep
    # One initializer and seed: every run starts from the same weights and first batch.
    for fit in fits[1:]:
        for weight, first in zip(fit["start"], fits[0]["start"], strict=True):
            np.testing.assert_array_equal(weight, first)
    # A first step is the rate times a function of the first gradient alone: -rate * g for
    # sgd (its momentum starts at zero), -rate * g / (|g| + eps') for adam. So 10 times
    # the rate, 10 times the step, weight by weight.
    for large, small in (fits[:2], fits[2:]):
        assert large["steps_at_first_batch_end"] == small["steps_at_first_batch_end"] == 1
        for start, after_large, after_small in zip(
            large["start"], large["first_step"], small["first_step"], strict=True
        ):
            step_large, step_small = after_large - start, after_small - start
            assert np.abs(step_large).max() > 0
            np.testing.assert_allclose(step_large, 10 * step_small, rtol=1e-3, atol=1e-6)
        # After the epoch, the smaller rate has moved every weight less from its start...
        for start, end_large, end_small in zip(
            large["start"], large["end"], small["end"], strict=True
        ):
            assert np.linalg.norm(end_small - start) < np.linalg.norm(end_large - start)
    # ...and the runs end at other test losses, from the same initial one.
    for large, small in (entries[:2], entries[2:]):
        assert large["initial_loss"] == pytest.approx(small["initial_loss"], rel=1e-6)
        assert large["final_test_loss"] != pytest.approx(small["final_test_loss"], rel=1e-3)


def test_a_sweep_of_your_own_model_and_a_builtin(tmp_path):
    own = "tests.experiments.custom_models:small_cnn"
    settings = config.resolve(
        **{**TINY, "width": 4},
        initializers=("xavier_normal",),
        model=("cnn", own),
        depth=(1,),
        logdir=str(tmp_path),
    )
    entries = runner.compare(settings, progress=lambda _: None)
    assert [(e["model"], e["depth"], e["activation"]) for e in entries] == [
        ("cnn", 1, "tanh"),
        (own, None, None),
    ]
    assert entries[1]["run_dir"] == f"xavier_normal_{own.replace(':', '-')}_seed0"
    assert sys.modules["tests.experiments.custom_models"]  # imported by the harness
