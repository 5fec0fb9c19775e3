"""The comparison: every initializer x cell (swept settings) x seed, resumable, then the report.

`compare(config)` is the one library call behind `python -m experiments.compare`.
It checks the settings, loads the data and builds each initializer's model once
per architecture (your own model included: it must fit the data) before training
anything. `plan` groups the runs: the initializers and learning rates of one cell and
seed train together (`training.train_group`), or one at a time with `config.group_arms`
off. Runs whose entries already exist in `summary.json` are skipped (unless
`config.overwrite`), the summary is rewritten after every group, and a diverged
run is recorded without stopping the others. With `config.ray_address` the groups
run as tasks on a Ray cluster (`experiments.engine.cluster`); a run whose task failed is
recorded as `failed` with the reason, and trained again by the next invocation.
It reports one line per run when its group ends (`run 3/6 xavier_normal seed 0:
epoch 8/8 loss 1.856 test acc 0.237 (group of 6: 12.3 s)`, with how many runs are
left on Ray); on a terminal a line per group is updated after every epoch.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras
import tensorflow as tf

from experiments import config as config_lib
from experiments import files, models
from experiments.config import ExperimentConfig
from experiments.data import datasets as data_lib
from experiments.engine import cluster
from experiments.engine.training import RUN_DETAILS, Arm, RunResult, run_name, train_group
from experiments.errors import ExperimentError
from experiments.plan import Group, RunKey, all_runs, plan
from experiments.results import hparams, report, summary


def compare(
    config: ExperimentConfig,
    *,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    progress: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Runs the comparison described by `config` and writes its results.

    Results go to `<logdir>/<experiment>/`: one TensorBoard run folder per run
    (holding `run.json` too), `summary.json`, `summary.csv`, `report.md` and PNGs.

    Args:
        config: settings, e.g. from `config.resolve`.
        callbacks: extra Keras callbacks for every run's `fit` (benchmarks use it).
        progress: receives one line per run, when it ends (and one at the end). When
            it is `print`, `config.verbose` is 0 and stdout is a terminal, the line is
            also shown, and rewritten, after every epoch while the run trains.

    Returns:
        The summary entries, in plan order, then entries of earlier runs
        (other initializers or seeds) found in the same folder.

    Raises:
        ExperimentError: bad settings or unloadable data, before any training.
    """
    config_lib.validate(config)
    if not config.ray_address:
        return _compare(config, callbacks, progress)
    if callbacks:
        raise ExperimentError("Keras callbacks cannot be sent to Ray tasks; run in-process.")
    config = dataclasses.replace(config, logdir=cluster.shared_logdir(config.logdir))
    cluster.connect(config)
    try:
        return _compare(config, callbacks, progress)
    finally:
        cluster.disconnect()


def _compare(
    config: ExperimentConfig,
    callbacks: Sequence[keras.callbacks.Callback],
    progress: Callable[[str], None],
) -> list[dict[str, Any]]:
    root = files.join(config.logdir, config.experiment)
    if config.overwrite:
        _remove_earlier_runs(root)
    previous = summary.load(root, config)
    finished = _finished(previous)
    groups = plan(config, finished)
    if config.ray_address:  # first: workers warm up while the data loads and models build
        cluster.warm_up(config, len(groups))
    data = data_lib.load(
        config.dataset, config.train_size, config.test_size, config.sequence_length
    )
    models.check_data(config.model, data)
    checked = _check_initializers_fit(config, data)
    live = progress is print and config.verbose == 0 and sys.stdout.isatty()
    live = live and not config.ray_address  # Ray's tasks report when they end
    runs = all_runs(config)
    swept = config.swept()
    names = {key: run_name(key[0], key[2], swept, key[1]) for key in runs}
    labels = {
        key: f"run {number}/{len(runs)} {_describe(key, swept)}"
        for number, key in enumerate(runs, start=1)
    }
    if len(set(names.values())) < len(names):
        raise ExperimentError(
            f"Two initializer specs give the same run folder name: {config.initializers}."
        )
    files.makedirs(root)
    hparams.write_experiment(root, config, previous)

    # Failed runs stay in the summary until trained again.
    done = {summary.run_key(entry): entry for entry in previous}
    for key in runs:
        if key in finished:
            progress(
                f"{labels[key]}: already in summary.json, skipped (--overwrite runs it again)"
            )
    work = [
        (group, [
            Arm(key[0], files.join(root, names[key]), key[2].learning_rate)
            for key in group.runs()
        ])
        for group in groups
    ]
    if config.ray_address:
        outcomes = cluster.train_groups(config, data, work)
    else:
        outcomes = _train_here(config, data, work, swept, callbacks, live, checked)
    left = sum(len(group.arms) for group in groups)
    for outcome in outcomes:
        keys = outcome.group.runs()
        for key, result in zip(keys, outcome.results or [None] * len(keys), strict=True):
            left -= 1
            if result is None:
                done[key] = failed_entry(key, outcome.error, len(outcome.group.arms))
                line = f"{labels[key]}: failed ({outcome.error})"
            else:
                done[key] = {**result.entry, "run_dir": names[key]}
                line = run_line(labels[key], result, config, outcome.seconds)
            if config.ray_address:  # tasks end in any order
                line += f"; {left} to go" if left else "; all done"
            progress(f"\r{line}{LiveLine.CLEAR}" if live else line)
        summary.save(root, config, _ordered(done, runs))

    entries = _ordered(done, runs)
    summary.save(root, config, entries)
    report.write(
        root,
        config,
        entries,
        details=_load_details(root, entries),
        chance=data.chance_accuracy,
        num_classes=data.num_classes,
        sequence=data.is_sequence,
    )
    results = files.join(root, report.REPORT_NAME)
    progress(f"results: {results}; tensorboard --logdir {config.logdir}")
    return entries


