"""Signal propagation at initialization, several initializers side by side, without training.

`inspect(config)` builds the harness's model once per initializer and
activation as `compare` does (`models.initialize`: your own
`--model=package.module:function` and kernels that need the fallback are
re-drawn with `keras_inits.reinitialize`), or, with `saved_model` (or
`--model=path.keras`), re-initializes a freshly loaded copy of a saved model
once per initializer with `keras_inits.reinitialize`, diagnoses
each on one batch with `keras_inits.diagnose`, and returns an `Inspection`:
`.table()` puts the diagnoses side by side, `.to_dict()` is JSON-ready and
`.plot(path)` draws the depth profiles. `run` is what `python -m
experiments.diagnose` calls: inspect, print, write the optional plot and JSON.

Only the first of `config.seeds` is used: one seed is enough for a quick look
(run again with `--seeds=1` to see another draw). The batch is the first
`config.probe_size` training examples of `config.dataset`; Shapeset is
synthesized at that size, so its batch is not the one `compare` probes (cut from
`train_size` examples), only drawn the same way.
"""

from __future__ import annotations

import dataclasses
import json
import math
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

import keras_inits
from experiments import models
from experiments.config import ARCHITECTURE, ExperimentConfig
from experiments.data import datasets as data_lib
from experiments.data import shapeset
from experiments.errors import ExperimentError
from experiments.specs import is_builtin, reason
from keras_inits.diagnosis import Diagnosis, Verdict, plot_profiles

# The per-layer numbers shown for each initializer, as (Diagnosis row key, header).
_STD = ("output_std", "act"), ("gradient_std", "grad")
_FRACTIONS = ("saturated_fraction", "sat%"), ("dead_fraction", "dead%")
LEGEND = (
    "act: std of the layer's output; grad: std of dLoss/d(output); sat%: outputs saturated "
    "(tanh-like |a| > 0.9, sigmoid outside (0.1, 0.9)); dead%: ReLU units never active."
)
_GAP = "  "  # between column groups
_LABEL_MAX = 18  # a group is widened up to this many characters to show its initializer
_LAYER_MAX = 24  # longer layer names (nested saved models) are cut


@dataclasses.dataclass(frozen=True)
class Batch:
    """The inputs every model is diagnosed on, their labels (or None) and where they came from."""

    x: np.ndarray
    y: np.ndarray | None
    description: str


