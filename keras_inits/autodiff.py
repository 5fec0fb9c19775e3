"""Gradients through each backend's own autodiff: TensorFlow's tape, JAX's grad, torch.autograd.

`gradients(fn, specs, variables)` evaluates `fn(perturbations) -> (loss, aux)`
and returns the gradient of `loss` with respect to `perturbations` (zero
tensors of the given (shape, dtype) specs, which `fn` adds to
intermediate outputs, so their gradients are dLoss/d(those outputs)) and with
respect to `variables` (None for a non-trainable one under torch).

Keras has no backend-neutral gradient API, so this is the one place in the
plugin that imports a backend directly, and only the active one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras

Result = tuple[Any, Any, list[Any], list[Any]]
Spec = tuple[tuple[int, ...], str]  # (shape, dtype) of one perturbation
LossFn = Callable[[list[Any]], tuple[Any, Any]]


def gradients(
    fn: LossFn, specs: Sequence[Spec], variables: Sequence[keras.Variable]
) -> Result:
    """(loss, aux, d loss / d perturbations, d loss / d variables) on the active backend.

    Under TensorFlow this also works inside a `tf.function`. Under JAX it runs
    eagerly: variables are read through a `keras.StatelessScope`, so a caller
    that wants `jax.jit` must pass their values in as arguments.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tensorflow(fn, specs, variables)
    if backend == "jax":
        return _jax(fn, specs, variables)
    if backend == "torch":
        return _torch(fn, specs, variables)
    raise NotImplementedError(
        f"Gradients are implemented for the tensorflow, jax and torch backends, not {backend!r}."
    )


def _tensorflow(fn, specs, variables) -> Result:
    import tensorflow as tf

    perturbations = [tf.zeros(shape, dtype) for shape, dtype in specs]
    values = [variable.value for variable in variables]
    with tf.GradientTape() as tape:
        tape.watch(perturbations)
        tape.watch(values)
        loss, aux = fn(perturbations)
    grads = tape.gradient(loss, [*perturbations, *values])
    return loss, aux, grads[: len(specs)], grads[len(specs) :]


def _jax(fn, specs, variables) -> Result:
    import jax
    import jax.numpy as jnp

    def stateless(perturbations, values):
        with keras.StatelessScope(state_mapping=list(zip(variables, values, strict=True))):
            return fn(perturbations)

    perturbations = [jnp.zeros(shape, dtype) for shape, dtype in specs]
    (loss, aux), (d_perturbations, d_values) = jax.value_and_grad(
        stateless, argnums=(0, 1), has_aux=True
    )(perturbations, [v.value for v in variables])
    return loss, aux, list(d_perturbations), list(d_values)


def _torch(fn, specs, variables) -> Result:
    import torch

    values = [variable.value for variable in variables]
    device = values[0].device if values else None
    with torch.enable_grad():
        perturbations = [
            torch.zeros(shape, dtype=getattr(torch, dtype), device=device, requires_grad=True)
            for shape, dtype in specs
        ]
        loss, aux = fn(perturbations)
        wanted = [*perturbations, *(v for v in values if v.requires_grad)]
        found = iter(torch.autograd.grad(loss, wanted, allow_unused=True))
    d_perturbations = [next(found) for _ in perturbations]
    d_values = [next(found) if v.requires_grad else None for v in values]
    return loss, aux, d_perturbations, d_values
