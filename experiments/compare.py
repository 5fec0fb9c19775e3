"""Compares weight initializers on identical models, with histograms in TensorBoard.

Usage:
  python -m experiments.compare [--preset=lesson] [--initializers=SPEC,...] [flags]
  keras-inits-compare --list_presets

Results go to <logdir>/<experiment>/: TensorBoard runs, summary.json/csv, report.md.
"""

from __future__ import annotations

import sys

from experiments.errors import ExperimentError, missing_harness

if missing := missing_harness():  # before absl's import fails with a bare ModuleNotFoundError
    sys.exit(f"keras-inits-compare: error: {missing}")

from absl import app, flags  # noqa: E402

from experiments import config, flagdefs, quiet  # noqa: E402

# --preset, --initializers, --model, --depth, --width, --activation,
# --fallback_initializer, --dataset, --seeds, --probe_size and --list_presets are shared
# with experiments.diagnose.
flags.adopt_module_key_flags(flagdefs)
_FROM_PRESET = flagdefs.FROM_PRESET

# Flags that default to None take the preset's value unless given.
flags.DEFINE_integer("train_size", None, "Training examples." + _FROM_PRESET)
flags.DEFINE_integer("test_size", None, "Test examples." + _FROM_PRESET)
flags.DEFINE_integer("epochs", None, "Training epochs." + _FROM_PRESET)
_SWEEP = flagdefs.SWEEP
flags.DEFINE_list("batch_size", None, "Batch size." + _SWEEP + _FROM_PRESET)
flags.DEFINE_list(
    "optimizer", None, "Keras optimizer name (sgd, adam...)." + _SWEEP + _FROM_PRESET
)
flags.DEFINE_list("learning_rate", None, "Learning rate." + _SWEEP + _FROM_PRESET)
flags.DEFINE_float("momentum", None, "Momentum of sgd and rmsprop." + _FROM_PRESET)
flags.DEFINE_float(
    "clipnorm",
    None,
    "Clip each weight's gradient to this norm (Keras's clipnorm); 0: no clipping." + _FROM_PRESET,
)
flags.DEFINE_float(
    "global_clipnorm",
    None,
    "Clip each run's gradients together to this global norm (Keras's global_clipnorm); 0: no "
    "clipping. One norm per run, arms trained together included (each has its own "
    "optimizer)." + _FROM_PRESET,
)
flags.DEFINE_integer(
    "histogram_every",
    None,
    "Steps between histogram snapshots; 0 turns histograms off (step 0 is always "
    "logged when on)." + _FROM_PRESET,
)
flags.DEFINE_integer(
    "jacobian_spectrum",
    None,
    "Probe examples whose input-output Jacobian (up to the read-out's input) is taken at step "
    "0 with keras_inits.jacobian_spectrum: its singular values go to TensorBoard and run.json, "
    "its mean and variance of sigma^2 to the summary; 0: off." + _FROM_PRESET,
)
flags.DEFINE_string("logdir", "logs", "Root folder of all experiments.")
flags.DEFINE_string(
    "experiment", None, "Folder name under --logdir (default: the preset and changed flags)."
)
flags.DEFINE_bool("overwrite", False, "Re-run runs already in the experiment's summary.json.")
flags.DEFINE_bool(
    "group_arms",
    True,
    "Train the arms of a cell and seed together, as towers of one compiled model (the same "
    "steps as alone, several times faster); --nogroup_arms trains one arm at a time.",
)
flags.DEFINE_bool(
    "save_models",
    True,
    "Keep each run's trained model in its folder as model.keras, and its weights at step 0 "
    "as initial.weights.h5 (to load the best arm, or recompute the table with plain Keras); "
    "--nosave_models saves the disk space (about 4 bytes per weight, twice per run).",
)
flags.DEFINE_enum(
    "strategy",
    "none",
    config.STRATEGIES,
    "mirrored: train each run with tf.distribute.MirroredStrategy over the local GPUs (or the "
    "logical CPU devices), the same steps as on one device for the same global batch.",
)
flags.DEFINE_string(
    "ray_address",
    "",
    "Run the comparison's groups of arms as tasks on a Ray cluster (pip install "
    "'keras-inits[ray]'): auto (the cluster this machine belongs to), host:port, or local "
    "(start one here). --logdir must be reachable by every node. Default: in this process.",
)
flags.DEFINE_float(
    "cpus_per_task", None, "CPUs Ray reserves for each task (group of arms); default 1."
)
flags.DEFINE_float(
    "gpus_per_task",
    None,
    "GPUs Ray reserves for each task; with --strategy=mirrored a task mirrors over them. "
    "Default 0.",
)
flags.DEFINE_integer(
    "task_retries",
    None,
    "Times Ray re-runs a task whose worker died before the task's runs are recorded as "
    "failed; default 3.",
)
flags.DEFINE_integer(
    "verbose",
    0,
    "0: one line per run (updated each epoch on a terminal); 1: also Keras's progress bar "
    "per epoch; 2: also Keras's one line per epoch.",
)

_SETTINGS = (
    *flagdefs.SETTINGS,
    "train_size",
    "test_size",
    "epochs",
    "batch_size",
    "optimizer",
    "learning_rate",
    "momentum",
    "clipnorm",
    "global_clipnorm",
    "histogram_every",
    "jacobian_spectrum",
    "logdir",
    "experiment",
    "overwrite",
    "group_arms",
    "save_models",
    "verbose",
    *config.EXECUTION,
)


def settings_from_flags(values: flags.FlagValues) -> dict:
    """The explicit settings given on the command line, as `config.resolve` takes them."""
    return flagdefs.settings_from_flags(values, _SETTINGS)


def main(argv: list[str]) -> None:
    """Resolves the flags into a config and runs the comparison."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if flagdefs.LIST_PRESETS.value:
        print(config.describe_presets())
        return
    # Deferred: it imports TensorFlow, which --help and --list_presets do not need.
    quiet.start_tensorflow()
    from experiments import runner

    try:
        experiment = config.resolve(flagdefs.PRESET.value, **settings_from_flags(flags.FLAGS))
        runner.compare(experiment)
    except ExperimentError as error:
        # One line, no traceback: the user mistyped a flag or the data is missing.
        sys.exit(f"keras-inits-compare: error: {error}")


def run() -> None:
    """Console-script entry point (`keras-inits-compare`)."""
    app.run(main)


if __name__ == "__main__":
    run()
