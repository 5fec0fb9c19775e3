"""`lsuv`: Layer-Sequential Unit-Variance initialization (Mishkin & Matas, 2016).

Orthonormal pre-initialization of every kernel, then, layer by layer in forward
order, the kernel is divided by the std of the layer's pre-activation output on
a batch until that output's variance is within 1 +- tol.

Cost: one forward pass in which each layer with a kernel, when the model
reaches it, is fitted on the very input it received (upstream layers are
already fitted, so that input is final) and then passes its fitted output on.
Each iteration re-runs only that layer, so the whole procedure costs about one
forward pass plus (layers x iterations) single-layer calls, never a forward
pass per layer.

Reference:
    Mishkin & Matas, 2016, "All you need is a good init", ICLR,
    https://arxiv.org/abs/1511.06422
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import keras
from keras.src.backend import AutocastScope  # Keras exports no way to leave a layer's scope

from keras_inits import tables
from keras_inits.base import check_number, check_seed
from keras_inits.kernels import find_kernels
from keras_inits.reinit import reinitialize
from keras_inits.taps import Tap, call_model, check_batch, find_taps, intercept, main_output

# Layers whose output is not a linear function of one kernel are left at the
# orthonormal pre-initialization, as in the paper (convolutional and dense only).
_SKIPPED = {"embedding": "a lookup, not a linear map of its input"}


class LSUVError(ValueError):
    """A layer LSUV cannot scale (its output variance is 0 or not finite on the batch)."""


@dataclasses.dataclass
class LSUVReport:
    """Per layer with a kernel, in forward order: `name` (its path in the model),
    `status` ("fitted", "not converged", or "skipped: why"), `iterations` (rescalings), `variance`
    (of the pre-activation output after fitting), `scale` (the total factor applied)."""

    rows: list[dict[str, Any]]
    tol: float

    def to_dict(self) -> dict[str, Any]:
        return {"layers": [dict(row) for row in self.rows], "tol": self.tol}

    def table(self) -> str:
        columns = [
            ("name", "layer"),
            ("status", "status"),
            ("iterations", "iterations"),
            ("variance", "variance"),
            ("scale", "scale"),
        ]
        return tables.render(self.rows, columns)

    def __str__(self) -> str:
        return self.table()

    @property
    def converged(self) -> bool:
        """Whether every fitted layer ended within 1 +- tol."""
        return all(row["status"] != "not converged" for row in self.rows)


@contextlib.contextmanager
def _without_activation(layer: keras.layers.Layer) -> Iterator[None]:
    """The layer's pre-activation output: its fused activation set to linear meanwhile.

    Written to the instance's own attributes, past Keras's tracker (which refuses new
    state on a built layer) and torch's module registry (where a layer-valued
    activation such as PReLU lives), so the original comes back exactly.
    """
    activation = getattr(layer, "activation", None)
    if activation is None or activation is keras.activations.linear:
        yield
        return
    state = vars(layer)
    had_own, own = "activation" in state, state.get("activation")
    state["activation"] = keras.activations.linear
    try:
        yield
    finally:
        if had_own:
            state["activation"] = own
        else:
            del state["activation"]


def _variance(values: Any) -> float:
    return float(keras.ops.convert_to_numpy(keras.ops.var(keras.ops.cast(values, "float32"))))


def _skip_reason(tap: Tap) -> str | None:
    if isinstance(tap.layer, keras.layers.RNN):
        return "recurrent: its output is not linear in the kernel"
    return _SKIPPED.get(tap.kernel.plan.layout)


def _fit(tap: Tap, call, args, kwargs, tol: float, max_iters: int) -> dict[str, Any]:
    kernel = tap.kernel.variable
    scale = 1.0
    with _without_activation(tap.layer), _without_activation(tap.kernel.layer):
        for iteration in range(max_iters + 1):
            output = main_output(call(*args, **kwargs))
            if 0 in tuple(output.shape):  # some backends return an empty map, others raise
                raise LSUVError(
                    f"LSUV: layer {tap.path!r} outputs nothing on x (shape "
                    f"{tuple(output.shape)}): x is too small for the model, e.g. smaller than "
                    "a convolution's window."
                )
            variance = _variance(output)
            if not math.isfinite(variance):
                raise LSUVError(
                    f"LSUV: the pre-activation output of layer {tap.path!r} is not finite on x "
                    "(NaN or inf); check x for NaN and the layers upstream."
                )
            if variance == 0:
                raise LSUVError(
                    f"LSUV cannot scale layer {tap.path!r}: its pre-activation output on x has "
                    f"variance 0, so no rescaling of its kernel gives variance 1. "
                    f"{_why_no_signal(args)}"
                )
            if abs(variance - 1.0) < tol or iteration == max_iters:
                break
            factor = 1.0 / math.sqrt(variance)
            # Outside the layer's autocast scope, or torch assigns to a float16 copy.
            with AutocastScope(None):
                kernel.assign(kernel.value * factor)
            scale *= factor
    status = "fitted" if abs(variance - 1.0) < tol else "not converged"
    return {"name": tap.path, "status": status, "iterations": iteration, "variance": variance,
            "scale": scale}


def _why_no_signal(args: tuple) -> str:
    inputs = keras.tree.flatten(args[0]) if args else []
    if inputs and all(_variance(value) == 0 for value in inputs):
        return (
            "Its input is constant on x: the layers before it pass no signal (e.g. all-dead "
            "ReLUs upstream, or a constant x). Use another batch, or fix the upstream layers."
        )
    return "Its input varies, so its kernel maps it to a constant (a zero kernel?)."


def lsuv(
    model: keras.layers.Layer,
    x: Any,
    *,
    tol: float = 0.1,
    max_iters: int = 10,
    seed: int | None = None,
) -> LSUVReport:
    """Layer-Sequential Unit-Variance initialization of a built model on the batch `x`.

    1. Every kernel but the embeddings' is re-drawn orthonormal
       (`reinitialize(model, "orthogonal")`: per group, gate or depthwise channel,
       with the layer-type rules), biases zeroed.
    2. In forward order, each Dense, Conv*, depthwise, separable (pointwise kernel)
       and EinsumDense layer's kernel is divided by the std of its pre-activation
       output on `x` until the variance is within `1 +- tol`, at most `max_iters`
       times. Embedding and recurrent layers keep the orthonormal pre-init.

    The model runs in inference mode (dropout off, batch norm on its moving
    statistics, which are not updated). Sequential, Functional (residual,
    branched, nested) and subclassed models all work: a layer is fitted when the
    model first calls it.

    Examples:
        >>> model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3))
        >>> print(keras_inits.lsuv(model, x_train[:256], seed=0))

    Args:
        model: a built Keras model.
        x: one batch of inputs (Mishkin & Matas use one mini-batch).
        tol: accepted distance of the output variance from 1, in (0, 1).
        max_iters: rescalings per layer at most, >= 1.
        seed: seed of the orthonormal pre-initialization (see `reinitialize`).

    Returns:
        An `LSUVReport`, one row per layer with a kernel.

    Raises:
        ValueError: no layer with a kernel; `x` does not fit the model; a layer
            whose output variance is 0 or not finite (the message says which
            and why); bad `tol` or `max_iters`. The model's weights are then
            restored to what they were.
    """
    check_number("tol", tol)
    if not 0 < tol < 1:
        raise ValueError(f"tol must be in (0, 1), got tol={tol!r}.")
    if isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 1:
        raise ValueError(f"max_iters must be an int >= 1, got max_iters={max_iters!r}.")
    check_seed(seed)
    taps = find_taps(model)
    if not taps:
        raise ValueError(
            f"Model {model.name!r} has no layer with a kernel (Dense, Conv, EinsumDense...): "
            "LSUV has nothing to initialize."
        )
    check_batch(x)
    saved = [keras.ops.convert_to_numpy(variable) for variable in model.weights]
    try:
        return _lsuv(model, taps, x, tol, max_iters, seed)
    except Exception:
        # A failed LSUV leaves the model as it found it.
        for variable, value in zip(model.weights, saved, strict=True):
            variable.assign(value)
        raise


def _lsuv(model, taps: list[Tap], x: Any, tol: float, max_iters: int, seed: int | None):
    # Embeddings keep their initialization: LSUV does not fit them, and an orthonormal
    # (vocab, dim) matrix has rows of norm about sqrt(dim / vocab), far too small.
    drawn = [tap.kernel.layer for tap in taps if tap.kernel.plan.layout != "embedding"]
    others = {id(k.layer) for k in find_kernels(model)} - {id(t.kernel.layer) for t in taps}
    layers = drawn + [k.layer for k in find_kernels(model) if id(k.layer) in others]
    if layers:
        reinitialize(model, "orthogonal", seed=seed, include=layers)

    rows: dict[int, dict[str, Any]] = {}
    order: list[int] = []
    failures: list[Exception] = []

    def fit_on_first_call(tap, call, args, kwargs):
        if id(tap) not in rows:
            order.append(id(tap))
            reason = _skip_reason(tap)
            try:
                rows[id(tap)] = (
                    _fit(tap, call, args, kwargs, tol, max_iters)
                    if reason is None
                    else {"name": tap.path, "status": f"skipped: {reason}", "iterations": 0,
                          "variance": None, "scale": None}
                )
            except LSUVError as error:
                failures.append(error)
                raise
        return call(*args, **kwargs)

    with intercept(taps, fit_on_first_call):
        call_model(model, x, failures)
    unused = [
        {"name": tap.path, "status": "skipped: not called on x", "iterations": 0,
         "variance": None, "scale": None}
        for tap in taps if id(tap) not in rows
    ]
    return LSUVReport([rows[key] for key in order] + unused, tol)
