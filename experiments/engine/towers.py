"""Arms trained together: one tower per initializer behind one input, in one compiled step.

Arms that differ only in the initializer (same architecture, data order and
seed) train as the towers of one Keras model. The input feeds every tower; each
tower has its own output, loss and metrics (Keras's multi-output `compile`); the
loss Keras minimizes is their sum. Towers share no weight, so the gradient of
the sum with respect to a tower's weights is that tower's own gradient, and
every optimizer Keras names updates each variable from its own gradient and
state: an arm trained with others takes the very steps it would take alone
(`tests/experiments/test_towers.py` checks the weights against lone runs).
What would couple the towers is refused (`check_independent`): a global
gradient norm clip and a mixed-precision loss scale.

Each tower's first batch with non-finite outputs is found inside the compiled
step (`NonFiniteBatch`), so a diverged tower is known to the step even when
Keras runs many steps per call; `freeze` then takes its weights out of the
trainable set, so the optimizer stops touching them while the others go on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import keras
import tensorflow as tf

from experiments.errors import ExperimentError
from keras_inits.signals import SignalProbe, Signals

LOSS = "sparse_categorical_crossentropy"
# Optimizer steps per call of the compiled train function: Keras's per-call Python
# overhead is paid once per this many steps (see benchmarks/harness_speed.py).
STEPS_PER_EXECUTION = 50
NONFINITE_BATCH = "nonfinite_batch"
# Each tower's loss as a metric. Keras's own per-output loss (`arm0_loss`) averages the
# batches' means with equal weights when the batch size is dynamic, so a smaller last
# batch counts as much as a full one; a metric averages over examples.
CROSS_ENTROPY = "cross_entropy"


def tower_name(index: int) -> str:
    """The name of the `index`-th tower: its output's name and the prefix of its logs."""
    return f"arm{index}"


def build_group(arms: Sequence[keras.Model], input_shape: tuple[int, ...]) -> keras.Model:
    """One model whose output `arm<i>` is `arms[i]` applied to the shared input.

    The arms are renamed `arm0`, `arm1`... (their layers keep their names, so every
    arm's TensorBoard tags stay the same).
    """
    inputs = keras.Input(input_shape, name="inputs")
    outputs = {}
    for index, arm in enumerate(arms):
        arm.name = tower_name(index)
        outputs[arm.name] = arm(inputs)
    return keras.Model(inputs, outputs, name=f"towers_of_{len(arms)}")


class Towers:
    """The group engine for any architecture: the arms as the towers of one model
    (`build_group`). `experiments.engine.stacked.StackedArms` is the same interface for MLPs.

    Attributes:
        name: the engine's name in each run's summary entry (`engine`).
        model: the group model, outputs `arm0`, `arm1`...
        jit_compile: whether to compile its train step with XLA.
        evaluation_batch: the smallest batch of its evaluations.
    """

    name = "towers"

    # XLA made 6 towers slower on 2 CPU cores (8.5 vs 6.3 ms a step); its compile time
    # (seconds a group) only pays off on accelerators.
    jit_compile = False
    # Smallest batch of the step-0 and per-epoch evaluations: the means over a set do not
    # depend on it, and smaller batches evaluate slower; larger ones might not fit in
    # memory with your own model (the training batch, when larger, is known to).
    evaluation_batch = 256

    def __init__(self, arms: Sequence[keras.Model], input_shape: tuple[int, ...]):
        self.arms = list(arms)
        self.model = build_group(arms, input_shape)
        self._shared: tuple[int, Any] | None = None  # (template arm, its compiled probe)

    def sync(self, names: Iterable[str]) -> None:
        """Nothing to copy: each tower is its arm's own model."""

    def signals(self, probes: Sequence[SignalProbe]) -> Signals:
        """The arms' signals on the probe batch, grouped (every tensor leading with the
        arms' axis), for `experiments.engine.snapshots`; `probes` are the arms' own, in
        arm order.

        The arms share one architecture, so one arm's probe, compiled once with the
        weights as its arguments (`keras.StatelessScope`), computes every arm's signals
        from that arm's weights: the group's snapshot holds one arm's graph, called once
        per arm, rather than every arm's (a 34-layer CNN's 6 arms traced for 23 s on 2
        cores). The template is the first arm that trains: a frozen tower's kernels have
        no gradient.
        """
        ops = keras.ops
        template = self._template()
        if self._shared is None or self._shared[0] != template:
            self._shared = (template, _shared_probe(probes[template], self.arms[template]))
        compute = self._shared[1]
        each = [compute([tf.identity(v.value) for v in arm.variables]) for arm in self.arms]

        def side_by_side(part: int) -> list[Any]:
            layers = zip(*(arm[part] for arm in each), strict=True)
            return [None if values[0] is None else ops.stack(values) for values in layers]

        return Signals(
            taps=probes[template].taps,
            loss=ops.stack([arm[4] for arm in each]),
            outputs=side_by_side(0),
            output_gradients=side_by_side(1),
            kernel_gradients=side_by_side(2),
            kernel_values=side_by_side(3),
            grouped=True,
        )

    def _template(self) -> int:
        return next((i for i, arm in enumerate(self.arms) if arm.trainable), 0)

    def trace_key(self) -> tuple:
        """What a compiled snapshot bakes in: the arm whose probe computes every arm's."""
        return (self._template(),)

    def freeze(self, name: str) -> None:
        freeze(self.model, name)


