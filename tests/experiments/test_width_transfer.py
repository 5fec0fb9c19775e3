"""yang2022's verdict on made-up grids: each width's best learning rate, SP against muP."""

import math

import pytest

from experiments.config import Cell
from experiments.papers import width_transfer
from experiments.papers.width_transfer import SP_MOVES, WIDER_TIE

WIDTHS = (64, 256, 1024)
LOG2_RATES = range(-9, -2)  # a grid step of one octave


def _loss(log2_rate, best, floor):
    """A bowl over log2 of the rate, lowest (`floor`) at `best`."""
    return floor + 0.05 * (log2_rate - best) ** 2


def _groups(sp_best, mup_best, mup_floors=(0.3, 0.25, 0.2), sp_floors=(0.3, 0.25, 0.2),
            seeds=2, diverged=()):
    """A width x rate grid: per width, the log2 of each parametrization's best rate and the
    loss there; `diverged` holds (parametrization, width, log2 rate) whose first seed diverged."""
    groups = {}
    for parametrization, bests, floors in (
        ("sp", sp_best, sp_floors), ("mup", mup_best, mup_floors)
    ):
        for width, best, floor in zip(WIDTHS, bests, floors, strict=True):
            for log2_rate in LOG2_RATES:
                rate = 2.0**log2_rate
                cell = Cell("mlp", 2, width, "relu", None, "sgd", rate, 64, parametrization)
                entries = []
                for seed in range(seeds):
                    bad = seed == 0 and (parametrization, width, log2_rate) in diverged
                    entries.append({
                        "seed": seed, "learning_rate": rate, "width": width,
                        "status": "diverged" if bad else "ok",
                        "final_train_loss": None if bad else _loss(log2_rate, best, floor),
                        "initial_loss": 2.3, "run_dir": f"{parametrization}{width}_{rate}_{seed}",
                    })
                groups[(cell, "he_normal")] = entries
    return groups


@pytest.mark.parametrize(
    ("groups", "word", "says"),
    [
        (_groups((-5, -6, -7), (-6, -6, -7)), "Reproduced",
         "rate moves by 2 octaves (needed: 2 or more), muP's stays within one grid step (1 "
         "octaves; a step is 1), and at muP's transferred rate 2^-6 wider is never worse"),
        (_groups((-5, -5, -6), (-6, -6, -6)), "Partly reproduced", "does not move by 1 octaves"),
        (_groups((-5, -6, -7), (-6, -6, -8)), "Partly reproduced", "moves more than one grid step"),
        # At the transferred rate 2^-6 width 1024 (best at -7) loses 0.05 to its bowl: worse
        # than 256 by more than the tie once its floor is no lower.
        (_groups((-5, -6, -7), (-6, -6, -7), mup_floors=(0.3, 0.25, 0.25)), "Partly reproduced",
         "wider is sometimes worse"),
        # ... and no worse when its floor makes up for it to within the tie.
        (_groups((-5, -6, -7), (-6, -6, -7), mup_floors=(0.3, 0.25, 0.2 + WIDER_TIE)),
         "Reproduced", "wider is never worse"),
        # A diverged seed makes a rate infinitely bad: SP's widest best moves from -7 to -6.
        (_groups((-5, -6, -7), (-6, -6, -7), diverged={("sp", 1024, -7), ("sp", 1024, -8)}),
         "Partly reproduced", "does not move by 1 octaves"),
    ],
)
def test_yang2022_at_the_thresholds(groups, word, says):
    finding = width_transfer.judge_yang2022(groups, {})
    assert finding.sentence.startswith(f"{word}: "), finding.sentence
    assert says in finding.sentence, finding.sentence
    assert finding.reproduced == (word == "Reproduced")
    assert [row[0] for row in finding.rows[:3]] == [
        f"sp, width {width}: best learning rate (its training loss)" for width in WIDTHS
    ]


def test_best_learning_rate_counts_a_diverged_seed_as_infinitely_bad():
    groups = _groups((-5, -6, -7), (-6, -6, -7), diverged={("mup", 64, -6)})
    runs = width_transfer.grid(groups)["mup"][64]
    assert width_transfer.best_learning_rate(runs) in (2.0**-5, 2.0**-7)
    every = [{**entry, "status": "diverged", "final_train_loss": None} for entry in runs]
    assert width_transfer.best_learning_rate(every) is None
    assert math.log2(width_transfer.best_learning_rate(
        width_transfer.grid(_groups((-5, -6, -7), (-6, -6, -7)))["sp"][1024]
    )) == -7
    assert SP_MOVES == 2.0  # the threshold: at least two octaves


def test_yang2022_needs_both_parametrizations_at_two_widths():
    groups = {key: entries for key, entries in _groups((-5, -6, -7), (-6, -6, -7)).items()
              if key[0].parametrization == "sp"}
    assert width_transfer.judge_yang2022(groups, {}).sentence.startswith("Not judged")


def test_yang2022_needs_two_learning_rates():
    groups = {key: entries for key, entries in _groups((-5, -6, -7), (-6, -6, -7)).items()
              if key[0].learning_rate == 2.0**-6}
    assert width_transfer.judge_yang2022(groups, {}).sentence == (
        "Not judged: the runs need two learning rates or more."
    )
