"""Replication verdicts: computed from the runs, reproduced or not as the numbers say."""

import json
from pathlib import Path

import numpy as np
import pytest

from experiments import config, models, runner, specs
from experiments.config import Cell
from experiments.errors import ExperimentError
from experiments.papers import architectures, replications
from experiments.papers.replications import STALLS, TRAINS
from experiments.results import report


def _entry(initial, final, status="ok", run_dir="run"):
    return {
        "initial_loss": initial,
        "final_loss": final,
        "status": status,
        "run_dir": run_dir,
    }


# 100/32: INITIAL * STALLS and INITIAL * TRAINS are exact binary fractions, so a run
# made to fall by exactly STALLS or TRAINS has exactly that relative drop (checked below).
INITIAL = 3.125


def _dropped(drop, run_dir="run"):
    """A run whose training loss fell from INITIAL by the fraction `drop` of it."""
    return _entry(INITIAL, INITIAL - INITIAL * drop, run_dir=run_dir)


def test_a_run_made_to_fall_by_a_threshold_falls_by_exactly_it():
    # Else a `<` turned into `<=` (or `>=` into `>`) could pass the boundary cases below.
    assert replications.relative_drop([_dropped(STALLS)]) == STALLS
    assert replications.relative_drop([_dropped(TRAINS)]) == TRAINS
    assert replications.relative_drop([_dropped(2 * TRAINS)]) == 2 * TRAINS


def _groups(deep_xavier_final, shallow_kaiming_epoch1=2.0):
    cell = Cell("mlp", 30, 256, "relu", None, "sgd", 0.01, 32)
    shallow = Cell("mlp", 10, 256, "relu", None, "sgd", 0.01, 32)
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
    cell = Cell("mlp", 30, 256, "relu", None, "sgd", 0.01, 32)
    groups[(cell, "kaiming_normal(nonlinearity='relu')")] = [_entry(2.6, None, "diverged")]
    finding = replications.judge_he2015(groups, details)
    assert not finding.reproduced and "does not train (diverged)" in finding.sentence


DEEP = Cell("mlp", 30, 256, "relu", None, "sgd", 0.01, 32)
SHALLOW = Cell("mlp", 10, 256, "relu", None, "sgd", 0.01, 32)
KAIMING = "kaiming_normal(nonlinearity='relu')"
HE_ARMS = {
    "deep xavier": (DEEP, "xavier_normal"),
    "deep kaiming": (DEEP, KAIMING),
    "shallow xavier": (SHALLOW, "xavier_normal"),
    "shallow kaiming": (SHALLOW, KAIMING),
}


def _he_groups(arm, drop):
    """he2015's arms as the paper has them (deep xavier flat, the rest down 20%, kaiming's
    loss after epoch 1 lower at 10 layers), except `arm`, whose loss falls by `drop`."""
    drops = {
        "deep xavier": 0.0,
        "deep kaiming": 0.2,
        "shallow xavier": 0.2,
        "shallow kaiming": 0.2,
        arm: drop,
    }
    groups = {HE_ARMS[name]: [_dropped(value, run_dir=name)] for name, value in drops.items()}
    details = {
        "shallow xavier": {"history": {"loss": [INITIAL, 3.0]}},
        "shallow kaiming": {"history": {"loss": [INITIAL, 2.9]}},
    }
    return groups, details


