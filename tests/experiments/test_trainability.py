"""schoenholz2017's verdict and figure on made-up grids: which cells trained, where the
trainable depth peaks, and how well 6 xi_c (keras_inits.theory) separates the cells."""

import math

import numpy as np
import pytest

from experiments.config import Cell
from experiments.papers import trainability
from experiments.results import plots
from keras_inits import theory

DEPTHS = (6, 12, 24, 48)
SIGMA_W2 = (0.5, 1.0, 1.76, 4.0)
SIGMA_B2 = 0.05


def _spec(sigma_w2, sigma_b2=SIGMA_B2):
    return f"mean_field(sigma_w2={sigma_w2}, sigma_b2={sigma_b2})"


def _groups(trained, seeds=2, activation="tanh", sigma_b2=SIGMA_B2):
    """`trained(depth, sigma_w2) -> bool`: 0.9 test accuracy there, chance (0.1) elsewhere."""
    groups = {}
    for depth in DEPTHS:
        cell = Cell("mlp", depth, 128, activation, None, "sgd", 0.003, 64, "sp")
        for sigma_w2 in SIGMA_W2:
            groups[(cell, _spec(sigma_w2, sigma_b2))] = [
                {"initializer": _spec(sigma_w2, sigma_b2), "depth": depth,
                 "activation": activation, "status": "ok", "seed": seed,
                 "final_test_accuracy": 0.9 if trained(depth, sigma_w2) else 0.1}
                for seed in range(seeds)
            ]
    return groups


def _limit(sigma_w2):
    return theory.mean_field("tanh", sigma_w2, SIGMA_B2).trainable_depth


def test_the_theorys_own_cells_reproduce():
    """Cells trained exactly where depth <= 6 xi_c: the theory is right about all of them,
    and the deepest trained depth peaks at the critical sigma_w2 (1.76)."""
    assert _limit(0.5) < 12 and 12 < _limit(1.0) < 24 and _limit(4.0) < 48 < _limit(1.76)
    finding = trainability.judge_schoenholz2017(
        _groups(lambda depth, w: depth <= _limit(w)), {}
    )
    assert finding.reproduced and finding.sentence.startswith("Reproduced")
    assert "right about 100% of the cells" in finding.sentence
    assert ("sigma_w2 where the trainable depth peaks", "1.76 (the edge of chaos)", "1.76") \
        in finding.rows


def test_a_peak_away_from_the_edge_of_chaos_is_not_reproduced():
    # Only sigma_w2 = 4 trains at 48: the band peaks in the chaotic phase.
    finding = trainability.judge_schoenholz2017(
        _groups(lambda depth, w: depth <= 12 or (w == 4.0)), {}
    )
    assert not finding.reproduced
    assert "does not peak" in finding.sentence


def test_the_agreement_threshold():
    """Every cell trained: the prediction is wrong about the cells beyond 6 xi_c. Below
    AGREEMENT of the cells right is only partly reproduced."""
    everything = trainability.judge_schoenholz2017(_groups(lambda depth, w: True), {})
    assert "Not judged" in everything.sentence  # no spread: nothing stands out as trained
    # Five cells the other way round, none of them changing where the band peaks.
    wrong = {(24, 1.0), (12, 1.0), (6, 4.0), (12, 4.0), (24, 4.0)}
    grid = _groups(lambda depth, w: (depth <= _limit(w)) != ((depth, w) in wrong))
    finding = trainability.judge_schoenholz2017(grid, {})
    right = 1 - len(wrong) / (len(DEPTHS) * len(SIGMA_W2))
    assert right < trainability.AGREEMENT
    assert finding.sentence.startswith("Partly reproduced")
    assert f"right about {right:.0%}" in finding.sentence


@pytest.mark.parametrize(("groups", "why"), [
    ({}, "Not judged: the runs need mean_field"),
    ({**_groups(lambda d, w: d <= 12), **_groups(lambda d, w: True, sigma_b2=0.1)},
     "Not judged: the runs need mean_field"),
])
def test_not_judged_without_one_grid(groups, why):
    assert trainability.judge_schoenholz2017(groups, {}).sentence.startswith(why)


def test_a_diverged_cell_did_not_train_and_the_figure_draws(tmp_path):
    groups = _groups(lambda depth, w: depth <= _limit(w))
    for (cell, spec), entries in groups.items():
        if cell.depth == 6 and spec == _spec(1.0):
            for entry in entries:
                entry.update(status="diverged", final_test_accuracy=None)
    found = trainability.grid([entry for entries in groups.values() for entry in entries])
    assert math.isnan(found.accuracy[0, 1]) and not found.trained()[0, 1]
    np.testing.assert_array_equal(found.predicted()[:, 2], True)  # the edge of chaos
    pytest.importorskip("matplotlib")
    figure = plots.trainability_map(str(tmp_path / "map.png"), found)
    assert (tmp_path / "map.png").read_bytes().startswith(b"\x89PNG")
    axes = figure.axes[0]
    assert axes.get_xscale() == "log" and axes.get_yscale() == "log"
