"""Taps: seeing and changing what each layer with a kernel outputs, in any model.

Keras 3 has no forward hooks, but `Layer.__call__` looks up `self.call` at
call time, so an instance attribute `call` takes its place. `intercept` puts a
wrapper there for the duration of a `with` block and always takes it away
again. This works the same for Sequential, Functional and subclassed models,
nested models and shared layers, eagerly and inside `tf.function`/`jax.jit`
(the wrapper runs at trace time), on every backend.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras
import numpy as np

from keras_inits.kernels import Kernel, find_kernels

Hook = Callable[["Tap", Callable[..., Any], tuple, dict], Any]
Spec = tuple[tuple[int, ...], str]


@dataclasses.dataclass(frozen=True)
class Tap:
    """A layer whose output is tapped: the owner of a kernel.

    Attributes:
        layer: the layer that is called (an RNN layer for its cell's kernels).
        kernel: its primary kernel (the one that scales its output linearly).
        activation: the name of the layer's own activation, or None.
    """

    layer: keras.layers.Layer
    kernel: Kernel

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def path(self) -> str:
        return self.kernel.path.rsplit("/", 1)[0]

    @property
    def activation(self) -> str | None:
        function = getattr(self.layer, "activation", None)
        if function is None:
            return None
        name = keras.activations.serialize(function)
        return name if isinstance(name, str) else None


def find_taps(model: keras.layers.Layer) -> list[Tap]:
    """One tap per layer with a primary kernel, in the order of `model.weights`."""
    taps, seen = [], set()
    for kernel in find_kernels(model):
        if kernel.primary and id(kernel.owner) not in seen:
            seen.add(id(kernel.owner))
            taps.append(Tap(kernel.owner, kernel))
    return taps


def main_output(outputs: Any) -> Any:
    """The tensor a layer's stats are about: the output itself, or the first of several
    (an RNN with `return_state`)."""
    return outputs if not isinstance(outputs, (list, tuple)) else outputs[0]


def replace_main_output(outputs: Any, value: Any) -> Any:
    if not isinstance(outputs, (list, tuple)):
        return value
    return type(outputs)([value, *outputs[1:]])


@contextlib.contextmanager
def intercept(taps: Sequence[Tap], hook: Hook) -> Iterator[None]:
    """Within the block, every call of a tapped layer runs `hook(tap, call, args, kwargs)`
    instead of `layer.call(*args, **kwargs)`; `call` is the layer's own method."""
    patched = []
    try:
        for tap in taps:
            layer = tap.layer
            if "call" in vars(layer):
                raise RuntimeError(
                    f"Layer {layer.name!r} is already being tapped (nested keras_inits "
                    "diagnostics on the same model are not supported)."
                )
            original = layer.call

            def call(*args, _tap=tap, _original=original, **kwargs):
                return hook(_tap, _original, args, kwargs)

            vars(layer)["call"] = call
            patched.append(layer)
        yield
    finally:
        for layer in patched:
            vars(layer).pop("call", None)


def check_batch(model: keras.layers.Layer, x: Any) -> Any:
    """Refuses what is not one batch of arrays (a dataset, a generator, None)."""
    if x is None:
        raise ValueError("x is None: pass one batch of inputs, e.g. x_train[:256].")
    if hasattr(x, "element_spec") or hasattr(x, "__next__") or isinstance(
        x, keras.utils.PyDataset
    ):
        raise TypeError(
            f"x must be one batch of arrays (a NumPy array or tensor, or a list/dict of them "
            f"for a multi-input model), got {type(x).__name__}. Take a batch first, e.g. "
            "`x, y = next(iter(dataset))`."
        )
    return x


def call_model(model: keras.layers.Layer, x: Any, failures: Sequence[Exception] = ()) -> Any:
    """`model(x, training=False)`, with a clear error when `x` does not fit the model.

    A hook that must stop the pass appends its error to `failures` and raises:
    that error is re-raised as it is, not rewritten by Keras's call wrappers.
    """
    try:
        return model(x, training=False)
    except Exception as error:  # Keras and backends raise many types for a bad input.
        if failures:
            raise failures[0] from None
        raise ValueError(
            f"x does not fit model {model.name!r}: {_describe_input(model)}, got "
            f"{_describe_batch(x)}. Keras said: {_first_line(error)}"
        ) from error


def forward_order(model: keras.layers.Layer, x: Any) -> tuple[list[Tap], list[Spec], Any]:
    """The taps in the order the model calls them on `x`, the (shape, dtype) of each
    tap's output, and the model's output.

    A tap whose layer is not called on `x` (an unused branch) is left out; a
    shared layer counts at its first call.
    """
    taps = find_taps(model)
    if not taps:
        raise ValueError(
            f"Model {model.name!r} has no layer with a kernel (Dense, Conv, EinsumDense, "
            "Embedding, RNN...): there is nothing to measure."
        )
    order: list[Tap] = []
    specs: list[Spec] = []

    def record(tap, call, args, kwargs):
        outputs = call(*args, **kwargs)
        if all(seen is not tap for seen in order):
            order.append(tap)
            main = main_output(outputs)
            specs.append((tuple(main.shape), keras.backend.standardize_dtype(main.dtype)))
        return outputs

    with intercept(taps, record):
        outputs = call_model(model, check_batch(model, x))
    return order, specs, outputs


def _describe_input(model: keras.layers.Layer) -> str:
    try:
        return f"it expects inputs of shape {model.input_shape}"
    except (AttributeError, ValueError):
        return "see its build/call signature"


def _describe_batch(x: Any) -> str:
    shapes = keras.tree.map_structure(lambda a: tuple(np.shape(a)), x)
    return f"x of shape {shapes}"


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
