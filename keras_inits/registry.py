"""String names for the initializers, spec strings, and `get`.

Keras resolves a string such as `kernel_initializer="xavier_normal"` by
deserializing `{"class_name": "xavier_normal", "config": {}}`, and global
custom objects take part in that lookup. `register_names` adds our snake_case
names there, next to the `keras_inits>ClassName` keys under which the classes
are saved, so every layer, `add_weight` and `keras.initializers.get` accept them.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import re
from typing import Any

import keras

from keras_inits import initializers

INITIALIZERS: dict[str, type[keras.initializers.Initializer]] = {
    "xavier_normal": initializers.XavierNormal,
    "xavier_uniform": initializers.XavierUniform,
    "kaiming_normal": initializers.KaimingNormal,
    "kaiming_uniform": initializers.KaimingUniform,
    "standard_uniform": initializers.StandardUniform,
    "delta_orthogonal": initializers.DeltaOrthogonal,
    "dirac": initializers.Dirac,
    "sparse": initializers.Sparse,
    "trunc_normal": initializers.TruncNormal,
}


def _same_class(a: Any, b: type) -> bool:
    # By qualified name, so re-importing the package does not count as a clash.
    return inspect.isclass(a) and (a.__module__, a.__qualname__) == (
        b.__module__,
        b.__qualname__,
    )


def register_names() -> None:
    """Makes every name in `INITIALIZERS`, and its CamelCase class name, resolve
    through Keras's own lookup, as Keras's built-ins do (`"glorot_normal"` and
    `"GlorotNormal"`).

    Raises:
        ValueError: if a name is already a Keras built-in or another object's
            registered name; keras_inits never shadows one.
    """
    custom_objects = keras.saving.get_custom_objects()
    aliases = {**INITIALIZERS, **{cls.__name__: cls for cls in INITIALIZERS.values()}}
    for name, cls in aliases.items():
        existing = custom_objects.get(name)
        if existing is not None and not _same_class(existing, cls):
            raise ValueError(
                f"keras_inits cannot register {name!r}: the name is already taken by "
                f"{existing!r} in keras.saving.get_custom_objects(). Remove that "
                "registration or import keras_inits first."
            )
        if existing is None and _resolve(name) is not None:
            raise ValueError(
                f"keras_inits cannot register {name!r}: it is a Keras built-in "
                "initializer name, which keras_inits never shadows."
            )
        custom_objects[name] = cls


def _keras_builtins() -> dict[str, type]:
    """Keras's public initializer classes by every name `keras.initializers` exports."""
    found = {}
    for name in dir(keras.initializers):
        obj = getattr(keras.initializers, name)
        if (
            inspect.isclass(obj)
            and issubclass(obj, keras.initializers.Initializer)
            and obj is not keras.initializers.Initializer
        ):
            found[name] = obj
    return found


def _known() -> dict[str, type]:
    known = _keras_builtins()
    for name, obj in keras.saving.get_custom_objects().items():
        if inspect.isclass(obj) and issubclass(obj, keras.initializers.Initializer):
            known[name] = obj
    return known


def _resolve(name: str) -> type | None:
    """The initializer class `name` stands for, or None.

    Keras also resolves aliases it does not export (`"normal"`, `"uniform"`,
    `"one"`, `"zero"`...), so its own lookup is the last resort.
    """
    known = _known()
    if name in known:
        return known[name]
    try:
        obj = keras.initializers.get(name)
    except (ValueError, TypeError):
        return None
    return type(obj) if isinstance(obj, keras.initializers.Initializer) else None


def names() -> list[str]:
    """Every initializer name `get` and Keras layers accept: keras_inits's and Keras's."""
    return sorted(name for name in _known() if ">" not in name)


