"""Time each keras_inits initializer against Keras's built-in for the same math and torch.nn.init.

Usage:
    KERAS_BACKEND=tensorflow python benchmarks/init_throughput.py [--repeats 15]

Ours and Keras's are timed alternately (A B A B ...) in one process, so load
on a shared machine hits both alike; the table gives medians and the ratio of
medians. The target is ours / Keras <= 1.10. torch.nn.init is timed on the
same tensor in torch's (out, in, *k) layout, outside Keras, for reference.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import platform
import statistics
import time
from collections.abc import Callable

import keras
import torch
from benchmark_tables import markdown

import keras_inits

DENSE = (4096, 4096)
CONV = (3, 3, 512, 512)

# name, shape, ours, Keras's built-in with the same distribution (or None), torch's in-place init
CASES: list[tuple[str, tuple[int, ...], keras.initializers.Initializer,
                  keras.initializers.Initializer | None, Callable]] = [
    ("xavier_normal", DENSE, keras_inits.XavierNormal(seed=1),
     keras.initializers.VarianceScaling(1.0, "fan_avg", "untruncated_normal", seed=1),
     torch.nn.init.xavier_normal_),
    ("xavier_uniform", DENSE, keras_inits.XavierUniform(seed=1),
     keras.initializers.GlorotUniform(seed=1), torch.nn.init.xavier_uniform_),
    ("kaiming_normal", DENSE, keras_inits.KaimingNormal(seed=1),
     keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal", seed=1),
     torch.nn.init.kaiming_normal_),
    ("kaiming_uniform", DENSE, keras_inits.KaimingUniform(seed=1),
     keras.initializers.HeUniform(seed=1),
     lambda w: torch.nn.init.kaiming_uniform_(w, nonlinearity="relu")),
    ("standard_uniform", DENSE, keras_inits.StandardUniform(seed=1),
     keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform", seed=1),
     lambda w: torch.nn.init.kaiming_uniform_(w, a=math.sqrt(5))),
    ("delta_orthogonal", CONV, keras_inits.DeltaOrthogonal(seed=1),
     keras.initializers.Orthogonal(seed=1), torch.nn.init.orthogonal_),
    ("dirac", CONV, keras_inits.Dirac(), None, torch.nn.init.dirac_),
    ("sparse", DENSE, keras_inits.Sparse(seed=1), None,
     lambda w: torch.nn.init.sparse_(w, sparsity=0.9)),
]


def _sync(values) -> None:
    # JAX dispatches asynchronously; TensorFlow and torch eager on CPU do not.
    if hasattr(values, "block_until_ready"):
        values.block_until_ready()


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    _sync(fn())
    return time.perf_counter() - start


def _torch_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    *kernel, fan_in, fan_out = shape
    return (fan_out, fan_in, *kernel)


def measure(repeats: int) -> list[dict]:
    rows = []
    for name, shape, ours, builtin, torch_init in CASES:
        timed = {"ours": functools.partial(ours, shape)}
        if builtin is not None:
            timed["keras"] = functools.partial(builtin, shape)
        timed["torch"] = functools.partial(torch_init, torch.empty(_torch_shape(shape)))
        for fn in timed.values():  # warm-up: first-call dispatch and compilation
            _time(fn)
        samples = {key: [] for key in timed}
        for _ in range(repeats):
            for key, fn in timed.items():
                samples[key].append(_time(fn))
        medians = {key: statistics.median(values) for key, values in samples.items()}
        rows.append({"name": name, "shape": shape, **medians})
    return rows


def format_table(rows: list[dict]) -> str:
    def cells(row: dict) -> tuple[str, ...]:
        keras_ms = f"{row['keras'] * 1e3:.1f}" if "keras" in row else "n/a"
        ratio = f"{row['ours'] / row['keras']:.2f}" if "keras" in row else "n/a"
        return (row["name"], "x".join(map(str, row["shape"])), f"{row['ours'] * 1e3:.1f}",
                keras_ms, ratio, f"{row['torch'] * 1e3:.1f}")

    return markdown(
        ("initializer", "shape", "ours (ms)", "Keras built-in (ms)", "ours / Keras",
         "torch.nn.init (ms)"),
        map(cells, rows),
        align="llrrrr",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    rows = measure(args.repeats)
    print(
        f"backend={keras.backend.backend()} keras={keras.__version__} torch={torch.__version__} "
        f"cpus={os.cpu_count()} machine={platform.machine()} repeats={args.repeats}"
    )
    print(format_table(rows))
    worst = max(row["ours"] / row["keras"] for row in rows if "keras" in row)
    print(f"worst ours/Keras ratio: {worst:.2f} (target <= 1.10)")


if __name__ == "__main__":
    main()
