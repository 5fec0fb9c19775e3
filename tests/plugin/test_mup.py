"""keras_inits.mup: the parametrization against Microsoft's reference (`mup` 1.0.0 on torch),
muP at the base width against the standard parametrization, saving, and bad input."""

import math

import keras
import numpy as np
import pytest

from keras_inits import mup as kmup

BASE, WIDTH = 64, 256
# torch.nn.Linear's default init: U(+-1/sqrt(fan_in)), Var = 1/(3 fan_in), for both models.
TORCH_DEFAULT = keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform", seed=0)
needs_multi_optimizer = pytest.mark.skipif(
    not hasattr(keras.optimizers, "MultiOptimizer"),
    reason="keras.optimizers.MultiOptimizer came with Keras 3.15",
)


def mlp(width, torch_biases=False, readout=kmup.Readout):
    """32 -> width -> width -> 10, drawn as torch.nn.Linear draws (biases U(+-1/sqrt(fan_in))
    with `torch_biases`, else zero as Keras's)."""

    def dense(units, fan_in, name, activation=None, layer=keras.layers.Dense):
        bound = fan_in**-0.5
        bias = keras.initializers.RandomUniform(-bound, bound) if torch_biases else "zeros"
        return layer(units, activation, kernel_initializer=TORCH_DEFAULT, bias_initializer=bias,
                     name=name)

    return keras.Sequential([
        keras.Input((32,)), dense(width, 32, "inp", "relu"), dense(width, width, "hid", "relu"),
        dense(10, width, "out", layer=readout),
    ])


def test_kinds_and_multipliers_equal_microsoft_mups():
    torch = pytest.importorskip("torch")
    mup = pytest.importorskip("mup")

    class TorchMLP(torch.nn.Module):
        def __init__(self, width):
            super().__init__()
            self.inp = torch.nn.Linear(32, width)
            self.hid = torch.nn.Linear(width, width)
            self.out = mup.MuReadout(width, 10)

    torch.manual_seed(0)
    reference = TorchMLP(WIDTH)
    mup.set_base_shapes(reference, TorchMLP(BASE))
    names = {"inp.weight": "inp/kernel", "inp.bias": "inp/bias", "hid.weight": "hid/kernel",
             "hid.bias": "hid/bias", "out.weight": "out/kernel", "out.bias": "out/bias"}
    theirs = {}
    for optimizer, column in ((mup.MuAdam, "adam"), (mup.MuSGD, "sgd")):
        for group in optimizer(reference.parameters(), lr=1.0, weight_decay=0.5).param_groups:
            for parameter in group["params"]:
                name = next(n for n, p in reference.named_parameters() if p is parameter)
                theirs[names[name], column] = (group["lr"], group["weight_decay"] / 0.5)
    report = kmup.parametrize(mlp(WIDTH), mlp(BASE))
    ours = {}
    for weight in report.weights:
        ours[weight.path, "adam"] = (weight.adam_lr, weight.adam_decay)
        ours[weight.path, "sgd"] = (weight.sgd_lr, weight.sgd_decay)
    assert ours == theirs  # powers of two: exact
    assert [(w.path, w.kind, w.width_mult) for w in report.weights] == [
        ("inp/kernel", "input", 4.0), ("inp/bias", "vector", 4.0),
        ("hid/kernel", "hidden", 4.0), ("hid/bias", "vector", 4.0),
        ("out/kernel", "output", 4.0), ("out/bias", "fixed", 1.0),
    ]
    # The same draw in both (torch's default init): after set_base_shapes / parametrize every
    # weight's std agrees with mup's, torch's biases (U(+-1/sqrt(fan_in))) included.
    model = mlp(WIDTH, torch_biases=True)
    kmup.parametrize(model, mlp(BASE))
    for torch_name, path in names.items():
        theirs = dict(reference.named_parameters())[torch_name].detach().numpy()
        layer, weight = path.split("/")
        ours = keras.ops.convert_to_numpy(getattr(model.get_layer(layer), weight))
        if path == "out/bias":
            # 10 values: too few for a std. Both are U(+-1/sqrt(256)) times sqrt(4), so their
            # largest |value| lies between the unscaled bound and the scaled one.
            for values in (ours, theirs):
                assert 1 / 16 < np.abs(values).max() <= 2 / 16
            continue
        assert np.std(ours) == pytest.approx(np.std(theirs), rel=0.12), path


