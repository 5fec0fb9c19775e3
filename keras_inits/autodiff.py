"""Gradients through each backend's own autodiff: TensorFlow's tape, JAX's grad, torch.autograd.

`gradients(fn, specs, variables)` evaluates `fn(perturbations) -> (loss, aux)`
and returns the gradient of `loss` with respect to `perturbations` (zero
tensors of the given (shape, dtype) specs, which `fn` adds to
intermediate outputs, so their gradients are dLoss/d(those outputs)) and with
respect to `variables` (None for a non-trainable one under torch).

For `keras_inits.spectrum`, input-output Jacobians of a per-example function:
`batch_jacobian(fn, x, variables)` (every example's, in one vectorized pass) and
`linearize(fn, x, variables)` (Jacobian-vector and vector-Jacobian products, matrix-free).

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


# ---------------------------------------------------------------- input-output Jacobians
# `fn` maps a batch of flattened inputs x, shape (batch, n_in), to flattened outputs,
# shape (batch, n_out), each example's output depending on that example's input alone
# (a model in inference mode), so that one pass over the batch gives every example's product.

Linear = Callable[[Any], Any]


def batch_jacobian(fn: Callable[[Any], Any], x: Any, variables: Sequence[keras.Variable]) -> Any:
    """Every example's Jacobian d fn(x)_i / d x_i, shape (batch, n_out, n_in), in one
    vectorized reverse-mode pass (one cotangent per output unit) of the active backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tensorflow_jacobian(fn, x)
    if backend == "jax":
        return _jax_jacobian(fn, x, variables)
    if backend == "torch":
        return _torch_jacobian(fn, x)
    raise NotImplementedError(
        f"Jacobians are implemented for the tensorflow, jax and torch backends, not {backend!r}."
    )


def linearize(
    fn: Callable[[Any], Any], x: Any, variables: Sequence[keras.Variable]
) -> tuple[Any, Linear, Linear]:
    """(fn(x), jvp, vjp): jvp(t) = J t (t shaped like x) and vjp(c) = J^T c (c shaped like
    fn(x)), per example, as often as wanted after one forward pass.

    TensorFlow and PyTorch have no reusable forward mode, so J t is the derivative of the
    linear map c -> J^T c with respect to c, in direction t (the double-backward trick):
    both products then reuse the recorded forward pass.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tensorflow_linearize(fn, x)
    if backend == "jax":
        return _jax_linearize(fn, x, variables)
    if backend == "torch":
        return _torch_linearize(fn, x)
    raise NotImplementedError(
        f"Jacobians are implemented for the tensorflow, jax and torch backends, not {backend!r}."
    )


def _tensorflow_jacobian(fn, x):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
    # batch_jacobian vectorizes through a tf.function of its own, new at every call, and from
    # the sixth on TensorFlow warns of "excessive retracing": expected here, so kept quiet.
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        return tape.batch_jacobian(y, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    finally:
        logger.setLevel(level)


def _tensorflow_linearize(fn, x):
    import tensorflow as tf

    zero = tf.UnconnectedGradients.ZERO
    with tf.GradientTape(persistent=True) as inner:
        inner.watch(x)
        y = fn(x)
    u = tf.zeros_like(y)
    with tf.GradientTape(persistent=True) as outer:
        outer.watch(u)
        pulled = inner.gradient(y, x, output_gradients=u, unconnected_gradients=zero)

    def jvp(t):
        return outer.gradient(pulled, u, output_gradients=t, unconnected_gradients=zero)

    def vjp(c):
        return inner.gradient(y, x, output_gradients=c, unconnected_gradients=zero)

    return y, jvp, vjp


def _stateless(fn, variables):
    """`fn` reading the variables' current values as constants: a pure function for JAX."""
    mapping = [(variable, variable.value) for variable in variables]

    def pure(x):
        with keras.StatelessScope(state_mapping=mapping):
            return fn(x)

    return pure


def _jax_jacobian(fn, x, variables):
    import jax
    import jax.numpy as jnp

    pure = _stateless(fn, variables)
    # Summing over the batch keeps examples apart (each output row depends on its own
    # input row), and leaves one cotangent per output unit instead of per (example, unit).
    jacobian = jax.jacrev(lambda inputs: jnp.sum(pure(inputs), axis=0))(x)
    return jnp.transpose(jacobian, (1, 0, 2))


def _jax_linearize(fn, x, variables):
    import jax

    y, jvp = jax.linearize(_stateless(fn, variables), x)
    transpose = jax.linear_transpose(jvp, x)
    return y, jvp, lambda c: transpose(c)[0]


def _torch_jacobian(fn, x):
    import torch

    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        y = fn(x)
        n_out = y.shape[1]
        if not y.requires_grad:  # the output does not depend on x: J = 0
            return torch.zeros((x.shape[0], n_out, x.shape[1]), dtype=y.dtype, device=y.device)
        eye = torch.eye(n_out, dtype=y.dtype, device=y.device)
        cotangents = eye[:, None, :].expand(n_out, *y.shape)
        (jacobian,) = torch.autograd.grad(
            y, x, cotangents, is_grads_batched=True, allow_unused=True
        )
    if jacobian is None:
        return torch.zeros((x.shape[0], n_out, x.shape[1]), dtype=y.dtype, device=y.device)
    return jacobian.transpose(0, 1)


def _torch_linearize(fn, x):
    import torch

    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        y = fn(x)
        if not y.requires_grad:  # the output does not depend on x: J = 0
            return y, lambda t: torch.zeros_like(y), lambda c: torch.zeros_like(x)
        u = torch.zeros_like(y, requires_grad=True)
        (pulled,) = torch.autograd.grad(y, x, u, create_graph=True, allow_unused=True)

    def jvp(t):
        if pulled is None or not pulled.requires_grad:
            return torch.zeros_like(y)
        with torch.enable_grad():
            (pushed,) = torch.autograd.grad(pulled, u, t, retain_graph=True, allow_unused=True)
        return torch.zeros_like(y) if pushed is None else pushed

    def vjp(c):
        with torch.enable_grad():
            (back,) = torch.autograd.grad(y, x, c, retain_graph=True, allow_unused=True)
        return torch.zeros_like(x) if back is None else back

    return y.detach(), jvp, vjp
