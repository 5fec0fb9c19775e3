"""Arms with optimizers of their own in one group: learning-rate sweeps, muP, a global norm
each. Every arm must take the steps it takes alone."""

import json

import keras
import numpy as np
import pytest

from experiments import config, plan, runner
from experiments.engine import optimizers, towers
from experiments.errors import ExperimentError

TINY = dict(
    seeds=(0,), depth=2, width=16, activation=("relu",), train_size=320, test_size=64,
    epochs=2, batch_size=32, probe_size=32, histogram_every=5,
)


def _compare(tmp_path, name, **settings):
    settings = config.resolve(**{**TINY, **settings}, logdir=str(tmp_path), experiment=name)
    lines = []
    entries = runner.compare(settings, progress=lines.append)
    return entries, lines


def _by_run(entries):
    return {(e["initializer"], e["learning_rate"], e["parametrization"]): e for e in entries}


def _weights(tmp_path, name, entry):
    model = keras.saving.load_model(tmp_path / name / entry["run_dir"] / "model.keras")
    return [w.numpy() for w in model.weights]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_learning_rates_train_together_and_each_arm_takes_its_lone_steps(tmp_path, optimizer):
    rates = (0.003, 0.03)
    specs = ("xavier_normal", "he_normal")
    grouped, lines = _compare(
        tmp_path, "grouped", initializers=specs, learning_rate=rates, optimizer=(optimizer,),
        parametrization=("sp", "mup"), base_width=8,
    )
    # One group per parametrization: 2 initializers x 2 rates, as towers (own optimizers).
    assert {e["group_size"] for e in grouped} == {4}
    assert {e["engine"] for e in grouped} == {"towers"}
    assert sum("group of 4" in line for line in lines) == 8
    alone, _ = _compare(
        tmp_path, "alone", initializers=specs, learning_rate=rates, optimizer=(optimizer,),
        parametrization=("sp", "mup"), base_width=8, group_arms=False,
    )
    assert {e["group_size"] for e in alone} == {1}
    lone = _by_run(alone)
    for key, entry in _by_run(grouped).items():
        for metric in ("initial_loss", "final_loss", "final_test_loss"):
            assert entry[metric] == pytest.approx(lone[key][metric], rel=1e-5), (key, metric)
        for mine, theirs in zip(
            _weights(tmp_path, "grouped", entry), _weights(tmp_path, "alone", lone[key]),
            strict=True,
        ):
            np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)
    # The rates differ in effect (the check is not about arms that ignore their rate) ...
    runs = _by_run(grouped)
    assert runs[("he_normal", 0.003, "sp")]["final_loss"] != pytest.approx(
        runs[("he_normal", 0.03, "sp")]["final_loss"], rel=1e-3
    )
    # ... and so does muP, away from its base width 8 (this is width 16).
    assert runs[("he_normal", 0.03, "mup")]["final_loss"] != pytest.approx(
        runs[("he_normal", 0.03, "sp")]["final_loss"], rel=1e-3
    )


def test_at_the_base_width_mup_is_the_standard_parametrization(tmp_path):
    entries, _ = _compare(
        tmp_path, "base", initializers=("he_normal",), learning_rate=(0.01, 0.05),
        parametrization=("sp", "mup"), base_width=16, optimizer=("adam",),
    )
    runs = _by_run(entries)
    for rate in (0.01, 0.05):
        sp, mup = runs[("he_normal", rate, "sp")], runs[("he_normal", rate, "mup")]
        history = [
            json.loads((tmp_path / "base" / e["run_dir"] / runner.RUN_DETAILS).read_text())
            ["history"]["loss"] for e in (sp, mup)
        ]
        np.testing.assert_allclose(history[0], history[1], rtol=1e-6)
        for mine, theirs in zip(
            _weights(tmp_path, "base", sp), _weights(tmp_path, "base", mup), strict=True
        ):
            np.testing.assert_allclose(mine, theirs, rtol=1e-6, atol=1e-7)


def test_readout_zero_init_starts_the_mup_arms_at_the_uniform_prediction(tmp_path):
    # Zero logits: the step-0 loss is ln(9) on Shapeset's 9 classes exactly, in the muP arm
    # only; the read-out then trains away from zero.
    entries, _ = _compare(
        tmp_path, "zero", initializers=("he_normal",), learning_rate=(0.01,),
        parametrization=("sp", "mup"), base_width=8, optimizer=("adam",),
        readout_zero_init=True, epochs=1,
    )
    runs = _by_run(entries)
    sp, mup = runs[("he_normal", 0.01, "sp")], runs[("he_normal", 0.01, "mup")]
    assert mup["initial_loss"] == pytest.approx(np.log(9), rel=1e-6)
    assert sp["initial_loss"] != pytest.approx(np.log(9), rel=1e-3)
    model = keras.saving.load_model(tmp_path / "zero" / mup["run_dir"] / "model.keras")
    assert np.any(model.get_layer("output").kernel.numpy())
    report = (tmp_path / "zero" / "report.md").read_text()
    assert "the read-out starts at zero (--readout_zero_init)" in report


