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
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras
import numpy as np
from keras.src.models.functional import Functional  # Keras exports no Functional type

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


def check_batch(x: Any) -> Any:
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


def as_declared(model: keras.layers.Layer, x: Any) -> Any:
    """`x` in the structure of the inputs a Functional (or Sequential) model declares.

    Keras takes an array for a model built with `inputs=[inp]`, `[x]` for one built
    with `inputs=inp`, or a list for one built with a dict of inputs, but warns on
    every call ("The structure of `inputs` doesn't match the expected structure").
    The arrays are the same, in the same order (Keras pairs them by position), so
    they are packed into the declared structure before the model is called. Left
    as they are: a dict (Keras pairs it with the inputs by name), a different
    number of arrays (`call_model` says what is wrong), a subclassed model (it
    declares no inputs), and a list for a dict of inputs whose keys are not in
    sorted order (the pairing is ambiguous: Keras 3.8 and later refuse it).
    """
    declared = _declared_inputs(model)
    if declared is None or isinstance(x, dict):
        return x
    if isinstance(declared, dict) and list(declared) != sorted(declared):
        return x
    arrays = keras.tree.flatten(x)
    if len(arrays) != len(keras.tree.flatten(declared)):
        return x
    return keras.tree.pack_sequence_as(declared, arrays)


def _declared_inputs(model: keras.layers.Layer) -> Any:
    """The symbolic inputs of a Functional model in the structure given to `keras.Model`
    (also for a built Sequential, which calls a Functional inside), or None."""
    functional = getattr(model, "_functional", None)
    if functional is None:
        functional = model
    if not isinstance(functional, Functional):
        return None
    return functional.input


def call_model(model: keras.layers.Layer, x: Any, failures: Sequence[Exception] = ()) -> Any:
    """`model(x, training=False)`, with a clear error when `x` does not fit the model.

    `x` is first put in the structure the model declares (`as_declared`). A hook
    that must stop the pass appends its error to `failures` and raises: that
    error is re-raised as it is, not rewritten by Keras's call wrappers.
    """
    x = as_declared(model, x)
    mismatch = _input_mismatch(model, x)
    if mismatch:
        raise ValueError(
            f"x does not fit model {model.name!r}: {mismatch} Pass one batch shaped like the "
            "model's inputs."
        )
    try:
        return model(x, training=False)
    except Exception as error:  # Keras and backends raise many types for a bad input.
        if failures:
            raise failures[0] from None
        raise ValueError(
            f"Model {model.name!r} failed on x ({_describe_batch(x)}): {_first_line(error)}"
        ) from error


def _input_mismatch(model: keras.layers.Layer, x: Any) -> str | None:
    """How `x` differs from the inputs a Functional or Sequential model declares, or None
    (also when the model declares none: a subclassed model)."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    if not inputs:
        return None
    arrays = keras.tree.flatten(x)
    if len(arrays) != len(inputs):
        return f"it takes {len(inputs)} input(s), got {len(arrays)} array(s)."
    for spec, array in zip(inputs, arrays, strict=True):
        want, have = tuple(spec.shape), tuple(np.shape(array))
        if len(want) != len(have) or any(
            w is not None and w != h for w, h in zip(want[1:], have[1:], strict=True)
        ):
            return f"it expects inputs of shape {want}, got x of shape {have}."
    return None


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
        outputs = call_model(model, check_batch(x))
    if not order:
        raise ValueError(
            f"Model {model.name!r} called none of its layers with a kernel on x, so there is "
            "nothing to measure (do its layers with kernels sit in an unused branch?)."
        )
    return order, specs, outputs


def _describe_batch(x: Any) -> str:
    shapes = keras.tree.map_structure(lambda a: tuple(np.shape(a)), x)
    return f"x of shape {shapes}"


def _first_line(error: BaseException) -> str:
    """The line of an error message that says what is wrong (Keras wraps layer errors in
    "Exception encountered when calling ..." and "Arguments received ..." lines)."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(error).splitlines()]
    useful = [
        line for line in lines
        if line and not line.startswith(("Exception encountered", "Arguments received", "•"))
    ]
    return useful[0] if useful else type(error).__name__
