"""Replication verdicts: computed from the runs, reproduced or not as the numbers say."""

import json

import numpy as np
import pytest

from experiments import config, models, runner, specs
from experiments.config import Cell
from experiments.errors import ExperimentError
from experiments.papers import replications


def _entry(initial, final, status="ok", run_dir="run"):
    return {
        "initial_loss": initial,
        "final_loss": final,
        "status": status,
        "run_dir": run_dir,
    }


def _groups(deep_xavier_final, shallow_kaiming_epoch1=2.0):
    cell = Cell("mlp", 30, 256, "relu", "sgd", 0.01, 32)
    shallow = Cell("mlp", 10, 256, "relu", "sgd", 0.01, 32)
    groups = {
        (shallow, "xavier_normal"): [_entry(2.3, 2.0, run_dir="sx")],
        (shallow, "kaiming_normal(nonlinearity='relu')"): [_entry(2.4, 1.9, run_dir="sk")],
        (cell, "xavier_normal"): [_entry(2.197, deep_xavier_final)],
        (cell, "kaiming_normal(nonlinearity='relu')"): [_entry(2.6, 2.0)],
    }
    details = {
        "sx": {"history": {"loss": [2.3, 2.1, 2.0]}},
        "sk": {"history": {"loss": [2.4, shallow_kaiming_epoch1, 1.9]}},
    }
    return groups, details


def test_he2015_is_reproduced_when_deep_xavier_stalls_and_the_rest_train():
    finding = replications.judge_he2015(*_groups(deep_xavier_final=2.198))
    assert finding.reproduced
    assert finding.sentence.startswith("Reproduced: at 30 layers xavier_normal's training loss "
                                       "stalls (+0.0%) while kaiming_normal's trains (-23.1%)")
    assert "at 10 layers both train (-13.0%, -20.8%), kaiming_normal earlier" in finding.sentence
    assert finding.rows[2] == (
        "30 layers, xavier_normal",
        "stalls (Fig. 3, 30 layers)",
        "train loss 2.197 -> 2.198 (+0.0%)",
    )


def test_he2015_is_not_reproduced_when_the_numbers_disagree():
    trained = replications.judge_he2015(*_groups(deep_xavier_final=1.9))
    assert not trained.reproduced and "does not stall (-13.5%)" in trained.sentence
    later = replications.judge_he2015(*_groups(deep_xavier_final=2.198, shallow_kaiming_epoch1=2.2))
    assert not later.reproduced and "kaiming_normal not earlier" in later.sentence


def test_a_diverged_arm_counts_as_not_training():
    groups, details = _groups(deep_xavier_final=2.198)
    cell = Cell("mlp", 30, 256, "relu", "sgd", 0.01, 32)
    groups[(cell, "kaiming_normal(nonlinearity='relu')")] = [_entry(2.6, None, "diverged")]
    finding = replications.judge_he2015(groups, details)
    assert not finding.reproduced and "does not train (diverged)" in finding.sentence


def test_the_he2015_preset_sweeps_depth_and_says_so_in_its_report(tmp_path):
    settings = config.resolve("he2015")
    assert len(settings.depth) >= 2 and max(settings.depth) == 30
    from experiments.papers.presets import PRESETS

    assert PRESETS["he2015"].replication is replications.HE2015


def _selu_groups(lecun_last_variance=1.0, lecun_final=1.9):
    cell = Cell("mlp", 32, 256, "selu", "sgd", 0.01, 32)
    variances = {
        "variance_scaling(scale=0.5)": [0.4, 0.01, 1e-6],
        "lecun_normal": [0.5, 0.9, lecun_last_variance],
        "variance_scaling(scale=2.0)": [0.9, 30.0, 5e4],
    }
    finals = {"variance_scaling(scale=0.5)": 2.19, "lecun_normal": lecun_final,
              "variance_scaling(scale=2.0)": 2.1}
    if lecun_final < 2.1:
        finals["variance_scaling(scale=2.0)"] = None  # diverged
    groups, details = {}, {}
    for spec, variance in variances.items():
        status = "diverged" if finals[spec] is None else "ok"
        groups[(cell, spec)] = [_entry(2.2, finals[spec], status, run_dir=spec)]
        details[spec] = {
            "profiles": {
                "initial": {
                    "activation_mean": [0.1, 0.02, 0.01, 0.3],  # the output layer last
                    "activation_std": [v**0.5 for v in variance] + [0.2],
                }
            }
        }
    return groups, details


