"""`diagnose`: its numbers against an independent torch autodiff, its verdicts, its output
formats, the model kinds it takes and its errors."""

import json

import keras
import numpy as np
import pytest
import torch

import keras_inits
from keras_inits.diagnosis import _MIN_DEPTH, THRESHOLDS, find_verdicts
from tests.plugin.util import ResidualSubclassed

# The keys `Diagnosis.layers` documents.
LAYER_KEYS = {
    "name", "path", "layout", "activation", "output_mean", "output_std", "output_size",
    "gradient_std", "weight_gradient_std", "weight_std", "saturated_fraction", "dead_fraction",
    "role", "block",
}
# What mean-field theory adds to each layer of a chain-like model (keras_inits.prediction).
PREDICTED_KEYS = {
    "predicted_q", "predicted_std", "gradient_ratio", "predicted_gradient_ratio",
    "predicted_gradient_std",
}
# One width and batch for the small models: under JAX every new shape costs a compilation.
WIDTH, BATCH = 16, 32
EPSILON = keras.config.epsilon()

def numpy(value):
    return np.asarray(keras.ops.convert_to_numpy(value))


def normal(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def weights_of(model):
    return [numpy(w).copy() for w in model.weights]


def rows_by_name(diagnosis):
    return {row["name"]: row for row in diagnosis.layers}


def kinds(diagnosis):
    return [verdict.kind for verdict in diagnosis.verdicts]


def verdict(diagnosis, kind):
    (found,) = [v for v in diagnosis.verdicts if v.kind == kind]
    return found


# --- Gradients against torch.autograd ----------------------------------------------------

ACTIVATIONS = {"tanh": torch.tanh, "softmax": lambda a: torch.softmax(a, dim=-1)}


@pytest.fixture(scope="module")
def tanh_mlp():
    layers = [keras.layers.Dense(WIDTH, activation="tanh") for _ in range(4)]
    layers.append(keras.layers.Dense(WIDTH, activation="softmax"))
    model = keras.Sequential([keras.Input((WIDTH,)), *layers])
    x = normal((BATCH, WIDTH), seed=1)
    y = np.random.default_rng(2).integers(0, WIDTH, size=BATCH)
    return model, x, y


def torch_reference(model, x, loss_of):
    """The forward pass redone in float64 torch from the kernels, and torch.autograd's
    gradients of `loss_of(output)` with respect to each layer's output and kernel."""
    h = torch.from_numpy(x.astype("float64"))
    outputs, kernels = [], []
    for layer in model.layers:
        kernel = torch.tensor(numpy(layer.kernel), dtype=torch.float64, requires_grad=True)
        bias = torch.tensor(numpy(layer.bias), dtype=torch.float64)
        h = ACTIVATIONS[keras.activations.serialize(layer.activation)](h @ kernel + bias)
        h.retain_grad()
        outputs.append(h)
        kernels.append(kernel)
    loss = loss_of(h)
    loss.backward()
    return {
        "loss": loss.item(),
        "output_mean": [o.detach().numpy().mean() for o in outputs],
        "output_std": [o.detach().numpy().std() for o in outputs],
        "gradient_std": [o.grad.numpy().std() for o in outputs],
        "weight_gradient_std": [k.grad.numpy().std() for k in kernels],
        "weight_std": [k.detach().numpy().std() for k in kernels],
        "saturated_fraction": [
            (np.abs(o.detach().numpy()) > 0.9).mean() for o in outputs[:-1]
        ] + [None],
    }


def assert_matches(diagnosis, reference, loss_rtol=1e-5, loss_atol=0.0):
    rows = diagnosis.layers
    for key in ("output_mean", "output_std", "gradient_std", "weight_gradient_std",
                "weight_std"):
        np.testing.assert_allclose(
            [row[key] for row in rows], reference[key], rtol=1e-4, atol=1e-7, err_msg=key
        )
    for row, expected in zip(rows, reference["saturated_fraction"], strict=True):
        if expected is None:
            assert row["saturated_fraction"] is None
        else:
            assert row["saturated_fraction"] == pytest.approx(expected, abs=1e-6)
        assert row["dead_fraction"] is None
    assert diagnosis.loss == pytest.approx(reference["loss"], rel=loss_rtol, abs=loss_atol)


def test_gradients_with_y_equal_torch_autograd(tanh_mlp):
    model, x, y = tanh_mlp
    diagnosis = keras_inits.diagnose(model, x, y, loss="sparse_categorical_crossentropy")
    assert not diagnosis.surrogate
    assert [row["name"] for row in diagnosis.layers] == [layer.name for layer in model.layers]

    def cross_entropy(probabilities):
        # Keras's crossentropy on probabilities: renormalized, clipped, mean over the batch.
        p = probabilities / probabilities.sum(dim=-1, keepdim=True)
        p = p.clamp(EPSILON, 1 - EPSILON)
        return -torch.log(p[torch.arange(len(y)), torch.from_numpy(y)]).mean()

    assert_matches(diagnosis, torch_reference(model, x, cross_entropy))


def test_surrogate_gradients_equal_torch_autograd(tanh_mlp):
    model, x, _ = tanh_mlp
    diagnosis = keras_inits.diagnose(model, x)
    assert diagnosis.surrogate
    # The documented surrogate: sum(output * g) / batch, g ~ N(0, 1) from default_rng(0).
    g = np.random.default_rng(0).standard_normal((BATCH, WIDTH)).astype("float32")
    reference = torch_reference(
        model, x, lambda out: (out * torch.from_numpy(g.astype("float64"))).sum() / len(x)
    )
    # The surrogate loss is a sum of terms of both signs (about 0.8 in magnitude together)
    # that may cancel to a far smaller value, whose float32 round-off then depends on the
    # order of the reduction: it is compared to within a millionth of the terms' magnitude.
    magnitude = float(np.abs(numpy(model(x)) * g).sum() / len(x))
    assert_matches(diagnosis, reference, loss_rtol=1e-4, loss_atol=1e-6 * magnitude)
    # At the output itself the gradient is g / batch exactly.
    assert diagnosis.layers[-1]["gradient_std"] == pytest.approx(g.std() / len(x), rel=1e-5)


# --- Activations against intermediate models ---------------------------------------------


def test_cnn_output_stats_equal_intermediate_model_predictions():
    inputs = keras.Input((8, 8, 8))
    a = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_relu")(inputs)
    b = keras.layers.Conv2D(8, 3, padding="same", activation="tanh", name="conv_tanh")(a)
    pooled = keras.layers.GlobalAveragePooling2D()(b)
    outputs = keras.layers.Dense(8, name="head")(pooled)
    model = keras.Model(inputs, outputs)
    x = normal((8, 8, 8, 8), seed=3)
    y = normal((8, 8), seed=4)
    diagnosis = keras_inits.diagnose(model, x, y, loss="mse")
    rows = rows_by_name(diagnosis)
    assert list(rows) == ["conv_relu", "conv_tanh", "head"]
    assert [row["output_size"] for row in rows.values()] == [8 * 8 * 8, 8 * 8 * 8, 8]
    for name, row in rows.items():
        layer = model.get_layer(name)
        value = numpy(keras.Model(model.input, layer.output)(x))
        assert row["output_std"] == pytest.approx(value.std(), rel=1e-5)
        assert row["output_mean"] == pytest.approx(value.mean(), rel=1e-4, abs=1e-6)
    relu = numpy(keras.Model(model.input, a)(x))
    never_active = (relu.reshape(-1, 8).max(axis=0) <= 0).mean()
    assert rows["conv_relu"]["dead_fraction"] == pytest.approx(never_active)
    tanh = numpy(keras.Model(model.input, b)(x))
    assert rows["conv_tanh"]["saturated_fraction"] == pytest.approx((np.abs(tanh) > 0.9).mean())


# --- Verdicts ----------------------------------------------------------------------------


def deep_relu(initializer, seed=0, depth=30, width=64):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((width,))]
        + [
            keras.layers.Dense(width, activation="relu", kernel_initializer=initializer)
            for _ in range(depth)
        ]
    )


