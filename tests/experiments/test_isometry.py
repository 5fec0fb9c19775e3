"""pennington2017's verdict on made-up runs, and `--jacobian_spectrum` in the harness: the
spectrum at step 0 in the summary, run.json and TensorBoard, against keras_inits's own."""

import json

import numpy as np
import pytest

import keras_inits
from experiments import config, models, runner
from experiments.config import Cell
from experiments.data import datasets
from experiments.engine import spectra
from experiments.errors import ExperimentError
from experiments.papers import isometry, replications

ORTHOGONAL = "critical(sigma_b2=1e-05, distribution='orthogonal')"
GAUSSIAN = "critical(sigma_b2=1e-05)"


def _runs(orthogonal_spread=1.0, normal_spread=50.0, losses=((1.5, 0.4), (1.8, 0.9)), seeds=3):
    """Entries and run.json details: each arm's Jacobian spread (var / mean^2 at mean 1) and
    its (after epoch 1, final) training loss in every seed."""
    cell = Cell("mlp", 64, 128, "tanh", None, "sgd", 0.003, 64, "sp")
    groups, details = {}, {}
    for spec, spread, (first, final) in zip(
        (ORTHOGONAL, GAUSSIAN), (orthogonal_spread, normal_spread), losses, strict=True
    ):
        entries = []
        for seed in range(seeds):
            run_dir = f"{spec}-{seed}"
            entries.append({"initializer": spec, "seed": seed, "status": "ok",
                            "run_dir": run_dir, "final_train_loss": final,
                            "jacobian_mean_squared": 1.0, "jacobian_variance_squared": spread})
            details[run_dir] = {"history": {"loss": [2.3, first, final]}}
        groups[(cell, spec)] = entries
    return groups, details


@pytest.mark.parametrize(("runs", "word", "says"), [
    (_runs(), "Reproduced", "50x narrower"),
    (_runs(normal_spread=9.0), "Partly reproduced", "9x narrower than the Gaussian arm's "
     "(needed: 10x)"),
    (_runs(losses=((1.9, 0.4), (1.8, 0.9))), "Partly reproduced", "not lower after the first"),
    (_runs(losses=((1.9, 1.0), (1.8, 0.9))), "Partly reproduced", "not lower at the end"),
])
def test_pennington2017_at_the_thresholds(runs, word, says):
    finding = isometry.judge_pennington2017(*runs)
    assert finding.sentence.startswith(word) and says in finding.sentence, finding.sentence


def test_pennington2017_needs_both_arms_with_their_spectra():
    groups, details = _runs()
    only = {key: value for key, value in groups.items() if key[1] == ORTHOGONAL}
    assert isometry.judge_pennington2017(only, details).sentence.startswith("Not judged")
    for entries in groups.values():
        for entry in entries:
            entry["jacobian_mean_squared"] = None
    assert isometry.judge_pennington2017(groups, details).sentence.startswith("Not judged")


PRIOR = 2.3125  # a made-up prior loss (the labels' entropy), exact in binary
AT_PRIOR = PRIOR - replications.PRIOR_MARGIN
LEARNT = replications.LEARNS * PRIOR


def _xiao_runs(orthogonal, normal, prior=True):
    """Each arm's final training loss per seed (None: diverged), with the prior loss in
    run.json unless `prior` is False."""
    cell = Cell("experiments.papers.architectures:xiao2018_cnn", None, None, None, None,
                "sgd", 0.001, 32, "sp")
    groups, details = {}, {}
    for spec, finals in ((ORTHOGONAL, orthogonal), (GAUSSIAN, normal)):
        entries = []
        for seed, final in enumerate(finals):
            run_dir = f"{spec}-{seed}"
            entries.append({"initializer": spec, "seed": seed, "run_dir": run_dir,
                            "status": "ok" if final is not None else "diverged",
                            "initial_loss": 2.3125, "final_loss": final,
                            "final_test_accuracy": 0.5 if spec == ORTHOGONAL else 0.1})
            details[run_dir] = {"prior_loss": PRIOR} if prior else {}
        groups[(cell, spec)] = entries
    return groups, details