def _finished(entries: Sequence[dict[str, Any]]) -> dict[RunKey, dict[str, Any]]:
    """The runs that need no training, by key: all but those that failed (Ray gave up on
    their task), which are trained again."""
    return {summary.run_key(entry): entry for entry in entries if entry["status"] != summary.FAILED}


def _train_here(
    config: ExperimentConfig,
    data: data_lib.Dataset,
    work: Sequence[tuple[Group, Sequence[Arm]]],
    swept: Sequence[str],
    callbacks: Sequence[keras.callbacks.Callback],
    live: bool,
    checked: dict[tuple, models.Initialized],
) -> Iterator[cluster.Outcome]:
    """Trains the groups one after the other in this process; the models `checked` built
    (by architecture and initializer, with the first seed) are trained by the first group
    that needs them, rather than built again."""
    for number, (group, arms) in enumerate(work, start=1):
        settings = group.cell.describe(swept)
        label = f"group {number}/{len(work)} ({len(arms)} arm{'s' * (len(arms) > 1)}, "
        label += f"{settings}, " * bool(settings) + f"seed {group.seed})"
        started = time.perf_counter()
        results = train_group(
            config,
            data,
            cell=group.cell,
            seed=group.seed,
            arms=arms,
            callbacks=[*callbacks, *([LiveLine(label, config.epochs)] if live else [])],
            built=[
                checked.pop((_architecture(group.cell), arm.initializer), None)
                if group.seed == config.seeds[0] else None
                for arm in arms
            ],
        )
        yield cluster.Outcome(group, results, None, time.perf_counter() - started)


def failed_entry(key: RunKey, error: str | None, group_size: int) -> dict[str, Any]:
    """The summary entry of a run that did not finish: its key, status `failed`, the reason."""
    initializer, seed, cell = key
    missing = dict.fromkeys(summary.FIELDS)
    return {
        **missing,
        "initializer": initializer,
        "seed": seed,
        **cell.values(),
        "run_dir": None,
        "status": summary.FAILED,
        "error": error,
        "group_size": group_size,
        "fallback_layers": [],
    }


def _describe(key: RunKey, swept: Sequence[str]) -> str:
    """`xavier_normal seed 0`, with the swept settings: `xavier_normal depth=30 seed 0`."""
    initializer, seed, cell = key
    settings = cell.describe(swept)
    return " ".join(part for part in (initializer, settings, f"seed {seed}") if part)


def _remove_earlier_runs(root: str) -> None:
    """For --overwrite: deletes the run folders and results an earlier invocation wrote.

    Only what that invocation's summary.json names (and the files the harness
    writes at the root) is removed, never the folder as a whole: --logdir and
    --experiment may point anywhere.
    """
    path = files.join(root, summary.JSON_NAME)
    try:
        runs = json.loads(files.read_text(path))["runs"] if files.exists(path) else []
        run_dirs = [entry["run_dir"] for entry in runs]
    except (OSError, tf.errors.OpError, ValueError, KeyError, TypeError):
        run_dirs = []  # unreadable: nothing to trust; its folders stay
    for name in run_dirs:
        # Only folders directly under root that hold a run's details (a failed run has none).
        if not isinstance(name, str) or "/" in name or name in ("", ".", ".."):
            continue
        run_dir = files.join(root, name)
        if files.exists(files.join(run_dir, RUN_DETAILS)):
            files.remove_tree(run_dir)
    for result in (summary.JSON_NAME, summary.CSV_NAME, report.REPORT_NAME):
        files.remove(files.join(root, result))