def assert_verdicts_name_their_layers(diagnosis):
    as_dict = diagnosis.to_dict()
    assert as_dict["verdicts"] == [v.message for v in diagnosis.verdicts]
    assert all(isinstance(message, str) for message in as_dict["verdicts"])
    known = {row["name"] for row in diagnosis.layers}
    for found, message in zip(diagnosis.verdicts, as_dict["verdicts"], strict=True):
        assert found.layers and set(found.layers) <= known
        assert str(found) == message
        for name in found.layers:
            assert name in message, (name, message)


@pytest.fixture(scope="module")
def relu_batch():
    return normal((64, 64), seed=5), normal((64, 64), seed=6)


def test_xavier_on_a_deep_relu_mlp_vanishes(relu_batch):
    x, y = relu_batch
    model = deep_relu("xavier_normal")
    diagnosis = keras_inits.diagnose(model, x, y, loss="mse")
    found = verdict(diagnosis, "vanishing_activations")
    assert found.layers == (model.layers[0].name, model.layers[-1].name)
    assert "exploding_activations" not in kinds(diagnosis)
    rows = diagnosis.layers
    assert rows[-1]["output_std"] < rows[0]["output_std"] / 10
    assert_verdicts_name_their_layers(diagnosis)


def test_kaiming_on_a_deep_relu_mlp_keeps_the_scale(relu_batch):
    x, y = relu_batch
    # At width 64 the last/first std ratio of a Kaiming draw spreads over ~0.1-2.5 from
    # seed to seed (each backend draws its own numbers); seed 6 is a typical draw on all three.
    diagnosis = keras_inits.diagnose(deep_relu("kaiming_normal", seed=6), x, y, loss="mse")
    assert not {"vanishing_activations", "exploding_activations"} & set(kinds(diagnosis))
    rows = diagnosis.layers
    assert 1 / 10 < rows[-1]["output_std"] / rows[0]["output_std"] < 10


