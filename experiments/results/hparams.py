"""TensorBoard HParams: the experiment's domain once at its root, each run's values in its folder.

The HParams dashboard then lists one row per run with its initializer, seed and
settings next to the final value of each metric (the last scalar logged under
the metric's tag in the run's folder), so initializers compare side by side.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

from experiments import files
from experiments.config import SWEPT, Cell, ExperimentConfig

NO_FALLBACK = "none"  # the fallback hparam of a run whose initializer took every kernel
METRICS = (
    hp.Metric("loss/test", display_name="test loss"),
    hp.Metric("accuracy/test", display_name="test accuracy"),
    hp.Metric("loss/train", display_name="train loss"),
    hp.Metric("accuracy/train", display_name="train accuracy"),
)


def _domain(
    config: ExperimentConfig, entries: Sequence[dict[str, Any]] = ()
) -> dict[str, hp.HParam]:
    """The declared values; `entries` adds those of earlier runs kept in the same folder,
    which the dashboard would otherwise filter out.

    `fallback` is per run: the fallback initializer when some kernel of the run got
    it, else "none". Your own model has no depth, width or activation: those hparams
    exist only when a built-in model is compared, and a run of your own model leaves
    them unset.
    """

    def values(field: str, current: Sequence) -> list:
        found = {*current, *(entry.get(field) for entry in entries)}
        return sorted(found - {None}, key=str)

    # Earlier runs in the folder share the fallback setting (summary.load checks it).
    fallbacks = {NO_FALLBACK, config.fallback_initializer}
    domain = {
        "initializer": hp.HParam(
            "initializer", hp.Discrete(values("initializer", config.initializers))
        ),
        "seed": hp.HParam("seed", hp.Discrete(values("seed", config.seeds))),
        "fallback": hp.HParam("fallback", hp.Discrete(sorted(fallbacks))),
    }
    for name in SWEPT:
        found = values(name, getattr(config, name))
        if found:
            domain[name] = hp.HParam(name, hp.Discrete(found))
    return domain


def write_experiment(
    root: str, config: ExperimentConfig, entries: Sequence[dict[str, Any]] = ()
) -> None:
    """Writes the HParams config at the experiment root, replacing an earlier one.

    `entries` are earlier runs kept in the folder; their values join the domain.

    Earlier event files in the root itself (not in run folders) hold only a
    previous invocation's HParams config; they are removed so the dashboard does
    not merge two configs.
    """
    for stale in files.glob(files.join(root, "events.out.tfevents.*")):
        files.remove(stale)
    writer = tf.summary.create_file_writer(root)
    with writer.as_default():
        hp.hparams_config(
            hparams=list(_domain(config, entries).values()), metrics=list(METRICS)
        )
    writer.close()


def write_run(
    writer: tf.summary.SummaryWriter,
    config: ExperimentConfig,
    cell: Cell,
    *,
    run_name: str,
    initializer: str,
    seed: int,
    fallback: str | None = None,
) -> None:
    """Writes one run's HParams values into its own event file; `fallback` is the
    initializer some of its kernels got instead of `initializer` (None: none did)."""
    domain = _domain(config)
    values = {
        "initializer": initializer,
        "seed": seed,
        "fallback": fallback or NO_FALLBACK,
        **cell.values(),
    }
    with writer.as_default():
        hp.hparams(
            {
                domain[name]: value
                for name, value in values.items()
                if name in domain and value is not None
            },
            trial_id=run_name,
        )