@dataclasses.dataclass
class Inspection:
    """The diagnoses of one `inspect` call and what they were computed on.

    Attributes:
        model: the architecture, in words.
        batch: the batch, in words.
        loss: the loss, in words (cross-entropy on the labels, or the surrogate).
        seeds: the seeds given; every model is initialized with the first.
        groups: group (the activation; "saved model" for a saved one) ->
            initializer spec -> `Diagnosis`, in the order of the flags.
    """

    model: str
    batch: str
    loss: str
    seeds: tuple[int, ...]
    groups: dict[str, dict[str, Diagnosis]]

    @property
    def seed(self) -> int:
        return self.seeds[0]

    def table(self, width: int = 100) -> str:
        """The header, then per group the side-by-side table and each initializer's verdicts."""
        unused = ", ".join(map(str, self.seeds[1:]))
        lines = [
            f"Signal propagation at initialization, no training (seed {self.seed}"
            + (f"; seeds {unused} not used, one draw is enough for a look)" if unused else ")"),
            f"model: {self.model}",
            f"batch: {self.batch}",
            f"loss:  {self.loss}",
        ]
        for group, diagnoses in self.groups.items():
            lines += ["", f"== {group} ==", side_by_side(diagnoses, width), ""]
            lines += verdict_lines(diagnoses, width)
        lines += ["", *textwrap.wrap(LEGEND, width)]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: model, batch, loss, seed and
        `"diagnoses": {group: {initializer spec: Diagnosis.to_dict()}}`."""
        return {
            "model": self.model,
            "batch": self.batch,
            "loss": self.loss,
            "seed": self.seed,
            "diagnoses": {
                group: {spec: diagnosis.to_dict() for spec, diagnosis in diagnoses.items()}
                for group, diagnoses in self.groups.items()
            },
        }

    def plot(self, path: str | Path) -> Path:
        """Activation and gradient std per layer, one line per initializer (and activation)."""
        several = len(self.groups) > 1
        lines = {
            f"{spec} ({group})" if several else spec: diagnosis
            for group, diagnoses in self.groups.items()
            for spec, diagnosis in diagnoses.items()
        }
        return plot_profiles(path, lines)


def run(
    config: ExperimentConfig,
    *,
    saved_model: str | None = None,
    with_labels: bool | None = None,
    plot: str | None = None,
    json_path: str | None = None,
    width: int = 100,
    echo: Callable[[str], None] = print,
) -> Inspection:
    """Inspects, prints the table (wrapped to `width` columns), writes `plot` and `json_path`."""
    inspection = inspect(config, saved_model=saved_model, with_labels=with_labels)
    echo(inspection.table(width))
    try:
        if plot:
            echo(f"plot: {inspection.plot(plot)}")
        if json_path:
            path = Path(json_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(inspection.to_dict(), indent=1) + "\n")
            echo(f"json: {path}")
    except OSError as error:
        raise ExperimentError(
            f"Cannot write {error.filename or 'output'}: {error.strerror}."
        ) from None
    except ValueError as error:  # matplotlib: an image format it does not know
        raise ExperimentError(f"Cannot write the plot {plot!r}: {reason(error)}") from None
    return inspection


def inspect(
    config: ExperimentConfig, *, saved_model: str | None = None, with_labels: bool | None = None
) -> Inspection:
    """Diagnoses every initializer of `config` at initialization; see the module docstring.

    Args:
        config: a resolved config; its model settings are ignored with `saved_model`.
        saved_model: path of a `.keras` file whose architecture is diagnosed instead.
        with_labels: diagnose with the batch's labels and sparse categorical
            cross-entropy (True) or the surrogate loss (False). None: labels for
            the harness's models, the surrogate for a saved model.
    """
    seed = config.seeds[0]
    if saved_model is not None:
        return _inspect_saved(config, saved_model, with_labels)
    if len(config.model) == 1 and config.model[0].endswith(".keras"):
        return _inspect_saved(config, config.model[0], with_labels)
    dataset = _load_data(config)
    models.check_data(config.model, dataset)
    labels = True if with_labels is None else with_labels
    batch = _dataset_batch(config, dataset, labels)
    swept = [name for name in config.swept() if name in ("model", *ARCHITECTURE)]
    groups = {}
    for cell in config.cells():
        own = not is_builtin(cell.model)
        if swept in ([], ["activation"]):  # the lesson's way: one column per activation
            key = "own model" if own else cell.activation
        else:
            key = cell.describe(swept)
        if key in groups:
            continue  # a cell that differs only in training settings: same model
        group = groups.setdefault(key, {})
        for spec in config.initializers:
            built = models.initialize_run(config, cell, dataset, initializer=spec, seed=seed)
            group[spec] = keras_inits.diagnose(
                built.model,
                batch.x,
                batch.y,
                loss="sparse_categorical_crossentropy" if labels else None,
            )
    descriptions = []
    for name in dict.fromkeys(config.model):
        if not is_builtin(name):
            descriptions.append(f"{name} (your own), kernels re-drawn per initializer")
        else:
            unit = "units" if name in ("mlp", "resmlp") else "3x3 filters"
            depths = ", ".join(map(str, config.depth))
            widths = ", ".join(map(str, config.width))
            if name == "transformer":
                descriptions.append(
                    f"{name}, {depths} layers of width {widths}, {config.heads} heads, "
                    f"{config.layer_norm}-LN"
                )
            elif name in ("resmlp", "resnet"):
                norms = ", ".join(map(str, config.normalization))
                descriptions.append(
                    f"{name}, {depths} residual blocks of {widths} {unit} "
                    f"(normalization {norms})"
                )
            else:
                descriptions.append(f"{name}, {depths} hidden layers of {widths} {unit}")
    outputs = (
        f"a softmax over {dataset.num_classes} tokens at each position" if dataset.is_sequence
        else f"softmax output over {dataset.num_classes} classes"
    )
    model = "; ".join(descriptions) + f"; {outputs}"
    return Inspection(model, batch.description, _loss_words(labels), config.seeds, groups)


def _load_data(config: ExperimentConfig) -> data_lib.Dataset:
    """The dataset, cut to what the batch and the model's class count need."""
    if config.dataset == "shapeset":
        # Synthesizing costs ~0.2 ms an image: only the batch is made. Its class count
        # is Shapeset's, not max(label) + 1 of a small batch that may miss a class.
        dataset = data_lib.load("shapeset", config.probe_size, 1)
        return dataclasses.replace(dataset, num_classes=len(shapeset.CLASSES))
    # Already in memory (keras.datasets) or read whole (npz): cut as compare does.
    return data_lib.load(
        config.dataset, config.train_size, config.test_size, config.sequence_length
    )


def _dataset_batch(config: ExperimentConfig, dataset: data_lib.Dataset, labels: bool) -> Batch:
    x, y = dataset.x_train[: config.probe_size], dataset.y_train[: config.probe_size]
    return Batch(x, y if labels else None, f"the first {len(x)} {config.dataset} training examples")


