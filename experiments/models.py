"""The compared architectures: the built-in MLP, CNN, residual networks and Transformer, or
your own model.

Built-in models (`build`): the MLP's and CNN's layers with weights are `hidden_1` ...
`hidden_N` and `output` (softmax); the residual networks' are `stem`, `block<i>_1` and
`block<i>_2` in each block, and `output`; the Transformer's are described in
`experiments.transformer`. Biases start at zero. Every kernel initializer
is a copy of the one spec reseeded with `layer_seed(seed, index)`, so no two layers share a
kernel (even when the spec names a seed) and the same (spec, seed) always builds
the same model.

Your own model (`own_model`): `--model=package.module:function`, a function
`(input_shape, num_classes) -> keras.Model`, or `--model=path/to/model.keras`.
`initialize` builds a run's model either way and, where needed (your own model, the
Transformer, or an initializer that refuses some kernel of a built-in one), re-draws its
kernels with `keras_inits.reinitialize(..., fallback=...)`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

import keras
import numpy as np

import keras_inits
from experiments import transformer
from experiments.engine import strategies
from experiments.errors import ExperimentError
from experiments.specs import (
    SEQUENCE_MODELS,
    check_model,
    is_builtin,
    lsuv_settings,
    model_factory,
    reason,
    scheme_settings,
)

if TYPE_CHECKING:  # config imports this module lazily; no cycle at run time either way
    from experiments.config import Cell, ExperimentConfig
    from experiments.data.datasets import Dataset

OUTPUT = "output"
# How `keras_inits.reinitialize` marks a kernel it drew with the fallback in its report.
FALLBACK_MARK = "(fallback"


def hidden_name(index: int) -> str:
    """Name of the `index`-th hidden layer, counting from 1."""
    return f"hidden_{index}"


def layer_seed(seed: int, index: int) -> int:
    """Seed of layer `index` (1-based; the output layer is depth + 1) in run `seed`.

    Mixed through `SeedSequence` rather than `seed + index`, so that runs with
    neighbouring seeds do not share layers shifted by one.
    """
    state = np.random.SeedSequence([seed, index]).generate_state(1)[0]
    return int(state) % (2**31 - 1)


def build(
    kind: str,
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    depth: int,
    width: int,
    activation: str,
    initializer: str,
    seed: int,
    normalization: str | None = None,
    heads: int = 4,
    layer_norm: str = "pre",
    parametrization: str = "sp",
) -> keras.Model:
    """A functional model ending in a softmax layer `output`.

    Args:
        kind: "mlp" (Flatten, then `depth` Dense layers `hidden_i` of `width`
            units), "cnn" (`depth` 3x3 Conv2D layers `hidden_i` of `width`
            filters, stride 2 while the feature map is larger than 8x8, then global
            average pooling), or a residual network of `depth` blocks after a stem
            (see `_residual`): "resmlp" (Dense) or "resnet" (3x3 Conv2D, the stem
            striding while the map is larger than 8x8, then pooling).
        initializer: a spec `keras_inits.get` accepts, used for every kernel.
        seed: the run's seed; layer i's initializer gets `layer_seed(seed, i)`.
        normalization: of the residual blocks: "none" (or None), "batch" or "layer".
        heads, layer_norm: the Transformer's (`experiments.transformer.build`; "transformer"
            takes `input_shape` (T,) of token ids and `num_classes` as its vocabulary).
        parametrization: "mup" makes the output layer a `keras_inits.mup.Readout` (and the
            Transformer's attention `keras_inits.mup.MultiHeadAttention`), plain layers
            until `keras_inits.mup.parametrize` sets their multipliers (`put_in_mup`).
    """
    base = keras_inits.get(initializer)

    def kernel(index: int) -> keras.initializers.Initializer:
        return keras_inits.reseed(base, layer_seed(seed, index))

    if kind == "transformer":
        return transformer.build(
            sequence_length=input_shape[0], vocabulary_size=num_classes, depth=depth,
            width=width, heads=heads, activation=activation, layer_norm=layer_norm,
            kernel=kernel, mup=parametrization == "mup",
        )

    inputs = keras.Input(input_shape, name="inputs")
    x = inputs
    if kind == "mlp":
        x = keras.layers.Flatten(name="flatten")(x)
        for index in range(1, depth + 1):
            x = keras.layers.Dense(
                width,
                activation,
                kernel_initializer=kernel(index),
                bias_initializer="zeros",
                name=hidden_name(index),
            )(x)
    elif kind == "cnn":
        if len(input_shape) != 3:
            raise ValueError(
                f"The cnn model needs (height, width, channels) inputs, got {input_shape}."
            )
        size = min(input_shape[:2])
        for index in range(1, depth + 1):
            stride = 2 if size > 8 else 1
            size = -(-size // stride)
            x = keras.layers.Conv2D(
                width,
                3,
                strides=stride,
                padding="same",
                activation=activation,
                kernel_initializer=kernel(index),
                bias_initializer="zeros",
                name=hidden_name(index),
            )(x)
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    elif kind in ("resmlp", "resnet"):
        x = _residual(kind, x, depth, width, activation, normalization, kernel)
    else:
        raise ValueError(
            f"Unknown model kind {kind!r}; choose mlp, cnn, resmlp, resnet or transformer."
        )
    readout = keras_inits.mup.Readout if parametrization == "mup" else keras.layers.Dense
    outputs = readout(
        num_classes,
        "softmax",
        # After the hidden layers' kernels (1..depth) or the blocks' (1..2 depth + 1).
        kernel_initializer=kernel(2 * depth + 2 if kind in ("resmlp", "resnet") else depth + 1),
        bias_initializer="zeros",
        name=OUTPUT,
    )(x)
    name = f"{kind}_{depth}x{width}_{activation}"
    if normalization not in (None, "none"):
        name += f"_{normalization}norm"
    return keras.Model(inputs, outputs, name=name)


def _residual(kind, x, depth, width, activation, normalization, kernel):
    """A stem, then `depth` residual blocks `x <- x + W2 act(norm(W1 x))` (Dense layers for
    resmlp, 3x3 Conv2D for resnet) named `block<i>_1` and `block<i>_2`, `width` units or
    filters throughout, so that every shortcut is the identity and nothing but the blocks
    touches the stream (a Transformer's feed-forward block without its LayerNorm on the
    stream).

    Without normalization, He-initialized branches add twice their input's second moment
    (W1 doubles it, relu halves it, W2 doubles it), so the stream's triples at every block:
    the network Fixup (Zhang et al. 2019) trains by zeroing W2. With `normalization` after
    W1, each branch adds about the same variance whatever the stream's, so the stream grows
    additively and later blocks count for less (De & Smith 2020)."""
    if kind == "resnet":
        if len(x.shape) != 4:
            raise ValueError(f"The resnet model needs (height, width, channels) inputs, got "
                             f"{tuple(x.shape[1:])}.")
        stride = 2 if min(x.shape[1:3]) > 8 else 1

        def linear(name, index, act=None, strides=1):
            return keras.layers.Conv2D(
                width, 3, strides=strides, padding="same", activation=act,
                kernel_initializer=kernel(index), bias_initializer="zeros", name=name,
            )

        x = linear("stem", 1, activation, stride)(x)
    else:
        x = keras.layers.Flatten(name="flatten")(x)

        def linear(name, index, act=None):
            return keras.layers.Dense(
                width, activation=act, kernel_initializer=kernel(index),
                bias_initializer="zeros", name=name,
            )

        x = linear("stem", 1, activation)(x)
    for block in range(1, depth + 1):
        index = 2 * block  # kernels 2, 3 in block 1; 4, 5 in block 2...
        if normalization in (None, "none"):
            h = linear(f"block{block}_1", index, activation)(x)
        else:
            h = linear(f"block{block}_1", index)(x)
            norm = keras.layers.BatchNormalization if normalization == "batch" else (
                keras.layers.LayerNormalization
            )
            h = norm(name=f"block{block}_norm")(h)
            h = keras.layers.Activation(activation, name=f"block{block}_activation")(h)
        h = linear(f"block{block}_2", index + 1)(h)
        x = keras.layers.Add(name=f"block{block}_add")([x, h])
    if kind == "resnet":
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return x


def check_data(kinds: tuple[str, ...], data: Dataset) -> None:
    """Refuses built-in models that do not fit the loaded dataset: the image models
    (cnn, resnet) need (height, width, channels) inputs, the Transformer a sequence task
    and the others a classification task (see `config.check_task`).

    Raises:
        ExperimentError: one line naming the model and the dataset's shape or task.
    """
    from experiments.config import check_task  # config imports this module lazily

    for image_model in ("cnn", "resnet"):
        if image_model in kinds and (len(data.input_shape) != 3 or data.is_sequence):
            raise ExperimentError(
                f"--model={image_model} needs image inputs (height, width, channels); "
                f"{data.name} has inputs of shape {data.input_shape}."
            )
    check_task(kinds, data.name, sequence=data.is_sequence)


# ---- Your own model, and initializers that refuse some kernels ---------------------------


def own_model(
    spec: str,
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    x_sample: np.ndarray,
    sequence: bool = False,
) -> keras.Model:
    """Your own model: `function(input_shape, num_classes)` called, or the `.keras` file
    loaded (architecture and weights, not compiled), checked against the data.

    The checks, on `x_sample` (a few training inputs): the model is a `keras.Model`
    with one input that takes the dataset's inputs, and one output of shape
    `(None, num_classes)` holding probabilities (rows >= 0 summing to 1): the
    harness trains every model with sparse categorical cross-entropy on softmax
    outputs, so a model that ends in logits is refused, with a message saying to
    end it with a softmax. For a sequence task (`sequence`: token ids `(None, T)` in),
    the output is each position's probabilities over the vocabulary, `(None, T,
    num_classes)`.

    Raises:
        ExperimentError: one line naming the problem.
    """
    if spec.endswith(".keras"):
        check_model(spec)
        try:
            model = keras.saving.load_model(spec, compile=False)
        except Exception as error:  # Keras raises many types for a bad or foreign file
            raise ExperimentError(
                f"--model={spec}: cannot load it: {type(error).__name__}: {reason(error)}"
            ) from None
        made = "the saved model"
        if not isinstance(model, keras.Model):
            raise ExperimentError(
                f"--model={spec}: holds a {type(model).__name__}, not a keras.Model."
            )
    else:
        factory = model_factory(spec)
        made = f"{spec.partition(':')[2]}({input_shape}, {num_classes})"
        try:
            model = factory(input_shape, num_classes)
        except Exception as error:  # the user's code may raise anything
            raise ExperimentError(
                f"--model={spec}: {made} raised {type(error).__name__}: {reason(error)}"
            ) from None
        if not isinstance(model, keras.Model):
            raise ExperimentError(
                f"--model={spec}: {made} returned a {type(model).__name__}; it must return "
                "a keras.Model."
            )
    _check_fits(model, spec, made, input_shape, num_classes, x_sample, sequence)
    return model


def _check_fits(
    model: keras.Model,
    spec: str,
    made: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    x_sample: np.ndarray,
    sequence: bool,
) -> None:
    try:
        inputs = model.inputs  # Functional and Sequential models with an Input
    except (AttributeError, ValueError):
        inputs = None
    if inputs:
        if len(inputs) != 1:
            raise ExperimentError(
                f"--model={spec}: {made} takes {len(inputs)} inputs; the harness feeds one."
            )
        wanted = tuple(inputs[0].shape[1:])
        fits = len(wanted) == len(input_shape) and all(
            want is None or want == have for want, have in zip(wanted, input_shape, strict=True)
        )
        if not fits:
            raise ExperimentError(
                f"--model={spec}: {made} takes inputs of shape {(None, *wanted)}, but the "
                f"dataset's inputs are {(None, *input_shape)}."
            )
    try:
        outputs = model(x_sample[:2], training=False)
    except Exception as error:  # a subclassed model fails on the call itself
        raise ExperimentError(
            f"--model={spec}: {made} cannot take the dataset's inputs of shape "
            f"{(None, *input_shape)}: {type(error).__name__}: {reason(error)}"
        ) from None
    wanted = (*input_shape, num_classes) if sequence else (num_classes,)
    what = (
        f"probabilities over the {num_classes} tokens at each of the {input_shape[0]} positions"
        if sequence else f"probabilities over the dataset's {num_classes} classes"
    )
    if isinstance(outputs, (list, tuple, dict)):
        raise ExperimentError(
            f"--model={spec}: {made} has several outputs; the harness needs one, {what}, of "
            f"shape {(None, *wanted)}."
        )
    values = keras.ops.convert_to_numpy(outputs)
    if tuple(values.shape[1:]) != wanted:
        raise ExperimentError(
            f"--model={spec}: {made} outputs shape {(None, *values.shape[1:])}; the harness "
            f"needs {(None, *wanted)}: {what}."
        )
    if not (np.all(values >= 0) and np.allclose(values.sum(axis=-1), 1.0, atol=1e-3)):
        raise ExperimentError(
            f"--model={spec}: {made} does not output probabilities (logits?); end it with a "
            "softmax (activation='softmax' or keras.layers.Softmax()): the harness trains "
            "with sparse categorical cross-entropy on probabilities."
        )


@dataclasses.dataclass(frozen=True)
class Initialized:
    """A run's model with its kernels drawn, and what got the fallback.

    Attributes:
        model: the model, built and initialized.
        fallback_layers: the layers (paths in the model) whose kernel the
            initializer refused and `fallback` drew instead, in model order.
        report: `keras_inits.reinitialize`'s report; None when the built-in
            path drew every kernel (no fallback needed).
    """

    model: keras.Model
    fallback_layers: tuple[str, ...]
    report: keras_inits.ReinitReport | None


def initialize(
    kind: str,
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    x_sample: np.ndarray,
    depth: int | None,
    width: int | None,
    activation: str | None,
    initializer: str,
    fallback: str,
    seed: int,
    normalization: str | None = None,
    heads: int = 4,
    layer_norm: str = "pre",
    sequence: bool = False,
    parametrization: str = "sp",
) -> Initialized:
    """The model of one run, every kernel drawn from `initializer` and the run's `seed`.

    - a scheme (`scheme:NAME(...)`, see `specs.scheme_settings`): the model built or
      loaded with `fallback`, then `keras_inits.reinitialize(model, scheme=NAME,
      seed=seed, **params)`; the kernels the scheme does not specify keep `fallback`'s.
      DeepNet's alpha, which belongs to the block, goes into the post-LN Transformer's
      `ResidualScale` layers (`experiments.transformer`).
    - the Transformer: built with `fallback`, then re-drawn like your own model, by
      `keras_inits.reinitialize`, which knows the attention kernels' fans.

    - `mlp`/`cnn` with an initializer that takes every kernel: `build`, as
      always (each layer's initializer reseeded with `layer_seed`).
    - `mlp`/`cnn` with one that refuses some kernel (dirac or delta_orthogonal
      on the Dense output): built with `fallback`, then
      `keras_inits.reinitialize(model, initializer, seed=seed, fallback=fallback)`.
    - your own model (`package.module:function` or `.keras`): built or loaded
      (see `own_model`), then re-initialized the same way, so that within a
      seed every arm has the same biases (zeros) and non-kernel weights and
      only the kernels differ. Call `keras.utils.set_random_seed(seed)` first.

    Raises:
        ValueError: `initializer` refuses every kernel (each would get the
            fallback), or `fallback` refuses a kernel too.
        ExperimentError: your own model cannot be built or does not fit the data.
    """
    scheme = scheme_settings(initializer)
    if scheme is not None:
        model = initialize(
            kind, input_shape=input_shape, num_classes=num_classes, x_sample=x_sample,
            depth=depth, width=width, activation=activation, initializer=fallback,
            fallback=fallback, seed=seed, normalization=normalization, heads=heads,
            layer_norm=layer_norm, sequence=sequence, parametrization=parametrization,
        ).model
        name, params = scheme
        report = keras_inits.reinitialize(model, scheme=name, seed=seed, **params)
        if "alpha" in report.notes:
            transformer.set_residual_scale(model, report.notes["alpha"])
        return Initialized(model, (), report)
    if kind in SEQUENCE_MODELS:
        model = build(
            kind, input_shape=input_shape, num_classes=num_classes, depth=depth, width=width,
            activation=activation, initializer=fallback, seed=seed, heads=heads,
            layer_norm=layer_norm, parametrization=parametrization,
        )
    elif is_builtin(kind):
        settings = dict(
            input_shape=input_shape,
            num_classes=num_classes,
            depth=depth,
            width=width,
            activation=activation,
            seed=seed,
            normalization=normalization,
            parametrization=parametrization,
        )
        if kind in ("cnn", "resnet") and len(input_shape) != 3:
            build(kind, initializer=initializer, **settings)  # raises: not images
        try:
            return Initialized(build(kind, initializer=initializer, **settings), (), None)
        except ValueError:
            pass  # some kernel refused it: build with the fallback, then re-draw
        try:
            model = build(kind, initializer=fallback, **settings)
        except ValueError as error:
            raise ValueError(f"the fallback {fallback} cannot either: {reason(error)}") from None
    else:
        model = own_model(
            kind, input_shape=input_shape, num_classes=num_classes, x_sample=x_sample,
            sequence=sequence,
        )
    try:
        report = keras_inits.reinitialize(model, initializer, seed=seed, fallback=fallback)
    except ValueError as error:
        # The initializer refused a kernel and the fallback refused it too.
        raise ValueError(f"{reason(error)} (fallback {fallback})") from None
    kernels = [
        row for row in report.rows if row["layout"] != "bias" and "recurrent" not in row["weight"]
    ]
    fallback_layers = tuple(row["path"] for row in kernels if FALLBACK_MARK in row["initializer"])
    if kernels and len(fallback_layers) == len(kernels):
        try:
            keras_inits.reinitialize(model, initializer, seed=seed)
            refusal = "every kernel"
        except ValueError as error:
            refusal = reason(error)
        raise ValueError(
            f"it refuses every kernel of the model ({refusal}), so every layer would get the "
            f"fallback {fallback}; choose a model with layers it can initialize (dirac and "
            "delta_orthogonal need convolutions: --model=cnn)."
        )
    return Initialized(model, fallback_layers, report)


def initialize_run(
    config: ExperimentConfig, cell: Cell, data: Dataset, *, initializer: str, seed: int
) -> Initialized:
    """`initialize` with `cell`'s model settings for `data`, in a fresh Keras session seeded with
    `seed`: layer names count from scratch (dense, dense_1...) in every run, so every arm's
    TensorBoard tags and report rows name the same layers (the seed is set after, as
    clearing the session forgets it). Under `config.strategy` the model is built in the
    strategy's scope.

    Raises:
        ExperimentError: one line, when the model cannot be built or `initializer`
            cannot initialize it.
    """
    keras.utils.clear_session(free_memory=False)
    keras.utils.set_random_seed(seed)
    with strategies.scope(config.strategy):
        return _initialize_run(config, cell, data, initializer=initializer, seed=seed)


def _initialize_run(
    config: ExperimentConfig, cell: Cell, data: Dataset, *, initializer: str, seed: int
) -> Initialized:
    lsuv = lsuv_settings(initializer)
    # LSUV starts from its own orthonormal draw of every kernel.
    drawn = "orthogonal" if lsuv is not None else initializer

    def at(width: int | None) -> Initialized:
        return initialize(
            cell.model,
            input_shape=data.input_shape,
            num_classes=data.num_classes,
            x_sample=data.x_train[:2],
            depth=cell.depth,
            width=width,
            activation=cell.activation,
            normalization=cell.normalization,
            heads=config.heads,
            layer_norm=config.layer_norm,
            sequence=data.is_sequence,
            initializer=drawn,
            fallback=config.fallback_initializer,
            seed=seed,
            parametrization=cell.parametrization,
        )

    try:
        initialized = at(cell.width)
        if lsuv is not None:
            keras_inits.lsuv(
                initialized.model, data.x_train[: config.probe_size], seed=seed, **lsuv
            )
            initialized = Initialized(initialized.model, (), None)
        if cell.parametrization == "mup":
            try:
                put_in_mup(initialized.model, at, cell.width, config.base_width,
                           readout_zero_init=config.readout_zero_init)
            except ValueError as error:
                raise ExperimentError(f"--parametrization=mup: {reason(error)}") from None
        return initialized
    except ExperimentError:
        raise
    except (TypeError, ValueError) as error:
        raise ExperimentError(
            f"{initializer} cannot initialize the model: {reason(error)}"
        ) from None


def put_in_mup(
    model: keras.Model,
    build_at: Callable[[int], Initialized],
    width: int,
    base_width: int,
    *,
    readout_zero_init: bool = False,
) -> keras_inits.mup.MupReport:
    """Puts `model` (a built-in model of `width`) in muP relative to the same model at
    `base_width`, built by `build_at(width)`, as `keras_inits.mup.parametrize` does; at the
    base width itself, the width axes are read from the model at twice that width, and
    nothing changes (muP is the standard parametrization there) unless `readout_zero_init`
    zeros the read-out."""
    base = build_at(base_width).model
    delta = build_at(2 * base_width).model if width == base_width else None
    # It warns when the initializer's draws do not scale as muP's (Glorot's).
    return keras_inits.mup.parametrize(
        model, base, delta_model=delta, readout_zero_init=readout_zero_init
    )
