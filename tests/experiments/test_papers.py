"""The effects the papers report, measured at step 0: by `keras_inits.diagnose` (Glorot &
Bengio's 6 layers) or by a plain forward pass, layer by layer (the deeper nets).

No training: each model is built with one initializer and probed once on the
same Shapeset batch, so these run in seconds. Thresholds sit away from both the
measured values (seed 0, noted per test) and the theory.
"""

import numpy as np
import pytest

import keras_inits
from experiments import models
from experiments.data import datasets as data


@pytest.fixture(scope="module")
def batch():
    dataset = data.load("shapeset", train_size=256, test_size=1)
    return dataset.x_train, dataset.y_train


def build(batch, *, initializer, activation, depth, width=128):
    return models.build(
        "mlp", input_shape=batch[0].shape[1:], num_classes=9, depth=depth, width=width,
        activation=activation, initializer=initializer, seed=0,
    )


def activation_stds(batch, *, initializer, activation, depth):
    """Per hidden layer: std of the activations and of dLoss/d(activations), via diagnose."""
    x, y = batch
    model = build(batch, initializer=initializer, activation=activation, depth=depth)
    diagnosis = keras_inits.diagnose(model, x, y, loss="sparse_categorical_crossentropy")
    hidden = [row for row in diagnosis.layers if row["name"] != models.OUTPUT]
    stds = [row["output_std"] for row in hidden]
    grads = [row["gradient_std"] for row in hidden]
    return np.array(stds), np.array(grads)


def test_glorot2010_standard_init_shrinks_activations_and_gradients_normalized_does_not(batch):
    # Glorot & Bengio 2010, Figs. 6-7 (tanh): with n Var(W) = 1/3 the activations shrink
    # layer by layer (about 1/sqrt(3) = 0.58 a layer in the linear regime; measured 0.30 ->
    # 0.019 over 6 layers, 0.575 a layer) and the back-propagated gradients shrink towards
    # the input (17x larger at the last hidden layer than at the first); normalized init
    # keeps both within 2x (activations 0.53x, gradients 1.8x: the closest margin here).
    standard, standard_grads = activation_stds(
        batch, initializer="standard_uniform", activation="tanh", depth=6
    )
    normalized, normalized_grads = activation_stds(
        batch, initializer="xavier_uniform", activation="tanh", depth=6
    )
    assert (np.diff(standard) < 0).all()
    assert standard[-1] / standard[0] < 0.1
    assert normalized[-1] / normalized[0] > 0.4
    # Gradients grow from the first hidden layer to the last under standard init.
    assert standard_grads[-1] / standard_grads[0] > 4
    assert 0.5 < normalized_grads[-1] / normalized_grads[0] < 2


def test_he2015_xavier_vanishes_in_a_deep_relu_net_kaiming_does_not(batch):
    # He et al. 2015: with Var(W) = 1/n (xavier on square layers) a ReLU layer halves the
    # second moment, so the 29 layers from hidden_1 to hidden_30 shrink the std by
    # 2 ** -14.5 = 4e-5 (measured 3.6e-5); with 2/n (kaiming) it holds (measured 0.84).
    # A plain forward pass: tracing the probe over 31 layers would take half a minute.
    def forward_stds(initializer):
        model = build(batch, initializer=initializer, activation="relu", depth=30)
        hidden, stds = batch[0], []
        for layer in model.layers[1:]:
            hidden = layer(hidden)
            if layer.name.startswith("hidden_"):
                stds.append(float(np.std(hidden)))
        return np.array(stds)

    xavier, kaiming = forward_stds("xavier_normal"), forward_stds("kaiming_normal")
    assert len(xavier) == 30
    assert xavier[-1] / xavier[0] < 0.03
    assert 0.2 < kaiming[-1] / kaiming[0] < 5


def test_klambauer2017_lecun_normal_is_selus_fixed_point(batch):
    # Klambauer et al. 2017: with Var(W) = 1/n, SELU maps activations of mean 0 and
    # variance 1 to themselves (a stable fixed point), so 32 layers end at about (0, 1)
    # whatever the input's variance (measured: 0.43 after the first layer, mean -0.01 and
    # variance 1.00 after 32); with half or twice that variance every layer shrinks or
    # grows it (measured 0.011 and 129: thresholds far from both).
    def last_hidden(initializer):
        model = build(batch, initializer=initializer, activation="selu", depth=32, width=256)
        hidden = batch[0]
        for layer in model.layers[1:-1]:
            hidden = layer(hidden)
        return float(np.mean(hidden)), float(np.var(hidden))

    mean, variance = last_hidden("lecun_normal")
    assert abs(mean) < 0.2 and 0.6 < variance < 1.6
    assert last_hidden("variance_scaling(scale=0.5)")[1] < 0.1
    assert last_hidden("variance_scaling(scale=2.0)")[1] > 10