def test_wide_tanh_with_unit_normal_weights_saturates():
    keras.utils.set_random_seed(0)
    init = keras.initializers.RandomNormal(stddev=1.0)
    model = keras.Sequential(
        [keras.Input((256,))]
        + [keras.layers.Dense(256, activation="tanh", kernel_initializer=init) for _ in range(3)]
    )
    x = normal((32, 256), seed=7)
    diagnosis = keras_inits.diagnose(model, x, normal((32, 256), seed=8), loss="mse")
    found = verdict(diagnosis, "saturated")
    assert found.layers == tuple(layer.name for layer in model.layers)
    assert all(row["saturated_fraction"] > 0.9 for row in diagnosis.layers)
    assert_verdicts_name_their_layers(diagnosis)


def test_relu_with_a_big_negative_bias_is_dead():
    model = keras.Sequential(
        [
            keras.Input((WIDTH,)),
            keras.layers.Dense(WIDTH, activation="relu", name="alive"),
            keras.layers.Dense(
                WIDTH, activation="relu", name="dead",
                bias_initializer=keras.initializers.Constant(-100.0),
            ),
            keras.layers.Dense(WIDTH, name="after"),
        ]
    )
    x = normal((BATCH, WIDTH), seed=9)
    diagnosis = keras_inits.diagnose(model, x, normal((BATCH, WIDTH)), loss="mse")
    rows = rows_by_name(diagnosis)
    assert rows["dead"]["dead_fraction"] == 1.0
    assert rows["dead"]["output_std"] == 0.0
    assert rows["alive"]["dead_fraction"] < 0.5
    assert verdict(diagnosis, "dead_units").layers == ("dead",)
    no_signal = [v for v in diagnosis.verdicts if v.kind == "no_signal"]
    assert ("dead",) in [v.layers for v in no_signal]
    assert "alive" not in {name for v in no_signal for name in v.layers}
    assert_verdicts_name_their_layers(diagnosis)


def test_scaled_weights_in_a_linear_chain_explode():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((WIDTH,))] + [keras.layers.Dense(WIDTH) for _ in range(3)]
    )
    for layer in model.layers:
        layer.kernel.assign(layer.kernel * 100.0)
    x = normal((BATCH, WIDTH), seed=10)
    diagnosis = keras_inits.diagnose(model, x, normal((BATCH, WIDTH)), loss="mse")
    ends = (model.layers[0].name, model.layers[-1].name)
    assert verdict(diagnosis, "exploding_activations").layers == ends
    assert "vanishing_activations" not in kinds(diagnosis)
    # Backwards, each 100x kernel multiplies dLoss/d(output) again: the first layer's is
    # far more than THRESHOLDS["depth_ratio"] times the last one's.
    rows = diagnosis.layers
    assert rows[0]["gradient_std"] > LIMIT * rows[-1]["gradient_std"]
    assert verdict(diagnosis, "exploding_gradients").layers == ends
    assert_verdicts_name_their_layers(diagnosis)


# --- Verdicts at their thresholds: find_verdicts on synthetic rows -----------------------