# (arm, its relative drop, the verdict, what the sentence says of it). Stalling is a drop
# below STALLS (strict), training a drop of at least TRAINS.
@pytest.mark.parametrize(
    ("arm", "drop", "word", "says"),
    [
        ("deep xavier", STALLS * 0.99, "Reproduced", "xavier_normal's training loss stalls ("),
        ("deep xavier", STALLS, "Partly reproduced", "training loss does not stall ("),
        ("deep xavier", STALLS * 1.01, "Partly reproduced", "training loss does not stall ("),
        ("deep kaiming", TRAINS * 1.01, "Reproduced", "while kaiming_normal's trains ("),
        ("deep kaiming", TRAINS, "Reproduced", "while kaiming_normal's trains ("),
        ("deep kaiming", TRAINS * 0.99, "Partly reproduced", "kaiming_normal's does not train ("),
        ("shallow xavier", TRAINS, "Reproduced", "at 10 layers both train ("),
        ("shallow xavier", TRAINS * 0.99, "Partly reproduced", "do not both train ("),
        ("shallow kaiming", TRAINS, "Reproduced", "at 10 layers both train ("),
        ("shallow kaiming", TRAINS * 0.99, "Partly reproduced", "do not both train ("),
    ],
)
def test_he2015_at_the_thresholds(arm, drop, word, says):
    groups, details = _he_groups(arm, drop)
    assert replications.relative_drop(groups[HE_ARMS[arm]]) == pytest.approx(drop, rel=1e-9)
    finding = replications.judge_he2015(groups, details)
    assert finding.sentence.startswith(f"{word}: at 30 layers "), finding.sentence
    assert says in finding.sentence
    assert finding.reproduced == (word == "Reproduced")


def _he2015_entries(settings, deep_xavier_drop):
    """A summary of the he2015 grid, one seed: every arm's loss falls 20% except xavier's
    at the deepest depth, which falls by `deep_xavier_drop`."""
    entries = []
    for depth in settings.depth:
        for spec in settings.initializers:
            deep_xavier = (depth, spec) == (max(settings.depth), "xavier_normal")
            run = _dropped(deep_xavier_drop if deep_xavier else 0.2, f"{spec}_{depth}")
            entries.append(
                {
                    **run,
                    "initializer": spec,
                    "seed": 0,
                    "depth": depth,
                    "steps": 1250,
                    "train_seconds": 60.0,
                    "final_test_loss": run["final_loss"],
                    "final_test_accuracy": 0.3,
                    "diverged_at_step": None,
                    "fallback_layers": [],
                }
            )
    return entries


def test_the_he2015_preset_sweeps_depth_and_says_so_in_its_report(tmp_path, monkeypatch):
    settings = config.resolve("he2015")
    assert len(settings.depth) >= 2 and max(settings.depth) == 30
    from experiments.papers.presets import PRESETS

    assert PRESETS["he2015"].replication is replications.HE2015
    # The figures are test_report.py's; here only the text, in a second instead of five.
    monkeypatch.setattr(report, "_figures", lambda *args: [])
    first_epoch = {"xavier_normal_10": 3.0, f"{KAIMING}_10": 2.9}
    details = {run: {"history": {"loss": [INITIAL, loss]}} for run, loss in first_epoch.items()}

    def written(folder, deep_xavier_drop):
        entries = _he2015_entries(settings, deep_xavier_drop)
        (tmp_path / folder).mkdir()
        path = report.write(str(tmp_path / folder), settings, entries, details)
        return Path(path).read_text()

    text = written("stalls", deep_xavier_drop=-0.001)
    assert "- preset: `he2015`" in text and "- swept: depth" in text
    assert "MLP of 10, 20, 30 (swept) hidden layers" in text
    replication = text[text.index("## Replication") : text.index("## Identical models")]
    assert "He, Zhang, Ren & Sun (2015)" in replication
    verdict = next(line for line in replication.splitlines() if line.startswith("**"))
    # Made-up runs: deep xavier's loss creeps up 0.1%, every other arm's falls 20%, and
    # kaiming's is lower after epoch 1 at 10 layers (2.9 vs 3.0).
    assert verdict.startswith(
        "**Reproduced: at 30 layers xavier_normal's training loss stalls (+0.1%)"
    )
    assert "while kaiming_normal's trains (-20.0%)" in verdict
    assert "kaiming_normal earlier (loss after epoch 1: 2.900 vs 3.000)" in verdict
    row = "| 30 layers, xavier_normal | stalls (Fig. 3, 30 layers) | train loss 3.125 -> 3.128"
    assert f"{row} (+0.1%) |" in replication
    # The verdict is computed from the runs each time: the same report of runs in which
    # deep xavier trains says so.
    trained = written("trains", deep_xavier_drop=0.2)
    assert (
        "**Partly reproduced: at 30 layers xavier_normal's training loss does not stall (-20.0%)"
        in trained
    )