def test_xiao2018_delta_orthogonal_keeps_a_deep_tanh_cnns_signal(batch):
    # Xiao et al. 2018: a delta-orthogonal kernel is an orthogonal map at the centre tap
    # and zero elsewhere, so (tanh being near-linear at these scales) each layer keeps the
    # signal's norm; Gaussian kernels with Glorot's variance let it decay layer by layer.
    # The built-in cnn, not the preset's xiao2018_cnn: 24 layers of 16 filters (stride 2
    # in the first two). Activation std, first -> last hidden layer, measured:
    # 0.139 -> 0.095 (0.68x) with delta_orthogonal vs 0.167 -> 0.045 (0.27x) with xavier.
    def stds(initializer):
        images = batch[0].reshape(-1, 32, 32, 1)[:64]
        model = models.initialize(
            "cnn", input_shape=(32, 32, 1), num_classes=9, x_sample=images[:2], depth=24,
            width=16, activation="tanh", initializer=initializer, fallback="xavier_normal",
            seed=0,
        ).model
        hidden, found = images, []
        for layer in model.layers[1:]:
            hidden = layer(hidden)
            if layer.name.startswith("hidden_"):
                found.append(float(np.std(hidden)))
        return np.array(found)

    delta = stds("delta_orthogonal")
    xavier = stds("xavier_normal")
    assert delta[-1] / delta[0] > 0.5
    assert xavier[-1] / xavier[0] < 0.4


def test_zhang2019_he_multiplies_the_residual_stream_and_fixup_keeps_it_level(batch):
    # The preset's resmlp (16 blocks of 64 units, no normalization) at step 0: He's stream
    # grows by a factor per block (theory: its second moment triples, sqrt(3) = 1.7x in std;
    # seed 0: 2.6e3x over the 16 blocks, 1.69x per block), Fixup's is level (every branch
    # output is zero).
    x, y = batch
    settings = dict(input_shape=x.shape[1:], num_classes=9, x_sample=x[:2], depth=16,
                    width=64, activation="relu", fallback="xavier_normal", seed=0,
                    normalization="none")
    he = models.initialize("resmlp", initializer="he_normal", **settings).model
    diagnosis = keras_inits.diagnose(he, x, y, loss="sparse_categorical_crossentropy")
    stds = [row["output_std"] for row in diagnosis.stream]
    assert len(stds) == 16 and stds[-1] / stds[0] > 1.5**15
    growing = [v for v in diagnosis.verdicts if v.kind == "growing_stream"]
    assert growing and "multiplies at every block" in growing[0].message
    fixup = models.initialize("resmlp", initializer="scheme:fixup", **settings).model
    diagnosis = keras_inits.diagnose(fixup, x, y, loss="sparse_categorical_crossentropy")
    stds = [row["output_std"] for row in diagnosis.stream]
    assert max(stds) / min(stds) < 1.0001
    assert diagnosis.verdicts == []


def test_radford2019_the_unscaled_stream_grows_with_depth_and_gpt2s_stays_level():
    # The preset's pre-LN Transformers (width 64, 4 heads) at step 0 on 32 Sonnets windows.
    # Each block adds its branch's variance to the stream: unscaled N(0, 0.02), the sum grows
    # with the number of blocks (seed 0: 1.34x, 2.24x from first block to last at 2, 8
    # layers); scaled by 1/sqrt(2L), the branches add the same total at every depth (1.09x,
    # 1.08x). Cross-checked by keras_inits.diagnose's stream, not the harness's snapshots.
    sonnets = data.load("sonnets", train_size=32, test_size=1)
    x, y = sonnets.x_train, sonnets.y_train
    growth = {}
    for depth in (2, 8):
        for spec in ("random_normal(stddev=0.02)", "scheme:gpt2"):
            model = models.initialize(
                "transformer", input_shape=x.shape[1:], num_classes=sonnets.num_classes,
                x_sample=x[:2], depth=depth, width=64, activation="gelu", initializer=spec,
                fallback="xavier_normal", seed=0, heads=4, layer_norm="pre", sequence=True,
            ).model
            diagnosis = keras_inits.diagnose(model, x, y, loss="sparse_categorical_crossentropy")
            stds = [row["output_std"] for row in diagnosis.stream]
            assert len(stds) == 2 * depth
            growth[depth, spec.split("(")[0]] = stds[-1] / stds[0]
    assert growth[8, "random_normal"] > 1.3 * growth[2, "random_normal"]
    assert growth[8, "random_normal"] > 1.8
    assert growth[2, "scheme:gpt2"] < 1.2 and growth[8, "scheme:gpt2"] < 1.2