def _loss_words(labels: bool) -> str:
    if labels:
        return "sparse categorical cross-entropy on the batch's labels"
    return "surrogate: unit-variance noise back-propagated from the output (no labels)"


def _inspect_saved(config: ExperimentConfig, path: str, with_labels: bool | None) -> Inspection:
    """Each initializer re-draws the kernels of a freshly loaded copy of the saved model."""
    seed = config.seeds[0]
    model = _load_model(path)
    shape, dtype = _input_spec(model)
    dataset = _load_data(config)
    fits = len(shape) == len(dataset.input_shape) and all(
        want is None or want == have for want, have in zip(shape, dataset.input_shape, strict=True)
    )
    if fits:
        batch = _dataset_batch(config, dataset, bool(with_labels))
    else:
        if with_labels or not np.issubdtype(np.dtype(dtype), np.floating):
            need = "--with_labels needs" if with_labels else f"Inputs of dtype {dtype} need"
            raise ExperimentError(
                f"{need} a batch from --dataset, but {config.dataset} inputs "
                f"{dataset.input_shape} do not fit the model's inputs {shape}."
            )
        concrete = tuple(32 if size is None else size for size in shape)
        x = np.random.default_rng(seed).standard_normal((config.probe_size, *concrete))
        unknown = " (unknown sizes taken as 32)" if None in shape else ""
        batch = Batch(
            x.astype("float32"),
            None,
            f"standard-normal, shape {(config.probe_size, *concrete)}{unknown}: "
            f"{config.dataset} inputs {dataset.input_shape} do not fit the model's {shape}",
        )
    loss = _saved_loss(model, batch, dataset.num_classes) if batch.y is not None else None

    diagnoses, reports = {}, []
    for index, spec in enumerate(config.initializers):
        copy = model if index == 0 else _load_model(path)
        try:
            reports.append(
                keras_inits.reinitialize(
                    copy, spec, seed=seed, fallback=config.fallback_initializer
                )
            )
        except (TypeError, ValueError) as error:
            raise ExperimentError(f"{spec} cannot initialize {path}: {reason(error)}") from None
        try:
            diagnoses[spec] = keras_inits.diagnose(copy, batch.x, batch.y, loss=loss)
        except (TypeError, ValueError) as error:
            raise ExperimentError(
                f"Cannot diagnose {path} on the batch: {reason(error)}"
            ) from None
    kernels = sum(row["layout"] != "bias" for row in reports[0].rows)
    description = (
        f"{path} ({model.name}): {kernels} kernels re-drawn per initializer, biases zeroed, "
        f"{reports[0].kept} other weights as saved"
    )
    return Inspection(
        description,
        batch.description,
        _loss_words(loss is not None),
        config.seeds,
        {"saved model": diagnoses},
    )


def _load_model(path: str) -> keras.Model:
    if not Path(path).is_file():
        raise ExperimentError(f"--saved_model {path!r}: no such file.")
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for a bad or foreign file.
        raise ExperimentError(
            f"Cannot load saved model {path!r}: {type(error).__name__}: {reason(error)}"
        ) from None


def _input_spec(model: keras.Model) -> tuple[tuple[int | None, ...], str]:
    """The model's input shape without the batch axis, and its dtype; one input only."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs or len(inputs) != 1:
        raise ExperimentError(
            f"Cannot tell the input of saved model {model.name!r}: only models with one "
            "input (Functional, or Sequential starting with keras.Input) are supported."
        )
    return tuple(inputs[0].shape[1:]), keras.backend.standardize_dtype(inputs[0].dtype)


def _saved_loss(model: keras.Model, batch: Batch, num_classes: int) -> keras.losses.Loss:
    """Sparse cross-entropy, on probabilities if the model's outputs are, else on logits."""
    outputs = keras.ops.convert_to_numpy(model(batch.x[:8], training=False))
    if outputs.ndim != 2 or outputs.shape[1] < num_classes:
        raise ExperimentError(
            f"--with_labels needs outputs of shape (batch, classes >= {num_classes}); "
            f"the saved model outputs {tuple(outputs.shape[1:])} per example."
        )
    probabilities = np.all(outputs >= 0) and np.allclose(outputs.sum(axis=1), 1, atol=1e-3)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=not probabilities)


# ---- The side-by-side table -------------------------------------------------------------


def short_number(value: float | None) -> str:
    """Two significant digits in at most 6 characters: 0.52, 0.0031, 1.4e-5, 3.1e3."""
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    if 0.001 <= abs(value) < 100:
        return f"{value:.2g}"
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}"


