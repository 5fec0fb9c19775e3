"""Every arm's loss and accuracy: on a set, in one compiled pass over the group, and in
the training step, as one metric object for all arms.

Keras's `evaluate` compiles a test step with a loss and three metric objects per
tower: tracing it cost the lesson's 6 arms 3.8 s on 2 cores, more than evaluating
their 24,000 training examples (2.2 s). `GroupEvaluation` computes what those metrics
compute, each tower's mean cross-entropy over the examples and its accuracy, from one
call of the group model per batch, in a `tf.function` traced once (any batch size).
It gives the step-0 numbers of both sets and, after every epoch, the test set's
(`GroupMonitor`, in place of `fit`'s validation).

In the training step the same numbers, and each tower's first non-finite batch, are one
`GroupMetrics` with a vector of each per tower (`towers.GroupModel` updates it): with ten
towers, Keras's own metrics (three objects and a loss tracker per tower) made each step
about 10% slower on 2 cores (`benchmarks/harness_speed.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

# The names of each tower's metrics in Keras's logs (`arm0_cross_entropy`...): its mean
# cross-entropy (`towers.split_logs` reads it back as its loss) and first non-finite batch.
CROSS_ENTROPY = "cross_entropy"
NONFINITE_BATCH = "nonfinite_batch"


def arm_values(y: Any, outputs: dict[str, Any], names: Sequence[str]) -> tuple[Any, Any]:
    """Each tower's cross-entropy and correctness (1.0 or 0.0) per example (per token in
    a sequence task: labels `(batch, T)`), as `(towers, examples)` float32 tensors, with
    Keras's own functions, as its `SparseCategoricalCrossentropy` and accuracy metrics
    call them: from the softmax's logits when the output keeps them (so per tower, before
    any stacking)."""
    cross_entropy, correct = [], []
    for name in names:
        predictions = outputs[name]
        cross_entropy.append(keras.losses.sparse_categorical_crossentropy(y, predictions))
        correct.append(keras.metrics.sparse_categorical_accuracy(y, predictions))
    as_float = [
        tf.reshape(tf.cast(tf.stack(values), tf.float32), (len(names), -1))
        for values in (cross_entropy, correct)
    ]
    return as_float[0], as_float[1]


class GroupMetrics(keras.metrics.Metric):
    """Each tower's mean cross-entropy and accuracy over the examples (or tokens) seen, and the
    1-based batch at which its predictions first held a NaN or an infinity (0 while
    finite), for all towers at once. Keras resets it at every epoch's start.

    `result()` is a dict in Keras's multi-output naming, which `towers.split_logs` reads
    back: `arm0_cross_entropy`, `arm0_accuracy`, `arm0_nonfinite_batch`... (unprefixed
    for a group of one, a single-output model's names). The cross-entropy is the exact
    mean over examples; Keras's per-output loss would weigh a smaller last batch as much
    as a full one.

    Under a distribution strategy every replica sees its share of each batch: the sums
    add up across replicas, and the replicas agree on whether a batch was bad (an
    all-reduce), so each holds the same first bad batch; the first replica's is read.

    Args:
        names: the towers' names (the group model's outputs).
    """

    def __init__(self, names: Sequence[str], name: str = "group_metrics", **kwargs: Any):
        super().__init__(name=name, **kwargs)
        self.names = list(names)
        towers = (len(self.names),)
        self.cross_entropy = self.add_variable(towers, "zeros", name="cross_entropy")
        self.correct = self.add_variable(towers, "zeros", name="correct")
        self.examples = self.add_variable((), "zeros", name="examples")
        first_replica = dict(initializer="zeros", aggregation="only_first_replica")
        self.batches = self.add_variable((), name="batches", **first_replica)
        self.first_bad = self.add_variable(towers, name="first_bad", **first_replica)

    def update_state(self, y_true: Any, y_pred: dict[str, Any], sample_weight: Any = None) -> None:
        if sample_weight is not None:
            raise ValueError("GroupMetrics weighs every example alike; pass no sample_weight.")
        cross_entropy, correct = arm_values(y_true, y_pred, self.names)
        self.cross_entropy.assign_add(tf.reduce_sum(cross_entropy, axis=1))
        self.correct.assign_add(tf.reduce_sum(correct, axis=1))
        self.examples.assign_add(tf.cast(tf.shape(cross_entropy)[1], tf.float32))
        self.batches.assign_add(1.0)
        bad = tf.stack([
            tf.cast(tf.logical_not(tf.reduce_all(tf.math.is_finite(y_pred[name]))), tf.float32)
            for name in self.names
        ])
        replicas = tf.distribute.get_replica_context()
        if replicas is not None and replicas.num_replicas_in_sync > 1:
            bad = replicas.all_reduce(tf.distribute.ReduceOp.SUM, bad)
        first = (bad > 0) & tf.equal(self.first_bad, 0.0)
        self.first_bad.assign(tf.where(first, self.batches, self.first_bad))

    def result(self) -> dict[str, Any]:
        cross_entropy = tf.math.divide_no_nan(self.cross_entropy, self.examples)
        accuracy = tf.math.divide_no_nan(self.correct, self.examples)
        results = {}
        for index, name in enumerate(self.names):
            prefix = "" if len(self.names) == 1 else f"{name}_"
            results[f"{prefix}{CROSS_ENTROPY}"] = cross_entropy[index]
            results[f"{prefix}accuracy"] = accuracy[index]
            results[f"{prefix}{NONFINITE_BATCH}"] = self.first_bad[index]
        return results

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "names": self.names}


class GroupEvaluation:
    """Each tower's `loss` (mean cross-entropy) and `accuracy` on a set, in `batch`es.

    Args:
        model: the group model, outputs `names` (class probabilities).
        names: its towers' names.
        batch: examples per call.
    """

    def __init__(self, model: keras.Model, names: Sequence[str], batch: int):
        self.model, self.names, self.batch = model, list(names), batch
        self._sums = None

    def __call__(self, x: Any, y: Any) -> dict[str, dict[str, float]]:
        """By tower name: `{"loss": ..., "accuracy": ...}` over the examples of (x, y) (over
        their tokens, for labels `(n, T)`)."""
        if self._sums is None:
            self._sums = self._trace(x, y)
        totals = np.zeros((len(self.names), 2))
        for start in range(0, len(x), self.batch):
            stop = start + self.batch
            totals += self._sums(x[start:stop], y[start:stop]).numpy()
        means = totals / np.size(y)
        return {
            name: {"loss": float(loss), "accuracy": float(accuracy)}
            for name, (loss, accuracy) in zip(self.names, means, strict=True)
        }

    def _trace(self, x: Any, y: Any):
        model, names = self.model, self.names

        def sums(x, y):
            cross_entropy, correct = arm_values(y, model(x, training=False), names)
            return tf.stack([
                tf.reduce_sum(tf.cast(values, tf.float64), axis=1)
                for values in (cross_entropy, correct)
            ], axis=1)

        signature = [
            tf.TensorSpec((None, *np.shape(x)[1:]), tf.as_dtype(np.asarray(x[:1]).dtype)),
            tf.TensorSpec((None, *np.shape(y)[1:]), tf.as_dtype(np.asarray(y[:1]).dtype)),
        ]
        return tf.function(sums, input_signature=signature, autograph=False)
