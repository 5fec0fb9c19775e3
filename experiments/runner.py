"""The comparison: every initializer x activation x seed, resumable, then the report.

`compare(config)` is the one library call behind `python -m experiments.compare`.
It checks the settings, loads the data and builds each initializer's model once
(your own model included: it must fit the data) before training anything, skips
runs whose entries already exist in `summary.json` (unless `config.overwrite`),
rewrites the summary after every run, and records a diverged run without
stopping the comparison. It reports one line per run (`run 3/6 xavier_normal
seed 0: epoch 8/8 loss 1.856 test acc 0.237 (12.3 s)`); on a terminal that line
is updated after every epoch.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras

from experiments import config as config_lib
from experiments import data as data_lib
from experiments import hparams, models, report, summary
from experiments.config import ExperimentConfig
from experiments.errors import ExperimentError
from experiments.training import RunResult, run_name, train_run

RUN_DETAILS = "run.json"


def plan(config: ExperimentConfig) -> list[tuple[str, str | None, int]]:
    """The runs of a comparison, in order: (initializer, activation, seed); the
    activation is None for your own model."""
    return [
        (initializer, activation, seed)
        for activation in config.activation
        for initializer in config.initializers
        for seed in config.seeds
    ]


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
    root = Path(config.logdir) / config.experiment
    if config.overwrite:
        _remove_earlier_runs(root)
    previous = summary.load(root, config)
    data = data_lib.load(config.dataset, config.train_size, config.test_size)
    if config.model == "cnn" and len(data.input_shape) != 3:
        raise ExperimentError(
            f"--model=cnn needs image inputs (height, width, channels); {config.dataset} "
            f"has inputs of shape {data.input_shape}."
        )
    _check_initializers_fit(config, data)
    live = progress is print and config.verbose == 0 and sys.stdout.isatty()
    runs = plan(config)
    several_activations = len(config.activation) > 1
    names = [run_name(spec, act if several_activations else None, seed) for spec, act, seed in runs]
    if len(set(names)) < len(names):
        raise ExperimentError(
            f"Two initializer specs give the same run folder name: {config.initializers}."
        )
    root.mkdir(parents=True, exist_ok=True)
    hparams.write_experiment(root, config, previous)

    done = {summary.run_key(entry): entry for entry in previous}
    for number, (run, name) in enumerate(zip(runs, names, strict=True), start=1):
        initializer, activation, seed = run
        label = f"run {number}/{len(runs)} {initializer} seed {seed}"
        label += f" ({activation})" if several_activations else ""
        if run in done:
            progress(f"{label}: already in summary.json, skipped (--overwrite runs it again)")
            continue
        run_dir = root / name
        # Leftovers of an interrupted or overwritten run would mix into its curves.
        shutil.rmtree(run_dir, ignore_errors=True)
        started = time.perf_counter()
        result = train_run(
            config,
            data,
            initializer=initializer,
            activation=activation,
            seed=seed,
            run_dir=run_dir,
            callbacks=[*callbacks, *([LiveLine(label, config.epochs)] if live else [])],
        )
        (run_dir / RUN_DETAILS).write_text(json.dumps(result.details) + "\n")
        done[run] = {**result.entry, "run_dir": name}
        line = run_line(label, result, config, time.perf_counter() - started)
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
    )
    progress(f"results: {root / 'report.md'}; tensorboard --logdir {config.logdir}")
    return entries


def _remove_earlier_runs(root: Path) -> None:
    """For --overwrite: deletes the run folders and results an earlier invocation wrote.

    Only what that invocation's summary.json names (and the files the harness
    writes at the root) is removed, never the folder as a whole: --logdir and
    --experiment may point anywhere.
    """
    path = root / summary.JSON_NAME
    try:
        runs = json.loads(path.read_text())["runs"] if path.exists() else []
        run_dirs = [entry["run_dir"] for entry in runs]
    except (OSError, ValueError, KeyError, TypeError):
        run_dirs = []  # unreadable: nothing to trust; its folders stay
    for name in run_dirs:
        run_dir = root / name
        if run_dir.parent == root and (run_dir / RUN_DETAILS).exists():
            shutil.rmtree(run_dir)
    for result in (summary.JSON_NAME, summary.CSV_NAME, "report.md"):
        (root / result).unlink(missing_ok=True)


def _check_initializers_fit(config: ExperimentConfig, data: data_lib.Dataset) -> None:
    """Builds each initializer's model once, so that a model that does not fit the data
    (your own) or a spec that cannot initialize it (dirac on an MLP, whose every kernel
    would get the fallback) fails before training."""
    for initializer in config.initializers:
        models.initialize_run(
            config,
            input_shape=data.input_shape,
            num_classes=data.num_classes,
            x_sample=data.x_train[:2],
            activation=config.activation[0],
            initializer=initializer,
            seed=config.seeds[0],
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
        if "loss" in logs:
            text += f" loss {float(logs['loss']):.3f}"
        if "val_accuracy" in logs:
            text += f" test acc {float(logs['val_accuracy']):.3f}"
        sys.stdout.write(f"\r{text}{self.CLEAR}")
        sys.stdout.flush()


def run_line(label: str, result: RunResult, config: ExperimentConfig, seconds: float) -> str:
    """The one line a finished run reports, e.g.
    `run 3/6 xavier_normal seed 0: epoch 8/8 loss 1.856 test acc 0.237 (12.3 s)`.

    The loss is the last epoch's training loss; a diverged run says at which step;
    a run whose initializer left some layers to the fallback names them.
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
    text += f" ({seconds:.1f} s)"
    layers = entry["fallback_layers"]
    if layers:
        named = ", ".join(layers[:3]) + (f" and {len(layers) - 3} more" if len(layers) > 3 else "")
        text += f"; fallback {config.fallback_initializer} on {named}"
    return text


def _ordered(done: dict, runs: list) -> list[dict[str, Any]]:
    planned = [done[key] for key in runs if key in done]
    return planned + [entry for key, entry in done.items() if key not in set(runs)]


def _load_details(root: Path, entries: list[dict[str, Any]]) -> dict[str, dict]:
    """Each run's `run.json`, by run folder; runs whose file is gone are left out."""
    details = {}
    for entry in entries:
        path = root / entry["run_dir"] / RUN_DETAILS
        if path.exists():
            details[entry["run_dir"]] = json.loads(path.read_text())
    return details
