"""The strings a user gives for models and data-dependent initializers, checked without
building anything.

`--model` takes a built-in architecture (`MODELS`), an importable
`package.module:function` or a `.keras` file; an initializer spec may be `lsuv(...)`,
which the harness runs itself after building the model. Settings (`experiments.config`)
validate these strings here, and the model builders (`experiments.models`) read them
here too, so settings never import the builders.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from experiments.errors import ExperimentError

MODELS = ("mlp", "cnn", "resmlp", "resnet", "transformer")  # built-in; also your own
# The built-in residual networks, which take --normalization.
RESIDUAL_MODELS = ("resmlp", "resnet")
# The built-in models of sequence tasks (token ids in, next-token probabilities out).
SEQUENCE_MODELS = ("transformer",)
# Where the built-in Transformer's LayerNorms sit (--layer_norm; experiments.transformer).
LAYER_NORMS = ("pre", "post")
LSUV = "lsuv"  # the data-dependent spec (see `lsuv_settings`)
SCHEME = "scheme:"  # an arm that applies a keras_inits scheme (see `scheme_settings`)
# Mean-field theory's schemes, which no initializer's name clashes with, also go bare:
# `critical(sigma_b2=0.05)`, `mean_field(sigma_w2=1.5, sigma_b2=0.05)`.
BARE_SCHEMES = ("critical", "mean_field")
# Model functions passed from Python (`experiments.run(model=fn)`) that no import reaches.
_REGISTERED_MODELS: dict[str, Callable[..., Any]] = {}


def is_builtin(spec: str) -> bool:
    """Whether `spec` names one of the harness's own architectures (`MODELS`)."""
    return spec in MODELS


def is_own_model(spec: str) -> bool:
    """Whether `spec` is your own model (`package.module:function` or a `.keras` file),
    not one of the built-in `MODELS`."""
    return not is_builtin(spec)


def lsuv_settings(spec: str) -> dict[str, Any] | None:
    """For `lsuv` or `lsuv(tol=..., max_iters=...)`: the keyword arguments of
    `keras_inits.lsuv`; None for any other spec (an initializer).

    LSUV is data-dependent, so it is a harness spec rather than an initializer: the
    run's model is built, then fitted with `keras_inits.lsuv` on the run's probe batch
    (its first `probe_size` training examples) with the run's seed.

    Raises:
        ExperimentError: an argument LSUV does not take.
    """
    if spec.startswith(SCHEME):
        return None
    import keras_inits  # Deferred: it imports Keras, which flag parsing does not need.

    name, kwargs = keras_inits.parse_spec(spec)
    if name != LSUV:
        return None
    unknown = sorted(set(kwargs) - {"tol", "max_iters"})
    if unknown:
        raise ExperimentError(
            f"Initializer spec {spec!r}: lsuv takes tol and max_iters, not {', '.join(unknown)}."
        )
    return kwargs


def scheme_settings(spec: str) -> tuple[str, dict[str, Any]] | None:
    """For `scheme:NAME` or `scheme:NAME(param=value, ...)` (or `critical(...)` and
    `mean_field(...)` without the prefix): the scheme's name and parameters, as
    `keras_inits.reinitialize(model, scheme=NAME, **params)` takes them; None for any
    other spec. The run's model is built (with the fallback initializer for the kernels
    the scheme keeps), then re-initialized by the scheme with the run's seed.

    Raises:
        ExperimentError: an unknown scheme, or a parameter it does not take.
    """
    prefixed = spec.startswith(SCHEME)
    if not prefixed and spec.split("(", 1)[0].strip() not in BARE_SCHEMES:
        return None
    import keras_inits  # Deferred: it imports Keras, which flag parsing does not need.

    try:
        name, kwargs = keras_inits.parse_spec(spec[len(SCHEME) :] if prefixed else spec)
        keras_inits.schemes.resolve(name, kwargs)
    except (TypeError, ValueError) as error:
        raise ExperimentError(f"{spec}: {error}") from None
    return name, kwargs


def check_model(spec: str) -> None:
    """The checks of `--model` that need no data: a built-in name, an importable
    `package.module:function`, or an existing `.keras` file.

    Raises:
        ExperimentError: one line saying what is wrong.
    """
    if is_builtin(spec):
        return
    if spec.endswith(".keras"):
        if not Path(spec).is_file():
            raise ExperimentError(f"--model={spec}: no such file.")
        return
    if ":" in spec:
        model_factory(spec)
        return
    raise ExperimentError(
        f"Unknown --model {spec!r}; choose {', '.join(MODELS)}, package.module:function (a "
        "function (input_shape, num_classes) -> keras.Model) or a path to a .keras file."
    )