def _selu_groups(lecun_last_variance=1.0, lecun_final=1.9):
    cell = Cell("mlp", 32, 256, "selu", None, "sgd", 0.01, 32)
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


@pytest.mark.parametrize(
    ("drop", "word", "says"),
    [
        (TRAINS * 1.01, "Reproduced", "lecun_normal trains to a training loss of"),
        (TRAINS, "Reproduced", "lecun_normal trains to a training loss of"),
        (TRAINS * 0.99, "Partly reproduced", "lecun_normal does not train to a training loss"),
    ],
)
def test_klambauer2017_at_the_training_threshold(drop, word, says):
    # Level, drifting moments; the other scalings stall (0.5) and diverge (2.0), so they
    # suffer: whether lecun_normal trains decides the third check alone.
    groups, details = _selu_groups()
    cell = next(iter(groups))[0]
    groups[(cell, "lecun_normal")] = [_dropped(drop, run_dir="lecun_normal")]
    half = "variance_scaling(scale=0.5)"
    groups[(cell, half)] = [_dropped(STALLS / 2, run_dir=half)]
    finding = replications.judge_klambauer2017(groups, details)
    assert finding.sentence.startswith(f"{word}: "), finding.sentence
    assert says in finding.sentence and "(level)" in finding.sentence
    assert f"suffers with {half}" in finding.sentence
    assert finding.reproduced == (word == "Reproduced")


def _lsuv_groups(lsuv_epoch1, lsuv_final):
    cell = Cell("mlp", 20, 256, "relu", None, "sgd", 0.01, 32)
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


@pytest.mark.parametrize(
    ("drop", "named"),
    [
        (STALLS * 0.99, "; orthogonal stalls."),
        (STALLS, "; orthogonal trains slower."),
        (STALLS * 1.01, "; orthogonal trains slower."),
    ],
)
def test_mishkin2016_names_the_arms_that_stall(drop, named):
    # LSUV beats kaiming_normal either way; orthogonal, far behind, stalls below STALLS.
    groups, details = _lsuv_groups(2.165, 1.977)
    cell = next(iter(groups))[0]
    run = _dropped(drop, run_dir="orthogonal")
    groups[(cell, "orthogonal")] = [run]
    details["orthogonal"] = {"history": {"loss": [INITIAL, run["final_loss"], run["final_loss"]]}}
    finding = replications.judge_mishkin2016(groups, details)
    assert finding.reproduced and finding.sentence.startswith("Reproduced: ")
    assert finding.sentence.endswith(named), finding.sentence


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
        cell = Cell("mlp", depth, 128, "linear", None, "sgd", 0.001, 32)
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
        cell = Cell("mlp", 5, 256, activation, None, "sgd", 0.01, 32)
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
    assert len(convolutions) == architectures.XIAO_DEPTH == 128
    assert model.model.output_shape == (None, 9)
    # The patch embedding and the read-out get the fallback; every convolution is a delta.
    assert set(model.fallback_layers) == {"patches", "output"}
    kernel = convolutions[-1].kernel.numpy()
    assert abs(kernel).sum(axis=(2, 3))[[0, 0, 2, 2], [0, 2, 0, 2]].max() == 0


def test_the_thresholds_are_the_ones_the_papers_page_states():
    page = (Path(__file__).resolve().parents[2] / "docs/papers.md").read_text()
    assert f"less than {STALLS:.0%} of its initial value" in page
    assert f"fell by at least {TRAINS:.0%}" in page