def test_klambauer2017_checks_the_fixed_point_the_drift_and_training():
    finding = replications.judge_klambauer2017(*_selu_groups())
    assert finding.reproduced, finding.sentence
    assert "start at mean +0.01 and variance 1.00 (level)" in finding.sentence
    assert "variance_scaling(scale=0.5): 1e-06, variance_scaling(scale=2.0): 5e+04" in (
        finding.sentence
    )
    assert finding.rows[2] == (
        "lecun_normal: step 0, hidden layer 1 -> 3",
        "mean ~0, variance ~1",
        "variance 0.5 -> 1, last mean +0.01",
    )
    drifted = replications.judge_klambauer2017(*_selu_groups(lecun_last_variance=4.0))
    assert not drifted.reproduced and "(not level)" in drifted.sentence
    beaten = replications.judge_klambauer2017(*_selu_groups(lecun_final=2.15))
    assert not beaten.reproduced and beaten.sentence.startswith("Partly reproduced")
    assert "does not suffer with variance_scaling(scale=2.0) (loss 2.100)" in beaten.sentence
    assert "suffers with variance_scaling(scale=0.5) (loss 2.190)" in beaten.sentence


def _lsuv_groups(lsuv_epoch1, lsuv_final):
    cell = Cell("mlp", 20, 256, "relu", "sgd", 0.01, 32)
    arms = {
        "lsuv(tol=0.1)": (2.7, lsuv_epoch1, lsuv_final),
        "orthogonal": (2.197, 2.198, 2.198),
        "kaiming_normal(nonlinearity='relu')": (2.6, 2.16, 1.98),
    }
    groups, details = {}, {}
    for spec, (initial, epoch1, final) in arms.items():
        groups[(cell, spec)] = [_entry(initial, final, run_dir=spec)]
        details[spec] = {"history": {"loss": [initial, epoch1, final]}}
    return groups, details


def test_mishkin2016_needs_lsuv_as_fast_as_the_best_fan_based_init():
    finding = replications.judge_mishkin2016(*_lsuv_groups(2.165, 1.977))
    assert finding.reproduced
    assert finding.sentence == (
        "Reproduced: lsuv(tol=0.1) reaches a training loss of 2.165 after epoch 1 and 1.977 "
        "at the end, against 2.160 (kaiming_normal(nonlinearity='relu')) and 1.980 "
        "(kaiming_normal(nonlinearity='relu')) for the best fan-based init; orthogonal stalls."
    )
    slower = replications.judge_mishkin2016(*_lsuv_groups(2.19, 2.05))
    assert not slower.reproduced and slower.sentence.startswith("Not reproduced")


def test_lsuv_is_a_harness_spec_fitted_on_the_probe_batch(tmp_path):
    assert specs.lsuv_settings("lsuv(tol=0.05, max_iters=3)") == {"tol": 0.05, "max_iters": 3}
    assert specs.lsuv_settings("orthogonal") is None
    with pytest.raises(ExperimentError, match="lsuv takes tol and max_iters, not tolerance"):
        config.resolve(initializers=("lsuv(tolerance=0.1)",))
    settings = config.resolve(
        initializers=("lsuv(tol=0.05)", "orthogonal"),
        activation=("relu",),
        depth=6,
        width=32,
        train_size=64,
        test_size=32,
        epochs=1,
        seeds=(0,),
        histogram_every=0,
        probe_size=64,
        logdir=str(tmp_path),
    )
    entries = runner.compare(settings, progress=lambda _: None)
    stds = {}
    for entry in entries:
        folder = tmp_path / settings.experiment / entry["run_dir"]
        run = json.loads((folder / "run.json").read_text())
        stds[entry["initializer"]] = run["profiles"]["initial"]["activation_std"][:-1]
    # Fitted on the probe batch, every hidden pre-activation has unit variance (within
    # tol), so the ReLU outputs keep one scale through depth; orthogonal init alone
    # halves the variance at every ReLU layer.
    fitted = stds["lsuv(tol=0.05)"]
    assert max(fitted) < 1.5 * min(fitted) and min(fitted) > 0.3, fitted
    assert stds["orthogonal"][-1] < 0.3 * stds["orthogonal"][0]


def _saxe_groups(gaussian_deep_losses):
    groups, details = {}, {}
    curves = {
        ("orthogonal", 4): [2.3, 2.1, 2.0, 1.9],
        ("orthogonal", 64): [2.3, 2.06, 2.0, 1.8],
        ("lecun_normal", 4): [2.3, 2.1, 2.04, 1.95],
        ("lecun_normal", 64): gaussian_deep_losses,
    }
    for (spec, depth), losses in curves.items():
        cell = Cell("mlp", depth, 128, "linear", "sgd", 0.001, 32)
        name = f"{spec}{depth}"
        groups[(cell, spec)] = [_entry(losses[0], losses[-1], run_dir=name)]
        details[name] = {"history": {"step": [0, 64, 128, 192], "loss": losses}}
    return groups, details


