"""`--strategy`: how one run spreads over this machine's devices (`tf.distribute`).

`mirrored` trains every run with `tf.distribute.MirroredStrategy` over the local
GPUs (or, without GPUs, the logical CPU devices TensorFlow was configured with):
each replica holds a copy of the weights, takes its share of every global batch,
and the replicas' gradients are summed before each update, so a run takes the
steps it takes on one device with the same global batch, within float rounding
(`tests/experiments/test_strategies.py`). Under Ray (`--ray_address`), each task
mirrors over the GPUs Ray gave it (`--gpus_per_task`).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import tensorflow as tf

from experiments.config import STRATEGIES


def replica_devices() -> list[str]:
    """The devices `mirrored` replicates over: every GPU, else every logical CPU device."""
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return [device.name for device in devices]


@functools.cache
def get(name: str) -> tf.distribute.Strategy | None:
    """The strategy `name` names (None for `none`), made once per process."""
    if name == "none":
        return None
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(replica_devices())
    raise ValueError(f"Unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}.")


@contextlib.contextmanager
def scope(name: str) -> Iterator[None]:
    """Creates the variables made inside it (model, optimizer, metrics) under strategy
    `name`; for `none`, does nothing. Keras's session must be cleared outside it: a
    clear inside a strategy's scope loses the strategy."""
    strategy = get(name)
    if strategy is None:
        yield
    else:
        with strategy.scope():
            yield