LIMIT = THRESHOLDS["depth_ratio"]
# Other thresholds than the defaults, to show find_verdicts reads the ones it is given.
CUSTOM = {"depth_ratio": 4.0, "saturated": 0.25, "dead": 0.75}
THRESHOLD_SETS = [pytest.param(None, id="defaults"), pytest.param(CUSTOM, id="custom")]


def synthetic_row(path, output_std=1.0, gradient_std=1.0, **fields):
    """One row as diagnose makes it: a tanh Dense layer of WIDTH units, unless told."""
    row = {"path": path, "activation": "tanh", "layout": "dense", "output_size": WIDTH,
           "output_std": output_std, "gradient_std": gradient_std,
           "saturated_fraction": None, "dead_fraction": None}
    return {**row, **fields}


def found(rows, thresholds=None):
    """find_verdicts' (kind, layers) pairs; each message names the layers it is about."""
    verdicts = find_verdicts(rows) if thresholds is None else find_verdicts(rows, thresholds)
    for each in verdicts:
        assert all(path in each.message for path in each.layers), each.message
    return [(each.kind, each.layers) for each in verdicts]


MIDDLE = [synthetic_row(f"middle{index}") for index in range(10)]
# (ratio as a function of the depth limit, the verdict's direction): just inside, at and
# just outside each threshold. The docstring says "more than 10x": 10x itself passes.
DEPTH_CASES = [
    pytest.param(lambda limit: limit * 1.01, "exploding", id="1.01x_limit"),
    pytest.param(lambda limit: limit, None, id="at_limit"),
    pytest.param(lambda limit: limit * 0.99, None, id="0.99x_limit"),
    pytest.param(lambda limit: 1.01 / limit, None, id="1.01x_inverse_limit"),
    pytest.param(lambda limit: 1 / limit, None, id="at_inverse_limit"),
    pytest.param(lambda limit: 0.99 / limit, "vanishing", id="0.99x_inverse_limit"),
]


@pytest.mark.parametrize("thresholds", THRESHOLD_SETS)
@pytest.mark.parametrize(("ratio_of", "direction"), DEPTH_CASES)
def test_activation_verdicts_just_inside_and_outside_the_depth_ratio(
    ratio_of, direction, thresholds
):
    limit = (thresholds or THRESHOLDS)["depth_ratio"]
    first_std = 0.25  # a power of two: last / first is exactly the ratio asked for
    # 12 layers: 10x over 11 steps is 1.23x per layer, inside the per-layer rate's limit.
    rows = [synthetic_row("first", first_std), *MIDDLE,
            synthetic_row("last", first_std * ratio_of(limit))]
    expected = [] if direction is None else [(f"{direction}_activations", ("first", "last"))]
    assert found(rows, thresholds) == expected


@pytest.mark.parametrize("thresholds", THRESHOLD_SETS)
@pytest.mark.parametrize(("ratio_of", "direction"), DEPTH_CASES)
def test_gradient_verdicts_just_inside_and_outside_the_depth_ratio(ratio_of, direction, thresholds):
    limit = (thresholds or THRESHOLDS)["depth_ratio"]
    last_gradient = 0.25
    # Gradients flow backwards: the first layer's gradient over the deepest one's.
    rows = [synthetic_row("first", gradient_std=last_gradient * ratio_of(limit)),
            *MIDDLE, synthetic_row("last", gradient_std=last_gradient)]
    expected = [] if direction is None else [(f"{direction}_gradients", ("first", "last"))]
    assert found(rows, thresholds) == expected


@pytest.mark.parametrize("quantity", ["output_std", "gradient_std"])
def test_depth_verdicts_need_min_depth_layers(quantity):
    # 100x beyond the limit, once with one layer too few to call it a trend across depth.
    extreme = {quantity: 100 * LIMIT} if quantity == "output_std" else {quantity: 1 / 100}
    for depth in (_MIN_DEPTH - 1, _MIN_DEPTH):
        rows = [synthetic_row(f"layer{i}") for i in range(depth - 1)]
        rows.append(synthetic_row("deepest", **extreme))
        kinds_found = [kind for kind, _ in found(rows)]
        expected = {"output_std": ["exploding_activations"],
                    "gradient_std": ["exploding_gradients"]}[quantity]
        assert kinds_found == (expected if depth >= _MIN_DEPTH else []), depth


# The layer the depth checks leave out, and a control that looks alike but is counted.
EXCLUSIONS = [
    pytest.param({"activation": "softmax"}, True, id="softmax"),
    pytest.param({"layout": "embedding"}, True, id="embedding"),
    pytest.param({"activation": "sigmoid"}, False, id="sigmoid_counted"),
    pytest.param({"layout": "conv"}, False, id="conv_counted"),
]