@pytest.mark.parametrize(("orthogonal", "normal", "word", "says"), [
    ((LEARNT, 1.5), (AT_PRIOR, PRIOR), "Reproduced",
     "delta-orthogonal kernels train the 128-layer tanh CNN in every seed (loss 1.791) while "
     "Gaussian kernels of the same variance learn nothing in every seed (loss 2.288; the "
     "labels' frequencies alone give 2.312)"),
    ((LEARNT, 1.5), (None, PRIOR), "Reproduced", "1 of 2 seeds diverged"),
    ((LEARNT + 0.001, 1.5), (AT_PRIOR, PRIOR), "Partly reproduced",
     "delta-orthogonal kernels do not train"),
    ((None, 1.5), (AT_PRIOR, PRIOR), "Partly reproduced", "do not train"),
    ((LEARNT, 1.5), (AT_PRIOR - 0.001, PRIOR), "Partly reproduced", "variance learn something"),
    ((PRIOR, PRIOR), (1.5, 1.5), "Not reproduced", "learn something"),
])
def test_xiao2018_at_the_thresholds(orthogonal, normal, word, says):
    finding = isometry.judge_xiao2018(*_xiao_runs(orthogonal, normal))
    assert finding.sentence.startswith(f"{word}: "), finding.sentence
    assert says in finding.sentence, finding.sentence
    assert finding.reproduced == (word == "Reproduced")
    assert ("orthogonal: test accuracy", "–", "0.500") in finding.rows


def test_xiao2018_needs_both_arms_and_the_prior_loss():
    groups, details = _xiao_runs((1.5,), (PRIOR,))
    only = {key: value for key, value in groups.items() if key[1] == GAUSSIAN}
    assert isometry.judge_xiao2018(only, details).sentence.startswith("Not judged")
    assert isometry.judge_xiao2018(*_xiao_runs((1.5,), (PRIOR,), prior=False)).sentence == (
        "Not judged: the runs' run.json hold no prior_loss.")


def test_the_spectrum_ends_at_the_read_outs_input():
    shape = (8, 8, 1)
    model = models.initialize(
        "mlp", input_shape=shape, num_classes=4, x_sample=np.zeros((2, *shape), "float32"),
        depth=3, width=16, activation="tanh", initializer="orthogonal",
        fallback="xavier_normal", seed=0,
    ).model
    assert spectra.readout_input(model) == "hidden_3"


def test_a_comparison_records_each_arms_spectrum_at_step_0(tmp_path):
    settings = config.resolve(
        model=("mlp",), depth=(6,), width=(32,), activation=("tanh",),
        initializers=(ORTHOGONAL, GAUSSIAN), seeds=(0,), train_size=64, test_size=32,
        epochs=1, histogram_every=0, probe_size=32, jacobian_spectrum=4, logdir=str(tmp_path),
    )
    entries = runner.compare(settings, progress=lambda line: None)
    spreads = {}
    for entry in entries:
        (run,) = tmp_path.glob(f"*/{entry['run_dir']}")
        details = json.loads((run / "run.json").read_text())
        spectrum = details["jacobian_spectrum"]
        assert spectrum["output"] == "hidden_6" and spectrum["examples"] == 4
        assert entry["jacobian_mean_squared"] == spectrum["mean_squared"]
        spreads[entry["initializer"]] = spectrum["relative_variance"]
        events = list(run.glob("events.out.tfevents.*"))
        assert events and b"jacobian/singular_values" in events[0].read_bytes()
    # The same model, rebuilt, and keras_inits's own spectrum of it: the same numbers.
    cell = settings.cells()[0]
    data = datasets.load(settings.dataset, 64, 32)
    built = models.initialize_run(settings, cell, data, initializer=GAUSSIAN, seed=0)
    own = keras_inits.jacobian_spectrum(built.model, data.x_train[:4], output="hidden_6")
    assert own.relative_variance == pytest.approx(spreads[GAUSSIAN], rel=1e-4)
    assert spreads[ORTHOGONAL] < spreads[GAUSSIAN]


def test_text_has_no_input_jacobian():
    with pytest.raises(ExperimentError, match="--jacobian_spectrum needs float inputs"):
        config.resolve(dataset="sonnets", model=("transformer",), jacobian_spectrum=4)