def test_the_read_out_is_scaled_so_its_output_does_not_grow_with_the_width():
    # Readout: x * output_mult / width_mult @ (W * sqrt(width_mult)): the logits' scale is the
    # base model's whatever the width (SP's would grow as sqrt(width_mult) on these inputs).
    x = np.random.default_rng(0).normal(size=(512, 32)).astype("float32")
    stds = {}
    for width in (BASE, 4 * BASE, 16 * BASE):
        model = mlp(width)
        kmup.parametrize(model, mlp(BASE), delta_model=mlp(2 * BASE))
        stds[width] = float(np.std(keras.ops.convert_to_numpy(model(x))))
    # Without muP the hidden layer's output is O(1) per coordinate and the read-out's fan_in
    # grows: its std would grow 4x from 64 to 1,024. Under muP it shrinks as 1/sqrt(width_mult).
    assert stds[16 * BASE] / stds[BASE] == pytest.approx(0.25, rel=0.2)
    zero = mlp(WIDTH)
    report = kmup.parametrize(zero, mlp(BASE), readout_zero_init=True)
    assert not np.any(keras.ops.convert_to_numpy(zero.get_layer("out").kernel))
    assert [w.init_scale for w in report.of("output")] == [0.0]


@needs_multi_optimizer
@pytest.mark.parametrize("optimizer", [
    lambda: keras.optimizers.Adam(0.01), lambda: keras.optimizers.SGD(0.05, momentum=0.9),
])
def test_at_the_base_width_mup_is_the_standard_parametrization(optimizer):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 32)).astype("float32")
    y = rng.integers(0, 10, size=64)
    keras.utils.set_random_seed(0)
    standard = mlp(BASE)
    keras.utils.set_random_seed(0)
    mu = mlp(BASE)
    report = kmup.parametrize(mu, mlp(BASE), delta_model=mlp(2 * BASE))
    assert [w.kind for w in report.weights] == [
        "input", "vector", "hidden", "vector", "output", "fixed"
    ]
    assert {(w.init_scale, w.adam_lr, w.sgd_lr) for w in report.weights} == {(1.0, 1.0, 1.0)}
    for a, b in zip(standard.weights, mu.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    standard.compile(optimizer(), loss)
    mu.compile(kmup.optimizer(mu, optimizer()), loss)
    for model in (standard, mu):
        model.fit(x, y, batch_size=16, epochs=5, shuffle=False, verbose=0)  # 20 steps
    for a, b in zip(standard.weights, mu.weights, strict=True):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b),
                                   rtol=1e-5, atol=1e-6)


