"""Trainable depth against the weight variance (Schoenholz et al. 2017, Figs. 5-6): a grid of
depths x `mean_field(sigma_w2=..., sigma_b2=...)` arms, which cells trained, and how well the
mean-field prediction depth <= 6 xi_c(sigma_w2) separates them."""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from experiments.papers.replications import Finding, Groups, Replication, verdict
from experiments.specs import scheme_settings

# A cell trained when its test accuracy is past this fraction of the way from the grid's worst
# cell to its best: the paper's heat maps go from chance (dark) to trained (bright), with a
# sharp edge between them.
TRAINED_FRACTION = 0.5
# The grid must span at least this much test accuracy for "trained" to mean anything.
MIN_SPREAD = 0.3
# The prediction "separates" trained from untrained cells when it is right about this many.
AGREEMENT = 0.75


@dataclasses.dataclass(frozen=True)
class Grid:
    """Mean test accuracy over the seeds (NaN where every seed diverged), indexed
    `[depth, sigma_w2]`, for one activation and one sigma_b2."""

    activation: str
    sigma_b2: float
    depths: list[int]
    sigma_w2s: list[float]
    accuracy: np.ndarray

    def trained(self) -> np.ndarray:
        """Which cells trained (see `TRAINED_FRACTION`); a diverged cell did not."""
        low, high = np.nanmin(self.accuracy), np.nanmax(self.accuracy)
        threshold = low + TRAINED_FRACTION * (high - low)
        return np.nan_to_num(self.accuracy, nan=-1.0) >= threshold

    def trainable_depths(self) -> np.ndarray:
        """6 xi_c at each sigma_w2 (inf at the edge of chaos): keras_inits.theory."""
        from keras_inits import theory  # Deferred: the settings do not import Keras.

        return np.array([
            theory.mean_field(self.activation, sigma_w2, self.sigma_b2).trainable_depth
            for sigma_w2 in self.sigma_w2s
        ])

    def predicted(self) -> np.ndarray:
        """Where mean-field theory says a cell trains: depth <= 6 xi_c."""
        return np.array(self.depths)[:, None] <= self.trainable_depths()[None, :]


def mean_field_arm(spec: str) -> tuple[float, float] | None:
    """(sigma_w2, sigma_b2) of a `mean_field(...)` arm, else None."""
    scheme = scheme_settings(spec)
    if scheme is None or scheme[0] != "mean_field" or "sigma_w2" not in scheme[1]:
        return None
    return float(scheme[1]["sigma_w2"]), float(scheme[1].get("sigma_b2", 0.0))


def grid(entries: Sequence[dict[str, Any]]) -> Grid | None:
    """The depth x sigma_w2 grid of the summary entries of `mean_field` arms; None unless
    they share one activation and one sigma_b2 and span two depths and three sigma_w2."""
    arms = [(entry, mean_field_arm(entry["initializer"])) for entry in entries]
    arms = [(entry, arm) for entry, arm in arms if arm is not None and entry.get("depth")]
    activations = {entry["activation"] for entry, _ in arms}
    biases = {arm[1] for _, arm in arms}
    if len(activations) != 1 or len(biases) != 1:
        return None
    depths = sorted({entry["depth"] for entry, _ in arms})
    sigma_w2s = sorted({arm[0] for _, arm in arms})
    if len(depths) < 2 or len(sigma_w2s) < 3:
        return None
    accuracy = np.full((len(depths), len(sigma_w2s)), np.nan)
    for i, depth in enumerate(depths):
        for j, sigma_w2 in enumerate(sigma_w2s):
            values = [
                entry["final_test_accuracy"] for entry, arm in arms
                if entry["depth"] == depth and arm[0] == sigma_w2 and entry["status"] == "ok"
                and entry.get("final_test_accuracy") is not None
            ]
            if values:
                accuracy[i, j] = statistics.mean(values)
    return Grid(activations.pop(), biases.pop(), depths, sigma_w2s, accuracy)


def _deepest(trained: np.ndarray, depths: Sequence[int]) -> list[int]:
    """Per sigma_w2 column, the deepest depth that trained (0: none)."""
    return [max((d for d, ok in zip(depths, column, strict=True) if ok), default=0)
            for column in trained.T]


def judge_schoenholz2017(groups: Groups, details: Mapping[str, dict]) -> Finding:
    """Figs. 5-6 of Deep Information Propagation, scaled down: the deepest trained depth
    peaks at the sigma_w2 nearest the edge of chaos (above both ends of the grid), and
    depth <= 6 xi_c(sigma_w2) is right about at least `AGREEMENT` of the cells."""
    found = grid([entry for members in groups.values() for entry in members])
    if found is None:
        return Finding([], False, "Not judged: the runs need mean_field(sigma_w2=...) arms of "
                                  "one activation and sigma_b2 at two depths and three sigma_w2.")
    spread = np.nanmax(found.accuracy) - np.nanmin(found.accuracy)
    if not spread >= MIN_SPREAD:
        return Finding([], False, f"Not judged: test accuracy spans only {spread:.2f} over the "
                                  "grid, so no cell stands out as trained.")
    from keras_inits import theory

    critical = theory.critical_sigma_w2(found.activation, found.sigma_b2)
    trained, predicted = found.trained(), found.predicted()
    deepest = _deepest(trained, found.depths)
    nearest = int(np.argmin([abs(math.log(w / critical)) for w in found.sigma_w2s]))
    peaks = deepest[nearest] == max(deepest) and deepest[nearest] > max(deepest[0], deepest[-1])
    agreement = float(np.mean(trained == predicted))
    limits = found.trainable_depths()
    rows = [
        (f"sigma_w2 = {w:g}: deepest trained depth (6 xi_c)", "about 6 xi_c",
         f"{d or 'none'} ({'inf' if math.isinf(t) else f'{t:.0f}'})")
        for w, d, t in zip(found.sigma_w2s, deepest, limits, strict=True)
    ]
    rows += [
        ("sigma_w2 where the trainable depth peaks", f"{critical:.3g} (the edge of chaos)",
         ", ".join(f"{w:g}" for w, d in zip(found.sigma_w2s, deepest, strict=True)
                   if d == max(deepest))),
        ("cells where depth <= 6 xi_c predicts trained / untrained right", "most",
         f"{agreement:.0%} of {trained.size}"),
    ]
    sentence = (
        f"the trainable depth {'peaks' if peaks else 'does not peak'} at the grid's sigma_w2 "
        f"nearest the edge of chaos ({found.sigma_w2s[nearest]:g}; critical "
        f"{critical:.3g}), and depth <= 6 xi_c is right about {agreement:.0%} of the cells"
    )
    return verdict(rows, [peaks, agreement >= AGREEMENT], sentence)


SCHOENHOLZ2017 = Replication(
    paper="Schoenholz, Gilmer, Ganguli & Sohl-Dickstein (2017), *Deep Information "
    "Propagation*, ICLR",
    reproduces="random tanh networks train only to a depth of about 6 xi_c, the depth scale "
    "over which two inputs' correlation survives; xi_c diverges at the edge of chaos "
    "(chi_1 = 1), so the trainable depth peaks at the critical sigma_w2 (Figs. 5-6)",
    scaled_down="their MNIST and CIFAR-10 grids of depths 10-300 and width 300, trained for "
    "thousands of steps, are tanh MLPs of width 128 at depths 6-48 on 4,000 MNIST digits, "
    "trained for a few epochs",
    judge=judge_schoenholz2017,
)