def _shared_probe(probe: SignalProbe, arm: keras.Model) -> Any:
    """`probe` (of `arm`) as a `tf.function` of the values of `arm.variables`: given
    another arm's of the same architecture, that arm's outputs, their gradients, the
    kernels' gradients and the kernels, per tapped layer, and the loss."""
    variables = list(arm.variables)

    def compute(values):
        with keras.StatelessScope(state_mapping=list(zip(variables, values, strict=True))):
            signals = probe.compute()
            kernels = [keras.ops.convert_to_tensor(kernel) for kernel in signals.kernels]
        return (
            signals.outputs, signals.output_gradients, signals.kernel_gradients, kernels,
            signals.loss,
        )

    return tf.function(compute, autograph=False, experimental_attributes={"_noinline": True})


def compile_group(
    group: keras.Model, optimizer: keras.optimizers.Optimizer, steps_per_execution: int
) -> None:
    """Compiles `group` with one loss, accuracy and `NonFiniteBatch` per tower."""
    check_independent(optimizer)
    names = list(group.output_names)
    group.compile(
        optimizer=optimizer,
        loss={name: LOSS for name in names},
        metrics={
            name: ["accuracy", keras.metrics.SparseCategoricalCrossentropy(CROSS_ENTROPY),
                   NonFiniteBatch()]
            for name in names
        },
        steps_per_execution=steps_per_execution,
        # The engine may turn XLA on for the train step alone, once the test function is
        # made (`training.train_group`).
        jit_compile=False,
    )
    check_independent(group.optimizer)  # compile may wrap it (mixed_float16)


def check_independent(optimizer: keras.optimizers.Optimizer) -> None:
    """Refuses an optimizer whose update of one tower would depend on the others."""
    if getattr(optimizer, "global_clipnorm", None):
        raise ExperimentError(
            f"global_clipnorm={optimizer.global_clipnorm} clips all towers' gradients by "
            "one norm, so arms trained together would not train as they do alone; use "
            "clipnorm (per variable) or train arms one at a time (--nogroup_arms)."
        )
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        raise ExperimentError(
            "A mixed_float16 loss scale is shared by all towers (one overflow skips every "
            "arm's step); use float32 or mixed_bfloat16, or train arms one at a time "
            "(--nogroup_arms)."
        )


def targets(batches: tf.data.Dataset, names: Sequence[str]) -> tf.data.Dataset:
    """`(x, y)` batches -> `(x, {name: y})`: every tower learns the same labels."""
    names = list(names)
    return batches.map(lambda x, y: (x, {name: y for name in names}))


def split_logs(logs: dict[str, Any], names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each tower's entries of Keras's logs, as a single-output model names them
    (`arm0_accuracy` -> `accuracy`, `val_arm0_accuracy` -> `val_accuracy`), its loss
    being its `CROSS_ENTROPY` metric. A group of one tower is a single-output model:
    Keras logs it unprefixed already."""
    if len(names) == 1:
        split = {names[0]: dict(logs)}
    else:
        split = {name: {} for name in names}
        for name in names:
            for prefix in ("", "val_"):
                head = f"{prefix}{name}_"
                for key, value in logs.items():
                    if key.startswith(head):
                        split[name][prefix + key[len(head) :]] = value
    for own in split.values():
        for prefix in ("", "val_"):
            if prefix + CROSS_ENTROPY in own:  # the exact mean over examples
                own[prefix + "loss"] = own.pop(prefix + CROSS_ENTROPY)
    return split


def validation_logs(
    results: dict[str, dict[str, float]], names: Sequence[str]
) -> dict[str, float]:
    """Each tower's test `loss` and `accuracy` (by name) as Keras names its validation
    logs (`val_arm0_cross_entropy`, `val_arm0_accuracy`; unprefixed for one tower), which
    `split_logs` reads back."""
    prefix = {name: "val_" if len(names) == 1 else f"val_{name}_" for name in names}
    return {
        f"{prefix[name]}{key}": value
        for name in names
        for key, value in (
            (CROSS_ENTROPY, results[name]["loss"]), ("accuracy", results[name]["accuracy"])
        )
    }


def freeze(group: keras.Model, name: str) -> None:
    """Stops updating tower `name`: its weights leave the trainable set, and the train
    function is rebuilt (Keras's `fit` calls `model.train_function` anew every step)."""
    group.get_layer(name).trainable = False
    group.make_train_function(force=True)


class NonFiniteBatch(keras.metrics.Metric):
    """The 1-based batch, within the epoch, at which the predictions first held a NaN or an
    infinity (0 while they are finite). Keras resets metrics at every epoch's start.

    Under a distribution strategy every replica sees its share of each batch: the
    replicas agree on whether a batch was bad (an all-reduce), so each holds the same
    count, and the first replica's is the result."""

    def __init__(self, name: str = NONFINITE_BATCH, **kwargs: Any):
        super().__init__(name=name, **kwargs)
        first_replica = dict(shape=(), initializer="zeros", aggregation="only_first_replica")
        self.batches = self.add_variable(name="batches", **first_replica)
        self.first = self.add_variable(name="first", **first_replica)

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        self.batches.assign_add(1.0)
        bad = keras.ops.logical_not(keras.ops.all(keras.ops.isfinite(y_pred)))
        replicas = tf.distribute.get_replica_context()
        if replicas is not None and replicas.num_replicas_in_sync > 1:
            bad = replicas.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(bad, "float32")) > 0
        first_bad = keras.ops.logical_and(bad, keras.ops.equal(self.first, 0.0))
        self.first.assign(keras.ops.where(first_bad, self.batches, self.first))

    def result(self) -> Any:
        return keras.ops.cast(self.first, self.dtype)  # a tensor, as Keras's own metrics return