def _columns(diagnoses: Mapping[str, Diagnosis]) -> list[tuple[str, str]]:
    """act and grad, plus sat% / dead% where some layer defines them."""
    rows = [row for diagnosis in diagnoses.values() for row in diagnosis.layers]
    fractions = [
        (key, header) for key, header in _FRACTIONS if any(r[key] is not None for r in rows)
    ]
    return [*_STD, *fractions]


def side_by_side(diagnoses: Mapping[str, Diagnosis], width: int = 100) -> str:
    """One row per layer, one column group per initializer (numbered as in the verdicts).

    Groups that do not fit in `width` columns wrap into further blocks of about
    equal size, each repeating the layer column.
    """
    first = next(iter(diagnoses.values()))
    names = [row["name"] for row in first.layers]
    if len(set(names)) < len(names):  # sublayers of one name (each attention's "query")
        names = [row["path"] for row in first.layers]
    names = [_cut(name, _LAYER_MAX) for name in names]
    layer_width = max(len("layer"), *map(len, names))
    columns = _columns(diagnoses)
    groups = []
    for number, (spec, diagnosis) in enumerate(diagnoses.items(), start=1):
        if len(diagnosis.layers) != len(names):
            raise ValueError("The diagnoses are of different architectures.")
        cells = [
            [
                _percent(row[key]) if key.endswith("fraction") else short_number(row[key])
                for row in diagnosis.layers
            ]
            for key, _ in columns
        ]
        widths = [
            max(len(header), *map(len, column))
            for (_, header), column in zip(columns, cells, strict=True)
        ]
        label = f"{number} {spec}"
        # Widen the first column so a short label shows whole.
        widths[0] += max(0, min(len(label), _LABEL_MAX) - (sum(widths) + len(widths) - 1))
        groups.append((label, cells, widths))

    blocks = []
    for chunk in _balanced_chunks(groups, layer_width, width):
        group_widths = [sum(widths) + len(widths) - 1 for _, _, widths in chunk]
        head = [" " * layer_width] + [
            _cut(label, w).ljust(w) for (label, _, _), w in zip(chunk, group_widths, strict=True)
        ]
        sub = ["layer".ljust(layer_width)] + [
            " ".join(header.rjust(w) for (_, header), w in zip(columns, widths, strict=True))
            for _, _, widths in chunk
        ]
        rule = ["-" * layer_width] + ["-" * w for w in group_widths]
        lines = [_GAP.join(head).rstrip(), _GAP.join(sub), _GAP.join(rule)]
        for index, name in enumerate(names):
            parts = [name.ljust(layer_width)] + [
                " ".join(column[index].rjust(w) for column, w in zip(cells, widths, strict=True))
                for _, cells, widths in chunk
            ]
            lines.append(_GAP.join(parts))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _balanced_chunks(groups: Sequence, layer_width: int, width: int) -> list[Sequence]:
    """The fewest chunks of about equal size whose lines fit in `width` (one group at least)."""
    for count in range(1, len(groups) + 1):
        size = -(-len(groups) // count)
        chunks = [groups[i : i + size] for i in range(0, len(groups), size)]
        if all(
            layer_width + sum(len(_GAP) + sum(w) + len(w) - 1 for _, _, w in chunk) <= width
            for chunk in chunks
        ):
            return chunks
    return [[group] for group in groups]


def verdict_lines(diagnoses: Mapping[str, Diagnosis], width: int = 100) -> list[str]:
    """Each initializer's loss and verdicts under its number and full spec."""
    lines = []
    for number, (spec, diagnosis) in enumerate(diagnoses.items(), start=1):
        head = f"{number} {spec} (loss {diagnosis.loss:.4g})"
        if not diagnosis.verdicts:
            lines.append(f"{head}: no problem found")
            continue
        lines.append(f"{head}:")
        for message in _merged(diagnosis.verdicts):
            lines += textwrap.wrap(message, width, initial_indent="  - ", subsequent_indent="    ")
    return lines


def _merged(verdicts: Sequence[Verdict]) -> list[str]:
    """The messages, those saying the same of several layers ("hidden_1: no signal...")
    merged into one that names them all."""
    merged: dict[tuple[str, str], list[str]] = {}
    for verdict in verdicts:
        prefix = f"{verdict.layers[0]}: " if len(verdict.layers) == 1 else None
        if prefix and verdict.message.startswith(prefix):
            key = (verdict.kind, verdict.message[len(prefix) :])
            merged.setdefault(key, []).append(verdict.layers[0])
        else:
            merged[(verdict.kind, verdict.message)] = []
    return [
        f"{', '.join(layers)}: {text}" if layers else text for (_, text), layers in merged.items()
    ]


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(1, width - 2)] + ".."
