"""Initialization schemes (`reinitialize(model, scheme=...)`): every kernel's std against
the papers' formulas, restated here from the papers and reference code (KS test and std
ratio, pooled per role), on keras-hub's GPT-2 and a Functional ResNet without
normalization; `gpt2` against Hugging Face's own GPT2Model init; seeds and errors."""

import math

import keras
import numpy as np
import pytest
from scipy import stats

import keras_inits
from keras_inits.kernels import find_kernels
from keras_inits.schemes import Assignment, SchemePlan
from tests.plugin.util import ResidualBlock, hub_backbone

WIDTH, LAYERS, HEADS = 32, 3, 2
# Each GPT-2 kernel's (fan_in, fan_out), read from the layer's maths, not from the kernel:
# q, k, v map d -> heads x head_dim = d; the output projection heads x head_dim -> d.
FANS = {
    "query": (WIDTH, WIDTH), "key": (WIDTH, WIDTH), "value": (WIDTH, WIDTH),
    "attention_output": (WIDTH, WIDTH), "ffn_in": (WIDTH, 4 * WIDTH), "ffn_out": (4 * WIDTH, WIDTH),
}
OUTPUTS = ("attention_output", "ffn_out")
XAVIER = {role: math.sqrt(2 / sum(fans)) for role, fans in FANS.items()}
TRUNCATED = stats.truncnorm(-3, 3)  # OLMo's cut at 3 std, std 0.987


def gpt2_expected(scheme, role, layer, path):
    """(std, distribution) of one GPT-2 kernel under `scheme`, from the papers: None keeps
    the kernel, std 0 zeroes it."""
    d, n = WIDTH, LAYERS
    fan_in, fan_out = FANS.get(role, (None, d))
    if scheme in ("gpt2", "megatron"):
        return (0.02 / math.sqrt(2 * n) if role in OUTPUTS else 0.02), stats.norm
    if scheme == "fixup":  # outputs zero; v and ffn_in He fan_out x L^-1/2, L = 2n branches
        if role == "embedding":
            return None
        if role in OUTPUTS:
            return 0.0, None
        he = math.sqrt(2 / fan_out)
        return (he * (2 * n) ** -0.5 if role in ("value", "ffn_in") else he), stats.norm
    if scheme == "zero_branch":
        return (0.0, None) if role in OUTPUTS else None
    if scheme == "t_fixup":  # decoder: (9N)^-1/4; q, k at fairseq's gain 2^-1/2
        uniform = stats.uniform(-math.sqrt(3), 2 * math.sqrt(3))
        if role == "embedding":
            # fairseq: tokens N(0, d^-1/2) x (9N)^-1/4, times sqrt(d) in its forward pass;
            # learned positions N(0, d^-1/2), unscaled.
            return ((9 * n) ** -0.25 if "token" in path else d**-0.5), stats.norm
        if role in ("query", "key"):
            return XAVIER[role] / math.sqrt(2), uniform
        return XAVIER[role] * (9 * n) ** -0.25, uniform
    if scheme == "deepnet":
        if role == "embedding":
            return None
        beta = (8 * n) ** -0.25
        return XAVIER[role] * (1 if role in ("query", "key") else beta), stats.norm
    if scheme == "small_init":
        return math.sqrt(2 / (5 * d)), stats.norm
    if scheme == "mitchell":
        if role == "embedding":
            return d**-0.5, TRUNCATED
        if role in OUTPUTS:
            return (2 * fan_in * (layer + 1)) ** -0.5, TRUNCATED
        return fan_in**-0.5, TRUNCATED
    raise AssertionError(scheme)


def assert_drawn_from(values, std, distribution, what):
    """`values` / std follow `distribution` (standardized): KS p > 1e-3 and the sample std
    within 4 standard errors."""
    z = np.concatenate([np.ravel(v) / s for v, s in zip(values, std, strict=True)])
    scale = distribution.std()
    error = 4 / math.sqrt(2 * z.size)
    assert abs(np.std(z) / scale - 1) < error, f"{what}: std ratio {np.std(z) / scale:.3f}"
    assert stats.kstest(z, distribution.cdf).pvalue > 1e-3, what


def weights_by_path(model):
    found = keras_inits.roles(model)
    variables = {k.path: k for k in find_kernels(model)}
    return found, {
        k.path: keras.ops.convert_to_numpy(variables[k.path].variable) for k in found.kernels
    }


@pytest.fixture(scope="module")
def gpt2_backbone():
    return hub_backbone("GPT2Backbone", LAYERS, width=WIDTH, heads=HEADS)