_BARE_NAME = re.compile(r"[A-Za-z_][\w.>]*")


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Splits `"name(key=value, ...)"` into the name and its keyword arguments.

    Values must be Python literals (numbers, strings, None, tuples...).

    Examples:
        >>> parse_spec("kaiming_normal(mode='fan_out', nonlinearity='tanh')")
        ('kaiming_normal', {'mode': 'fan_out', 'nonlinearity': 'tanh'})
    """
    text = spec.strip()
    usage = "Write it as name(key=value, ...), e.g. 'random_uniform(minval=-0.1, maxval=0.1)'."
    if not text:
        raise ValueError("Empty initializer spec ''. Give a name such as 'xavier_normal'.")
    # A bare name; '>' allows registered names such as 'keras_inits>XavierNormal'.
    if _BARE_NAME.fullmatch(text):
        return text, {}
    try:
        call = ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        raise ValueError(f"Cannot parse initializer spec {spec!r}. {usage}") from None
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)):
        raise ValueError(f"Cannot parse initializer spec {spec!r}. {usage}")
    if call.args or any(keyword.arg is None for keyword in call.keywords):
        raise ValueError(
            f"Initializer spec {spec!r} has positional or ** arguments; name every "
            f"argument. {usage}"
        )
    kwargs = {}
    for keyword in call.keywords:
        try:
            kwargs[keyword.arg] = ast.literal_eval(keyword.value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise ValueError(
                f"In initializer spec {spec!r}, the value of {keyword.arg!r} "
                f"({ast.unparse(keyword.value)}) is not a Python literal."
            ) from None
    return call.func.id, kwargs


def _build(name: str, kwargs: dict[str, Any], spec: str) -> keras.initializers.Initializer:
    cls = _resolve(name)
    if cls is None:
        close = difflib.get_close_matches(name, names(), n=5, cutoff=0.5)
        if close:
            hint = f"Did you mean {', '.join(map(repr, close))}?"
        else:
            nearest = difflib.get_close_matches(name, names(), n=5, cutoff=0.0)
            hint = f"Closest names: {', '.join(map(repr, nearest))}."
        raise ValueError(
            f"Unknown initializer {name!r} in spec {spec!r}. {hint} "
            "keras_inits.names() lists every name."
        )
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"Initializer spec {spec!r}: {name} takes no argument "
            f"{', '.join(map(repr, unknown))}. Its arguments are: {', '.join(accepted) or 'none'}."
        )
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise ValueError(f"Initializer spec {spec!r}: {error}") from None


def get(spec: Any) -> keras.initializers.Initializer | None:
    """Returns an initializer from a name, a spec string, a config dict or an instance.

    Accepts keras_inits's names and Keras's alike. An instance (or any callable
    `(shape, dtype) -> tensor`) is returned as is, None as None, like
    `keras.initializers.get`.

    Examples:
        >>> keras_inits.get("xavier_normal")
        >>> keras_inits.get("random_uniform(minval=-0.1, maxval=0.1)")
        >>> keras_inits.get("kaiming_normal(mode='fan_out', nonlinearity='tanh')")
        >>> keras_inits.get({"class_name": "XavierNormal", "config": {"gain": 2.0}})

    Raises:
        ValueError: unknown name (with the closest names), unknown argument, or
            a spec that does not parse; the message quotes the spec.
        TypeError: for anything that is none of the above.
    """
    if spec is None or isinstance(spec, keras.initializers.Initializer):
        return spec
    if isinstance(spec, str):
        name, kwargs = parse_spec(spec)
        return _build(name, kwargs, spec)
    if isinstance(spec, dict):
        if "class_name" not in spec:
            raise ValueError(
                f"An initializer config dict needs a 'class_name' key, got {spec!r}."
            )
        config = spec.get("config") or {}
        return _build(spec.get("registered_name") or spec["class_name"], config, repr(spec))
    if callable(spec) and not inspect.isclass(spec):
        return spec
    raise TypeError(
        "An initializer spec must be a name, a 'name(key=value)' string, a config dict "
        f"or an Initializer instance, got {type(spec).__name__}: {spec!r}."
    )


def reseed(
    initializer: keras.initializers.Initializer, seed: int
) -> keras.initializers.Initializer:
    """A copy of `initializer` with its seed replaced by `seed`.

    Initializers without a seed (zeros, constant, dirac...) are copied as they
    are. Use it to give each layer its own seed from one spec, so that no two
    layers share a kernel even when the spec names a seed.
    """
    config = initializer.get_config()
    if "seed" in config:
        config["seed"] = seed
    return type(initializer).from_config(config)
