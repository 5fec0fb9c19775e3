"""`report.md`: the settings, the results table (mean ± std over seeds, next to the chance
level), the layers that got the fallback initializer, and the figures.

Runs are grouped by their cell (the values of the swept settings, `config.cells()`)
and initializer, and aggregated over seeds. Each swept setting gets a column in the
tables and a run's label names its values (`xavier_normal · depth=30`); a swept
numeric setting also gets a figure of the final loss against it. Entries of older
summaries that lack a setting take the config's value of it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from experiments import files
from experiments.config import SWEPT, Cell, ExperimentConfig
from experiments.data.datasets import is_text
from experiments.papers import trainability
from experiments.papers.presets import PRESETS
from experiments.results import plots, summary
from experiments.specs import (
    BARE_SCHEMES,
    RESIDUAL_MODELS,
    SEQUENCE_MODELS,
    is_own_model,
    scheme_settings,
)

REPORT_NAME = "report.md"
FIGURES = {
    "loss_curves.png": "Loss curves",
    "depth_profiles.png": "Activation and gradient spread against layer depth",
    "activation_histograms_initial.png": "Activation histograms at step 0",
    "activation_histograms_final.png": "Activation histograms after training",
}
# The figure of a width x learning-rate grid: loss against the rate, a line per width.
TRANSFER_FIGURE = "learning_rate_transfer.png"
# The figure of a depth x mean_field(sigma_w2=...) grid: accuracy, with 6 xi_c drawn over it.
TRAINABILITY_FIGURE = "trainability.png"
# Swept settings that get a figure of the final loss against their values.
NUMERIC_SETTINGS = ("depth", "width", "learning_rate", "batch_size")
_COLUMNS = (
    ("initial_loss", "initial loss", 3),
    # Keras's running mean over the last epoch's steps (what the progress line prints and the
    # replications' sentences quote), not the trained model's loss on the training set
    # (summary.csv's final_train_loss): the label says so.
    ("final_loss", "last epoch's train loss", 3),
    ("final_test_loss", "final test loss", 3),
    ("final_test_accuracy", "test accuracy", 3),
    ("train_seconds", "train s", 1),
)
# A sequence task's extra column, after the test loss: the test loss in bits per token.
_BITS = ("final_test_bits", "test bits/token", 3)
# (cell, initializer) -> that group's entries, one per seed.
Groups = dict[tuple[Cell, str], list[dict[str, Any]]]


def _failed_section(failed: Sequence[dict[str, Any]], swept: Sequence[str]) -> list[str]:
    """The runs that did not finish and why; the same command trains them again."""
    if not failed:
        return []
    lines = [
        "## Failed runs",
        "",
        f"{len(failed)} of the runs did not finish and are left out below; running the same "
        "command again trains only these.",
        "",
        "| " + " | ".join([*swept, "initializer", "seed", "reason"]) + " |",
        "|" + "---|" * (len(swept) + 3),
    ]
    for entry in failed:
        cells = [str(entry[name]) for name in swept]
        cells += [f"`{entry['initializer']}`", str(entry["seed"]), entry["error"] or "unknown"]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return [*lines, ""]


def sweep_figure(setting: str) -> str:
    """The file name of the figure of the final loss against `setting`."""
    return f"sweep_{setting}.png"


def cell_of(entry: Mapping[str, Any], config: ExperimentConfig) -> Cell:
    """The entry's values of the swept settings.

    A setting missing from the entry (a summary written before it could be swept)
    takes the config's value when the config has one, else None; your own model has
    no depth, width, activation or normalization, as in `config.cells()`.
    """
    values = {}
    for name in SWEPT:
        configured = getattr(config, name)
        values[name] = entry.get(name, configured[0] if len(configured) == 1 else None)
    return Cell(**values).applicable()


def label_of(initializer: str, cell: Cell, swept: Sequence[str]) -> str:
    """How a group is named in figures: the initializer, then the swept settings' values.

    >>> label_of("xavier_normal", cell, ("depth",))
    'xavier_normal · depth=30'
    """
    described = cell.describe(swept)
    return f"{initializer} · {described}" if described else initializer


def group(entries: Sequence[dict[str, Any]], config: ExperimentConfig) -> Groups:
    """The entries by (cell, initializer), in `config.cells()` then `config.initializers`
    order; groups of earlier runs outside the current grid follow, as first found.

    Every entry comes back with its cell's values filled in (`cell_of`).
    """
    found: Groups = {}
    for entry in entries:
        cell = cell_of(entry, config)
        found.setdefault((cell, entry["initializer"]), []).append({**entry, **cell.values()})
    cells, initializers = config.cells(), config.initializers
    planned = [(cell, spec) for cell in cells for spec in initializers]
    order = [key for key in planned if key in found]
    order += [key for key in found if key not in set(planned)]
    return {key: found[key] for key in order}


def swept_settings(groups: Groups, config: ExperimentConfig) -> tuple[str, ...]:
    """The settings with more than one value across the grid and the runs found."""
    cells = [*config.cells(), *(cell for cell, _ in groups)]
    return tuple(name for name in SWEPT if len({getattr(cell, name) for cell in cells}) > 1)


def write(
    root: str,
    config: ExperimentConfig,
    entries: Sequence[dict[str, Any]],
    details: dict[str, dict],
    *,
    chance: float | None = None,
    num_classes: int | None = None,
    sequence: bool = False,
) -> str:
    """Writes `report.md` and its PNGs into `root`; `details` maps run_dir -> run.json.

    `chance` is the test accuracy of always predicting the test set's most frequent
    class (`Dataset.chance_accuracy`), shown next to the accuracies; `num_classes`
    completes the sentence that explains it. A `sequence` task (a label per token) is
    described per token, and its tables add the test loss in bits per token (per
    character for text). Failed runs (their Ray task gave up) are listed with their
    reasons and left out of everything else.
    """
    failed = [entry for entry in entries if entry["status"] == summary.FAILED]
    entries = [entry for entry in entries if entry["status"] != summary.FAILED]
    columns = _COLUMNS
    if sequence:
        bits = (*_BITS[:1], "test bits/char" if is_text(config.dataset) else _BITS[1], 3)
        columns = (*_COLUMNS[:3], bits, ("final_test_accuracy", "token accuracy", 3),
                   *_COLUMNS[4:])
        entries = [{**entry, _BITS[0]: _bits(entry["final_test_loss"])} for entry in entries]
    groups = group(entries, config)
    swept = swept_settings(groups, config)
    labels = {key: label_of(key[1], key[0], swept) for key in groups}
    figures = _figures(root, groups, labels, details, swept)
    grouped_arms = max((entry.get("group_size") or 1 for entry in entries), default=1) > 1

    lines = [
        f"# {config.experiment}: {_headline(groups, swept, len(entries))}",
        "",
        *_failed_section(failed, swept),
        *_replication(config, groups, details),
        *_settings(config, swept, sequence),
        "",
        "## Identical models",
        "",
        *_identical_models(config, swept),
        "",
        "## Results",
        "",
        *_group_table(groups, swept, chance, columns),
        "",
        *_chance_sentence(chance, num_classes, sequence),
        _loss_sentence(sequence) + " " + _train_seconds_sentence(grouped_arms) + " With "
        "several seeds, cells read mean ± standard deviation over the seeds that did not "
        "diverge.",
        "",
        "### Every run",
        "",
        *_run_table(groups, swept, chance, columns),
        "",
        *_fallback_section(config, groups, swept),
    ]
    for name, title in figures:
        lines += [f"## {title}", "", f"![{title}]({name})", ""]
    lines += [
        "## TensorBoard",
        "",
        f"`tensorboard --logdir {files.join(config.logdir, config.experiment)}`: Scalars (loss, "
        "accuracy, per-layer activation std, saturation and gradient std), Histograms and "
        "Distributions (`activations/`, `activation_gradients/`, `weight_gradients/`, "
        "`weights/` per layer), HParams (one row per run with its final metrics).",
        "",
    ]
    path = files.join(root, REPORT_NAME)
    files.write_text(path, "\n".join(lines))
    return path


def _figures(
    root: str,
    groups: Groups,
    labels: dict[tuple[Cell, str], str],
    details: dict[str, dict],
    swept: Sequence[str],
) -> list[tuple[str, str]]:
    """Draws the figures; returns (file name, title) of each, in report order."""
    figures = []
    runs = {
        labels[key]: [details[e["run_dir"]] for e in members if e["run_dir"] in details]
        for key, members in groups.items()
    }
    runs = {label: found for label, found in runs.items() if found}
    if runs:
        plots.loss_curves(files.join(root, "loss_curves.png"), runs)
        figures.append(("loss_curves.png", FIGURES["loss_curves.png"]))
    for setting in swept:
        values = {entry[setting] for members in groups.values() for entry in members}
        if setting not in NUMERIC_SETTINGS or len(values - {None}) < 2:
            continue
        others = [name for name in swept if name != setting]
        lines: dict[str, list[dict[str, Any]]] = {}
        for (cell, initializer), members in groups.items():
            lines.setdefault(label_of(initializer, cell, others), []).extend(members)
        plots.final_loss_sweep(files.join(root, sweep_figure(setting)), setting, lines)
        figures.append((sweep_figure(setting), f"Final loss against {setting}"))
    if {"width", "learning_rate"} <= set(swept):
        entries = [entry for members in groups.values() for entry in members]
        plots.learning_rate_transfer(files.join(root, TRANSFER_FIGURE), entries)
        figures.append((TRANSFER_FIGURE, "Learning-rate transfer across widths"))
    if "depth" in swept:
        found = trainability.grid([entry for members in groups.values() for entry in members])
        if found is not None:
            plots.trainability_map(files.join(root, TRAINABILITY_FIGURE), found)
            figures.append((TRAINABILITY_FIGURE, "Trainable depth against sigma_w2"))
    if runs:
        plots.depth_profiles(files.join(root, "depth_profiles.png"), runs)
        for moment in ("initial", "final"):
            name = f"activation_histograms_{moment}.png"
            plots.activation_histograms(files.join(root, name), runs, moment)
        figures += [(name, title) for name, title in FIGURES.items() if name != "loss_curves.png"]
    return figures


def _replication(config: ExperimentConfig, groups: Groups, details: dict[str, dict]) -> list[str]:
    """For a paper's preset: the paper, what it reproduces, the paper's numbers next to
    ours, and the verdict computed from the runs."""
    replication = PRESETS[config.preset].replication
    if replication is None:
        return []
    finding = replication.judge(groups, details)
    lines = [
        "## Replication",
        "",
        f"{replication.paper}: {replication.reproduces}.",
        "",
        f"**{finding.sentence}**",
        "",
    ]
    if finding.rows:
        lines += [_row(["", "paper", "ours (mean over seeds)"]), _row(["---"] * 3)]
        lines += [_row(list(row)) for row in finding.rows]
        lines.append("")
    lines += [f"Scaled down: {replication.scaled_down}.", ""]
    return lines


def _bits(nats: float | None) -> float | None:
    return None if nats is None else nats / math.log(2)


_EPOCH_LOSS = (
    "The last epoch's train loss is the mean over that epoch's steps, as Keras reports it "
    "while the weights change; the trained model's loss on the whole training set is "
    "`final_train_loss` in summary.csv."
)


def _loss_sentence(sequence: bool) -> str:
    if not sequence:
        return (
            "Losses are cross-entropy; the initial loss is measured on the training set "
            "before the first update. " + _EPOCH_LOSS
        )
    return (
        "Losses are cross-entropy in nats, averaged over every predicted token; bits per "
        "token are nats / ln 2 (bits per character for a text dataset, the unit "
        "character-level language models report). Token accuracy is the share of positions "
        "whose most probable next token is the right one. The initial loss is measured on "
        "the training set before the first update. " + _EPOCH_LOSS
    )


def _headline(groups: Groups, swept: Sequence[str], runs: int) -> str:
    if not swept:
        return f"{len(groups)} initializer settings, {runs} runs"
    initializers = len({initializer for _, initializer in groups})
    cells = len({cell for cell, _ in groups})
    return (
        f"{initializers} initializers × {cells} settings of {', '.join(swept)}, "
        f"{len(groups)} groups, {runs} runs"
    )


def _train_seconds_sentence(grouped_arms: bool) -> str:
    text = (
        "`train s` is the training loop's wall time (steps and histogram snapshots; "
        "compilation and evaluation excluded)."
    )
    if grouped_arms:
        text += (
            " Arms trained together (the initializers and learning rates of one setting and "
            "seed, see `group_size` in summary.json) share one compiled step, so their "
            "`train s` is the loop time of the whole group, the same for each of its arms: it "
            "does not measure one initializer's cost alone (`--nogroup_arms` trains each arm "
            "alone)."
        )
    return text


def _settings(config: ExperimentConfig, swept: Sequence[str], sequence: bool) -> list[str]:
    builtin = [
        name for name in config.model if not is_own_model(name) and name not in SEQUENCE_MODELS
    ]
    own = [name for name in config.model if is_own_model(name)]
    models = []
    if "transformer" in config.model:
        position = {"pre": "pre-LN (GPT-2)", "post": "post-LN"}[config.layer_norm]
        models.append(
            f"TRANSFORMER language model of {_listed(config.depth)} layers (self-attention "
            f"and feed-forward blocks), width {_listed(config.width)}, {config.heads} heads, "
            f"{position}, feed-forward activation {_listed(config.activation)}, per-token "
            "softmax output"
        )
    if builtin:
        architecture = " or ".join(name.upper() for name in builtin)
        residual = [name for name in builtin if name in RESIDUAL_MODELS]
        if not residual:
            depth = f"{_listed(config.depth)} hidden layers"
        elif len(residual) == len(builtin):
            depth = f"{_listed(config.depth)} residual blocks"
        else:
            depth = f"{_listed(config.depth)} hidden layers (residual blocks)"
        normalization = (
            f", normalization {_listed(config.normalization)} in the blocks" if residual else ""
        )
        models.append(
            f"{architecture}{_swept_mark(builtin)} of {depth}, "
            f"width {_listed(config.width)}, activation {_listed(config.activation)}"
            f"{normalization}, softmax output"
        )
    if own:
        theirs = "their" if len(own) > 1 else "its"
        models.append(
            f"your own, {', '.join(f'`{name}`' for name in own)}{_swept_mark(own)} "
            f"({theirs} own layers and activations), {'per-token ' if sequence else ''}"
            "softmax output"
        )
    optimizer = f"{_listed(config.optimizer)}, learning rate {_listed(config.learning_rate)}"
    with_momentum = [name for name in config.optimizer if name in ("sgd", "rmsprop")]
    if with_momentum:
        optimizer += f", momentum {config.momentum}"
        if len(with_momentum) < len(config.optimizer):
            optimizer += f" ({' and '.join(with_momentum)})"
    for name in ("clipnorm", "global_clipnorm"):
        if getattr(config, name):
            optimizer += f", gradients clipped by {name}={getattr(config, name)}"
    parametrization = []
    if "mup" in config.parametrization:
        parametrization = [
            f"- parametrization: {_listed(config.parametrization)}; muP (`keras_inits.mup`) "
            f"relative to the model at width {config.base_width}: read-out input x "
            "1/width_mult, per-weight learning rates (hidden weights / width_mult under "
            "Adam; input and vector weights x width_mult under SGD), attention logits by "
            + (
                "1/d; the read-out starts at zero (--readout_zero_init)"
                if config.readout_zero_init
                else f"1/d; at width {config.base_width} muP is the standard parametrization"
            )
        ]
    grid = []
    if swept:
        grid = [f"- swept: {', '.join(swept)} (every combination, each with every initializer)"]
    return [
        f"- preset: `{config.preset}`",
        f"- model: {'; '.join(models)}",
        *parametrization,
        *grid,
        f"- fallback initializer (for kernels an initializer refuses): "
        f"`{config.fallback_initializer}`",
        _data_line(config, sequence),
        f"- training: {config.epochs} epochs, batch {_listed(config.batch_size)}, {optimizer}",
        f"- seeds: {', '.join(map(str, config.seeds))}; histograms every "
        f"{config.histogram_every or 'never (off)'} steps on a probe batch of "
        f"{min(config.probe_size, config.train_size)} training examples",
    ]


def _data_line(config: ExperimentConfig, sequence: bool) -> str:
    if not sequence:
        return (
            f"- data: {config.dataset}, {config.train_size} training and {config.test_size} "
            "test examples"
        )
    if is_text(config.dataset):
        return (
            f"- data: {config.dataset}, character-level: windows of {config.sequence_length} "
            f"characters, each position labelled with the next character; up to "
            f"{config.train_size} training and {config.test_size} test windows (the first 90% "
            "of the text and the rest)"
        )
    return (
        f"- data: {config.dataset}, token sequences (a label per position); up to "
        f"{config.train_size} training and {config.test_size} test sequences"
    )


def _listed(values: Sequence[Any]) -> str:
    """`5` or `5, 10, 20 (swept)`; None (your own model's depth) left out."""
    present = [value for value in values if value is not None]
    return ", ".join(map(str, present)) + _swept_mark(present)


def _swept_mark(values: Sequence[Any]) -> str:
    return " (swept)" if len(values) > 1 else ""


def _identical_models(config: ExperimentConfig, swept: Sequence[str]) -> list[str]:
    within = (
        f"Within a seed and one value of each swept setting ({', '.join(swept)})"
        if swept
        else "Within a seed"
    )
    common = (
        f"{within}, every run trains the same architecture on the same examples, in the "
        "same order, with the same randomness; only the kernel initializer differs. "
        "`keras.utils.set_random_seed(seed)` seeds Python, NumPy and TensorFlow; each "
        "epoch's order of the training examples is a permutation drawn from the run's seed "
        "and the epoch; biases start at zero; "
    )
    reinitialized = (
        "`keras_inits.reinitialize(model, spec, seed=seed, fallback=fallback)` draws each "
        "kernel with a seed mixed from the run's seed and the kernel's position in the model"
    )
    own = (
        "every arm builds (or loads) your model the same way, then "
        f"{reinitialized}, so biases and every non-kernel weight (normalization, other "
        "weights) are the same in every arm of a seed and a re-run reproduces the same numbers."
    )
    builtin = (
        "each layer's kernel initializer is the spec reseeded with "
        "`keras_inits.reseed(spec, layer_seed(seed, layer_index))`, so no two layers share "
        "a kernel (even when a spec names a seed) and a re-run reproduces the same numbers. "
        "An initializer that refuses some kernel (dirac, delta_orthogonal on the Dense "
        f"output) builds the model with the fallback instead, then {reinitialized}."
    )
    transformer = (
        "the Transformer is built with the fallback, then "
        f"{reinitialized.replace(', fallback=fallback', '')} (embedding tables included; "
        "attention kernels with their per-head fans), so a re-run reproduces the same numbers."
    )
    if set(config.model) == {"transformer"}:
        builtin = transformer
    elif "transformer" in config.model:
        builtin += " " + transformer[0].upper() + transformer[1:]
    schemes = [spec for spec in config.initializers if scheme_settings(spec) is not None]
    scheme = (
        f" A scheme arm ({', '.join(f'`{spec}`' for spec in schemes)}) builds the model with "
        "the fallback, then `keras_inits.reinitialize(model, scheme=NAME, seed=seed, "
        "**params)` draws each kernel by its role and depth (keras_inits.schemes); the "
        "kernels the scheme does not specify keep the fallback's draw."
        + (
            " Mean-field theory's schemes (`critical`, `mean_field`) draw the biases too, "
            "N(0, sigma_b2)."
            if any(scheme_settings(spec)[0] in BARE_SCHEMES for spec in schemes) else ""
        )
        if schemes else ""
    )
    kinds = {is_own_model(model) for model in config.model}
    if kinds == {True}:
        return [f"{common}and {own}{scheme}"]
    if kinds == {False}:
        return [f"{common}and {builtin}{scheme}"]
    return [
        f"{common}and, for the built-in models, {builtin} For your own model, {own}{scheme}"
    ]


def _chance_sentence(
    chance: float | None, num_classes: int | None, sequence: bool = False
) -> list[str]:
    if chance is None:
        return []
    kind, kinds = ("token", "tokens") if sequence else ("class", "classes")
    classes = ""
    if num_classes:
        classes = f" ({num_classes} {kinds}; 1/{num_classes} = {1 / num_classes:.3f})"
    uniform = ""
    if sequence and num_classes:
        uniform = (
            f" A model that predicts every token uniformly has a loss of ln {num_classes} = "
            f"{math.log(num_classes):.3f} nats ({math.log2(num_classes):.2f} bits)."
        )
    return [
        f"**Chance level: {'token' if sequence else 'test'} accuracy {chance:.3f}**, that of "
        "always predicting the test "
        f"set's most frequent {kind}{classes}; an arm at chance has learned nothing.{uniform}",
        "",
    ]


def _fallback_section(config: ExperimentConfig, groups: Groups, swept: Sequence[str]) -> list[str]:
    """Which layers each initializer left to the fallback (from reinitialize's report)."""
    used = {}
    for key, members in groups.items():
        layers = next((e["fallback_layers"] for e in members if e.get("fallback_layers")), None)
        if layers:
            used[key] = layers
    if not used:
        return []
    header = [*swept, "initializer", f"layers given `{config.fallback_initializer}`"]
    lines = [
        "## Fallback initializer",
        "",
        f"Kernels an initializer cannot initialize got `{config.fallback_initializer}` "
        "(`--fallback_initializer`) instead, drawn by `keras_inits.reinitialize`; every "
        "other kernel got the initializer itself.",
        "",
        _row(header),
        _row(["---"] * len(header)),
    ]
    for (cell, initializer), layers in used.items():
        layer_list = ", ".join(f"`{layer}`" for layer in layers)
        lines.append(_row([*_cell_columns(cell, swept), f"`{initializer}`", layer_list]))
    return [*lines, ""]


def _title(key: str, title: str, chance: float | None) -> str:
    if key == "final_test_accuracy" and chance is not None:
        return f"{title} (chance {chance:.3f})"
    return title


def _group_table(
    groups: Groups, swept: Sequence[str], chance: float | None, columns: Sequence[tuple]
) -> list[str]:
    header = [*swept, "initializer", "runs", "diverged"]
    header += [_title(key, title, chance) for key, title, _ in columns]
    rows = [_row(header), _row(["---"] * len(header))]
    for (cell, initializer), members in groups.items():
        ok = [entry for entry in members if entry["status"] == "ok"]
        cells = [*_cell_columns(cell, swept), f"`{initializer}`"]
        cells += [str(len(members)), str(len(members) - len(ok))]
        cells += [_mean_std([entry[key] for entry in ok], digits) for key, _, digits in columns]
        rows.append(_row(cells))
    return rows


def _run_table(
    groups: Groups, swept: Sequence[str], chance: float | None, columns: Sequence[tuple]
) -> list[str]:
    header = [*swept, "initializer", "seed", "status", "steps"]
    header += [_title(key, title, chance) for key, title, _ in columns]
    rows = [_row(header), _row(["---"] * len(header))]
    for (cell, initializer), members in groups.items():
        for entry in members:
            status = entry["status"]
            if entry.get("diverged_at_step") is not None:
                status += f" at step {entry['diverged_at_step']}"
            cells = [*_cell_columns(cell, swept), f"`{initializer}`", str(entry["seed"])]
            cells += [status, str(entry["steps"])]
            cells += [_number(entry.get(key), digits) for key, _, digits in columns]
            rows.append(_row(cells))
    return rows


def _cell_columns(cell: Cell, swept: Sequence[str]) -> list[str]:
    """The cell's value of each swept setting, as table cells."""
    columns = []
    for name in swept:
        value = getattr(cell, name)
        if value is None:
            columns.append("–")
        elif name == "model" and is_own_model(value):
            columns.append(f"`{value}`")
        else:
            columns.append(f"{value:g}" if isinstance(value, float) else str(value))
    return columns


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
