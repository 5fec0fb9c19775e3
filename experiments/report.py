"""`report.md`: the settings, the results table (mean ± std over seeds, next to the chance
level), the layers that got the fallback initializer, and the figures."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments import plots
from experiments.config import ExperimentConfig, is_own_model

REPORT_NAME = "report.md"
FIGURES = {
    "loss_curves.png": "Loss curves",
    "depth_profiles.png": "Activation and gradient spread against depth",
    "activation_histograms_initial.png": "Activation histograms at step 0",
    "activation_histograms_final.png": "Activation histograms after training",
}
_COLUMNS = (
    ("initial_loss", "initial loss", 3),
    ("final_loss", "final train loss", 3),
    ("final_test_loss", "final test loss", 3),
    ("final_test_accuracy", "test accuracy", 3),
    ("train_seconds", "train s", 1),
)


def label_of(entry: dict[str, Any], several_activations: bool) -> str:
    """How a run's initializer (and activation, when they vary) is named in tables and plots."""
    if several_activations:
        return f"{entry['initializer']} · {entry['activation']}"
    return entry["initializer"]


def write(
    root: Path,
    config: ExperimentConfig,
    entries: Sequence[dict[str, Any]],
    details: dict[str, dict],
    *,
    chance: float | None = None,
    num_classes: int | None = None,
) -> Path:
    """Writes `report.md` and its PNGs into `root`; `details` maps run_dir -> run.json.

    `chance` is the test accuracy of always predicting the test set's most frequent
    class (`Dataset.chance_accuracy`), shown next to the accuracies; `num_classes`
    completes the sentence that explains it.
    """
    several_activations = len({entry["activation"] for entry in entries}) > 1
    groups: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        groups.setdefault(label_of(entry, several_activations), []).append(entry)

    figures = []
    runs = {
        label: [details[e["run_dir"]] for e in members if e["run_dir"] in details]
        for label, members in groups.items()
    }
    runs = {label: found for label, found in runs.items() if found}
    if runs:
        layers = next(iter(runs.values()))[0]["layers"]
        plots.loss_curves(root / "loss_curves.png", runs)
        plots.depth_profiles(root / "depth_profiles.png", runs, layers)
        for moment in ("initial", "final"):
            plots.activation_histograms(
                root / f"activation_histograms_{moment}.png", runs, layers, moment
            )
        figures = list(FIGURES.items())

    lines = [
        f"# {config.experiment}: {len(groups)} initializer settings, {len(entries)} runs",
        "",
        *_settings(config),
        "",
        "## Identical models",
        "",
        *_identical_models(config),
        "",
        "## Results",
        "",
        *_group_table(groups, chance),
        "",
        *_chance_sentence(chance, num_classes),
        "Losses are cross-entropy; the initial loss is measured on the training set before "
        "the first update. `train s` is the training loop's wall time (steps and histogram "
        "snapshots; compilation and evaluation excluded). With several seeds, cells read "
        "mean ± standard deviation over the seeds that did not diverge.",
        "",
        "### Every run",
        "",
        *_run_table(entries, several_activations, chance),
        "",
        *_fallback_section(config, groups),
    ]
    for name, title in figures:
        lines += [f"## {title}", "", f"![{title}]({name})", ""]
    lines += [
        "## TensorBoard",
        "",
        f"`tensorboard --logdir {Path(config.logdir) / config.experiment}`: Scalars (loss, "
        "accuracy, per-layer activation std, saturation and gradient std), Histograms and "
        "Distributions (`activations/`, `activation_gradients/`, `weight_gradients/`, "
        "`weights/` per layer), HParams (one row per run with its final metrics).",
        "",
    ]
    path = root / REPORT_NAME
    path.write_text("\n".join(lines))
    return path


def _settings(config: ExperimentConfig) -> list[str]:
    if is_own_model(config.model):
        model = f"your own, `{config.model}` (its own layers and activations), softmax output"
    else:
        model = (
            f"{config.model.upper()} of {config.depth} hidden layers, width {config.width}, "
            f"activation {', '.join(config.activation)}, softmax output"
        )
    optimizer = f"{config.optimizer}, learning rate {config.learning_rate}"
    if config.optimizer in ("sgd", "rmsprop"):
        optimizer += f", momentum {config.momentum}"
    return [
        f"- preset: `{config.preset}`",
        f"- model: {model}",
        f"- fallback initializer (for kernels an initializer refuses): "
        f"`{config.fallback_initializer}`",
        f"- data: {config.dataset}, {config.train_size} training and {config.test_size} "
        "test examples",
        f"- training: {config.epochs} epochs, batch {config.batch_size}, {optimizer}",
        f"- seeds: {', '.join(map(str, config.seeds))}; histograms every "
        f"{config.histogram_every or 'never (off)'} steps on a probe batch of "
        f"{min(config.probe_size, config.train_size)} training examples",
    ]