@pytest.mark.parametrize("position", ["first", "last"])
@pytest.mark.parametrize(("fields", "excluded"), EXCLUSIONS)
def test_softmax_and_embedding_layers_are_left_out_of_the_depth_checks(
    fields, excluded, position
):
    # The odd layer is 1.01x the limit off the others in both output and gradient std;
    # the _MIN_DEPTH others alone are flat, so any depth verdict comes from the odd one.
    ratio = LIMIT * 1.01
    plain = [synthetic_row(f"layer{i}") for i in range(_MIN_DEPTH)]
    if position == "last":
        rows = [*plain, synthetic_row("odd", ratio, ratio, **fields)]
        counted = [("exploding_activations", ("layer0", "odd")),
                   ("vanishing_gradients", ("layer0", "odd"))]
    else:
        rows = [synthetic_row("odd", 1 / ratio, ratio, **fields), *plain]
        last = f"layer{_MIN_DEPTH - 1}"
        counted = [("exploding_activations", ("odd", last)),
                   ("exploding_gradients", ("odd", last))]
    assert found(rows) == ([] if excluded else counted)


def test_gradients_are_compared_over_the_longest_run_of_equal_output_size():
    # A stem, three blocks of one size, a head: the per-element gradient changes with the
    # layer's size alone, so only the blocks are compared (the stem and head are 1000x off).
    def model_rows(first_block_gradient):
        return [
            synthetic_row("stem", gradient_std=1000.0, output_size=4 * WIDTH),
            synthetic_row("block1", gradient_std=first_block_gradient),
            synthetic_row("block2"),
            synthetic_row("block3"),
            synthetic_row("head", gradient_std=1 / 1000, output_size=4),
        ]

    # Just under 10x over three blocks is still 3.1x per block: a steady growth.
    assert found(model_rows(LIMIT * 0.99)) == [("growing_gradients", ("block3", "block1"))]
    assert found(model_rows(LIMIT * 1.01)) == [("exploding_gradients", ("block1", "block3"))]


@pytest.mark.parametrize("thresholds", THRESHOLD_SETS)
@pytest.mark.parametrize(("factor", "fires"), [(1.01, True), (1.0, False), (0.99, False)])
@pytest.mark.parametrize(
    ("key", "threshold", "kind", "activation"),
    [("saturated_fraction", "saturated", "saturated", "tanh"),
     ("dead_fraction", "dead", "dead_units", "relu")],
    ids=["saturated", "dead"],
)
def test_fraction_verdicts_just_inside_and_outside_their_threshold(
    key, threshold, kind, activation, factor, fires, thresholds
):
    fraction = (thresholds or THRESHOLDS)[threshold] * factor
    rows = [synthetic_row("a", activation=activation, **{key: fraction}),
            synthetic_row("b", activation=activation, **{key: 0.0}),
            synthetic_row("c", activation="linear"),  # None: the fraction is undefined
            synthetic_row("d", activation=activation, **{key: fraction})]
    assert found(rows, thresholds) == ([(kind, ("a", "d"))] if fires else [])


@pytest.mark.parametrize(("output_std", "fires"), [(0.0, True), (-0.0, True), (1e-30, False)])
def test_no_signal_is_an_output_std_of_exactly_zero(output_std, fires):
    # One layer: no depth check, only the per-layer ones.
    rows = [synthetic_row("only", output_std)]
    assert found(rows) == ([("no_signal", ("only",))] if fires else [])


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("key", ["output_std", "gradient_std"])
def test_a_non_finite_std_is_the_one_verdict_naming_the_first_such_layer(key, value):
    # Everything else is wrong too (saturated, exploding), but once a value is NaN or inf
    # the other numbers mean nothing: the one verdict says where it first happens.
    rows = [synthetic_row(f"layer{i}", 100.0**i, saturated_fraction=0.99) for i in range(4)]
    rows[1][key] = value
    rows[3][key] = value
    assert found(rows) == [("non_finite", ("layer1",))]


