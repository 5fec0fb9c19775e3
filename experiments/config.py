"""The settings of one comparison, how presets and flags combine, and their validation.

`resolve(preset, **settings)` starts from `ExperimentConfig()` (the `lesson`
defaults), applies the preset, then the explicit settings, and checks everything
that can be checked without training: initializer specs, activations, the
optimizers, the dataset, the models (a built-in name, an importable
`package.module:function` or an existing `.keras` file). Any problem raises
`ExperimentError` with a one-line message.

The settings in `SWEPT` each hold a tuple of values: the comparison is the grid
of initializers x every combination of those values (a `Cell`) x seeds. A cell
of your own model has no `depth`, `width` or `activation` (None): your model
brings its own. When every model is your own, those settings given explicitly are
refused and a preset's values are dropped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import re
from collections.abc import Sequence
from typing import Any

from experiments.data import datasets as data
from experiments.errors import ExperimentError
from experiments.papers.presets import LESSON_INITIALIZERS, PRESETS
from experiments.specs import (
    LAYER_NORMS,
    RESIDUAL_MODELS,
    SEQUENCE_MODELS,
    check_model,
    is_own_model,
    lsuv_settings,
    scheme_settings,
)

# Settings that only shape the built-in architectures.
ARCHITECTURE = ("depth", "width", "activation", "normalization")
# Settings of the built-in Transformer alone (one value per comparison).
TRANSFORMER = ("heads", "layer_norm")
# Settings that take a list of values, swept as a grid; in the order of `Cell`'s fields.
SWEPT = (
    "model", "depth", "width", "activation", "normalization", "optimizer", "learning_rate",
    "batch_size", "parametrization",
)
# --parametrization: the standard one (each layer as built) or muP (`keras_inits.mup`),
# relative to the model at --base_width.
PARAMETRIZATIONS = ("sp", "mup")
# --normalization of the residual models: none, BatchNormalization or LayerNormalization.
NORMALIZATIONS = ("none", "batch", "layer")
DEFAULT_FALLBACK = "xavier_normal"
VERBOSITY = (0, 1, 2)
# keras.utils.set_random_seed takes seeds below 2**32; the plugin's seeds are int32.
MAX_SEED = 2**31 - 1
# Settings that change where and how verbosely results are written, not the results:
# they never enter the derived experiment name.
_LOGGING_FIELDS = ("preset", "logdir", "experiment", "overwrite", "verbose", "save_models")
# Settings that change where runs execute (devices, a Ray cluster), not their results:
# they never enter the experiment name either, and a folder may be resumed with others.
EXECUTION = ("strategy", "ray_address", "cpus_per_task", "gpus_per_task", "task_retries")
# The execution settings that only apply with a Ray cluster.
RAY_ONLY = ("cpus_per_task", "gpus_per_task", "task_retries")
STRATEGIES = ("none", "mirrored")  # experiments.engine.strategies; named here without TensorFlow


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Every setting of a comparison; the defaults are the `lesson` preset."""

    preset: str = "lesson"
    initializers: tuple[str, ...] = LESSON_INITIALIZERS
    model: tuple[str, ...] = ("mlp",)
    depth: tuple[int | None, ...] = (5,)
    width: tuple[int | None, ...] = (256,)
    activation: tuple[str | None, ...] = ("tanh",)
    # Of the residual models' blocks (resmlp, resnet); the mlp and cnn have none.
    normalization: tuple[str | None, ...] = ("none",)
    # The built-in Transformer's attention heads and LayerNorm placement (pre or post).
    heads: int = 4
    layer_norm: str = "pre"
    fallback_initializer: str = DEFAULT_FALLBACK
    dataset: str = "shapeset"
    # Characters per example of a text dataset (sonnets, text:PATH).
    sequence_length: int = data.SEQUENCE_LENGTH
    # Enough examples that the best arms' test loss still falls at the last epoch (with
    # 8,000 examples for 8 epochs, random_normal's rose from epoch 6: memorized).
    train_size: int = 24000
    test_size: int = 2000
    epochs: int = 3
    batch_size: tuple[int, ...] = (32,)
    optimizer: tuple[str, ...] = ("sgd",)
    learning_rate: tuple[float, ...] = (0.01,)
    # The standard parametrization or muP; muP's base model is the built-in model at
    # `base_width` (None: the smallest width of the comparison).
    parametrization: tuple[str, ...] = ("sp",)
    base_width: int | None = None
    # muP's read-out starts at zero (keras_inits.mup.parametrize's readout_zero_init), as
    # Yang et al. recommend: every width then starts from the same function, the wide limit's.
    readout_zero_init: bool = False
    momentum: float = 0.9
    # Gradient clipping, Keras's optimizer arguments; 0 turns it off.
    clipnorm: float = 0.0
    global_clipnorm: float = 0.0
    seeds: tuple[int, ...] = (0, 1, 2)
    group_arms: bool = True
    histogram_every: int = 100
    probe_size: int = 256
    # Probe examples whose input-output Jacobian spectrum is taken at step 0 (0: none).
    jacobian_spectrum: int = 0
    logdir: str = "logs"
    experiment: str = ""
    overwrite: bool = False
    verbose: int = 0
    # Each run folder keeps the arm's trained model (model.keras) and its weights at step 0.
    save_models: bool = True
    strategy: str = "none"
    ray_address: str = ""
    cpus_per_task: float = 1.0
    gpus_per_task: float = 0.0
    task_retries: int = 3

    def results_settings(self) -> dict[str, Any]:
        """The settings that determine results (everything but where logs go)."""
        return {
            name: value
            for name, value in dataclasses.asdict(self).items()
            if name not in (*_LOGGING_FIELDS, *EXECUTION)
        }

    def cells(self) -> list[Cell]:
        """Every combination of the swept settings' values, in flag order (the last
        setting varies fastest); a cell of your own model has no depth, width or
        activation, so combinations that differ only there are one cell."""
        cells = []
        for values in itertools.product(*(getattr(self, name) for name in SWEPT)):
            cell = Cell(*values).applicable()
            if cell not in cells:
                cells.append(cell)
        return cells

    def swept(self) -> tuple[str, ...]:
        """The swept settings that take more than one value across the cells."""
        cells = self.cells()
        return tuple(
            name for name in SWEPT if len({getattr(cell, name) for cell in cells}) > 1
        )