def test_saxe2013_times_learning_by_the_steps_to_the_criterion():
    finding = replications.judge_saxe2013(*_saxe_groups([2.4, 2.2, 2.15, 2.1]))
    assert finding.reproduced
    assert "4: 128 vs 128, 64: 128 vs never" in finding.sentence
    assert finding.rows[3] == (
        "64 layers, lecun_normal", "grows with depth", "not reached by 1 of 1 seeds"
    )
    same_speed = replications.judge_saxe2013(*_saxe_groups([2.3, 2.1, 2.04, 1.9]))
    assert not same_speed.reproduced and "lecun_normal's do not grow" in same_speed.sentence


def _glorot_groups(accuracies):
    groups = {}
    for (activation, spec), accuracy in accuracies.items():
        cell = Cell("mlp", 5, 256, activation, "sgd", 0.01, 32)
        groups[(cell, spec)] = [{**_entry(2.2, 2.0), "final_test_accuracy": accuracy}]
    return groups


TABLE1_LIKE = {
    ("tanh", "standard_uniform"): 0.19,
    ("tanh", "xavier_uniform"): 0.375,
    ("softsign", "standard_uniform"): 0.26,
    ("softsign", "xavier_uniform"): 0.37,
    ("sigmoid", "standard_uniform"): 0.114,
    ("sigmoid", "xavier_uniform"): 0.114,
}


def test_glorot2010_checks_table_1s_order_in_test_error():
    finding = replications.judge_glorot2010(_glorot_groups(TABLE1_LIKE), {})
    assert finding.reproduced, finding.sentence
    assert finding.sentence.startswith(
        "Reproduced: test error (%): tanh 81.0 standard vs 62.5 normalized (normalized better)"
    )
    assert ("tanh, xavier_uniform", "15.60% error", "62.50% error") in finding.rows
    assert ("sigmoid, xavier_uniform", "–", "88.60% error") in finding.rows
    sigmoid_trains = {**TABLE1_LIKE, ("sigmoid", "xavier_uniform"): 0.3}
    partly = replications.judge_glorot2010(_glorot_groups(sigmoid_trains), {})
    assert partly.sentence.startswith("Partly reproduced") and "not the worst" in partly.sentence


def _xiao_groups(delta_final, gaussian_final):
    cell = Cell("experiments.papers.architectures:xiao2018_cnn", None, None, None, "sgd", 0.01, 32)
    groups = {
        (cell, "delta_orthogonal"): [_entry(2.20, delta_final), _entry(2.20, delta_final)],
        (cell, "lecun_normal"): [_entry(2.197, gaussian_final), _entry(2.197, gaussian_final)],
    }
    return groups, {}


def test_xiao2018_needs_delta_orthogonal_to_train_and_the_gaussian_to_stall_or_trail():
    finding = replications.judge_xiao2018(*_xiao_groups(2.0, 2.199))
    assert finding.reproduced
    assert finding.sentence == (
        "Reproduced: with delta_orthogonal the 32-layer tanh CNN trains (-9.1%); with "
        "lecun_normal, the Gaussian of the same variance, it stalls or trails far behind "
        "(+0.1%)."
    )
    trailing = replications.judge_xiao2018(*_xiao_groups(2.0, 2.15))  # -2.1% < half of -9.1%
    assert trailing.reproduced
    keeping_up = replications.judge_xiao2018(*_xiao_groups(2.0, 2.05))
    assert not keeping_up.reproduced and keeping_up.sentence.startswith("Partly reproduced")
    neither = replications.judge_xiao2018(*_xiao_groups(2.15, 2.10))
    assert neither.sentence.startswith("Not reproduced")


def test_the_xiao2018_model_is_a_deep_vanilla_tanh_cnn():
    model = models.initialize(
        "experiments.papers.architectures:xiao2018_cnn",
        input_shape=(32, 32, 1),
        num_classes=9,
        x_sample=np.zeros((2, 32, 32, 1), "float32"),
        depth=None,
        width=None,
        activation=None,
        initializer="delta_orthogonal",
        fallback="xavier_normal",
        seed=0,
    )
    convolutions = [layer for layer in model.model.layers if layer.name.startswith("conv_")]
    assert len(convolutions) == 32
    assert model.model.output_shape == (None, 9)
    # The patch embedding and the read-out get the fallback; every convolution is a delta.
    assert set(model.fallback_layers) == {"patches", "output"}
    kernel = convolutions[-1].kernel.numpy()
    assert abs(kernel).sum(axis=(2, 3))[[0, 0, 2, 2], [0, 2, 0, 2]].max() == 0