def _identical_models(config: ExperimentConfig) -> list[str]:
    common = (
        "Within a seed, every run trains the same architecture on the same examples, in the "
        "same order, with the same randomness; only the kernel initializer differs. "
        "`keras.utils.set_random_seed(seed)` seeds Python, NumPy and TensorFlow; the training "
        "batches come from a `tf.data` shuffle seeded with the run's seed; biases start at "
        "zero; "
    )
    reinitialized = (
        "`keras_inits.reinitialize(model, spec, seed=seed, fallback=fallback)` draws each "
        "kernel with a seed mixed from the run's seed and the kernel's position in the model"
    )
    if is_own_model(config.model):
        return [
            common + "and every arm builds (or loads) your model the same way, then "
            + reinitialized + ", so biases and every non-kernel weight (normalization, "
            "other weights) are the same in every arm of a seed and a re-run reproduces "
            "the same numbers."
        ]
    return [
        common + "and each layer's kernel initializer is the spec reseeded with "
        "`keras_inits.reseed(spec, layer_seed(seed, layer_index))`, so no two layers share "
        "a kernel (even when a spec names a seed) and a re-run reproduces the same numbers. "
        "An initializer that refuses some kernel (dirac, delta_orthogonal on the Dense "
        "output) builds the model with the fallback instead, then " + reinitialized + "."
    ]


def _chance_sentence(chance: float | None, num_classes: int | None) -> list[str]:
    if chance is None:
        return []
    classes = ""
    if num_classes:
        classes = f" ({num_classes} classes; 1/{num_classes} = {1 / num_classes:.3f})"
    return [
        f"**Chance level: test accuracy {chance:.3f}**, that of always predicting the test "
        f"set's most frequent class{classes}; an arm at chance has learned nothing.",
        "",
    ]


def _fallback_section(
    config: ExperimentConfig, groups: dict[str, list[dict[str, Any]]]
) -> list[str]:
    """Which layers each initializer left to the fallback (from reinitialize's report)."""
    used = {}
    for label, members in groups.items():
        layers = next((e["fallback_layers"] for e in members if e.get("fallback_layers")), None)
        if layers:
            used[label] = layers
    if not used:
        return []
    lines = [
        "## Fallback initializer",
        "",
        f"Kernels an initializer cannot initialize got `{config.fallback_initializer}` "
        "(`--fallback_initializer`) instead, drawn by `keras_inits.reinitialize`; every "
        "other kernel got the initializer itself.",
        "",
        _row(["initializer", f"layers given `{config.fallback_initializer}`"]),
        _row(["---", "---"]),
    ]
    for label, layers in used.items():
        lines.append(_row([f"`{label}`", ", ".join(f"`{layer}`" for layer in layers)]))
    return [*lines, ""]


def _title(key: str, title: str, chance: float | None) -> str:
    if key == "final_test_accuracy" and chance is not None:
        return f"{title} (chance {chance:.3f})"
    return title


def _group_table(groups: dict[str, list[dict[str, Any]]], chance: float | None) -> list[str]:
    header = ["initializer", "runs", "diverged"]
    header += [_title(key, title, chance) for key, title, _ in _COLUMNS]
    rows = [_row(header), _row(["---"] * len(header))]
    for label, members in groups.items():
        ok = [entry for entry in members if entry["status"] == "ok"]
        cells = [f"`{label}`", str(len(members)), str(len(members) - len(ok))]
        cells += [_mean_std([entry[key] for entry in ok], digits) for key, _, digits in _COLUMNS]
        rows.append(_row(cells))
    return rows


def _run_table(
    entries: Sequence[dict[str, Any]], several_activations: bool, chance: float | None
) -> list[str]:
    header = ["initializer", "seed", "status", "steps"]
    header += [_title(key, title, chance) for key, title, _ in _COLUMNS]
    rows = [_row(header), _row(["---"] * len(header))]
    for entry in entries:
        status = entry["status"]
        if entry["diverged_at_step"] is not None:
            status += f" at step {entry['diverged_at_step']}"
        cells = [f"`{label_of(entry, several_activations)}`", str(entry["seed"]), status]
        cells.append(str(entry["steps"]))
        cells += [_number(entry[key], digits) for key, _, digits in _COLUMNS]
        rows.append(_row(cells))
    return rows


def _mean_std(values: list[float | None], digits: int) -> str:
    values = [value for value in values if value is not None and math.isfinite(value)]
    if not values:
        return "–"
    if len(values) == 1:
        return _number(values[0], digits)
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _number(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"