@dataclasses.dataclass(frozen=True)
class Cell:
    """One value of each swept setting: what a group of arms shares besides the seed."""

    model: str
    depth: int | None
    width: int | None
    activation: str | None
    normalization: str | None
    optimizer: str
    learning_rate: float
    batch_size: int
    # Last, with a default: cells and summaries written before it existed are the standard
    # parametrization's.
    parametrization: str = "sp"

    def values(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def applicable(self) -> Cell:
        """This cell without the settings its model does not take: your own model brings
        its own architecture; only the residual models take a normalization (the
        Transformer's LayerNorms are placed by `layer_norm`)."""
        if self.model is not None and is_own_model(self.model):
            return dataclasses.replace(
                self, depth=None, width=None, activation=None, normalization=None
            )
        if self.model not in RESIDUAL_MODELS:
            return dataclasses.replace(self, normalization=None)
        return self

    def describe(self, names: Sequence[str]) -> str:
        """`depth=30 learning_rate=0.01` for the settings in `names` (empty: "")."""
        return " ".join(f"{name}={getattr(self, name)}" for name in names)


def split_specs(text: str) -> tuple[str, ...]:
    """Splits comma-separated initializer specs, keeping commas inside brackets or quotes.

    >>> split_specs("xavier_normal,random_uniform(minval=-0.1, maxval=0.1)")
    ('xavier_normal', 'random_uniform(minval=-0.1, maxval=0.1)')
    """
    specs, current, depth, quote = [], [], 0, ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            specs.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    specs.append("".join(current).strip())
    return tuple(spec for spec in specs if spec)


def resolve(preset: str = "lesson", **settings: Any) -> ExperimentConfig:
    """The validated config of `preset` with `settings` (explicit flags) applied over it."""
    if preset not in PRESETS:
        raise ExperimentError(f"Unknown preset {preset!r}; choose one of {', '.join(PRESETS)}.")
    unknown = set(settings) - {field.name for field in dataclasses.fields(ExperimentConfig)}
    if unknown:
        raise ExperimentError(f"Unknown settings: {', '.join(sorted(unknown))}.")
    base = _as_tuples(
        dataclasses.replace(ExperimentConfig(), preset=preset, **PRESETS[preset].settings)
    )
    config = _as_tuples(dataclasses.replace(base, **settings))
    if all(is_own_model(model) for model in config.model):
        given = [f"--{name}" for name in ARCHITECTURE if name in settings]
        if given:
            raise ExperimentError(
                f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to "
                f"--model={','.join(config.model)}: your own model brings its own layers and "
                "activations; drop the flag."
            )
        config = without_architecture(config)
        base = without_architecture(base)
    given = [f"--{name}" for name in TRANSFORMER if name in settings]
    if given and not set(config.model) & set(SEQUENCE_MODELS):
        raise ExperimentError(
            f"{', '.join(given)} only applies to --model=transformer; drop the flag or add "
            "the model."
        )
    if "mup" in config.parametrization and config.base_width is None:
        builtin = [width for width in config.width if width is not None]
        config = dataclasses.replace(config, base_width=min(builtin) if builtin else None)
    elif "mup" not in config.parametrization and config.base_width is not None:
        if "base_width" in settings:
            raise ExperimentError(
                "--base_width only applies to --parametrization=mup (muP's widths are "
                "relative to it); drop the flag or add mup."
            )
        config = dataclasses.replace(config, base_width=None)
    if "mup" not in config.parametrization and config.readout_zero_init:
        if "readout_zero_init" in settings:
            raise ExperimentError(
                "--readout_zero_init only applies to --parametrization=mup (it zeros muP's "
                "read-out); drop the flag or add mup."
            )
        config = dataclasses.replace(config, readout_zero_init=False)
    given = [f"--{name}" for name in RAY_ONLY if name in settings]
    if given and not config.ray_address:
        raise ExperimentError(
            f"{', '.join(given)} only applies to runs on a Ray cluster; add --ray_address "
            "(local, auto or host:port) or drop the flag."
        )
    validate(config)
    if not config.experiment:
        config = dataclasses.replace(config, experiment=experiment_name(config, base))
    return config


def _as_tuples(config: ExperimentConfig) -> ExperimentConfig:
    """`config` with every list setting a tuple (a single swept value may be given bare)."""
    lists = {
        name: tuple(value) if isinstance(value, (list, tuple)) else (value,)
        for name in (*SWEPT, "initializers", "seeds")
        for value in [getattr(config, name)]
    }
    return dataclasses.replace(config, **lists)


def without_architecture(config: ExperimentConfig) -> ExperimentConfig:
    """`config` with the built-in models' depth, width, activation and normalization
    cleared."""
    return dataclasses.replace(
        config, depth=(None,), width=(None,), activation=(None,), normalization=(None,)
    )


def experiment_name(config: ExperimentConfig, preset_config: ExperimentConfig) -> str:
    """`<preset>[-<setting>=<value>...]` for the settings that differ from the preset.

    Derived from the settings only (never the clock), so re-running the same
    command writes into the same folder and resumes it. Values that do not make
    tidy folder names (initializer specs, long lists) are replaced by a short hash.
    """
    parts = [config.preset]
    ours, theirs = config.results_settings(), preset_config.results_settings()
    for name, value in ours.items():
        if value == theirs[name]:
            continue
        text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
        if len(text) > 32 or not re.fullmatch(r"[\w.,+-]+", text):
            text = hashlib.sha1(text.encode()).hexdigest()[:8]
        parts.append(f"{name}={text}")
    return "-".join(parts)


def validate(config: ExperimentConfig) -> None:
    """Raises `ExperimentError` for the first bad setting."""
    import keras  # Deferred: importing TensorFlow takes seconds, flag parsing should not.

    import keras_inits

    if keras.backend.backend() != "tensorflow":
        raise ExperimentError(
            f"The harness runs on the TensorFlow backend, but Keras is using "
            f"{keras.backend.backend()!r}; set KERAS_BACKEND=tensorflow (the plugin itself "
            "works on every backend)."
        )
    if not config.initializers:
        raise ExperimentError("--initializers is empty; give at least one spec.")
    if len(set(config.initializers)) != len(config.initializers):
        raise ExperimentError(f"--initializers lists a spec twice: {config.initializers}.")
    for spec in config.initializers:
        try:
            if lsuv_settings(spec) is None and scheme_settings(spec) is None:
                keras_inits.get(spec)
        except (TypeError, ValueError) as error:
            raise ExperimentError(str(error)) from None
    try:
        if keras_inits.get(config.fallback_initializer) is None:
            raise ValueError("give a spec such as 'xavier_normal'.")
    except (TypeError, ValueError) as error:
        raise ExperimentError(f"--fallback_initializer: {error}") from None
    for name in (*SWEPT, "initializers", "seeds"):
        values = getattr(config, name)
        if not isinstance(values, tuple) or not values:
            raise ExperimentError(f"--{name} must list at least one value, got {values!r}.")
        if len(set(values)) != len(values):
            raise ExperimentError(f"--{name} lists a value twice: {','.join(map(str, values))}.")
    for model in config.model:
        check_model(model)
    own = all(is_own_model(model) for model in config.model)
    architecture = (config.depth, config.width, config.activation, config.normalization)
    if own and architecture != ((None,),) * 4:
        raise ExperimentError(
            "depth, width, activation and normalization do not apply to "
            f"--model={','.join(config.model)} (your own model brings its own layers); "
            "resolve the config with config.resolve."
        )
    for name, least in (
        ("train_size", 1), ("test_size", 1), ("epochs", 1), ("probe_size", 1),
        ("histogram_every", 0), ("task_retries", 0), ("heads", 1), ("sequence_length", 1),
        ("jacobian_spectrum", 0),
    ):
        value = getattr(config, name)
        if not _is_int(value) or value < least:
            raise ExperimentError(f"--{name} must be an integer >= {least}, got {value!r}.")
    if config.jacobian_spectrum and data.is_text(config.dataset):
        raise ExperimentError(
            f"--jacobian_spectrum needs float inputs to differentiate, and {config.dataset} "
            "feeds token ids; leave it at 0 for text."
        )
    for seed in config.seeds:
        if not _is_int(seed) or not 0 <= seed <= MAX_SEED:
            raise ExperimentError(
                f"--seeds must be integers in [0, {MAX_SEED}], got {seed!r}."
            )
    for name in ("batch_size",) if own else ("depth", "width", "batch_size"):
        for value in getattr(config, name):
            if not _is_int(value) or value < 1:
                raise ExperimentError(f"--{name} must be integers >= 1, got {value!r}.")
    for name in ("group_arms", "overwrite", "save_models"):
        if not isinstance(getattr(config, name), bool):
            raise ExperimentError(
                f"{name} must be True or False, got {getattr(config, name)!r}."
            )
    if config.verbose not in VERBOSITY:
        raise ExperimentError(
            f"--verbose must be 0 (one line per run), 1 (Keras's progress bar) or 2 (Keras's "
            f"line per epoch), got {config.verbose}."
        )
    for rate in config.learning_rate:
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0:
            raise ExperimentError(f"--learning_rate must be numbers > 0, got {rate!r}.")
    if not 0 <= config.momentum < 1:
        raise ExperimentError(f"--momentum must be in [0, 1), got {config.momentum}.")
    for name in ("clipnorm", "global_clipnorm"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ExperimentError(f"--{name} must be a number >= 0 (0: off), got {value!r}.")
    if config.clipnorm and config.global_clipnorm:
        raise ExperimentError(
            "Give --clipnorm or --global_clipnorm, not both: Keras's optimizers take one."
        )
    _check_parametrization(config, own)
    for name in () if own else config.activation:
        try:
            keras.activations.get(name)
        except (TypeError, ValueError):
            raise ExperimentError(f"Unknown Keras activation {name!r}.") from None
    for normalization in () if own else config.normalization:
        if normalization not in NORMALIZATIONS:
            raise ExperimentError(
                f"--normalization must be among {', '.join(NORMALIZATIONS)}, got "
                f"{normalization!r}."
            )
    for optimizer in config.optimizer:
        try:
            keras.optimizers.get(optimizer)
        except (TypeError, ValueError):
            raise ExperimentError(f"Unknown Keras optimizer {optimizer!r}.") from None
    if config.layer_norm not in LAYER_NORMS:
        raise ExperimentError(
            f"--layer_norm must be pre or post (LayerNorm before each block's branch, as in "
            f"GPT-2, or after each residual add, as in BERT), got {config.layer_norm!r}."
        )
    if "transformer" in config.model:
        for width in config.width:
            if width % config.heads:
                raise ExperimentError(
                    f"--heads={config.heads} must divide --width={width}: each attention "
                    "head gets width / heads units."
                )
    data.check_name(config.dataset)
    check_task(config.model, config.dataset, sequence=data.is_sequence_task(config.dataset))
    if config.strategy not in STRATEGIES:
        raise ExperimentError(
            f"--strategy must be one of {', '.join(STRATEGIES)}, got {config.strategy!r}."
        )
    if not config.cpus_per_task > 0 or not config.gpus_per_task >= 0:
        raise ExperimentError(
            f"--cpus_per_task must be > 0 and --gpus_per_task >= 0, got "
            f"{config.cpus_per_task} and {config.gpus_per_task}."
        )


def _check_parametrization(config: ExperimentConfig, own: bool) -> None:
    """Refuses a parametrization that does not exist, and muP where the harness cannot build
    the base model (your own model has no width to vary)."""
    for parametrization in config.parametrization:
        if parametrization not in PARAMETRIZATIONS:
            raise ExperimentError(
                f"--parametrization must be among {', '.join(PARAMETRIZATIONS)} (the standard "
                f"parametrization or muP), got {parametrization!r}."
            )
    if "mup" not in config.parametrization:
        return
    mine = [model for model in config.model if is_own_model(model)]
    if mine:
        raise ExperimentError(
            f"--parametrization=mup needs the model at --base_width, which the harness can only "
            f"build for its own models; --model={mine[0]} brings its own width. Put your model "
            "in muP yourself with keras_inits.mup.parametrize (docs/mup.md)."
        )
    base = config.base_width
    if not _is_int(base) or base < 1:
        raise ExperimentError(f"--base_width must be an integer >= 1, got {base!r}.")
    if "transformer" in config.model and base % config.heads:
        raise ExperimentError(
            f"--heads={config.heads} must divide --base_width={base}: muP's base Transformer "
            "has the same heads."
        )
    if config.global_clipnorm:
        raise ExperimentError(
            f"--global_clipnorm={config.global_clipnorm} clips a run's gradients by one norm "
            "over all its weights, but under muP a run's weights are updated by one "
            "optimizer per learning-rate multiplier, each of which would clip its own share; "
            "use --clipnorm (per weight)."
        )


def check_task(models: Sequence[str], dataset: str, *, sequence: bool | None) -> None:
    """Refuses a built-in model that does not fit the dataset's task: the Transformer
    needs a sequence task (token ids in, each position's next token out), the other
    built-in models a classification task. `sequence`: whether the dataset is a sequence
    task; None when not known before loading it (an `.npz` file or arrays).

    Raises:
        ExperimentError: one line naming the model, the dataset and what fits.
    """
    if sequence is None:
        return
    for model in models:
        if is_own_model(model):
            continue
        if sequence and model not in SEQUENCE_MODELS:
            raise ExperimentError(
                f"--model={model} classifies whole examples, but {dataset} is a sequence "
                "task (a label per token); use --model=transformer or your own sequence model."
            )
        if not sequence and model in SEQUENCE_MODELS:
            raise ExperimentError(
                f"--model={model} is a language model (token ids in, a next token per "
                f"position out), but {dataset} is a classification task; use "
                "--dataset=sonnets, text:PATH or npz:PATH with token labels of shape (n, T)."
            )


def _is_int(value: Any) -> bool:
    """An integer, not a bool (True is an int to Python, never a count to a user)."""
    return isinstance(value, int) and not isinstance(value, bool)


def describe_presets() -> str:
    """One paragraph per preset: its description and the settings it sets."""
    # The lesson sets nothing over the defaults, so it lists the defaults themselves.
    defaults = ExperimentConfig().results_settings()
    paragraphs = []
    for preset in PRESETS.values():
        settings = preset.settings or defaults
        lines = [f"{preset.name}: {preset.description}"]
        lines += [_flag(name, value) for name, value in settings.items()]
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


def _flag(name: str, value: Any) -> str:
    """The flag that sets `value`, as a user types it (`--depth=5`, `--nogroup_arms`)."""
    if isinstance(value, bool):
        return f"    --{'' if value else 'no'}{name}"
    return f"    --{name}={_flag_value(value)}"


def _flag_value(value: Any) -> str:
    if isinstance(value, tuple):
        text = ",".join(map(str, value))
        return f'"{text}"' if " " in text or "(" in text else text
    return str(value)