# Mean-field theory's schemes are about activations, not roles: tests/plugin/test_critical.py.
@pytest.mark.parametrize(
    "scheme",
    [name for name in keras_inits.schemes.SCHEMES if name not in ("critical", "mean_field")],
)
def test_every_gpt2_kernel_follows_the_schemes_formula(gpt2_backbone, scheme):
    before = weights_by_path(gpt2_backbone)[1]
    keras_inits.reinitialize(gpt2_backbone, scheme=scheme, seed=1)
    found, after = weights_by_path(gpt2_backbone)
    groups = {}
    for kernel in found.kernels:
        expected = gpt2_expected(scheme, kernel.role, kernel.block, kernel.path)
        if expected is None:
            np.testing.assert_array_equal(after[kernel.path], before[kernel.path])
        elif expected[0] == 0:
            assert not np.any(after[kernel.path]), kernel.path
        else:
            group = groups.setdefault((kernel.role, expected[1]), ([], []))
            group[0].append(after[kernel.path])
            group[1].append(expected[0])
    assert groups or scheme == "zero_branch"
    for (role, distribution), (values, stds) in groups.items():
        assert_drawn_from(values, stds, distribution, f"{scheme} {role}")


def resnet(blocks=6, width=8):
    """A Functional ResNet without normalization: a stem, basic blocks (conv-relu-conv added
    to the stream), the middle one widening with a 1x1 projection shortcut, and a head."""
    x = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name="stem")(x)
    for index in range(blocks):
        widen = index == blocks // 2
        out = 2 * width if index >= blocks // 2 else width
        branch = keras.layers.Conv2D(out, 3, padding="same", activation="relu",
                                     name=f"block{index}_conv1")(h)
        branch = keras.layers.Conv2D(out, 3, padding="same", name=f"block{index}_conv2")(branch)
        shortcut = keras.layers.Conv2D(out, 1, name="projection")(h) if widen else h
        h = keras.layers.ReLU()(keras.layers.Add()([shortcut, branch]))
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(x, keras.layers.Dense(10, name="fc")(h))


@pytest.fixture(scope="module")
def resnet6():
    return resnet()


def test_fixup_on_a_resnet_without_normalization(resnet6):
    # hongyi-zhang/Fixup fixup_resnet_cifar.py: conv1 N(0, sqrt(2 / (out * k * k)) * L^-1/2),
    # conv2 and fc zero, the projection N(0, sqrt(2 / (out * k * k))).
    model, blocks = resnet6, 6
    report = keras_inits.reinitialize(model, scheme="fixup", seed=0)
    assert report.notes["residual branches"] == blocks
    weights = {k.path: keras.ops.convert_to_numpy(k.variable)
               for k in find_kernels(model)}
    for path in ["fc/kernel", *(f"block{i}_conv2/kernel" for i in range(blocks))]:
        assert not np.any(weights[path]), path
    scaled = [weights[f"block{i}_conv1/kernel"] for i in range(blocks)]
    stds = [math.sqrt(2 / (w.shape[-1] * 9)) / math.sqrt(blocks) for w in scaled]
    assert_drawn_from(scaled, stds, stats.norm, "conv1")
    unscaled = [weights["stem/kernel"], weights["projection/kernel"]]
    stds = [math.sqrt(2 / (8 * 9)), math.sqrt(2 / 16)]
    assert_drawn_from(unscaled, stds, stats.norm, "stem and projection")


def test_a_resnets_branch_outputs_are_the_ones_zero_branch_zeroes(resnet6):
    model = resnet6
    before = {w.path: keras.ops.convert_to_numpy(w) for w in model.weights}
    report = keras_inits.reinitialize(model, scheme="zero_branch")
    written = {row["path"] for row in report.rows if row["weight"] == "kernel"}
    assert written == {f"block{i}_conv2" for i in range(6)}
    for weight in model.weights:
        value = keras.ops.convert_to_numpy(weight)
        if "conv2" in weight.path:
            assert not np.any(value)
        else:
            np.testing.assert_array_equal(value, before[weight.path])
    # An identity at init: each block passes its input through (relu of a relu output).
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    stream = keras.Model(model.input, model.get_layer("block0_conv2").output)
    assert not np.any(keras.ops.convert_to_numpy(stream(x)))