def _check_initializers_fit(
    config: ExperimentConfig, data: data_lib.Dataset
) -> dict[tuple, models.Initialized]:
    """Builds each initializer's model once per architecture, with the first seed, so that a
    model that does not fit the data (your own) or a spec that cannot initialize it (dirac
    on an MLP, whose every kernel would get the fallback) fails before training. Returns
    them by (`_architecture`, initializer)."""
    architectures = {}
    for cell in config.cells():
        architectures.setdefault(_architecture(cell), cell)
    return {
        (architecture, initializer): models.initialize_run(
            config, cell, data, initializer=initializer, seed=config.seeds[0]
        )
        for architecture, cell in architectures.items()
        for initializer in config.initializers
    }


def _architecture(cell: config_lib.Cell) -> tuple:
    """What a cell's model depends on: cells that differ only in training settings build
    the same model."""
    return (
        cell.model, cell.depth, cell.width, cell.activation, cell.normalization,
        cell.parametrization,
    )


class LiveLine(keras.callbacks.Callback):
    """On a terminal: the run's line so far, rewritten in place after every epoch."""

    CLEAR = "\033[K"  # erases the rest of a longer line written before

    def __init__(self, label: str, epochs: int):
        super().__init__()
        self.label, self.epochs = label, epochs

    def on_train_begin(self, logs: dict | None = None) -> None:
        sys.stdout.write(f"\r{self.label}: epoch 1/{self.epochs}...{self.CLEAR}")
        sys.stdout.flush()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        text = f"{self.label}: epoch {epoch + 1}/{self.epochs}"
        accuracies = sorted(
            float(value)
            for key, value in logs.items()
            if key.startswith("val_") and key.endswith("_accuracy")
        )
        if accuracies:
            low, high = accuracies[0], accuracies[-1]
            text += f" test acc {low:.3f}" + (f" to {high:.3f}" if high != low else "")
        sys.stdout.write(f"\r{text}{self.CLEAR}")
        sys.stdout.flush()


def run_line(label: str, result: RunResult, config: ExperimentConfig, seconds: float) -> str:
    """The one line a finished run reports, e.g.
    `run 3/6 xavier_normal seed 0: epoch 8/8 loss 1.856 test acc 0.237 (12.3 s)`.

    The loss is the last epoch's training loss; a diverged run says at which step;
    a run whose initializer left some layers to the fallback names them. `seconds` is
    the wall time of the run's group (shared by the arms trained together).
    """
    entry = result.entry
    epoch = result.details["history"]["epoch"][-1]
    if entry["status"] == "diverged":
        text = (
            f"{label}: diverged at step {entry['diverged_at_step']} (epoch {epoch}/"
            f"{config.epochs}); going on"
        )
    else:
        loss, accuracy = entry["final_loss"], entry["final_test_accuracy"]
        text = f"{label}: epoch {epoch}/{config.epochs} loss {loss:.3f} test acc {accuracy:.3f}"
    size = entry["group_size"]
    text += f" (group of {size}: {seconds:.1f} s)" if size > 1 else f" ({seconds:.1f} s)"
    layers = entry["fallback_layers"]
    if layers:
        named = ", ".join(layers[:3]) + (f" and {len(layers) - 3} more" if len(layers) > 3 else "")
        text += f"; fallback {config.fallback_initializer} on {named}"
    return text


def _ordered(done: dict, runs: list) -> list[dict[str, Any]]:
    planned = [done[key] for key in runs if key in done]
    runs_set = set(runs)
    return planned + [entry for key, entry in done.items() if key not in runs_set]


def _load_details(root: str, entries: list[dict[str, Any]]) -> dict[str, dict]:
    """Each run's `run.json`, by run folder; runs whose file is gone are left out."""
    details = {}
    for entry in entries:
        if entry["run_dir"] is None:  # failed
            continue
        path = files.join(root, entry["run_dir"], RUN_DETAILS)
        if files.exists(path):
            details[entry["run_dir"]] = json.loads(files.read_text(path))
    return details
