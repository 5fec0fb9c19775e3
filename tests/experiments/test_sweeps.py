"""Sweeps: every swept setting's value is a cell of runs, in summary, HParams and report."""

import csv
import json
import re
import sys
from pathlib import Path

import pytest
from absl import flags

from experiments import compare, config, runner
from tests.experiments.test_own_models import _hparams

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


def test_sweeps_come_from_comma_separated_flags(tmp_path, capsys):
    flags.FLAGS.unparse_flags()
    try:
        flags.FLAGS(
            [
                "compare",
                "--initializers=xavier_normal",
                "--learning_rate=0.1,0.01",
                "--optimizer=sgd,adam",
                "--depth=1",
                "--width=8",
                "--train_size=64",
                "--test_size=32",
                "--epochs=1",
                "--histogram_every=0",
                "--seeds=0",
                "--nogroup_arms",
                f"--logdir={tmp_path}",
            ]
        )
        compare.main(["compare"])
    finally:
        flags.FLAGS.unparse_flags()
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 5 and out[-1].startswith("results: ")
    assert out[0].startswith("run 1/4 xavier_normal optimizer=sgd learning_rate=0.1 seed 0: ")
    assert out[3].startswith("run 4/4 xavier_normal optimizer=adam learning_rate=0.01 seed 0: ")


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