def test_a_diverging_rate_is_frozen_without_touching_the_other_rates(tmp_path):
    grouped, lines = _compare(
        tmp_path, "diverge", initializers=("he_normal",), learning_rate=(0.01, 1e4),
    )
    runs = {e["learning_rate"]: e for e in grouped}
    assert runs[1e4]["status"] == "diverged" and runs[0.01]["status"] == "ok"
    assert runs[0.01]["group_size"] == 2
    alone, _ = _compare(tmp_path, "calm", initializers=("he_normal",), learning_rate=(0.01,))
    assert runs[0.01]["final_loss"] == pytest.approx(alone[0]["final_loss"], rel=1e-5)
    assert runs[0.01]["steps"] == 20


def test_each_arm_clips_its_own_global_norm(tmp_path):
    specs = ("xavier_normal", "random_normal(stddev=0.5)")
    grouped, _ = _compare(
        tmp_path, "clip", initializers=specs, global_clipnorm=0.05, optimizer=("adam",),
    )
    assert {e["group_size"] for e in grouped} == {2}
    alone, _ = _compare(
        tmp_path, "clip_alone", initializers=specs, global_clipnorm=0.05, optimizer=("adam",),
        group_arms=False,
    )
    unclipped, _ = _compare(tmp_path, "free", initializers=specs, optimizer=("adam",))
    for mine, lone, free in zip(grouped, alone, unclipped, strict=True):
        assert mine["final_loss"] == pytest.approx(lone["final_loss"], rel=1e-5)
        assert mine["final_loss"] != pytest.approx(free["final_loss"], rel=1e-3)


def test_plan_groups_the_rates_of_a_cell_and_resumes_the_missing_ones():
    settings = config.resolve(**{
        **TINY, "initializers": ("xavier_normal", "he_normal"), "learning_rate": (0.1, 0.01),
        "width": (8, 16), "seeds": (0, 1),
    })
    groups = plan.plan(settings)
    assert len(groups) == 4  # widths x seeds
    assert [g.arms for g in groups[:1]] == [(
        ("xavier_normal", 0.1), ("he_normal", 0.1), ("xavier_normal", 0.01), ("he_normal", 0.01)
    )]
    assert [(g.cell.width, g.seed) for g in groups] == [(8, 0), (8, 1), (16, 0), (16, 1)]
    every = {
        (spec, seed, cell)
        for cell in settings.cells() for seed in settings.seeds for spec in settings.initializers
    }
    planned = [key for g in groups for key in g.runs()]
    assert len(planned) == len(every) == 16 and set(planned) == every
    done = set(groups[0].runs()[:3])
    resumed = plan.plan(settings, done)
    assert resumed[0].arms == (("he_normal", 0.01),) and resumed[0].cell.learning_rate == 0.01
    alone = plan.plan(config.resolve(**TINY, learning_rate=(0.1, 0.01), group_arms=False))
    assert {len(g.arms) for g in alone} == {1}


def test_group_optimizer_is_keras_own_when_the_arms_share_one():
    arms = [keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]) for _ in range(2)]

    def make(rate):
        return keras.optimizers.Adam(rate)

    assert type(optimizers.group_optimizer(arms, [0.1, 0.1], make)) is keras.optimizers.Adam
    mixed = optimizers.group_optimizer(arms, [0.1, 0.2], make)
    assert isinstance(mixed, optimizers.GroupOptimizer)
    mixed.build([v for arm in arms for v in arm.trainable_variables])
    rates = sorted(float(opt.learning_rate) for opt in mixed.optimizers)
    assert rates == pytest.approx([0.1, 0.2])
    with pytest.raises(ValueError, match="given two optimizers"):
        optimizers.GroupOptimizer([(make(0.1), arms[0].weights), (make(0.2), arms[0].weights)])
    towers.check_independent(keras.optimizers.SGD(global_clipnorm=1.0), towers=1)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(parametrization=("ntk",)), "--parametrization must be among sp, mup"),
        (dict(base_width=8), "--base_width only applies to --parametrization=mup"),
        (dict(readout_zero_init=True), "--readout_zero_init only applies to --parametrization"),
        (dict(parametrization=("mup",), base_width=0), "--base_width must be an integer >= 1"),
        (dict(parametrization=("mup",), global_clipnorm=1.0), "one optimizer per learning"),
        (dict(parametrization=("mup",), model=("tests.experiments.custom_models:small_cnn",)),
         "brings its own width"),
        (dict(parametrization=("mup",), model=("transformer",), dataset="sonnets", width=(64,),
              base_width=30), "must divide --base_width=30"),
    ],
)
def test_bad_parametrization_settings_are_refused(settings, message):
    with pytest.raises(ExperimentError, match=message):
        config.resolve(**settings)


def test_mup_base_width_defaults_to_the_smallest_width():
    settings = config.resolve(parametrization=("sp", "mup"), width=(64, 32, 128))
    assert settings.base_width == 32
    assert config.resolve().base_width is None
