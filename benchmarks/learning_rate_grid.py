"""A width x learning-rate grid through the harness: the rates of a width trained together
(one group, an optimizer per arm) against one run per rate (`--nogroup_arms`, what every
rate cost before the rates could share a group), and against one rate per width alone.

The grid is `yang2022`'s in small (one seed, fewer widths and rates, 1 epoch): a 2-layer ReLU
MLP on `mnist5k`, he_normal, Adam, under the standard parametrization and muP. Each variant
is `experiments.runner.compare` timed from its call to its return (data, models, step-0
evaluations and snapshots, training, saved models, summary, report), in a fresh experiment
folder; the variants alternate (`--repeats` rounds) after one untimed warm-up of each, and
the grouped and one-by-one grids' final losses are printed side by side: the same runs.

Usage: KERAS_BACKEND=tensorflow python benchmarks/learning_rate_grid.py [--repeats=3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from benchmark_tables import markdown

from experiments import config, runner

WIDTHS = (64, 256, 1024)
RATES = tuple(2.0**exponent for exponent in range(-12, -4))  # 8 rates
GRID = dict(
    preset="yang2022", width=WIDTHS, learning_rate=RATES, seeds=(0,), epochs=1,
    train_size=2000, test_size=500,
)


def variants() -> dict[str, dict]:
    return {
        "grid, rates together": dict(GRID),
        "grid, one run per rate": dict(GRID, group_arms=False),
        "one rate per width": dict(GRID, learning_rate=(RATES[3],)),
    }


def timed(settings: dict, logdir: str) -> tuple[float, list[dict]]:
    preset = settings.pop("preset")
    experiment = config.resolve(preset, **settings, logdir=logdir, experiment="grid")
    started = time.perf_counter()
    entries = runner.compare(experiment, progress=lambda line: None)
    return time.perf_counter() - started, entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    seconds: dict[str, list[float]] = {name: [] for name in variants()}
    losses: dict[str, dict] = {}
    for settings in variants().values():  # warm-up: imports, tracing caches, data
        with tempfile.TemporaryDirectory() as logdir:
            timed(dict(settings, width=(64,), learning_rate=RATES[:2]), logdir)
    for _ in range(args.repeats):
        for name, settings in variants().items():
            with tempfile.TemporaryDirectory() as logdir:
                elapsed, entries = timed(dict(settings), logdir)
            seconds[name].append(elapsed)
            losses[name] = {
                (e["width"], e["learning_rate"], e["parametrization"]): e["final_train_loss"]
                for e in entries
            }
    runs = {name: len(losses[name]) for name in seconds}
    base = statistics.median(seconds["one rate per width"])
    print(f"{args.repeats} rounds; medians")
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    print(markdown(
        ("variant", "runs", "seconds", "per run", "vs one rate per width"),
        [(name, runs[name], f"{median:.1f}", f"{median / runs[name]:.2f}",
          f"{median / base:.2f}x") for name, median in medians.items()],
        align="lrrrr",
    ))
    together, alone = losses["grid, rates together"], losses["grid, one run per rate"]
    worst = max(
        abs(together[key] - alone[key]) / abs(alone[key])
        for key in alone if alone[key] is not None and together[key] is not None
    )
    print(f"largest relative difference of a final training loss, together vs one by one: "
          f"{worst:.1e}")


if __name__ == "__main__":
    main()
