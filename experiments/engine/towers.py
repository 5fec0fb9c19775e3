"""Arms trained together: one tower per initializer behind one input, in one compiled step.

Arms that differ only in the initializer (same architecture, data order and
seed) train as the towers of one Keras model (`GroupModel`). The input feeds every
tower; each tower has its own output and loss; the loss Keras minimizes is their sum,
and one metric object follows every tower (`evaluation.GroupMetrics`). Towers share no
weight, so the gradient of the sum with respect to a tower's weights is that tower's own
gradient, and every optimizer Keras names updates each variable from its own gradient
and state: an arm trained with others takes the very steps it would take alone
(`tests/experiments/test_towers.py` checks the weights against lone runs).
What would couple the towers is refused (`check_independent`): one global gradient
norm clip for all of them (each arm gets its own optimizer instead, `engine.optimizers`)
and a mixed-precision loss scale.

Each tower's first batch with non-finite outputs is found inside the compiled
step (`GroupMetrics`), so a diverged tower is known to the step even when
Keras runs many steps per call; `freeze` then takes its weights out of the
trainable set, so the optimizer stops touching them while the others go on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import keras
import tensorflow as tf

from experiments.engine.evaluation import CROSS_ENTROPY, GroupMetrics
from experiments.errors import ExperimentError
from keras_inits.signals import SignalProbe, Signals

LOSS = "sparse_categorical_crossentropy"
# Optimizer steps per call of the compiled train function: Keras's per-call Python
# overhead is paid once per this many steps (see benchmarks/harness_speed.py).
STEPS_PER_EXECUTION = 50


def tower_name(index: int) -> str:
    """The name of the `index`-th tower: its output's name and the prefix of its logs."""
    return f"arm{index}"


def build_group(
    arms: Sequence[keras.Model], input_shape: tuple[int, ...], dtype: str = "float32"
) -> keras.Model:
    """One model whose output `arm<i>` is `arms[i]` applied to the shared input (of
    `dtype`: int32 token ids for a sequence task).

    The arms are renamed `arm0`, `arm1`... (their layers keep their names, so every
    arm's TensorBoard tags stay the same).
    """
    inputs = keras.Input(input_shape, dtype=dtype, name="inputs")
    outputs = {}
    for index, arm in enumerate(arms):
        arm.name = tower_name(index)
        outputs[arm.name] = arm(inputs)
    return GroupModel(inputs, outputs, name=f"towers_of_{len(arms)}")


class GroupModel(keras.Model):
    """A functional model whose outputs `arm0`, `arm1`... are towers (or an `engine.stacked`
    stack's slices), trained on plain `(x, y)` batches: every tower learns the labels `y`.

    Its loss is the sum of the towers' mean cross-entropies (Keras's
    `SparseCategoricalCrossentropy`, as a multi-output `compile` would sum them) plus the
    towers' own losses (their regularizers'). Its metrics are one `GroupMetrics` for all
    towers, rather than Keras's per-output loss trackers and metric objects: with ten
    towers those made each training step about 10% slower on 2 CPU cores. Compile it with
    `compile_group`.
    """

    def __init__(self, inputs: Any, outputs: dict[str, Any], **kwargs: Any):
        super().__init__(inputs, outputs, **kwargs)
        self.towers = list(outputs)
        self.group_metrics = GroupMetrics(self.towers)
        self._cross_entropy = keras.losses.SparseCategoricalCrossentropy()

    def compute_loss(
        self,
        x: Any = None,
        y: Any = None,
        y_pred: Any = None,
        sample_weight: Any = None,
        training: bool = True,
    ) -> Any:
        if sample_weight is not None:
            raise ValueError("A group of arms weighs every example alike; pass no sample_weight.")
        # Per tower, on its own output: Keras recovers a softmax's logits from it.
        total = sum(self._cross_entropy(y, y_pred[name]) for name in self.towers)
        if self.losses:  # the towers' regularizers, summed as Keras sums them
            total = total + super().compute_loss(x, y, y_pred, training=training)
        return total

    def compute_metrics(self, x: Any, y: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        self.group_metrics.update_state(y, y_pred, sample_weight)
        return self.get_metrics_result()


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

    def __init__(
        self, arms: Sequence[keras.Model], input_shape: tuple[int, ...], dtype: str = "float32"
    ):
        self.arms = list(arms)
        self.model = build_group(arms, input_shape, dtype)
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
            stream=probes[template].stream,
            stream_outputs=side_by_side(5),
            stream_gradients=side_by_side(6),
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
    kernels' gradients and the kernels, per tapped layer, the loss, and the residual
    stream and its gradient at each block (empty without `probe.stream`)."""
    variables = list(arm.variables)

    def compute(values):
        with keras.StatelessScope(state_mapping=list(zip(variables, values, strict=True))):
            signals = probe.compute()
            kernels = [keras.ops.convert_to_tensor(kernel) for kernel in signals.kernels]
        return (
            signals.outputs, signals.output_gradients, signals.kernel_gradients, kernels,
            signals.loss, signals.stream_outputs, signals.stream_gradients,
        )

    return tf.function(compute, autograph=False, experimental_attributes={"_noinline": True})


def compile_group(
    group: keras.Model, optimizer: keras.optimizers.Optimizer, steps_per_execution: int
) -> None:
    """Compiles the `GroupModel` `group`: its loss and metrics are its own."""
    check_independent(optimizer, len(group.towers))
    group.compile(
        optimizer=optimizer,
        steps_per_execution=steps_per_execution,
        # The engine may turn XLA on for the train step alone, once the test function is
        # made (`training.train_group`).
        jit_compile=False,
    )
    check_independent(group.optimizer, len(group.towers))  # compile may wrap it (mixed_float16)


def check_independent(optimizer: keras.optimizers.Optimizer, towers: int = 2) -> None:
    """Refuses an optimizer whose update of one of `towers` towers would depend on the others
    (`experiments.engine.optimizers` gives each arm its own instead)."""
    if towers > 1 and getattr(optimizer, "global_clipnorm", None):
        raise ExperimentError(
            f"global_clipnorm={optimizer.global_clipnorm} clips all towers' gradients by "
            "one norm, so arms trained together would not train as they do alone; give "
            "each arm its own optimizer (experiments.engine.optimizers.group_optimizer)."
        )
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        raise ExperimentError(
            "A mixed_float16 loss scale is shared by all towers (one overflow skips every "
            "arm's step); use float32 or mixed_bfloat16, or train arms one at a time "
            "(--nogroup_arms)."
        )


def split_logs(logs: dict[str, Any], names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each tower's entries of Keras's logs, as a single-output model names them
    (`arm0_accuracy` -> `accuracy`, `val_arm0_accuracy` -> `val_accuracy`), its loss
    being its `CROSS_ENTROPY` metric. A group of one tower is logged unprefixed, as a
    single-output model (`GroupMetrics` names it so)."""
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