def register_model(function: Callable[..., Any]) -> str:
    """The `--model` spec of a model function passed from Python.

    A function an import reaches by its name (defined at a module's top level) is
    named `module:function` and imported by that name like any spec, here and on Ray's
    workers. Any other callable (defined in a notebook or a script's `__main__`, nested,
    a lambda, a `functools.partial`, a method, a callable object) is kept in this
    process under `module:name@digest`, the digest covering its code, defaults, the
    values it closes over, a partial's arguments and an object's attributes: the same
    function (a notebook cell run again) gets the same spec and resumes, a changed one
    (an edited cell, another partial) gets another and trains.
    """
    module, name = _origin(function)
    spec = f"{module}:{name}"
    if module != "__main__" and "<" not in name and _imported(module, name) is function:
        return spec
    spec += "@" + _fingerprint(function)
    _REGISTERED_MODELS[spec] = function
    return spec


def _origin(function: Any) -> tuple[str, str]:
    """Where a callable was defined: (module, qualified name)."""
    if isinstance(function, functools.partial):
        return _origin(function.func)
    if inspect.ismethod(function):
        function = function.__func__
    if not inspect.isfunction(function) and not inspect.isbuiltin(function):
        function = type(function)  # a callable object: its class
    return getattr(function, "__module__", None) or "__main__", function.__qualname__


def _imported(module: str, name: str) -> Any:
    """What `from module import name` (dotted names inside it too) gives, or None."""
    try:
        found = importlib.import_module(module)
        for part in name.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        return None
    return found


def _fingerprint(function: Any) -> str:
    """A short digest of what a callable computes with: its code (nested code included),
    defaults, closure values, partial arguments, bound object and attributes."""
    digest = hashlib.sha1()

    def add(value: Any) -> None:
        digest.update(repr(value).encode())

    def code(block: Any) -> None:
        digest.update(block.co_code)
        for constant in block.co_consts:
            if inspect.iscode(constant):
                code(constant)
            else:
                add(constant)

    def callable_(target: Any) -> None:
        if isinstance(target, functools.partial):
            callable_(target.func)
            add((target.args, sorted(target.keywords.items())))
        elif inspect.ismethod(target):
            callable_(target.__func__)
            state(target.__self__)
        elif inspect.isfunction(target):
            code(target.__code__)
            add((target.__defaults__, target.__kwdefaults__))
            for cell in target.__closure__ or ():
                try:
                    add(cell.cell_contents)
                except ValueError:  # a cell not filled yet
                    add(None)
        else:  # a callable object: its class's __call__ (when written in Python) and state
            call = type(target).__call__
            if inspect.isfunction(call):
                callable_(call)
            state(target)

    def state(instance: Any) -> None:
        add(type(instance).__qualname__)
        add(sorted(getattr(instance, "__dict__", {}).items()))

    callable_(function)
    return digest.hexdigest()[:8]


def registered_model(spec: str) -> Callable[..., Any] | None:
    """The function `register_model` kept in this process under `spec`, or None."""
    return _REGISTERED_MODELS.get(spec)


def model_factory(spec: str) -> Callable[..., Any]:
    """The function a `package.module:function` spec names: one `register_model` kept,
    else imported."""
    if spec in _REGISTERED_MODELS:
        return _REGISTERED_MODELS[spec]
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise ExperimentError(f"--model={spec}: give it as package.module:function.")
    if module_name.endswith(".py") or "/" in module_name or "\\" in module_name:
        raise ExperimentError(
            f"--model={spec}: give the module's import name (package.module, as `python -m` "
            "takes it), not a file path."
        )
    # As `python -m` does: modules in the current directory import (after installed ones).
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        missing = error.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise ExperimentError(
                f"--model={spec}: no module named {missing!r} (searched: installed packages "
                "and the current directory)."
            ) from None
        raise ExperimentError(
            f"--model={spec}: importing {module_name} failed: {reason(error)}"
        ) from None
    except Exception as error:  # the user's module may raise anything at import
        raise ExperimentError(
            f"--model={spec}: importing {module_name} failed: {type(error).__name__}: "
            f"{reason(error)}"
        ) from None
    factory = getattr(module, name, None)
    if factory is None:
        raise ExperimentError(f"--model={spec}: module {module_name} has no function {name!r}.")
    if not callable(factory):
        raise ExperimentError(
            f"--model={spec}: {module_name}.{name} is a {type(factory).__name__}, not a "
            "function (input_shape, num_classes) -> keras.Model."
        )
    return factory


def reason(error: BaseException) -> str:
    """The first line of an error message, kept short."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."
