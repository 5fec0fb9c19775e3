"""MLP arms trained as one stack: layer i of every arm in one tensor.

Towers (`experiments.engine.towers`) put the arms side by side as separate models, so
a step runs one thin matrix product per arm and layer. When the arms are MLPs of
one shape (Flatten, then Dense layers), the group is instead one model whose
layer i holds every arm's layer i (kernel `(arms, in, out)`): one batched matrix
product per layer, compiled with XLA. Slice `a` of a layer reads only slice `a`
of the layer below and the loss is the sum of the arms' losses, so each slice's
gradient is its arm's own, as with towers (`tests/experiments/test_towers.py`
checks the trained weights against lone runs). On the lesson's group this step
costs 0.74 ms per arm against the towers' 0.94 (2-core CPU).

The snapshots read the stack (`signals`: one pass for every arm). The arms' own
models keep the rest: their initial weights are copied into the stack, and `sync`
copies the trained slices back at the end (the saved models). A diverged arm is
synced once when it is found and never again, so its model keeps the weights it
had then, as a frozen tower does, and its final profile is taken from it; its slice
goes on in the stack, where it touches no other slice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import keras
import numpy as np

from experiments.engine import towers
from keras_inits.autodiff import gradients
from keras_inits.signals import SignalProbe, Signals

# Dense options that a stacked layer does not reproduce; an arm using one trains as a tower.
_DENSE_EXTRAS = (
    "kernel_regularizer", "bias_regularizer", "activity_regularizer",
    "kernel_constraint", "bias_constraint",
)
# Optimizers whose update of a weight depends on that weight's gradient and state alone, so
# that arms sharing a variable take the steps they take alone. Adafactor (factored second
# moments, RMS clipping), Lamb (a trust ratio) and Muon (orthogonalized updates) work on the
# whole variable: their arms train as towers.
ELEMENTWISE_OPTIMIZERS = (
    keras.optimizers.SGD, keras.optimizers.Adam, keras.optimizers.AdamW,
    keras.optimizers.Nadam, keras.optimizers.Adamax, keras.optimizers.RMSprop,
    keras.optimizers.Adagrad, keras.optimizers.Adadelta, keras.optimizers.Lion,
    keras.optimizers.Ftrl,
)


class StackedDense(keras.layers.Layer):
    """`arms` Dense layers of one shape, side by side.

    Input: `(batch, in)`, shared by every arm (`shared_input`, the first layer), or
    `(arms, batch, in)`, one slice per arm. Output: `(arms, batch, units)`.
    """

    def __init__(
        self,
        arms: int,
        units: int,
        activation: str | Callable[[Any], Any],
        shared_input: bool,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.arms, self.units, self.shared_input = arms, units, shared_input
        self.activation = keras.activations.get(activation)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        fan_in = input_shape[-1]
        # A shared input's kernel is (in, arms, units): as (in, arms * units) it makes one
        # matrix product for all arms, and that reshape is free.
        shape = (fan_in, self.arms, self.units) if self.shared_input else (
            self.arms, fan_in, self.units
        )
        self.kernel = self.add_weight(name="kernel", shape=shape, initializer="zeros")
        self.bias = self.add_weight(
            name="bias", shape=(self.arms, 1, self.units), initializer="zeros"
        )

    def call(self, inputs: Any) -> Any:
        ops = keras.ops
        if self.shared_input:
            flat = ops.matmul(inputs, ops.reshape(self.kernel, (self.kernel.shape[0], -1)))
            outputs = ops.transpose(ops.reshape(flat, (-1, self.arms, self.units)), (1, 0, 2))
        else:
            outputs = ops.matmul(inputs, self.kernel)
        return self.activation(outputs + self.bias)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "arms": self.arms,
            "units": self.units,
            "activation": keras.activations.serialize(self.activation),
            "shared_input": self.shared_input,
        }

    def load(self, kernels: Sequence[np.ndarray], biases: Sequence[np.ndarray]) -> None:
        """Sets every arm's slice from its Dense layer's kernel and bias, in arm order."""
        self.kernel.assign(np.stack(kernels, axis=1 if self.shared_input else 0))
        self.bias.assign(np.stack(biases)[:, None, :])

    def arm_weights(self, kernels: np.ndarray, biases: np.ndarray, arm: int) -> tuple:
        """Arm `arm`'s (kernel, bias), given this layer's weights as NumPy arrays."""
        return self.arm_slice(kernels, arm), biases[arm, 0]

    def arm_slice(self, kernel: Any, arm: int) -> Any:
        """Arm `arm`'s slice of a kernel-shaped array or tensor (the kernel, its gradient)."""
        return kernel[:, arm] if self.shared_input else kernel[arm]

    def arms_first(self, kernel: Any) -> Any:
        """A kernel-shaped tensor with the arms' axis first: `(arms, in, units)`."""
        return keras.ops.moveaxis(kernel, 1, 0) if self.shared_input else kernel