def _zhang_groups(he, fixup):
    """Each value: a list of per-seed drops, or "diverged". A batch-norm cell is left out."""

    def runs(drops):
        if drops == "diverged":
            return [_entry(2.2, None, status="diverged")] * 3
        return [_dropped(drop) for drop in drops]

    plain = Cell("resmlp", 16, 64, "relu", "none", "sgd", 0.05, 32)
    batch = Cell("resmlp", 16, 64, "relu", "batch", "sgd", 0.05, 32)
    return {
        (plain, "he_normal"): runs(he),
        (plain, "scheme:fixup"): runs(fixup),
        (batch, "he_normal"): runs([0.5] * 3),
    }


@pytest.mark.parametrize(
    ("he", "fixup", "word", "says"),
    [
        ("diverged", [TRAINS] * 3, "Reproduced", "he_normal diverges or stalls in every seed"),
        ([STALLS * 0.99] * 3, [TRAINS] * 3, "Reproduced", "scheme:fixup trains (-5.0%)"),
        ([STALLS * 0.99, STALLS * 0.99, STALLS], [TRAINS] * 3, "Partly reproduced",
         "he_normal trains in"),
        ("diverged", [TRAINS * 0.99] * 3, "Partly reproduced", "does not train"),
        ([STALLS] * 3, "diverged", "Not reproduced", "scheme:fixup does not train (diverged)"),
    ],
)
def test_zhang2019_at_the_thresholds(he, fixup, word, says):
    finding = replications.judge_zhang2019(_zhang_groups(he, fixup), {})
    assert finding.sentence.startswith(f"{word}: "), finding.sentence
    assert says in finding.sentence, finding.sentence
    assert finding.reproduced == (word == "Reproduced")
    assert [row[0] for row in finding.rows] == ["he_normal", "scheme:fixup"]


def _radford_groups(growth, losses, seeds=2):
    """`growth`: per depth, (unscaled, gpt2) stream growth at init; `losses`: per depth,
    (unscaled, gpt2) final test loss in every seed (None: diverged). Returns groups and the
    run.json details the judge reads the stream from."""
    groups, details = {}, {}
    for depth in growth:
        cell = Cell("transformer", depth, 64, "gelu", None, "adam", 0.003, 32)
        for spec, ratio, loss in zip(replications._RADFORD, growth[depth], losses[depth],
                                     strict=True):
            entries = []
            for seed in range(seeds):
                run_dir = f"{spec}_{depth}_{seed}"
                stream = {"blocks": ["block_000", "block_001"], "output_std": [0.02, 0.02 * ratio]}
                details[run_dir] = {"profiles": {"initial": {"stream": stream}}}
                entries.append({
                    "seed": seed, "run_dir": run_dir, "initial_loss": 4.13,
                    "final_loss": loss, "final_test_loss": loss,
                    "status": "ok" if loss is not None else "diverged",
                })
            groups[(cell, spec)] = entries
    return groups, details


TIE = replications.LOSS_TIE