@pytest.mark.parametrize("position", [0, 2, _MIN_DEPTH], ids=["first", "middle", "last"])
def test_a_layer_without_a_gradient_is_left_out_of_the_gradient_check(position):
    # A layer whose output the loss never uses has no gradient (None under TensorFlow and
    # PyTorch): it is neither non-finite nor a divisor, and the others are still compared.
    rows = [synthetic_row(f"layer{i}") for i in range(_MIN_DEPTH)]
    rows[0]["gradient_std"] = LIMIT * 1.01
    rows.insert(position, synthetic_row("unreached", gradient_std=None))
    assert found(rows) == [("exploding_gradients", ("layer0", f"layer{_MIN_DEPTH - 1}"))]


# --- Output formats ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed():
    model = keras.Sequential(
        [
            keras.Input((WIDTH,)),
            keras.layers.Dense(WIDTH, activation="relu", name="relu_layer"),
            keras.layers.Dense(WIDTH, activation="tanh", name="tanh_layer"),
            keras.layers.Dense(WIDTH, activation="softmax", name="softmax_layer"),
        ]
    )
    x = normal((BATCH, WIDTH), seed=11)
    y = np.random.default_rng(12).integers(0, WIDTH, size=BATCH)
    return model, keras_inits.diagnose(model, x, y, loss="sparse_categorical_crossentropy")


def test_to_dict_has_the_documented_keys_and_is_json(mixed):
    _, diagnosis = mixed
    as_dict = diagnosis.to_dict()
    assert {"layers", "verdicts", "findings", "stream"} <= set(as_dict)
    assert as_dict["stream"] == []  # no residual block
    assert [layer["name"] for layer in as_dict["layers"]] == [
        "relu_layer", "tanh_layer", "softmax_layer"
    ]
    for layer in as_dict["layers"]:
        assert set(layer) == LAYER_KEYS | PREDICTED_KEYS  # a chain: the theory applies
        assert layer["layout"] == "dense" and layer["output_size"] == WIDTH
    assert as_dict["phase"]["activation"] == "relu" and as_dict["unpredicted"] is None
    relu, tanh, softmax = as_dict["layers"]
    assert relu["activation"] == "relu" and tanh["activation"] == "tanh"
    assert relu["saturated_fraction"] is None and 0 <= relu["dead_fraction"] <= 1
    assert tanh["dead_fraction"] is None and 0 <= tanh["saturated_fraction"] <= 1
    assert softmax["saturated_fraction"] is None and softmax["dead_fraction"] is None
    for layer in as_dict["layers"]:
        for key in ("output_mean", "output_std", "gradient_std", "weight_gradient_std"):
            assert type(layer[key]) is float and np.isfinite(layer[key])
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert len(as_dict["findings"]) == len(as_dict["verdicts"])


def test_table(mixed):
    _, diagnosis = mixed
    table = diagnosis.table()
    for name in ("relu_layer", "tanh_layer", "softmax_layer"):
        assert name in table
    assert str(diagnosis) == table


def test_plot_draws_each_layers_activation_and_gradient_std_on_log_axes(
    mixed, tmp_path, monkeypatch
):
    figure_module = pytest.importorskip("matplotlib.figure")  # keras-inits[harness]
    _, diagnosis = mixed
    drawn = []
    savefig = figure_module.Figure.savefig

    def recording(figure, *args, **kwargs):
        drawn.append(figure)
        return savefig(figure, *args, **kwargs)

    monkeypatch.setattr(figure_module.Figure, "savefig", recording)
    path = diagnosis.plot(tmp_path / "p.png")
    assert path == tmp_path / "p.png" and path.read_bytes().startswith(b"\x89PNG")
    (figure,) = drawn
    activations, gradients = figure.axes
    layers = diagnosis.layers
    for axes, key in ((activations, "output_std"), (gradients, "gradient_std")):
        line, theory = axes.get_lines()
        assert line.get_label() == "model"
        assert theory.get_label() == "model: mean-field theory"
        assert theory.get_linestyle() == "--" and theory.get_color() == line.get_color()
        np.testing.assert_array_equal(line.get_xdata(), np.arange(1, len(layers) + 1))
        expected = [np.nan if row[key] is None else row[key] for row in layers]
        np.testing.assert_allclose(line.get_ydata(), expected)
        assert axes.get_yscale() == "log"
        assert [tick.get_text() for tick in axes.get_xticklabels()] == [
            row["path"] for row in layers
        ]


# --- Model kinds -------------------------------------------------------------------------


