"""`lsuv`: unit variance re-measured independently of its report, cost, skips, errors, seeds.

Each check of the fitted variances recomputes every layer's pre-activation
output by hand (NumPy for Dense, torch for Conv2D) from the layer's input, which
a plain `keras.Model(model.inputs, [layer.input, ...])` yields, so nothing of
lsuv's own taps or report is trusted.
"""

import keras
import numpy as np
import pytest
import torch

import keras_inits
from tests.plugin.util import ResidualSubclassed

TOL = 0.1
# One width and batch for the small models: under JAX every new shape costs a compilation.
WIDTH, BATCH = 16, 32
# lsuv measures in float32 through the backend, we in float64: allow for rounding at 1 +- tol.
SLACK = 1e-4


def numpy(value):
    return np.asarray(keras.ops.convert_to_numpy(value), dtype="float64")


def normal(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def kernel_layers(layers):
    kinds = (keras.layers.Dense, keras.layers.Conv2D)
    return [layer for layer in layers if isinstance(layer, kinds)]


def pre_activation(layer, inputs):
    """The layer's output before its activation, from its input, computed without Keras."""
    inputs = np.asarray(inputs, dtype="float64")
    kernel = numpy(layer.kernel)
    bias = numpy(layer.bias) if layer.use_bias else None
    if isinstance(layer, keras.layers.Dense):
        return inputs @ kernel + (0.0 if bias is None else bias)
    assert isinstance(layer, keras.layers.Conv2D) and layer.data_format == "channels_last"
    assert tuple(layer.strides) == (1, 1) or layer.padding == "valid"
    out = torch.nn.functional.conv2d(
        torch.from_numpy(inputs).permute(0, 3, 1, 2),
        torch.from_numpy(kernel).permute(3, 2, 0, 1),
        None if bias is None else torch.from_numpy(bias),
        stride=tuple(layer.strides),
        padding=layer.padding,
        dilation=tuple(layer.dilation_rate),
        groups=layer.groups,
    )
    return out.permute(0, 2, 3, 1).numpy()


def layer_inputs(inputs, layers, x):
    """What each layer receives on x, through a plain Functional probe model."""
    probe = keras.Model(inputs, [layer.input for layer in layers])
    outputs = probe(x, training=False)
    return [numpy(value) for value in keras.tree.flatten(outputs)]


def assert_unit_variance(layers, inputs):
    variances = {
        layer.name: float(np.var(pre_activation(layer, value)))
        for layer, value in zip(layers, inputs, strict=True)
    }
    off = {name: v for name, v in variances.items() if abs(v - 1.0) > TOL + SLACK}
    assert not off, f"pre-activation variance outside 1 +- {TOL}: {off}"
    return variances


def rows_by_name(report):
    return {row["name"]: row for row in report.rows}


# --- Unit variance, re-measured --------------------------------------------------------


def test_sequential_relu_mlp_chain_recomputed_in_numpy():
    model = keras.Sequential(
        [keras.Input((WIDTH,))]
        + [keras.layers.Dense(WIDTH, activation="relu", bias_initializer="ones")
           for _ in range(8)]
    )
    x = normal((BATCH, WIDTH))
    report = keras_inits.lsuv(model, x, tol=TOL, seed=0)
    assert [row["name"] for row in report.rows] == [layer.name for layer in model.layers]
    assert all(row["status"] == "fitted" for row in report.rows) and report.converged

    h = x.astype("float64")
    for layer, row in zip(model.layers, report.rows, strict=True):
        bias = numpy(layer.bias)
        np.testing.assert_array_equal(bias, 0.0)  # biases are zeroed, "ones" is gone
        kernel = numpy(layer.kernel)
        pre = h @ kernel + bias
        assert abs(np.var(pre) - 1.0) <= TOL + SLACK, layer.name
        # The report's variance is the one of the weights as they are now.
        np.testing.assert_allclose(row["variance"], np.var(pre), rtol=1e-4)
        # Orthonormal pre-initialization, then only a scalar rescaling.
        gram = kernel.T @ kernel
        np.testing.assert_allclose(gram, row["scale"] ** 2 * np.eye(WIDTH), atol=1e-5 * gram[0, 0])
        h = np.maximum(pre, 0.0)
    # Our chain is the model's own forward pass.
    np.testing.assert_allclose(numpy(model(x)), h, rtol=1e-4, atol=1e-5)


def test_time_distributed_layers_are_fitted_over_every_timestep():
    # Timestep t is 10**t times larger: fitted on one timestep, or on one slice of the
    # wrong axis, the variance over the whole output would be off by a factor of 3 or more
    # (timestep 0: about 3400; the last one: about 0.34), not within a tight tolerance.
    tight, timesteps = 0.01, 3
    inputs = keras.Input((timesteps, WIDTH))
    first = keras.layers.TimeDistributed(keras.layers.Dense(WIDTH, activation="relu"))
    second = keras.layers.TimeDistributed(keras.layers.Dense(WIDTH))
    model = keras.Model(inputs, second(first(inputs)))
    scales = 10.0 ** np.arange(timesteps, dtype="float32")
    x = normal((BATCH, timesteps, WIDTH), seed=3) * scales[None, :, None]
    report = keras_inits.lsuv(model, x, tol=tight, seed=0)
    assert [row["status"] for row in report.rows] == ["fitted", "fitted"]

    h = x.astype("float64")
    for wrapper, row in zip((first, second), report.rows, strict=True):
        pre = pre_activation(wrapper.layer, h)  # the Dense inside, on every timestep at once
        assert pre.shape == (BATCH, timesteps, WIDTH)
        assert abs(np.var(pre) - 1.0) <= tight + SLACK, (wrapper.name, np.var(pre))
        np.testing.assert_allclose(row["variance"], np.var(pre), rtol=1e-4)
        h = np.maximum(pre, 0.0) if wrapper is first else pre
    np.testing.assert_allclose(numpy(model(x)), h, rtol=1e-4, atol=1e-5)


def conv(name, activation="relu", padding="same"):
    # Zero kernels: lsuv redraws every kernel, and under JAX each random draw of a new
    # shape costs a compilation.
    return keras.layers.Conv2D(
        8, 3, padding=padding, activation=activation, kernel_initializer="zeros", name=name
    )


def test_functional_cnn_with_residual_add_and_concatenated_branches():
    inputs = keras.Input((8, 8, 8))
    a = conv("stem")(inputs)
    b = conv("body")(a)
    r = keras.layers.Add(name="residual")([a, b])
    left = conv("left")(r)
    right = conv("right", activation="tanh")(r)
    merged = keras.layers.Concatenate(name="concat")([left, right])
    valid = conv("valid", padding="valid")(merged)
    pooled = keras.layers.GlobalAveragePooling2D()(valid)
    outputs = keras.layers.Dense(8, activation="softmax", kernel_initializer="zeros",
                                 name="head")(pooled)
    model = keras.Model(inputs, outputs)
    x = normal((8, 8, 8, 8), seed=1)

    report = keras_inits.lsuv(model, x, tol=TOL, seed=0)
    names = [row["name"] for row in report.rows]
    assert set(names) == {"stem", "body", "left", "right", "valid", "head"}
    # Forward order: the stem before the body, both before the branches, the head last.
    assert names.index("stem") < names.index("body") < min(names.index("left"),
                                                           names.index("right"))
    assert names[-1] == "head"
    assert report.converged
    layers = kernel_layers(model.layers)
    assert_unit_variance(layers, layer_inputs(model.input, layers, x))


def test_functional_model_with_a_nested_sequential():
    inputs = keras.Input((WIDTH,))
    first = keras.layers.Dense(WIDTH, activation="relu", name="outer_first")
    inner = keras.Sequential(
        [
            keras.Input((WIDTH,)),
            keras.layers.Dense(WIDTH, activation="tanh", name="inner_a"),
            keras.layers.Dense(WIDTH, activation="relu", name="inner_b"),
        ],
        name="inner",
    )
    last = keras.layers.Dense(WIDTH, name="outer_last")
    h = first(inputs)
    z = inner(h)
    model = keras.Model(inputs, last(z))
    x = normal((BATCH, WIDTH), seed=2)

    report = keras_inits.lsuv(model, x, tol=TOL, seed=0)
    # Rows name layers by their path in the model: nested layers under their model.
    assert [row["name"] for row in report.rows] == ["outer_first", "inner/inner_a",
                                                   "inner/inner_b", "outer_last"]
    assert report.converged

    h_value, z_value = (numpy(v) for v in keras.Model(inputs, [h, z])(x))
    inner_layers = kernel_layers(inner.layers)
    inner_inputs = layer_inputs(inner.inputs[0], inner_layers, h_value)
    assert_unit_variance([first, *inner_layers, last], [numpy(x), *inner_inputs, z_value])


def test_subclassed_model_recomputed_in_numpy():
    model = ResidualSubclassed(WIDTH)
    x = normal((BATCH, WIDTH), seed=3)
    model(x[:2])  # builds it
    report = keras_inits.lsuv(model, x, tol=TOL, seed=0)
    assert [row["name"] for row in report.rows] == [model.a.name, model.b.name, model.c.name]
    assert report.converged

    h = np.maximum(pre_activation(model.a, x), 0.0)
    g = np.tanh(pre_activation(model.b, h))
    assert_unit_variance([model.a, model.b, model.c], [x, h, g + h])
    np.testing.assert_allclose(
        numpy(model(x)), pre_activation(model.c, g + h), rtol=1e-4, atol=1e-5
    )


@pytest.fixture(scope="module")
def vgg16():
    # The smallest keras.applications network that is quick on every backend (JAX
    # compiles each op per shape, which makes the MobileNets slow in eager mode).
    model = keras.applications.VGG16(
        weights=None, include_top=False, pooling="avg", input_shape=(32, 32, 3)
    )
    x = normal((4, 32, 32, 3), seed=4)
    return model, x, keras_inits.lsuv(model, x, tol=TOL, seed=0)


def test_keras_applications_vgg16(vgg16):
    model, x, report = vgg16
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 13
    rows = rows_by_name(report)
    assert set(rows) == {layer.name for layer in convs}
    assert all(rows[layer.name]["status"] == "fitted" for layer in convs)
    assert report.converged
    # VGG's convolutions carry their ReLU: lsuv must fit the output before it and put it back.
    assert all(keras.activations.serialize(layer.activation) == "relu" for layer in convs)
    assert_unit_variance(convs, layer_inputs(model.input, convs, x))


# --- Cost ------------------------------------------------------------------------------


class CountingDense(keras.layers.Dense):
    """A Dense layer that counts how often its `call` runs."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = 0

    def call(self, inputs, *args, **kwargs):
        self.calls += 1
        return super().call(inputs, *args, **kwargs)


def count_calls(depth, max_iters):
    model = keras.Sequential(
        [keras.Input((WIDTH,))]
        + [CountingDense(WIDTH, activation="relu") for _ in range(depth)]
    )
    for layer in model.layers:
        layer.calls = 0  # building the model traced each call once
    x = normal((BATCH, WIDTH), seed=depth)
    report = keras_inits.lsuv(model, x, max_iters=max_iters, seed=0)
    assert report.converged
    return report, [layer.calls for layer in model.layers]


def test_each_layer_is_called_at_most_max_iters_plus_two_times():
    max_iters = 3
    totals = {}
    for depth in (10, 20):
        report, calls = count_calls(depth, max_iters)
        for row, count in zip(report.rows, calls, strict=True):
            # one call per measurement (iterations + 1) and one to pass the output on
            assert 1 <= count <= row["iterations"] + 2 <= max_iters + 2, (depth, row, count)
        totals[depth] = sum(calls)
    # Linear in depth: one forward pass per layer would make the 20-layer total ~4x.
    assert totals[20] <= 2.2 * totals[10], totals


# --- Layers that are not fitted ---------------------------------------------------------


def test_embedding_and_lstm_are_skipped_and_the_model_still_works():
    inputs = keras.Input((7,), dtype="int32")
    embedding = keras.layers.Embedding(WIDTH, WIDTH, name="embed")
    embedded = embedding(inputs)
    recurrent = keras.layers.LSTM(
        WIDTH, kernel_initializer="zeros", recurrent_initializer="zeros", name="lstm"
    )(embedded)
    head = keras.layers.Dense(WIDTH, name="head")
    model = keras.Model(inputs, head(recurrent))
    x = np.random.default_rng(5).integers(0, WIDTH, size=(BATCH, 7)).astype("int32")
    embeddings_before = numpy(embedding.embeddings).copy()

    report = keras_inits.lsuv(model, x, seed=0)
    rows = rows_by_name(report)
    assert list(rows) == ["embed", "lstm/lstm_cell", "head"]
    for name in ("embed", "lstm/lstm_cell"):
        assert rows[name]["status"].startswith("skipped"), rows[name]
        assert rows[name]["variance"] is None and rows[name]["scale"] is None
    assert rows["head"]["status"] == "fitted"

    # Embeddings keep their own initialization (an orthonormal vocab x dim matrix would
    # shrink them); the LSTM got the orthonormal pre-init: its zeros are gone.
    np.testing.assert_array_equal(numpy(embedding.embeddings), embeddings_before)
    lstm_out, out = (numpy(v) for v in keras.Model(inputs, [recurrent, model.output])(x))
    assert np.all(np.isfinite(lstm_out)) and lstm_out.std() > 1e-3
    assert_unit_variance([head], [lstm_out])
    assert out.shape == (BATCH, WIDTH) and np.all(np.isfinite(out))


# --- Errors ----------------------------------------------------------------------------


def mlp(use_bias=True):
    return keras.Sequential(
        [keras.Input((WIDTH,))]
        + [keras.layers.Dense(WIDTH, activation="relu", use_bias=use_bias) for _ in range(3)]
    )


def weights_of(model):
    return [numpy(w) for w in model.weights]


@pytest.mark.parametrize(
    "make", [lambda: keras.layers.Activation("relu"), keras.layers.Flatten], ids=["act", "flat"]
)
def test_model_without_kernels(make):
    model = keras.Sequential([keras.Input((4,)), make()], name="kernel_free")
    with pytest.raises(ValueError, match="'kernel_free' has no layer with a kernel"):
        keras_inits.lsuv(model, normal((BATCH, 4)))


def test_x_that_does_not_fit():
    model = mlp()
    with pytest.raises(ValueError, match=rf"x does not fit model '{model.name}'.*\(4, 5\)"):
        keras_inits.lsuv(model, normal((4, 5)))


def test_zero_batch_into_a_bias_free_relu_mlp_names_the_layer():
    model = mlp(use_bias=False)
    first = model.layers[0].name
    with pytest.raises(ValueError, match=rf"layer '{first}'.*variance 0.*input is constant"):
        keras_inits.lsuv(model, np.zeros((BATCH, WIDTH), "float32"))


@pytest.mark.parametrize("tol", [0, 0.0, 1, 1.0, -0.1, 1.5, float("nan")])
def test_tol_outside_zero_one(tol):
    model = mlp()
    before = weights_of(model)
    with pytest.raises(ValueError, match=r"tol must be in \(0, 1\)"):
        keras_inits.lsuv(model, normal((BATCH, WIDTH)), tol=tol)
    for old, new in zip(before, weights_of(model), strict=True):
        np.testing.assert_array_equal(old, new)


@pytest.mark.parametrize("max_iters", [0, -1])
def test_max_iters_below_one(max_iters):
    message = f"max_iters must be an int >= 1, got max_iters={max_iters}"
    with pytest.raises(ValueError, match=message):
        keras_inits.lsuv(mlp(), normal((BATCH, WIDTH)), max_iters=max_iters)


def test_dataset_or_generator_as_x():
    tf = pytest.importorskip("tensorflow")  # the one dataset type at hand

    model = mlp()
    before = weights_of(model)
    dataset = tf.data.Dataset.from_tensor_slices(normal((BATCH, WIDTH))).batch(4)
    with pytest.raises(TypeError, match=r"one batch of arrays.*got \w*Dataset"):
        keras_inits.lsuv(model, dataset)
    with pytest.raises(TypeError, match=r"one batch of arrays.*got generator"):
        keras_inits.lsuv(model, (batch for batch in [normal((BATCH, WIDTH))]))
    for old, new in zip(before, weights_of(model), strict=True):
        np.testing.assert_array_equal(old, new)


# --- Seeds ------------------------------------------------------------------------------


def test_same_seed_same_weights():
    x = normal((BATCH, WIDTH), seed=6)
    model = mlp()
    keras_inits.lsuv(model, x, seed=7)
    first = weights_of(model)
    keras_inits.lsuv(model, x, seed=7)
    again = weights_of(model)
    twin = mlp()  # another model of the same architecture (other layer names)
    keras_inits.lsuv(twin, x, seed=7)
    for a, b, c in zip(first, again, weights_of(twin), strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    keras_inits.lsuv(model, x, seed=8)
    assert not np.array_equal(first[0], weights_of(model)[0])


# --- What it is for ---------------------------------------------------------------------


def test_lsuv_keeps_the_signal_where_plain_orthogonal_loses_it():
    depth = 20
    model = keras.Sequential(
        [keras.Input((64,))]
        + [
            keras.layers.Dense(
                64, activation="relu", kernel_initializer=keras.initializers.Orthogonal(seed=i)
            )
            for i in range(depth)
        ]
    )
    x = normal((64, 64), seed=9)
    probe = keras.Model(model.inputs[0], [model.layers[0].output, model.layers[-1].output])

    def ratio():
        first, last = (numpy(v) for v in probe(x))
        return last.std() / first.std()

    orthogonal = ratio()
    assert orthogonal < 1 / 3  # ReLU halves the variance at every layer: ~(1/sqrt 2)^19
    keras_inits.lsuv(model, x, seed=0)
    assert 1 / 3 < ratio() < 3


def test_an_input_too_small_for_a_convolution_is_a_clear_error():
    if keras.backend.backend() == "tensorflow":
        pytest.skip("TensorFlow's CPU convolution returns garbage here instead of raising")
    convs = [keras.layers.Conv2D(2, 5), keras.layers.Conv2D(2, 5)]
    model = keras.Sequential([keras.Input((None, None, 1)), *convs])
    # x has the declared rank and channels, so the model is called, and fails on it (or,
    # under older JAX, the second convolution returns an empty map).
    with pytest.raises(ValueError, match="failed on x|outputs nothing on x"):
        keras_inits.lsuv(model, np.ones((2, 6, 6, 1), "float32"))
