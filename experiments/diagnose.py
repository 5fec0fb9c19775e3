"""Signal propagation at initialization, one column group per initializer, in seconds.

Usage:
  python -m experiments.diagnose [--preset=lesson] [--initializers=SPEC,...] [flags]
  python -m experiments.diagnose --saved_model=model.keras --initializers=SPEC,...
  keras-inits-diagnose --depth=10 --plot=profile.png --json=diagnosis.json

No training and no logs: each initializer's model is built once and diagnosed
with keras_inits.diagnose on one batch (--probe_size examples of --dataset, first
seed of --seeds); the table shows per layer the activation std, the gradient std
and the saturated or dead fraction, then each initializer's verdicts.
"""

from __future__ import annotations

import shutil
import sys

from experiments.errors import ExperimentError, missing_harness

if missing := missing_harness():  # before absl's import fails with a bare ModuleNotFoundError
    sys.exit(f"keras-inits-diagnose: error: {missing}")

from absl import app, flags  # noqa: E402

from experiments import config, flagdefs, quiet  # noqa: E402

# --preset, --initializers, --model, --depth, --width, --activation, --normalization,
# --fallback_initializer, --dataset, --seeds, --probe_size and --list_presets are the
# ones compare takes.
flags.adopt_module_key_flags(flagdefs)
_SAVED_MODEL = flags.DEFINE_string(
    "saved_model",
    None,
    "A .keras file: diagnose its architecture instead of --model, re-initialized with each "
    "initializer (the batch: --dataset if it fits its input, else standard normal).",
)
_WITH_LABELS = flags.DEFINE_bool(
    "with_labels",
    None,
    "Use the batch's labels and sparse categorical cross-entropy instead of the surrogate "
    "loss (default: on for --model, off for --saved_model).",
)
_PLOT = flags.DEFINE_string(
    "plot", None, "Write the activation and gradient std per layer as a PNG, one line each."
)
_JSON = flags.DEFINE_string("json", None, "Write every diagnosis as JSON, keyed by initializer.")


def main(argv: list[str]) -> None:
    """Resolves the flags and prints the diagnoses side by side."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if flagdefs.LIST_PRESETS.value:
        print(config.describe_presets())
        return
    # Deferred: it imports TensorFlow, which --help and --list_presets do not need.
    quiet.start_tensorflow()
    from experiments import inspect_init

    values = flags.FLAGS
    try:
        given = [f"--{name}" for name in flagdefs.ARCHITECTURE if values[name].present]
        if _SAVED_MODEL.value is not None and given:
            raise ExperimentError(
                f"--saved_model diagnoses the saved architecture; {', '.join(given)} "
                "does not apply to it."
            )
        settings = flagdefs.settings_from_flags(values, flagdefs.SETTINGS)
        inspect_init.run(
            config.resolve(flagdefs.PRESET.value, **settings),
            saved_model=_SAVED_MODEL.value,
            with_labels=_WITH_LABELS.value,
            plot=_PLOT.value,
            json_path=_JSON.value,
            width=shutil.get_terminal_size((100, 24)).columns,
        )
    except ExperimentError as error:
        # One line, no traceback: a mistyped flag, a missing file, an unloadable model.
        sys.exit(f"keras-inits-diagnose: error: {error}")


def run() -> None:
    """Console-script entry point (`keras-inits-diagnose`)."""
    app.run(main)


if __name__ == "__main__":
    run()