def test_gpt2_matches_hugging_faces_gpt2_role_by_role():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    width, layers = 64, 4
    torch.manual_seed(0)
    reference = transformers.GPT2Model(transformers.GPT2Config(
        n_layer=layers, n_embd=width, n_head=HEADS, vocab_size=64, n_positions=8,
    ))
    theirs = {"embedding": [], "query, key, value": [], "attention_output": [],
              "ffn_in": [], "ffn_out": []}
    for name, parameter in reference.named_parameters():
        values = parameter.detach().numpy().ravel()
        if name in ("wte.weight", "wpe.weight"):
            theirs["embedding"].append(values)
        elif name.endswith("attn.c_attn.weight"):
            theirs["query, key, value"].append(values)
        elif name.endswith("attn.c_proj.weight"):
            theirs["attention_output"].append(values)
        elif name.endswith("mlp.c_fc.weight"):
            theirs["ffn_in"].append(values)
        elif name.endswith("mlp.c_proj.weight"):
            theirs["ffn_out"].append(values)
    backbone = hub_backbone("GPT2Backbone", layers, width=width, heads=HEADS)
    keras_inits.reinitialize(backbone, scheme="gpt2", seed=0)
    found, weights = weights_by_path(backbone)
    ours = {group: [] for group in theirs}
    for kernel in found.kernels:
        group = "query, key, value" if kernel.role in ("query", "key", "value") else kernel.role
        ours[group].append(weights[kernel.path].ravel())
    for group in theirs:
        a, b = np.concatenate(ours[group]), np.concatenate(theirs[group])
        assert a.size == b.size, group  # the same depth and width
        assert stats.ks_2samp(a, b).pvalue > 1e-3, group
        error = 4 * math.sqrt(1 / (2 * a.size) + 1 / (2 * b.size))
        assert abs(np.std(a) / np.std(b) - 1) < error, (group, np.std(a), np.std(b))


def test_a_scheme_zeroes_the_biases_of_the_layers_it_writes_and_keeps_the_rest(gpt2_backbone):
    for weight in gpt2_backbone.weights:
        weight.assign(np.ones(weight.shape, dtype="float32"))
    report = keras_inits.reinitialize(gpt2_backbone, scheme="deepnet", seed=0)
    assert report.notes["alpha"] == pytest.approx((2 * LAYERS) ** 0.25)
    assert report.notes["beta"] == pytest.approx((8 * LAYERS) ** -0.25)
    for weight in gpt2_backbone.weights:
        value = keras.ops.convert_to_numpy(weight)
        if weight.name == "bias" and "layer_norm" not in weight.path:
            assert not np.any(value), weight.path
        elif "embedding" in weight.path or "layer_norm" in weight.path:
            assert np.all(value == 1), weight.path  # kept: DeepNet does not specify them


def test_the_same_seed_gives_the_same_weights_on_a_rebuilt_model():
    def weights(seed):
        model = resnet(blocks=2)
        keras_inits.reinitialize(model, scheme="gpt2", seed=seed)
        return [keras.ops.convert_to_numpy(w) for w in model.weights]

    first, again, other = weights(3), weights(3), weights(4)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other, strict=True) if np.any(a))


def test_your_own_blocks_by_a_roles_mapping_and_your_own_scheme():
    x = keras.Input((8,))
    model = keras.Model(x, ResidualBlock(8, name="block_1")(ResidualBlock(8, name="block_0")(x)))
    mapping = {"block_*/proj/kernel": "branch_output", "block_*/inner/kernel": "branch_inner"}
    report = keras_inits.reinitialize(model, scheme="gpt2", roles=mapping, sigma=0.5, seed=0)
    assert report.notes == {"sigma": 0.5, "residual outputs": 2}
    assert [row["initializer"] for row in report.rows if row["weight"] == "kernel"] == [
        "sigma = N(0, 0.5)", "sigma/sqrt(2) = N(0, 0.3536)"
    ] * 2

    def halve_outputs(found, *, scale=0.5):
        return SchemePlan(
            {k.path: Assignment(keras.initializers.Constant(scale), "constant")
             for k in found.of("branch_output")},
            {"scale": scale},
        )

    report = keras_inits.reinitialize(model, scheme=halve_outputs, roles=mapping, scale=0.25)
    assert report.scheme == "halve_outputs" and len(report) == 4  # two kernels, two biases
    assert np.all(keras.ops.convert_to_numpy(model.get_layer("block_0").proj.kernel) == 0.25)