def test_multi_input_functional_model_with_x_as_a_list():
    left, right = keras.Input((WIDTH,)), keras.Input((WIDTH,))
    a = keras.layers.Dense(WIDTH, activation="relu", name="left_branch")(left)
    b = keras.layers.Dense(WIDTH, activation="tanh", name="right_branch")(right)
    merged = keras.layers.Concatenate()([a, b])
    model = keras.Model([left, right], keras.layers.Dense(WIDTH, name="joint")(merged))
    x = [normal((BATCH, WIDTH), seed=13), normal((BATCH, WIDTH), seed=14)]
    diagnosis = keras_inits.diagnose(model, x, normal((BATCH, WIDTH)), loss="mse")
    rows = rows_by_name(diagnosis)
    assert set(rows) == {"left_branch", "right_branch", "joint"}
    assert list(rows)[-1] == "joint"
    branch = numpy(keras.Model([left, right], b)(x))
    assert rows["right_branch"]["output_std"] == pytest.approx(branch.std(), rel=1e-5)
    assert all(row["gradient_std"] > 0 for row in diagnosis.layers)


def test_multi_output_model_without_y_uses_the_surrogate():
    inputs = keras.Input((WIDTH,))
    trunk = keras.layers.Dense(WIDTH, activation="tanh", name="trunk")(inputs)
    first = keras.layers.Dense(WIDTH, name="first_head")(trunk)
    second = keras.layers.Dense(WIDTH, name="second_head")(trunk)
    model = keras.Model(inputs, [first, second])
    x = normal((BATCH, WIDTH), seed=15)
    diagnosis = keras_inits.diagnose(model, x)
    assert diagnosis.surrogate and diagnosis.to_dict()["surrogate_loss"] is True
    rows = rows_by_name(diagnosis)
    assert set(rows) == {"trunk", "first_head", "second_head"}
    # One fixed noise draw per output, in order: d loss / d head = g_i / batch.
    rng = np.random.default_rng(0)
    g1 = rng.standard_normal((BATCH, WIDTH)).astype("float32")
    g2 = rng.standard_normal((BATCH, WIDTH)).astype("float32")
    assert rows["first_head"]["gradient_std"] == pytest.approx(g1.std() / BATCH, rel=1e-5)
    assert rows["second_head"]["gradient_std"] == pytest.approx(g2.std() / BATCH, rel=1e-5)
    out1, out2 = (numpy(v) for v in model(x))
    assert diagnosis.loss == pytest.approx(
        ((out1 * g1).sum() + (out2 * g2).sum()) / BATCH, rel=1e-4, abs=1e-6
    )


def test_subclassed_model():
    model = ResidualSubclassed(WIDTH)
    x = normal((BATCH, WIDTH), seed=16)
    model(x[:2])  # builds it
    diagnosis = keras_inits.diagnose(model, x, normal((BATCH, WIDTH)), loss="mse")
    assert [row["name"] for row in diagnosis.layers] == [model.a.name, model.b.name,
                                                         model.c.name]
    h = numpy(model.a(x))
    g = numpy(model.b(h))
    for row, value in zip(diagnosis.layers, [h, g, numpy(model(x))], strict=True):
        assert row["output_std"] == pytest.approx(value.std(), rel=1e-5)


class UnusedLastLayer(keras.Model):
    """Three Dense layers in a chain, then a fourth whose output is computed and dropped."""

    def __init__(self):
        super().__init__()
        self.chain = [keras.layers.Dense(WIDTH, name=f"chain{i}") for i in range(3)]
        self.unused = keras.layers.Dense(WIDTH, name="unused")

    def call(self, x):
        for layer in self.chain:
            x = layer(x)
        self.unused(x)
        return x


def test_a_layer_the_loss_does_not_reach_is_diagnosed_without_error():
    # Was a TypeError (a gradient std divided by None) under TensorFlow and PyTorch.
    model = UnusedLastLayer()
    x = normal((BATCH, WIDTH), seed=19)
    model(x)  # builds it
    diagnosis = keras_inits.diagnose(model, x)
    rows = rows_by_name(diagnosis)
    assert list(rows) == ["chain0", "chain1", "chain2", "unused"]
    # JAX differentiates everything it is given: a zero gradient where others have none.
    assert rows["unused"]["gradient_std"] in (None, 0.0)
    assert all(rows[f"chain{i}"]["gradient_std"] > 0 for i in range(3))


def test_weights_are_unchanged(tanh_mlp):
    model, x, y = tanh_mlp
    before = weights_of(model)
    keras_inits.diagnose(model, x, y, loss="sparse_categorical_crossentropy")
    for old, new in zip(before, weights_of(model), strict=True):
        np.testing.assert_array_equal(old, new)


