"""The comparison: every initializer x activation x seed, resumable, then the report.

`compare(config)` is the one library call behind `python -m experiments.compare`.
It checks the settings and loads the data before training anything, skips runs
whose entries already exist in `summary.json` (unless `config.overwrite`),
rewrites the summary after every run, and records a diverged run without
stopping the comparison.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras

from experiments import config as config_lib
from experiments import data as data_lib
from experiments import hparams, models, report, summary
from experiments.config import ExperimentConfig
from experiments.errors import ExperimentError
from experiments.training import run_name, train_run

RUN_DETAILS = "run.json"


def plan(config: ExperimentConfig) -> list[tuple[str, str, int]]:
    """The runs of a comparison, in order: (initializer, activation, seed)."""
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
        progress: receives one line per run.

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
        progress(label)
        run_dir = root / name
        # Leftovers of an interrupted or overwritten run would mix into its curves.
        shutil.rmtree(run_dir, ignore_errors=True)
        result = train_run(
            config,
            data,
            initializer=initializer,
            activation=activation,
            seed=seed,
            run_dir=run_dir,
            callbacks=callbacks,
        )
        (run_dir / RUN_DETAILS).write_text(json.dumps(result.details) + "\n")
        done[run] = {**result.entry, "run_dir": name}
        if result.entry["status"] == "diverged":
            progress(f"  diverged at step {result.entry['diverged_at_step']}; going on")
        summary.save(root, config, _ordered(done, runs))

    entries = _ordered(done, runs)
    summary.save(root, config, entries)
    report.write(root, config, entries, details=_load_details(root, entries))
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
    """Builds each initializer's model once, so a spec that cannot initialize one of its
    kernels (delta_orthogonal or dirac on the Dense output layer) fails before training."""
    for initializer in config.initializers:
        try:
            models.build(
                config.model,
                input_shape=data.input_shape,
                num_classes=data.num_classes,
                depth=config.depth,
                width=config.width,
                activation=config.activation[0],
                initializer=initializer,
                seed=0,
            )
        except (TypeError, ValueError) as error:
            reason = str(error).strip().splitlines()[0]
            raise ExperimentError(f"{initializer} cannot initialize the model: {reason}") from None


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
