"""The comparison through a Ray cluster against the same comparison in-process.

The 3-seed lesson (18 runs: 3 groups of 6 arms trained together), each variant run
as a user runs it, `python -m experiments.compare` in a fresh process writing to a
fresh folder, timed from the command's start to its end (TensorFlow's import, the
data load, the report: everything a user waits for):

- `in-process`: no Ray.
- `ray, 2 cpus/task`: `--ray_address` of a one-node cluster on this machine (started
  once, before, with `ray start --head --num-cpus=2`), `--cpus_per_task=2`: one
  group at a time with both cores, as in-process.
- `ray, 1 cpu/task`: the same cluster, `--cpus_per_task=1`: two groups at a time,
  one core each.
- `ray local`: `--ray_address=local`: the command starts (and stops) its own
  cluster, whose start-up is counted.

The variants alternate (`--repeats` rounds), so that machine noise hits all alike;
the table gives each one's median and its ratio to in-process. Target: going
through Ray costs at most 1.2x.

Usage: python benchmarks/ray_overhead.py [--repeats=3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmark_tables import markdown

from experiments.config import ExperimentConfig
from experiments.data import datasets as data_lib
from experiments.engine import cluster


def timed(flags: list[str], logdir: Path) -> float:
    """Seconds of one `python -m experiments.compare` with `flags`, writing under `logdir`."""
    command = [sys.executable, "-m", "experiments.compare", f"--logdir={logdir}", *flags]
    started = time.perf_counter()
    subprocess.run(
        command,
        check=True,
        env={**os.environ, "KERAS_BACKEND": "tensorflow"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    lesson = ExperimentConfig()
    data_lib.load(lesson.dataset, lesson.train_size, lesson.test_size)  # cached for all

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        with cluster.head_node(2, root / "head.log") as address:
            variants = {
                "in-process": [],
                "ray, 2 cpus/task": [f"--ray_address={address}", "--cpus_per_task=2"],
                "ray, 1 cpu/task": [f"--ray_address={address}", "--cpus_per_task=1"],
                "ray local": ["--ray_address=local", "--cpus_per_task=1"],
            }
            seconds: dict[str, list[float]] = {name: [] for name in variants}
            for repeat in range(args.repeats):
                for name, flags in variants.items():
                    logdir = root / f"{repeat}-{name.replace(' ', '_').replace('/', '_')}"
                    seconds[name].append(timed(flags, logdir))
                    print(f"round {repeat + 1}: {name}: {seconds[name][-1]:.1f} s", flush=True)

    reference = statistics.median(seconds["in-process"])
    print(f"\nThe 3-seed lesson (18 runs), {args.repeats} alternating rounds, 2 cores:\n")
    print(markdown(
        ("variant", "median", "vs in-process", "every round"),
        [(name, f"{statistics.median(values):.1f} s",
          f"{statistics.median(values) / reference:.2f}x",
          ", ".join(f"{value:.1f}" for value in values)) for name, values in seconds.items()],
        align="lrrl",
    ))


if __name__ == "__main__":
    main()