@pytest.mark.parametrize(
    ("growth", "losses", "word", "says"),
    [
        ({2: (1.3, 1.1), 8: (2.2, 1.1)}, {2: (2.0, 2.0), 8: (2.0, 2.0 - 2 * TIE)},
         "Reproduced", "the unscaled stream grows with depth (1.30x, 2.20x at 2, 8 layers)"),
        ({2: (1.3, 1.1), 8: (1.3, 1.1)}, {2: (2.0, 2.0), 8: (2.0, 1.9)},
         "Partly reproduced", "does not grow with depth"),
        ({2: (1.3, 1.1), 8: (2.2, replications.STREAM_LEVEL)}, {2: (2.0, 2.0), 8: (2.0, 1.9)},
         "Partly reproduced", "gpt2's does not stay level"),
        ({2: (1.3, 1.1), 8: (2.2, 1.1)}, {2: (2.0, 2.0 + 2 * TIE), 8: (2.0, 1.9)},
         "Partly reproduced", "worse at some depth"),
        ({2: (1.3, 1.1), 8: (2.2, 1.1)}, {2: (2.0, 2.0), 8: (2.0, 2.0)},
         "Partly reproduced", "not lower in every seed at 8 layers"),
        ({2: (1.3, 1.1), 8: (2.2, 1.1)}, {2: (2.0, 2.0), 8: (None, 2.0)},
         "Reproduced", "(2.885 vs diverged bits/char)"),
    ],
)
def test_radford2019_at_the_thresholds(growth, losses, word, says):
    finding = replications.judge_radford2019(*_radford_groups(growth, losses))
    assert finding.sentence.startswith(f"{word}: "), finding.sentence
    assert says in finding.sentence, finding.sentence
    assert [row[0] for row in finding.rows][:2] == [
        "2 layers: stream std, last block / first, at init",
        "2 layers: final test loss (bits/char)",
    ]


PRIOR = 3.125  # a made-up prior loss (the labels' entropy), exact in binary


def _wang_groups(finals, seeds=2):
    """`finals`: per depth, (xavier_normal, deepnet) final training loss of every seed (None:
    diverged)."""
    groups, details = {}, {}
    for depth, losses in finals.items():
        cell = Cell("transformer", depth, 64, "gelu", None, "adam", 0.001, 32)
        for spec, loss in zip(replications._WANG, losses, strict=True):
            entries = []
            for seed in range(seeds):
                run_dir = f"{spec}_{depth}_{seed}"
                details[run_dir] = {"prior_loss": PRIOR}
                entries.append({
                    "seed": seed, "run_dir": run_dir, "initial_loss": 4.125, "final_loss": loss,
                    "status": "ok" if loss is not None else "diverged",
                })
            groups[(cell, spec)] = entries
    return groups, details


AT_PRIOR = PRIOR - replications.PRIOR_MARGIN
LEARNT = replications.LEARNS * PRIOR


@pytest.mark.parametrize(
    ("finals", "word", "says"),
    [
        ({2: (LEARNT, LEARNT), 12: (AT_PRIOR, LEARNT)}, "Reproduced",
         "at 12 layers xavier_normal fails in every seed (loss 3.075; the characters' "
         "frequencies alone give 3.125) while scheme:deepnet trains"),
        ({2: (LEARNT, LEARNT), 12: (None, LEARNT)}, "Reproduced", "2 of 2 seeds diverged"),
        ({2: (LEARNT, LEARNT), 12: (AT_PRIOR - 0.001, LEARNT)}, "Partly reproduced",
         "xavier_normal does not fail"),
        ({2: (LEARNT, LEARNT), 12: (AT_PRIOR, LEARNT + 0.001)}, "Partly reproduced",
         "scheme:deepnet does not train"),
        ({2: (LEARNT + 0.001, LEARNT), 12: (AT_PRIOR, LEARNT)}, "Partly reproduced",
         "at 2 layers they do not both train"),
    ],
)
def test_wang2022_at_the_thresholds(finals, word, says):
    finding = replications.judge_wang2022(*_wang_groups(finals))
    assert finding.sentence.startswith(f"{word}: "), finding.sentence
    assert says in finding.sentence, finding.sentence
    assert [row[0] for row in finding.rows] == [
        "2 layers, xavier_normal", "2 layers, scheme:deepnet",
        "12 layers, xavier_normal", "12 layers, scheme:deepnet",
    ]
    assert finding.reproduced == (word == "Reproduced")


def test_wang2022_needs_the_prior_loss_in_run_json():
    groups, _ = _wang_groups({12: (AT_PRIOR, LEARNT)})
    assert replications.judge_wang2022(groups, {}).sentence.startswith("Not judged")
