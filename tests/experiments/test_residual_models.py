"""The built-in residual networks (`--model=resmlp,resnet`, `--normalization`) and scheme
arms (`scheme:NAME(...)`): their structure as keras_inits.roles reads it, the stream's
growth the theory predicts, the settings' checks, and a comparison end to end."""

import math

import keras
import numpy as np
import pytest

import keras_inits
from experiments import config, models, runner
from experiments.errors import ExperimentError


def build(kind="resmlp", normalization="none", depth=6, width=256, initializer="he_normal"):
    shape = (8, 8, 1)
    return models.initialize(
        kind, input_shape=shape, num_classes=4, x_sample=np.zeros((2, *shape), "float32"),
        depth=depth, width=width, activation="relu", initializer=initializer,
        fallback="xavier_normal", seed=0, normalization=normalization,
    ).model


@pytest.mark.parametrize("kind", ["resmlp", "resnet"])
@pytest.mark.parametrize("normalization", ["none", "batch", "layer"])
def test_each_block_is_a_branch_of_two_kernels_added_to_the_stream(kind, normalization):
    model = build(kind, normalization, depth=3, width=8)
    found = keras_inits.roles(model)
    assert found.blocks == 3
    assert [(k.path, k.role, k.block) for k in found.kernels] == [
        ("stem/kernel", "other", None),
        *[(f"block{b}_{i}/kernel", role, b - 1) for b in (1, 2, 3)
          for i, role in ((1, "branch_inner"), (2, "branch_output"))],
        ("output/kernel", "head", None),
    ]
    norms = {type(layer).__name__ for layer in model.layers if "norm" in layer.name}
    assert norms == {"none": set(), "batch": {"BatchNormalization"},
                     "layer": {"LayerNormalization"}}[normalization]


def test_without_normalization_he_triples_the_streams_second_moment_at_every_block():
    # x + W2 relu(W1 x) with He kernels (Var = 2/fan_in): E[(W1 x)^2] = 2 E[x^2], relu
    # halves it, W2 doubles it again, so the branch adds 2 E[x^2], uncorrelated with x at
    # init: E[x^2] triples per block. With batch norm after W1 the branch adds about the
    # same whatever the stream's scale: growth by addition. In training mode, where batch
    # norm normalizes (at init its moving statistics are the identity).
    batch = np.random.default_rng(0).normal(size=(512, 8, 8, 1)).astype("float32")

    def second_moments(model):
        return [
            float(np.mean(np.square(keras.Model(model.input, model.get_layer(
                f"block{block}_add").output)(batch, training=True).numpy())))
            for block in range(1, 7)
        ]

    plain = second_moments(build())
    ratios = [b / a for a, b in zip(plain[:-1], plain[1:], strict=True)]
    assert all(2.6 < ratio < 3.4 for ratio in ratios), ratios
    normalized = second_moments(build(normalization="batch"))
    added = np.diff(normalized)
    assert added.max() / added.min() < 1.5, added  # about the same at every block
    assert normalized[-1] / normalized[0] < 3**5 / 10  # far below tripling


def test_a_scheme_arm_reinitializes_the_built_model_by_role():
    model = build(initializer="scheme:fixup")
    found = keras_inits.roles(model)
    for kernel in found.of("branch_output", "head"):
        assert not np.any(model.get_layer(kernel.path.split("/")[0]).kernel.numpy())
    inner = np.concatenate([
        model.get_layer(k.path.split("/")[0]).kernel.numpy().ravel()
        for k in found.of("branch_inner")
    ])
    he_fan_out = math.sqrt(2 / 256)
    assert np.std(inner) == pytest.approx(he_fan_out * 6**-0.5, rel=0.02)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"initializers": ("scheme:fixupp",)},
         r"scheme:fixupp: Unknown scheme 'fixupp'. Use one of \('gpt2'"),
        ({"initializers": ("scheme:gpt2(std=1)",)},
         "takes no parameter std; it takes branches, sigma"),
        ({"model": ("resmlp",), "normalization": ("group",)}, "--normalization must be among"),
    ],
)
def test_bad_settings_are_told_before_training(settings, message):
    with pytest.raises(ExperimentError, match=message):
        config.resolve(**settings)


def test_normalization_belongs_to_the_residual_models_cells():
    settings = config.resolve(model=("mlp", "resmlp"), normalization=("none", "batch"))
    assert [(cell.model, cell.normalization) for cell in settings.cells()] == [
        ("mlp", None), ("resmlp", "none"), ("resmlp", "batch")
    ]


def test_a_comparison_of_he_and_fixup_on_a_resmlp(tmp_path):
    settings = config.resolve(
        model=("resmlp",), depth=(4,), width=(16,), activation=("relu",),
        normalization=("none",), initializers=("he_normal", "scheme:fixup"), seeds=(0,),
        train_size=64, test_size=32, epochs=1, histogram_every=0, probe_size=32,
        logdir=str(tmp_path),
    )
    entries = runner.compare(settings, progress=lambda line: None)
    assert [(e["initializer"], e["normalization"]) for e in entries] == [
        ("he_normal", "none"), ("scheme:fixup", "none")
    ]
    assert entries[1]["run_dir"] == "scheme-fixup_seed0"
    # Fixup's zero head: every class equally likely at step 0.
    assert entries[1]["initial_loss"] == pytest.approx(math.log(settings_classes(settings)))
    report = (tmp_path / settings.experiment / "report.md").read_text()
    assert "RESMLP of 4 residual blocks" in report and "normalization none" in report
    assert "A scheme arm (`scheme:fixup`)" in report


def settings_classes(settings):
    from experiments.data import datasets

    return datasets.load(settings.dataset, 64, 32).num_classes


def test_clipping_reaches_the_optimizer_and_both_kinds_are_refused(tmp_path):
    with pytest.raises(ExperimentError, match="not both"):
        config.resolve(clipnorm=1.0, global_clipnorm=1.0, group_arms=False)
    with pytest.raises(ExperimentError, match="--clipnorm must be a number >= 0"):
        config.resolve(clipnorm=-1.0)
    from experiments.engine import training

    optimizer = training.make_optimizer("adam", 0.01, 0.9, global_clipnorm=0.5)
    assert optimizer.global_clipnorm == 0.5 and optimizer.clipnorm is None
    # A deep He resmlp without normalization diverges unclipped; clipping every weight's
    # gradient to norm 1 keeps it finite for the epoch (at the same learning rate).
    settings = dict(
        model=("resmlp",), depth=(8,), width=(32,), activation=("relu",),
        initializers=("he_normal",), seeds=(0,), train_size=256, test_size=32, epochs=1,
        histogram_every=0, probe_size=32, logdir=str(tmp_path),
    )
    unclipped = runner.compare(config.resolve(**settings), progress=lambda line: None)
    clipped = runner.compare(
        config.resolve(**settings, clipnorm=1.0), progress=lambda line: None
    )
    assert unclipped[0]["status"] == "diverged" and clipped[0]["status"] == "ok"
    report = (tmp_path / config.resolve(**settings, clipnorm=1.0).experiment / "report.md")
    assert "gradients clipped by clipnorm=1.0" in report.read_text()