def test_weights_are_unchanged_by_the_surrogate(tanh_mlp):
    model, x, _ = tanh_mlp
    before = weights_of(model)
    keras_inits.diagnose(model, x)
    for old, new in zip(before, weights_of(model), strict=True):
        np.testing.assert_array_equal(old, new)


# --- Losses and errors -------------------------------------------------------------------


def small_model():
    return keras.Sequential(
        [
            keras.Input((WIDTH,)),
            keras.layers.Dense(WIDTH, activation="relu"),
            keras.layers.Dense(WIDTH),
        ]
    )


def test_a_compiled_models_loss_is_used_when_loss_is_none():
    model = small_model()
    model.compile(optimizer="sgd", loss="mse")
    x, y = normal((BATCH, WIDTH), seed=17), normal((BATCH, WIDTH), seed=18)
    prediction = numpy(model(x))
    compiled = keras_inits.diagnose(model, x, y)
    assert compiled.loss == pytest.approx(((prediction - y) ** 2).mean(), rel=1e-5)
    other = keras_inits.diagnose(model, x, y, loss="mae")
    assert other.loss == pytest.approx(np.abs(prediction - y).mean(), rel=1e-5)


def test_y_without_a_loss_on_an_uncompiled_model():
    with pytest.raises(ValueError, match="loss="):
        keras_inits.diagnose(small_model(), normal((BATCH, WIDTH)), normal((BATCH, WIDTH)))


def test_loss_without_y():
    with pytest.raises(ValueError, match="loss= was given without y"):
        keras_inits.diagnose(small_model(), normal((BATCH, WIDTH)), loss="mse")


def test_unknown_loss_name():
    with pytest.raises(ValueError, match="Unknown loss 'no_such_loss'"):
        keras_inits.diagnose(
            small_model(), normal((BATCH, WIDTH)), normal((BATCH, WIDTH)), loss="no_such_loss"
        )


def test_x_of_the_wrong_shape():
    model = small_model()
    with pytest.raises(ValueError, match=rf"^x does not fit model '{model.name}'.*\(4, 7\)"):
        keras_inits.diagnose(model, normal((4, 7)), normal((4, WIDTH)), loss="mse")


def test_dataset_as_x():
    tf = pytest.importorskip("tensorflow")  # the one dataset type at hand

    dataset = tf.data.Dataset.from_tensor_slices((normal((8, WIDTH)), normal((8, WIDTH)))).batch(4)
    with pytest.raises(TypeError, match=r"one batch of arrays.*got \w*Dataset"):
        keras_inits.diagnose(small_model(), dataset)


def test_labels_as_a_python_list_for_a_single_output():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    x = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    labels = [0, 1, 2, 0, 1, 2]
    from_list = keras_inits.diagnose(model, x, labels, loss="sparse_categorical_crossentropy")
    from_array = keras_inits.diagnose(
        model, x, np.array(labels), loss="sparse_categorical_crossentropy"
    )
    assert from_list.loss == pytest.approx(from_array.loss, rel=1e-6)


def test_a_frozen_kernel_has_no_weight_gradient_on_every_backend():
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(5, name="frozen"), keras.layers.Dense(2)]
    )
    model.get_layer("frozen").trainable = False
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    rows = keras_inits.diagnose(model, x).layers
    assert rows[0]["weight_gradient_std"] is None
    assert rows[0]["gradient_std"] > 0 and rows[1]["weight_gradient_std"] > 0


def test_dead_units_are_channels_for_channels_first_convolutions():
    if keras.backend.backend() == "tensorflow":
        pytest.skip("TensorFlow's CPU kernels do not run channels_first convolutions")
    layer = keras.layers.Conv2D(4, 1, activation="relu", data_format="channels_first", name="conv")
    model = keras.Sequential([keras.Input((2, 5, 5)), layer])
    kernel = np.zeros((1, 1, 2, 4), "float32")
    kernel[0, 0, 0, 0] = 1.0  # channel 0 copies input channel 0; channels 1-3 are dead
    layer.kernel.assign(kernel)
    x = np.abs(np.random.default_rng(0).normal(size=(3, 2, 5, 5))).astype("float32") + 0.1
    assert keras_inits.diagnose(model, x).layers[0]["dead_fraction"] == pytest.approx(3 / 4)