@needs_multi_optimizer
def test_each_weight_gets_its_learning_rate_and_decay():
    model = mlp(WIDTH)
    kmup.parametrize(model, mlp(BASE))
    adamw = kmup.optimizer(model, keras.optimizers.AdamW(0.01, weight_decay=0.1))
    model.compile(adamw, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(np.ones((4, 32), "float32"), np.zeros(4, "int32"), verbose=0)
    rates = {}
    for inner in adamw.optimizers:
        for variable in inner._trainable_variables:
            rates[variable.name if "hid" not in variable.path else "hid/" + variable.name] = (
                float(keras.ops.convert_to_numpy(inner.learning_rate)), inner.weight_decay)
    assert rates["hid/kernel"] == pytest.approx((0.01 / 4, 0.1 * 4))
    assert rates["hid/bias"] == pytest.approx((0.01, 0.1))
    schedule = keras.optimizers.schedules.ExponentialDecay(0.01, 10, 0.5)
    scaled = kmup.optimizer(model, keras.optimizers.Adam(schedule))
    hidden = [inner for inner in scaled.optimizers
              if isinstance(inner._learning_rate, kmup.ScaledSchedule)]
    rate = float(keras.ops.convert_to_numpy(hidden[0]._learning_rate(20)))
    assert len(hidden) == 1 and rate == pytest.approx(0.01 / 4 / 4)  # 2 halvings, then / 4


def test_optimizer_groups_cover_every_weight_once_with_its_multiplier():
    model = mlp(WIDTH)
    report = kmup.parametrize(model, mlp(BASE))
    groups = kmup.optimizer_groups(model, keras.optimizers.SGD(0.1, momentum=0.9))
    given = [id(variable) for _, variables, _ in groups for variable in variables]
    assert sorted(given) == sorted(id(v) for v in model.trainable_variables)
    expected = {id(weight.variable): 0.1 * weight.sgd_lr for weight in report.weights}
    for copy, variables, plain in groups:
        rate = float(keras.ops.convert_to_numpy(copy.learning_rate))
        assert copy.momentum == 0.9 and plain == (rate == pytest.approx(0.1))
        for variable in variables:
            assert rate == pytest.approx(expected[id(variable)])
    assert len({round(rate, 9) for rate in expected.values()}) == len(groups)


def test_the_readout_saves_and_reloads_with_its_multiplier(tmp_path):
    model = mlp(WIDTH)
    kmup.parametrize(model, mlp(BASE))
    model.save(tmp_path / "mup.keras")
    loaded = keras.saving.load_model(tmp_path / "mup.keras")
    assert loaded.get_layer("out").width_mult == 4.0
    x = np.ones((2, 32), "float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)),
                               keras.ops.convert_to_numpy(model(x)), rtol=1e-6)


def transformer(width, attention=kmup.MultiHeadAttention):
    tokens = keras.Input((8,), dtype="int32")
    x = keras.layers.Embedding(50, width, name="embed")(tokens)
    # He kernels: Keras 3.7's glorot_uniform on these 3-D kernels does not scale as 1/fan_in.
    x = attention(4, width // 4, kernel_initializer="he_normal", name="attention")(x, x)
    outputs = kmup.Readout(50, name="head")(x)
    return keras.Model(tokens, outputs)


def test_attention_projections_are_hidden_and_embeddings_input():
    report = kmup.parametrize(transformer(64), transformer(16))
    kinds = {w.path: w.kind for w in report.weights if "kernel" in w.path or "embed" in w.path}
    assert kinds == {
        "embed/embeddings": "input", "attention/query/kernel": "hidden",
        "attention/key/kernel": "hidden", "attention/value/kernel": "hidden",
        "attention/attention_output/kernel": "hidden", "head/kernel": "output",
    }
    assert report.of("hidden")[0].adam_lr == pytest.approx(1 / 4)


def test_attention_logits_are_divided_by_the_head_size_matched_at_the_base():
    # muP's q.k sqrt(d_base) / d is plain Keras's q.k / sqrt(d) with the query scaled by
    # sqrt(d_base / d): checked against a plain MultiHeadAttention whose query kernel and
    # bias are so scaled.
    model = transformer(64)  # head size 16
    kmup.parametrize(model, transformer(16))  # base head size 4
    ours = model.get_layer("attention")
    assert ours.base_key_dim == 4
    plain = keras.layers.MultiHeadAttention(4, 16)
    x = np.random.default_rng(0).normal(size=(2, 8, 64)).astype("float32")
    plain(x, x)
    for mine, theirs in zip(ours.weights, plain.weights, strict=True):
        theirs.assign(keras.ops.convert_to_numpy(mine))
    factor = math.sqrt(4 / 16)
    for weight in plain._query_dense.weights:
        weight.assign(keras.ops.convert_to_numpy(weight) * factor)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ours(x, x)),
                               keras.ops.convert_to_numpy(plain(x, x)), rtol=1e-4, atol=1e-5)
    # At the base width it is the plain layer; a saved model keeps its base head size.
    base = transformer(16)
    kmup.parametrize(base, transformer(16), delta_model=transformer(32))
    assert base.get_layer("attention")._inverse_sqrt_key_dim == pytest.approx(0.5)
    config = ours.get_config()
    assert kmup.MultiHeadAttention.from_config(config)._inverse_sqrt_key_dim == pytest.approx(
        math.sqrt(4) / 16
    )


def test_a_plain_attention_whose_heads_widen_is_refused():
    def plain(width):
        return transformer(width, attention=keras.layers.MultiHeadAttention)

    with pytest.raises(ValueError, match="attention: its head size grows with the width"):
        kmup.parametrize(plain(64), plain(16))


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: (mlp(WIDTH), None), TypeError, "base_model must be a built Keras model"),
        (lambda: (mlp(WIDTH), mlp(WIDTH)), ValueError, "No weight differs in shape between "
         "base_model and the model, so no axis is a width"),
        (lambda: (mlp(WIDTH), keras.Sequential([keras.Input((32,)), keras.layers.Dense(10)])),
         ValueError, "base_model must be the model's architecture at another width"),
        (lambda: (mlp(WIDTH, readout=keras.layers.Dense), mlp(BASE, readout=keras.layers.Dense)),
         ValueError, "out/kernel: fan_in grows with the width but fan_out does not"),
    ],
)
def test_bad_input_is_told_in_one_line(make, error, message):
    model, base = make()
    with pytest.raises(error, match=message):
        kmup.parametrize(model, base)