@pytest.mark.parametrize(
    ("model", "arguments", "error", "message"),
    [
        ("resnet", {}, ValueError, "Give an initializer .* or scheme="),
        ("resnet", {"initializer": "he_normal", "scheme": "gpt2"}, ValueError, "not both"),
        ("resnet", {"initializer": "he_normal", "sigma": 1}, TypeError, "sigma without scheme="),
        ("resnet", {"scheme": "gtp2"}, ValueError, "Unknown scheme 'gtp2'"),
        ("resnet", {"scheme": "gpt2", "std": 0.02}, TypeError,
         "takes no parameter std; it takes branches, sigma"),
        ("mlp", {"scheme": "fixup"}, ValueError, "fixup scales attention_output or ffn_out or "
         "branch_output kernels, and none was found in this model \\(found: 1 other\\)"),
        ("resnet", {"scheme": "deepnet"}, ValueError, "deepnet scales attention_output kernels"),
        ("resnet", {"scheme": "gpt2", "sigma": -1}, ValueError, "sigma must be finite and > 0"),
        ("gpt2", {"scheme": "t_fixup", "layers": 0}, ValueError, "layers must be a positive int"),
        ("gpt2", {"scheme": "t_fixup", "stack": "middle"}, ValueError, "Unknown stack='middle'"),
        ("resnet", {"scheme": 3}, TypeError, "scheme must be a name"),
    ],
)
def test_bad_requests_are_told_in_one_line(request, model, arguments, error, message):
    if model == "mlp":
        built = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    else:
        built = request.getfixturevalue({"resnet": "resnet6", "gpt2": "gpt2_backbone"}[model])
    with pytest.raises(error, match=message):
        keras_inits.reinitialize(built, **arguments)


def test_fixup_scales_a_bottleneck_by_its_depth_and_zeroes_only_the_last_head_kernel():
    # Zhang et al. 2019: L^(-1/(2m-2)); m = 3 kernels per branch gives L^(-1/4).
    x = keras.Input((64,))
    h = keras.layers.Dense(64, name="stem")(x)
    blocks = 4
    for index in range(blocks):
        b = keras.layers.Dense(64, activation="relu", name=f"b{index}_1")(h)
        b = keras.layers.Dense(64, activation="relu", name=f"b{index}_2")(b)
        h = keras.layers.Add()([h, keras.layers.Dense(64, name=f"b{index}_3")(b)])
    h = keras.layers.Dense(64, activation="relu", name="fc1")(h)
    model = keras.Model(x, keras.layers.Dense(10, name="fc2")(h))
    keras_inits.reinitialize(model, scheme="fixup", mode="fan_in", seed=0)
    weight = {layer.name: keras.ops.convert_to_numpy(layer.kernel)
              for layer in model.layers if hasattr(layer, "kernel")}
    inner = [weight[f"b{i}_{j}"] for i in range(blocks) for j in (1, 2)]
    he = math.sqrt(2 / 64)
    assert_drawn_from(inner, [he * blocks**-0.25] * len(inner), stats.norm, "inner")
    assert_drawn_from([weight["fc1"], weight["stem"]], [he, he], stats.norm, "fc1 and stem")
    assert not np.any(weight["fc2"]) and all(not np.any(weight[f"b{i}_3"]) for i in range(4))


def test_t_fixup_on_an_encoder_and_small_init_at_the_stream_width():
    bert = hub_backbone("BertBackbone", LAYERS, width=WIDTH, heads=HEADS)
    report = keras_inits.reinitialize(bert, scheme="t_fixup", seed=0)
    assert report.notes["stack"] == "encoder"
    scale = 0.67 * LAYERS**-0.25  # Huang et al. 2020, Algorithm 2, step 3
    found, weights = weights_by_path(bert)
    uniform = stats.uniform(-math.sqrt(3), 2 * math.sqrt(3))
    values = [weights[k.path] for k in found.of("value", "attention_output", "ffn_in", "ffn_out")]
    stds = [XAVIER[k.role] * scale
            for k in found.of("value", "attention_output", "ffn_in", "ffn_out")]
    assert_drawn_from(values, stds, uniform, "encoder branches")
    # An embedding narrower than the stream: small_init's d is the stream's width.
    x = keras.Input((8,), dtype="int32")
    h = keras.layers.Dense(64, name="up")(keras.layers.Embedding(100, 16)(x))
    for index in range(2):
        h = keras.layers.Add()([h, keras.layers.Dense(64, name=f"branch{index}")(h)])
    report = keras_inits.reinitialize(keras.Model(x, h), scheme="small_init", seed=0)
    assert report.notes["width"] == 64


def test_a_model_with_encoder_and_decoder_layers_is_taken_one_stack_at_a_time():
    keras_hub = pytest.importorskip("keras_hub")
    source, target = keras.Input((8, 16)), keras.Input((8, 16))
    encoded = keras_hub.layers.TransformerEncoder(32, 2, name="encoder")(source)
    decoded = keras_hub.layers.TransformerDecoder(32, 2, name="decoder")(target, encoded)
    model = keras.Model([source, target], decoded)
    for scheme in ("t_fixup", "deepnet"):
        with pytest.raises(ValueError, match=f"{scheme} takes one stack at a time"):
            keras_inits.reinitialize(model, scheme=scheme)
    report = keras_inits.reinitialize(
        model, scheme="t_fixup", stack="encoder", layers=1, include="encoder", seed=0
    )
    assert {row["path"].split("/")[0] for row in report.rows} == {"encoder"}
