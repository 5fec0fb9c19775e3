"""`reinitialize`: re-draws every kernel of a built model with the fans of its layer type."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import keras
import numpy as np

from keras_inits import schemes, tables
from keras_inits.base import FanScaling, check_choice, check_seed, split_seed
from keras_inits.fans import compute_fans
from keras_inits.initializers import TruncNormal
from keras_inits.kernels import Kernel, KernelPlan, find_kernels, own_biases
from keras_inits.registry import get, reseed
from keras_inits.roles import Roles
from keras_inits.roles import roles as find_roles

_MAX_SEED = 2**31 - 1
# Initializers whose draws are i.i.d. and ignore fans: one call for the whole kernel.
_SHAPE_FREE = (
    keras.initializers.RandomNormal,
    keras.initializers.RandomUniform,
    keras.initializers.TruncatedNormal,
    keras.initializers.Zeros,
    keras.initializers.Ones,
    keras.initializers.Constant,
    TruncNormal,
)
Selector = str | type | Callable[[keras.layers.Layer], bool]


def kernel_seed(seed: int, kernel: Kernel) -> int:
    """The seed of one kernel: mixed from the run's seed and the kernel's position in
    `model.weights`, the same in every process and for every rebuild of the same
    architecture (whatever numbers Keras appended to the layer names)."""
    state = np.random.SeedSequence([seed, kernel.position]).generate_state(1)[0]
    return int(state) % _MAX_SEED


def _fan(mode: str, fan_in: float, fan_out: float) -> float:
    return max(1.0, {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode])


def _with_fans(
    initializer: Any, shape: tuple[int, ...], plan: KernelPlan, seed: int
) -> keras.initializers.Initializer | None:
    """A fan-based initializer rescaled so that, called on `shape`, it draws with the
    plan's fans; None for initializers that are not fan-based.

    Both Keras's `VarianceScaling` family and our `FanScaling` divide `scale` by
    the fan they read from the shape, so multiplying `scale` by
    `that fan / right fan` gives exactly the variance of the right fans.
    """
    if isinstance(initializer, FanScaling):
        make = FanScaling
    elif isinstance(initializer, keras.initializers.VarianceScaling):
        make = keras.initializers.VarianceScaling
    else:
        return None
    mode = initializer.mode
    read = _fan(mode, *compute_fans(shape))
    right = _fan(mode, plan.fan_in, plan.fan_out)
    return make(
        scale=initializer.scale * read / right,
        mode=mode,
        distribution=initializer.distribution,
        seed=seed,
    )


def _seeded(initializer: Any, seed: int) -> Any:
    config = initializer.get_config() if hasattr(initializer, "get_config") else {}
    return reseed(initializer, seed) if "seed" in config else initializer


def draw(initializer: Any, kernel: Kernel, seed: int, dtype: str | None = None):
    """New values for `kernel` from `initializer`, with the kernel's plan.

    Fan-based initializers draw the whole kernel in one call with the plan's
    fans; initializers that ignore fans draw it in one call too; any other
    (orthogonal, identity, dirac, delta_orthogonal, a callable) draws each block
    of the plan with its own seed, in Keras's `(..., in, out)` block layout.
    """
    shape = tuple(kernel.variable.shape)
    dtype = dtype or kernel.variable.dtype
    if dtype in ("float16", "bfloat16"):
        # QR and some samplers have no 16-bit kernels on every backend: draw in float32.
        return keras.ops.cast(draw(initializer, kernel, seed, "float32"), dtype)
    plan = kernel.plan
    scaled = _with_fans(initializer, shape, plan, seed)
    if scaled is not None:
        return scaled(shape, dtype=dtype)
    if isinstance(initializer, _SHAPE_FREE):
        return _seeded(initializer, seed)(shape, dtype=dtype)
    seeds = split_seed(seed, plan.groups)
    blocks = [_seeded(initializer, s)(plan.block_shape, dtype=dtype) for s in seeds]
    return plan.assemble(keras.ops.stack(blocks))


@dataclasses.dataclass
class ReinitReport:
    """What `reinitialize` did: one row per weight it wrote, in model order.

    Each row: `path` (the layer's path in the model), `weight`, `shape`,
    `layout` (the fan rule used), `fan_in`, `fan_out`, `initializer`, `std` (of
    the values drawn); with a scheme, also the kernel's `role` and `block`, and
    `initializer` is the scheme's formula. Bias rows have no fans. `print(report)`
    shows the table; `to_dict()` gives the rows as JSON-ready data.

    Attributes:
        rows: the rows.
        kept: how many of the model's other weights were left as they were.
        scheme: the scheme's name, or None.
        notes: the scheme's depths and constants (DeepNet's alpha...).
    """

    rows: list[dict[str, Any]]
    kept: int
    scheme: str | None = None
    notes: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": [dict(row) for row in self.rows],
            "kept": self.kept,
            "scheme": self.scheme,
            "notes": dict(self.notes),
        }

    def table(self) -> str:
        columns = [("path", "layer"), ("weight", "weight"), ("shape", "shape")]
        if self.scheme is None:
            columns += [("layout", "layout"), ("fan_in", "fan_in"), ("fan_out", "fan_out")]
        else:
            columns += [("role", "role"), ("block", "block"), ("fan_in", "fan_in")]
        columns += [("initializer", "initializer"), ("std", "std drawn")]
        note = f"\n{len(self.rows)} weights written; {self.kept} other weights kept as they were."
        if self.scheme is not None:
            given = ", ".join(f"{k}={tables.format_value(v)}" for k, v in self.notes.items())
            note += f"\nScheme {self.scheme}: {given}."
        return tables.render(self.rows, columns) + note

    def __str__(self) -> str:
        return self.table()

    def __len__(self) -> int:
        return len(self.rows)


def _selector(
    include: Selector | Iterable[Selector] | None, kernels: Sequence[Kernel]
) -> Callable[[Kernel], bool]:
    """A predicate on `Kernel` from layer names or paths, layer classes, layer instances or
    predicates (any mix). A kernel is selected when its layer, its RNN owner or any layer
    containing them (a wrapper, a nested model, a custom layer) matches."""
    if include is None:
        return lambda kernel: True
    single = isinstance(include, (str, type, keras.layers.Layer)) or callable(include)
    if not single and not isinstance(include, Iterable):
        raise TypeError(
            "include takes layer names or paths, layer classes, layers or a predicate "
            f"(layer) -> bool, alone or in a list; got {type(include).__name__}: {include!r}."
        )
    items = [include] if single else list(include)
    if not items:
        raise ValueError("include is empty: give layer names, layer types or a predicate.")
    known = {name for kernel in kernels for name in _names(kernel)}
    for item in items:
        if isinstance(item, str) and item not in known:
            raise ValueError(
                f"include names no layer with a kernel called {item!r}. Layers with kernels: "
                f"{', '.join(sorted({k.owner.name for k in kernels}))}."
            )
        if not isinstance(item, (str, type, keras.layers.Layer)) and not callable(item):
            raise TypeError(
                "include takes layer names or paths, layer classes, layers or a predicate "
                f"(layer) -> bool; got {type(item).__name__}: {item!r}."
            )

    def matches(item: Selector, layer: keras.layers.Layer) -> bool:
        if isinstance(item, keras.layers.Layer):
            return item is layer
        if isinstance(item, type):
            return isinstance(layer, item)
        return bool(item(layer))

    def selected(kernel: Kernel) -> bool:
        layers = (*kernel.containers, kernel.owner, kernel.layer)
        return any(
            item in _names(kernel) if isinstance(item, str) else matches(item, layer)
            for item in items
            for layer in layers
        )

    return selected


def _names(kernel: Kernel) -> set[str]:
    """A kernel answers to the names of its layer, its owner and the layers containing them,
    and to every prefix of its path (`block1`, `block1/dense`)."""
    parts = kernel.path.split("/")[:-1]
    prefixes = {"/".join(parts[: i + 1]) for i in range(len(parts))}
    layers = (*kernel.containers, kernel.owner, kernel.layer)
    return prefixes | {layer.name for layer in layers}


def _initial_bias(layer: keras.layers.Layer, variable: keras.Variable):
    """Zeros, except the forget gate of an LSTM cell built with `unit_forget_bias`."""
    values = np.zeros(tuple(variable.shape), dtype="float32")  # assign casts to the variable
    if getattr(layer, "unit_forget_bias", False) and values.ndim == 1:
        units = values.shape[0] // 4
        values[units : 2 * units] = 1.0
    return values


def _row(kernel: Kernel, values, initializer: str) -> dict[str, Any]:
    return {
        "path": kernel.path.rsplit("/", 1)[0],
        "weight": kernel.variable.name,
        "shape": tuple(kernel.variable.shape),
        "layout": kernel.plan.layout,
        "fan_in": kernel.plan.fan_in,
        "fan_out": kernel.plan.fan_out,
        "initializer": initializer,
        "std": float(np.std(keras.ops.convert_to_numpy(values))),
    }


def _describe(initializer: Any) -> str:
    if isinstance(initializer, keras.initializers.Initializer):
        return type(initializer).__name__
    return getattr(initializer, "__name__", type(initializer).__name__)


def reinitialize(
    model: keras.layers.Layer,
    initializer: Any = None,
    *,
    scheme: str | schemes.Scheme | None = None,
    roles: Roles | Mapping[str, str] | None = None,
    seed: int | None = None,
    include: Selector | Iterable[Selector] | None = None,
    biases: Literal["zeros", "keep"] = "zeros",
    recurrent: Any = "orthogonal",
    fallback: Any = None,
    **params: Any,
) -> ReinitReport:
    """Re-draws every kernel of a built model with the fans that are right for its layer,
    from one initializer or from a scheme that scales each kernel by its role and depth.

    Keras reads every kernel as `(..., in, out)`, which gives wrong fans for
    transposed, depthwise, grouped, einsum and RNN kernels. `reinitialize` reads
    them per layer type (the table in `keras_inits.kernels`), for Sequential,
    Functional and subclassed models alike, nested models and layers inside layers
    (MultiHeadAttention's projections, Bidirectional RNNs...) included.
    Normalization layers and every other non-kernel weight are left untouched.

    Examples:
        >>> model = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3))
        >>> report = keras_inits.reinitialize(model, "kaiming_normal", seed=0)
        >>> print(report)  # one row per weight: fans, layout and the std drawn
        >>> import keras_hub
        >>> backbone = keras_hub.models.GPT2Backbone(vocabulary_size=512, num_layers=4,
        ...     num_heads=2, hidden_dim=64, intermediate_dim=256, max_sequence_length=32)
        >>> print(keras_inits.reinitialize(backbone, scheme="gpt2", sigma=0.02, seed=0))

    Args:
        model: a built Keras model or layer.
        initializer: anything `keras_inits.get` takes, for every kernel but the
            recurrent ones. Fan-based initializers (keras_inits's and Keras's
            `VarianceScaling` family) get the layer's fans; structured ones
            (orthogonal, dirac, delta_orthogonal...) are drawn per block (per
            group, gate or depthwise channel). Give it or `scheme`.
        scheme: a scheme of `keras_inits.schemes.SCHEMES` ("gpt2", "megatron",
            "fixup", "zero_branch", "t_fixup", "deepnet", "small_init",
            "mitchell", and mean-field theory's "critical" and "mean_field"), or
            a function `(roles, **params) -> SchemePlan`. Each kernel is drawn as
            the scheme says for its role and block; kernels the scheme does not
            specify are kept.
        roles: for a scheme, the model's roles: a `Roles` from
            `keras_inits.roles`, or the `mapping` of path patterns to roles that
            names your own subclassed blocks' kernels. None resolves them.
        **params: the scheme's parameters (`sigma=0.02` for gpt2...); see its
            docstring.
        seed: an int makes the weights the same in every process. Each kernel
            gets its own seed, mixed from `seed` and its position in
            `model.weights`. None takes the initializer's own seed if it has
            one, else a fresh one from Python's `random` (so
            `keras.utils.set_random_seed` makes the call reproducible).
        include: layer names (or paths), layer classes, layers or a predicate
            `layer -> bool`, alone or in a list: only matching layers, and the
            layers inside them (a wrapper, a nested model), are re-initialized
            (kernels and biases). None: every layer with a kernel.
        biases: "zeros" resets the biases of the re-initialized layers (an LSTM
            built with `unit_forget_bias` gets ones on its forget gate, as Keras
            builds it), or draws them as the scheme says (`critical` and
            `mean_field`: N(0, sigma_b2)); "keep" leaves them.
        recurrent: the initializer of RNN recurrent kernels, drawn gate by gate
            ("orthogonal", as Keras's default, makes each gate's recurrent matrix
            orthogonal); "keep" leaves them.
        fallback: for kernels `initializer` refuses (`dirac` or
            `delta_orthogonal` on a Dense kernel, say): anything `keras_inits.get`
            takes, used instead, and named in the report's row. None: such a
            kernel raises the initializer's ValueError.

    Returns:
        A `ReinitReport`: `print` it for the table, `to_dict()` for the rows.

    Raises:
        TypeError: `model` is not a Keras model or layer; a bad `include` item; a
            parameter the scheme does not take.
        ValueError: an unbuilt model, no kernel to re-initialize (or none that
            `include` selects), an unknown initializer, scheme, layer name or
            `biases` option, an initializer that refuses a selected kernel, a
            scheme that needs a role the model lacks; the model is then left as
            it was.
    """
    check_choice("biases", biases, ("zeros", "keep"))
    _check_source(initializer, scheme, roles, params)
    kernels = find_kernels(model)
    if not kernels:
        raise ValueError(
            f"Model {model.name!r} has no layer with a kernel (Dense, Conv, EinsumDense, "
            "Embedding, RNN...): nothing to re-initialize."
        )
    is_selected = _selector(include, kernels)
    selected = [kernel for kernel in kernels if is_selected(kernel)]
    if not selected:
        raise ValueError(
            f"include={include!r} selects no layer with a kernel. Layers with kernels: "
            f"{', '.join(sorted({k.owner.name for k in kernels}))}."
        )
    main, scheme_name, scheme_plan, found = get(initializer), None, None, None
    if scheme is not None:
        found = roles if isinstance(roles, Roles) else find_roles(model, roles)
        scheme_name, scheme_plan = schemes.plan(scheme, found, params)
    for_recurrent = None if recurrent == "keep" else get(recurrent)
    for_refused = get(fallback)
    base_seed = _base_seed(seed, main)
    by_path = {kernel.path: kernel for kernel in found.kernels} if found else {}

    # Everything is drawn before anything is written: an initializer that refuses one
    # kernel (dirac on a Dense, say) leaves the model as it was.
    updates, rows = [], []
    for kernel in selected:
        name = None
        if kernel.role == "recurrent":
            chosen = for_recurrent
        elif scheme_plan is not None:
            assignment = scheme_plan.kernels.get(kernel.path)
            chosen = assignment and assignment.initializer
            name = assignment and assignment.rule
        else:
            chosen = main
        if chosen is None:
            continue
        name = name or _describe(chosen)
        try:
            values = draw(chosen, kernel, kernel_seed(base_seed, kernel))
        except ValueError as error:
            if for_refused is None:
                raise ValueError(f"{kernel.path}: {error}") from None
            values = draw(for_refused, kernel, kernel_seed(base_seed, kernel))
            name = f"{_describe(for_refused)} (fallback: {name} refused it)"
        updates.append((kernel.variable, values))
        rows.append(_row(kernel, values, name))
        if kernel.path in by_path:
            rows[-1].update(role=by_path[kernel.path].role, block=by_path[kernel.path].block)
        if biases == "zeros" and kernel.primary:
            drawn = scheme_plan and scheme_plan.biases.get(kernel.path)
            seeds = iter(split_seed(kernel_seed(base_seed, kernel), 8))
            for bias in own_biases(kernel.layer):
                if drawn:
                    values = _seeded(drawn.initializer, next(seeds))(
                        tuple(bias.shape), dtype=bias.dtype
                    )
                else:
                    values = _initial_bias(kernel.layer, bias)
                updates.append((bias, values))
                rows.append(_bias_row(kernel, bias, values, drawn and drawn.rule))
    for variable, values in updates:
        variable.assign(values)
    total = len({id(v) for v in model.weights})
    kept = total - len({id(variable) for variable, _ in updates})
    if scheme_plan is None:
        return ReinitReport(rows, kept=kept)
    return ReinitReport(rows, kept=kept, scheme=scheme_name, notes=dict(scheme_plan.notes))


def _check_source(initializer: Any, scheme: Any, roles: Any, params: Mapping[str, Any]) -> None:
    """One source of values: an initializer, or a scheme with its roles and parameters."""
    if initializer is None and scheme is None:
        raise ValueError(
            "Give an initializer (such as 'xavier_normal') or scheme= (one of "
            f"{', '.join(schemes.SCHEMES)})."
        )
    if initializer is not None and scheme is not None:
        raise ValueError(
            f"Give an initializer or a scheme, not both (got {initializer!r} and "
            f"scheme={scheme!r}): a scheme chooses every kernel's initializer."
        )
    if scheme is None and (params or roles is not None):
        given = sorted([*params, *(["roles"] if roles is not None else [])])
        raise TypeError(
            f"reinitialize got {', '.join(given)} without scheme=: these are a scheme's "
            "parameters. Give scheme=..., or leave them out."
        )


def _bias_row(
    kernel: Kernel, bias: keras.Variable, values: Any, rule: str | None = None
) -> dict[str, Any]:
    return {
        "path": kernel.path.rsplit("/", 1)[0],  # the bias's layer is the kernel's
        "weight": bias.name,
        "shape": tuple(bias.shape),
        "layout": "bias",
        "fan_in": None,
        "fan_out": None,
        "initializer": rule or (
            "forget gate 1" if getattr(kernel.layer, "unit_forget_bias", False) else "zeros"
        ),
        "std": float(np.std(keras.ops.convert_to_numpy(values))),
    }


def _base_seed(seed: int | None, initializer: Any) -> int:
    seed = check_seed(seed)
    if seed is not None:
        return seed
    own = getattr(initializer, "seed", None)
    if isinstance(own, int):
        return own
    return random.randint(0, _MAX_SEED)
