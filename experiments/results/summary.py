"""`summary.json` and `summary.csv`: one entry per finished run, rewritten after every run.

Writes are atomic (a temporary file renamed over the old one; `files.write_text`), so an
interrupted comparison leaves a readable summary of the runs that finished,
and a re-run with the same settings skips exactly those.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from typing import Any

import tensorflow as tf

from experiments import files
from experiments.config import EXECUTION, SWEPT, Cell, ExperimentConfig
from experiments.errors import ExperimentError

FIELDS = (
    "initializer",
    *SWEPT,
    "seed",
    "run_dir",
    "status",
    "steps",
    "train_seconds",
    "histogram_seconds",
    "group_size",
    "engine",
    "initial_loss",
    "final_loss",
    "final_train_loss",
    "final_test_loss",
    "final_test_accuracy",
    "diverged_at_step",
    "fallback_layers",
    "error",
)
# The status of a run whose Ray task gave up (besides "ok" and "diverged").
FAILED = "failed"
JSON_NAME = "summary.json"
CSV_NAME = "summary.csv"
# Settings that may differ between invocations sharing a folder: they only add runs.
# (group_arms and the EXECUTION settings change how runs train, not their results.)
_RUN_AXES = ("initializers", "seeds", "group_arms", *EXECUTION, *SWEPT)


def run_key(entry: dict[str, Any]) -> tuple[str, int, Cell]:
    """What identifies a run: initializer spec, seed, and its cell (swept settings)."""
    return entry["initializer"], entry["seed"], Cell(**{name: entry[name] for name in SWEPT})


def flags_of(config: ExperimentConfig) -> dict[str, Any]:
    """The settings stored with the summary (JSON-ready)."""
    flags = dataclasses.asdict(config)
    del flags["overwrite"], flags["verbose"]
    return {
        name: list(value) if isinstance(value, tuple) else value for name, value in flags.items()
    }


def load(root: str, config: ExperimentConfig) -> list[dict[str, Any]]:
    """Entries of runs already finished under `root` with settings compatible with `config`.

    Raises:
        ExperimentError: the folder holds runs trained with other settings (say
            another depth): mixing them would make the comparison meaningless.
    """
    path = files.join(root, JSON_NAME)
    if not files.exists(path):
        return []
    try:
        stored = json.loads(files.read_text(path))
        runs, stored_flags = stored["runs"], stored["flags"]
    except (OSError, tf.errors.OpError, ValueError, KeyError) as error:
        raise ExperimentError(
            f"Cannot read {path} ({error}); pass --overwrite to start the experiment again."
        ) from None
    current = flags_of(config)
    # A setting added to the harness after the folder was written had its default then.
    defaults = flags_of(ExperimentConfig())
    differences = [
        f"{name}: {stored_flags.get(name, defaults[name])!r} there, {value!r} now"
        for name, value in current.items()
        if name not in (*_RUN_AXES, "preset", "logdir", "experiment")
        and stored_flags.get(name, defaults[name]) != value
    ]
    if differences:
        raise ExperimentError(
            f"{root} holds runs with other settings ({'; '.join(differences)}); pass "
            "--overwrite or choose another --experiment."
        )
    # Entries written before a setting became a list lack its field: the folder's value.
    for entry in runs:
        for name in SWEPT:
            if name not in entry:
                value = stored_flags.get(name, defaults[name])
                entry[name] = value[0] if isinstance(value, list) else value
    return runs


def save(root: str, config: ExperimentConfig, entries: list[dict[str, Any]]) -> None:
    """Writes `summary.json` (flags and entries) and `summary.csv` (entries) atomically."""
    document = {"experiment": config.experiment, "flags": flags_of(config), "runs": entries}
    files.write_text(files.join(root, JSON_NAME), json.dumps(document, indent=2) + "\n")
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    # Lists (the layers that got the fallback) as space-separated names.
    writer.writerows(
        {key: " ".join(value) if isinstance(value, list) else value for key, value in e.items()}
        for e in entries
    )
    files.write_text(files.join(root, CSV_NAME), table.getvalue())