class _ArmOutput(keras.layers.Layer):
    """Arm `index`'s slice of the stack's last layer, through the arms' output activation.

    The activation is applied here, per arm, so that the output is the same tensor a
    lone model gives its loss: Keras turns a softmax output back into its logits for a
    numerically stable cross-entropy, which a slice of a softmax would not get (its
    probabilities are clipped instead, and saturated ones get no gradient).
    """

    def __init__(self, index: int, activation: str | Callable[[Any], Any], **kwargs: Any):
        kwargs.setdefault("name", towers.tower_name(index))
        super().__init__(**kwargs)
        self.index = index
        self.activation = keras.activations.get(activation)

    def call(self, inputs: Any) -> Any:
        return self.activation(inputs[self.index])

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "index": self.index,
            "activation": keras.activations.serialize(self.activation),
        }


def _mlp_parts(arm: keras.Model) -> tuple[keras.layers.Layer | None, list[keras.layers.Layer]]:
    """An arm's leading Flatten (None without one) and the layers after it. A functional
    model lists its Input layer, a Sequential one does not: it is left out either way."""
    layers = [layer for layer in arm.layers if not isinstance(layer, keras.layers.InputLayer)]
    if layers and type(layers[0]) is keras.layers.Flatten:
        return layers[0], layers[1:]
    return None, layers


def can_stack(arms: Sequence[keras.Model], optimizer: keras.optimizers.Optimizer) -> bool:
    """Whether a stack trains the arms exactly as towers would.

    The arms must be two or more MLPs of one shape: one input and one output, a Flatten
    unless the input is a vector, then plain Dense layers (biases on; no regularizer,
    constraint or LoRA; the same units, activations and dtype policies). The optimizer
    must update every weight from its own gradient and state (`ELEMENTWISE_OPTIMIZERS`),
    without `clipnorm`, whose norm would span every arm's slice of a variable.
    """
    if len(arms) < 2:
        return False
    if type(optimizer) not in ELEMENTWISE_OPTIMIZERS or optimizer.clipnorm is not None:
        return False
    shapes = []
    for arm in arms:
        if len(arm.inputs) != 1 or len(arm.outputs) != 1:
            return False
        flatten, dense = _mlp_parts(arm)
        if (
            (flatten is None and len(arm.inputs[0].shape) != 2)
            or not dense
            or any(type(layer) is not keras.layers.Dense for layer in dense)
        ):
            return False
        if any(
            not layer.use_bias
            or getattr(layer, "lora_enabled", False)
            or any(getattr(layer, extra, None) is not None for extra in _DENSE_EXTRAS)
            for layer in dense
        ):
            return False
        shapes.append(
            [flatten is not None]
            + [(layer.units, layer.activation, layer.dtype_policy.name) for layer in dense]
        )
    return all(shape == shapes[0] for shape in shapes)