def test_a_second_parametrize_and_an_unknown_optimizer_are_refused():
    model = mlp(WIDTH)
    report = kmup.parametrize(model, mlp(BASE))
    assert kmup.multipliers(report)["hid/kernel"] == 0.25
    assert kmup.multipliers(report, "sgd")["inp/kernel"] == 4.0
    with pytest.raises(ValueError, match="optimizer_kind must be 'adam' or 'sgd'"):
        kmup.multipliers(report, "lamb")
    with pytest.raises(ValueError, match="parametrized already"):
        kmup.parametrize(model, mlp(BASE))
    with pytest.raises(ValueError, match="Lamb updates a weight"):
        kmup.optimizer(model, keras.optimizers.Lamb())
    with pytest.raises(ValueError, match="has no muP shapes"):
        kmup.optimizer(mlp(WIDTH), keras.optimizers.Adam())


def he_mlp(width):
    """32 -> width -> width -> 10 with fan_in (He) kernels, as muP's input and hidden weights
    need them."""
    return keras.Sequential([
        keras.Input((32,)),
        keras.layers.Dense(width, "relu", kernel_initializer="he_normal"),
        keras.layers.Dense(width, "relu", kernel_initializer="he_normal"),
        kmup.Readout(10, kernel_initializer="he_normal"),
    ])


@needs_multi_optimizer
def test_the_coordinate_check_is_flat_under_mup_and_grows_under_sp(tmp_path):
    # Widths 256 and 1,024, Adam at 0.01 on one repeated batch, 3 steps (step 1: at init),
    # averaged over 3 seeds as mup's check averages its nseeds (one draw at width 256 is
    # noisy: seed 0 alone reaches 1.22 on one backend). Measured under muP: every ratio
    # (wide / narrow mean |activation|) within 1.05 of 1; under SP (seed 0) the second hidden
    # layer grows 2.4x and the logits 9x after the first update.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 32)).astype("float32")
    y = rng.integers(0, 10, size=64)
    check = kmup.coord_check(he_mlp, [256, 1024], x, y, keras.optimizers.Adam(0.01),
                             readout_zero_init=True, seeds=(0, 1, 2))
    assert check.values.shape == (2, 3, 3) and len(check.rows()) == 18
    ratios = check.ratios()
    assert np.all(np.maximum(ratios, 1 / ratios) <= 1.2), ratios
    standard = kmup.coord_check(he_mlp, [256, 1024], x, y, keras.optimizers.Adam(0.01),
                                parametrization="sp")
    grown = standard.ratios()[1:]  # after the first update
    assert grown[:, -1].min() > 3 and grown[:, 1].min() > 1.5, grown
    assert standard.slopes()[1:, -1].min() > 0.8  # logits ~ width^1 under Adam, SP
    pytest.importorskip("matplotlib")
    assert check.plot(tmp_path / "coord.png").stat().st_size > 0


def test_coord_check_bad_input():
    x, y = np.zeros((4, 32), "float32"), np.zeros(4, "int32")
    adam = keras.optimizers.Adam()
    with pytest.raises(ValueError, match="at least two different widths"):
        kmup.coord_check(he_mlp, [64, 64], x, y, adam)
    with pytest.raises(ValueError, match="parametrization must be 'mup' or 'sp'"):
        kmup.coord_check(he_mlp, [64, 128], x, y, adam, parametrization="ntk")
    with pytest.raises(ValueError, match="steps must be a positive int"):
        kmup.coord_check(he_mlp, [64, 128], x, y, adam, steps=0)
    with pytest.raises(ValueError, match="seeds must hold at least one seed"):
        kmup.coord_check(he_mlp, [64, 128], x, y, adam, seeds=())


def test_a_draw_that_scales_with_fan_out_is_warned_about():
    def glorot(width):
        return keras.Sequential([
            keras.Input((32,)), keras.layers.Dense(width, name="inp"), kmup.Readout(10),
        ])

    with pytest.warns(UserWarning, match=r"inp/kernel \(input: std 0.\d\dx muP's\)"):
        kmup.parametrize(glorot(1024), glorot(64))