class StackedArms:
    """The group engine for MLP arms (see the module docstring; build it for arms that
    `can_stack` accepts); `towers.Towers` is the same interface for any architecture.

    Attributes:
        name: the engine's name in each run's summary entry (`engine`).
        model: the stack, with outputs `arm0`, `arm1`... as `towers.build_group`'s.
        jit_compile: whether to compile its train step with XLA.
        evaluation_batch: the smallest batch of its evaluations.
    """

    name = "stacked"
    jit_compile = True
    # An MLP's activations are small: the lesson's 6 arms evaluate 24,000 examples in 2.3 s
    # in batches of 1024, 5.4 s in batches of 256 (2-core CPU), as fast as a bare forward.
    evaluation_batch = 1024

    def __init__(self, arms: Sequence[keras.Model], input_shape: tuple[int, ...]):
        self.arms = list(arms)
        self.input_shape = input_shape
        self._layers: list[tuple[StackedDense, list[keras.layers.Dense]]] = []
        inputs = keras.Input(input_shape, name="inputs")
        x = inputs
        # Layer i of every arm, in order: `can_stack` checked that they form a chain.
        flatten, _ = _mlp_parts(arms[0])
        self._flatten = None
        if flatten is not None:
            self._flatten = keras.layers.Flatten(name=flatten.name)
            x = self._flatten(x)
        dense = [_mlp_parts(arm)[1] for arm in arms]
        for depth, layers in enumerate(zip(*dense, strict=True)):
            last = depth == len(dense[0]) - 1
            stacked = StackedDense(
                len(arms),
                layers[0].units,
                "linear" if last else layers[0].activation,  # the last one's: per arm
                shared_input=depth == 0,
                name=layers[0].name,
            )
            x = stacked(x)
            self._layers.append((stacked, list(layers)))
        output_activation = self._output_activation = dense[0][-1].activation
        outputs = {}
        for index, arm in enumerate(arms):
            arm.name = towers.tower_name(index)
            outputs[arm.name] = _ArmOutput(index, output_activation)(x)
        self.model = towers.GroupModel(inputs, outputs, name=f"stack_of_{len(arms)}")
        for stacked, layers in self._layers:
            stacked.load([layer.kernel.numpy() for layer in layers],
                         [layer.bias.numpy() for layer in layers])
        self._following = set(range(len(arms)))  # arms whose models sync

    def sync(self, names: Iterable[str]) -> None:
        """Copies the stack's current weights of the named arms into their own models
        (a frozen arm's model keeps the weights it had when it was frozen)."""
        wanted = set(names)
        indices = [
            index for index, arm in enumerate(self.arms)
            if arm.name in wanted and index in self._following
        ]
        if not indices:
            return
        for stacked, dense in self._layers:
            kernels, biases = stacked.kernel.numpy(), stacked.bias.numpy()
            for index in indices:
                kernel, bias = stacked.arm_weights(kernels, biases, index)
                dense[index].kernel.assign(kernel)
                dense[index].bias.assign(bias)

    def matches_arms(self) -> bool:
        """Whether the stack computes what each arm computes, on a small random batch.

        `can_stack` reads the arms' layers in order, which is their chain for any model
        made of Flatten and Dense layers, unless a layer is called twice (a shared layer
        appears once in `model.layers`): this check catches that, and anything else the
        layer list does not show.
        """
        x = np.random.default_rng(0).standard_normal((2, *self.input_shape)).astype("float32")
        outputs = self.model(x)
        return all(
            np.allclose(
                keras.ops.convert_to_numpy(outputs[arm.name]),
                keras.ops.convert_to_numpy(arm(x)),
                rtol=1e-4, atol=1e-6, equal_nan=True,
            )
            for arm in self.arms
        )

    def signals(self, probes: Sequence[SignalProbe]) -> Signals:
        """Every arm's signals on the probe batch from one pass of the stack, grouped
        (every tensor leading with the arms' axis), for `experiments.engine.snapshots`:
        `probes` are the arms' own (in arm order), which give the batch, the loss and the
        taps.

        Slice `a` of each layer's output, of its gradient and of its kernel's gradient is
        what arm `a`'s own probe computes: the loss is the sum of the arms' losses, and
        each arm's output layer is tapped after its activation, as in the arm's model.
        """
        ops = keras.ops
        probe = probes[0]
        layers = [stacked for stacked, _ in self._layers]
        count = len(self.arms)
        x = self._flatten(probe.x) if self._flatten is not None else probe.x
        batch = int(x.shape[0])
        specs = [((count, batch, layer.units), layer.compute_dtype) for layer in layers]

        def forward(perturbations):
            hidden, outputs = x, []
            for layer, perturbation in zip(layers[:-1], perturbations[:-1], strict=True):
                hidden = layer(hidden)
                outputs.append(hidden)
                hidden = hidden + perturbation
            logits = layers[-1](hidden)
            predictions = [self._output_activation(logits[arm]) for arm in range(count)]
            outputs.append(ops.stack(predictions))
            losses = [
                probe.loss_value(prediction + perturbations[-1][arm])
                for arm, prediction in enumerate(predictions)
            ]
            return sum(losses), (outputs, ops.stack(losses))

        kernels = [layer.kernel for layer in layers]
        _, (outputs, losses), d_outputs, d_kernels = gradients(forward, specs, kernels)
        return Signals(
            taps=probe.taps,
            loss=losses,
            outputs=outputs,
            output_gradients=d_outputs,
            kernel_gradients=[
                layer.arms_first(gradient)
                for layer, gradient in zip(layers, d_kernels, strict=True)
            ],
            kernel_values=[
                layer.arms_first(ops.convert_to_tensor(kernel))
                for layer, kernel in zip(layers, kernels, strict=True)
            ],
            grouped=True,
        )

    def trace_key(self) -> tuple:
        """What a compiled snapshot bakes in: nothing, the stack's variables never freeze."""
        return ()

    def freeze(self, name: str) -> None:
        """Fixes arm `name`'s model at the stack's weights now."""
        self.sync([name])
        self._following.discard(next(i for i, a in enumerate(self.arms) if a.name == name))
