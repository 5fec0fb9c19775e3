"""Dynamical isometry (Pennington, Schoenholz & Ganguli 2017; Xiao et al. 2018): at the edge of
chaos, orthogonal weights (delta-orthogonal kernels in a CNN) keep the input-output Jacobian's
singular values near one another, Gaussian weights spread them, and the network with the
narrower spectrum trains faster, or is the only one that trains."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from experiments.papers.architectures import XIAO_DEPTH, XIAO_WIDTH
from experiments.papers.replications import (
    Finding,
    Groups,
    Replication,
    describe_loss,
    final_or_diverged,
    learns,
    learns_nothing,
    mean_of,
    prior_loss,
    verdict,
)
from experiments.specs import scheme_settings

ARMS = ("orthogonal", "normal")  # the critical scheme's distributions
# The orthogonal arm's spectrum is "far narrower" when var(sigma^2) / mean(sigma^2)^2 is at
# least this many times smaller than the Gaussian arm's (the paper's differ by orders of
# magnitude at depth 200).
NARROWER = 10.0


def _arm(spec: str) -> str | None:
    """Which arm a `critical(...)` spec is: "orthogonal" or "normal"; None for others."""
    scheme = scheme_settings(spec)
    if scheme is None or scheme[0] != "critical":
        return None
    return scheme[1].get("distribution", "normal")


def _arms(groups: Groups) -> dict[str, list[dict[str, Any]]]:
    """The summary entries of the `critical(...)` arms, by distribution (`ARMS`)."""
    arms: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
    for (_, spec), entries in groups.items():
        arm = _arm(spec)
        if arm in arms:
            arms[arm].extend(entries)
    return arms


def _relative_variance(entry: dict[str, Any]) -> float | None:
    mean, variance = entry.get("jacobian_mean_squared"), entry.get("jacobian_variance_squared")
    return variance / mean**2 if mean else None


def _epoch_loss(entry: dict[str, Any], details: Mapping[str, dict], epoch: int) -> float | None:
    history = details.get(entry["run_dir"], {}).get("history", {}).get("loss", [])
    return history[epoch] if len(history) > epoch else None


def judge_pennington2017(groups: Groups, details: Mapping[str, dict]) -> Finding:
    """Fig. 5 of *Resurrecting the sigmoid*, scaled down: at the critical point, the
    orthogonal arm's Jacobian spectrum at step 0 is at least `NARROWER` times narrower (in
    var(sigma^2) / mean^2) than the Gaussian arm's, and its training loss is lower after the
    first epoch and at the end, in every seed."""
    arms = _arms(groups)
    if not all(arms.values()) or any(
        _relative_variance(entry) is None for entries in arms.values() for entry in entries
    ):
        return Finding([], False, "Not judged: the runs need critical(...) arms of both "
                                  "distributions with --jacobian_spectrum.")
    spread = {arm: statistics.mean(_relative_variance(e) for e in entries)
              for arm, entries in arms.items()}
    by_seed = {arm: {entry["seed"]: entry for entry in entries} for arm, entries in arms.items()}
    seeds = sorted(set(by_seed["orthogonal"]) & set(by_seed["normal"]))

    def lower(loss) -> bool:
        pairs = [(loss(by_seed["orthogonal"][s]), loss(by_seed["normal"][s])) for s in seeds]
        return bool(pairs) and all(o is not None and n is not None and o < n for o, n in pairs)

    def after_first(entry):
        return _epoch_loss(entry, details, 1)

    def at_end(entry):
        return entry["final_train_loss"] if entry["status"] == "ok" else None

    narrower = spread["orthogonal"] * NARROWER <= spread["normal"]
    faster, better = lower(after_first), lower(at_end)
    rows = [
        (f"{arm}: var(sigma^2) / mean(sigma^2)^2 of the Jacobian at step 0",
         "near 0 (isometry)" if arm == "orthogonal" else "grows with depth",
         f"{spread[arm]:.3g}")
        for arm in ARMS
    ]
    rows += [
        (f"{arm}: training loss after epoch 1 -> at the end", paper,
         f"{_mean(after_first, arms[arm]):.3f} -> {_mean(at_end, arms[arm]):.3f}")
        for arm, paper in zip(ARMS, ("lower: trains faster", "higher"), strict=True)
    ]
    sentence = (
        f"at the edge of chaos the orthogonal arm's Jacobian spectrum is "
        f"{spread['normal'] / spread['orthogonal']:.3g}x narrower than the Gaussian arm's "
        f"(needed: {NARROWER:g}x), and its training loss is "
        f"{'lower' if faster else 'not lower'} after the first epoch and "
        f"{'lower' if better else 'not lower'} at the end in every seed"
    )
    return verdict(rows, [narrower, faster, better], sentence)


def _mean(loss, entries: Sequence[dict[str, Any]]) -> float:
    values = [value for value in map(loss, entries) if value is not None]
    return statistics.mean(values) if values else float("nan")


PENNINGTON2017 = Replication(
    paper="Pennington, Schoenholz & Ganguli (2017), *Resurrecting the sigmoid in deep "
    "learning through dynamical isometry: theory and practice*, NeurIPS",
    reproduces="at the edge of chaos, orthogonal weights make a deep tanh network's "
    "input-output Jacobian well conditioned (dynamical isometry) where Gaussian weights of "
    "the same variance spread its singular values, and the orthogonal network trains faster "
    "(Figs. 4-5)",
    scaled_down="their tanh networks of depth 200 and width 400 on CIFAR-10 are tanh MLPs of "
    "depth 64 and width 128 on 4,000 MNIST digits, 3 epochs of SGD; sigma_b2 = 1e-5 puts the "
    "critical point at sigma_w2 = 1.04 (q* = 0.02, the paper's small-q* regime), and the "
    "spectrum is taken on 16 training examples at step 0, up to the read-out's input",
    judge=judge_pennington2017,
)


def judge_xiao2018(groups: Groups, details: Mapping[str, dict]) -> Finding:
    """Figs. 1 and 4 of Xiao et al., scaled down: at the edge of chaos, delta-orthogonal
    kernels train a deep vanilla tanh CNN in every seed (`learns`: its training loss ends at
    most 0.9 of the labels' prior loss), while Gaussian kernels of the same variance learn
    nothing (`learns_nothing`: the loss ends within 0.05 nats of the prior loss) in every
    seed."""
    arms = _arms(groups)
    if not all(arms.values()):
        return Finding([], False, "Not judged: the runs need critical(...) arms of both "
                                  "distributions, orthogonal and normal.")
    prior = prior_loss([entry for entries in arms.values() for entry in entries], details)
    if prior is None:
        return Finding([], False, "Not judged: the runs' run.json hold no prior_loss.")
    delta, gaussian = arms["orthogonal"], arms["normal"]
    rows = [
        ("orthogonal (delta-orthogonal convolutions): training loss",
         "trains (Figs. 1 and 4, up to 10,000 layers)", describe_loss(delta)),
        ("normal (Gaussian kernels of the same variance): training loss",
         "fails to train at depth", describe_loss(gaussian)),
    ]
    for arm, entries in arms.items():
        accuracy = mean_of(entries, "final_test_accuracy")
        if accuracy is not None:
            rows.append((f"{arm}: test accuracy", "–", f"{accuracy:.3f}"))
    for arm, entries in arms.items():
        mean = mean_of(entries, "jacobian_mean_squared")
        if mean is not None:
            spread = _mean(_relative_variance, entries)
            rows.append((
                f"{arm}: the Jacobian's mean(sigma^2) and var(sigma^2) / mean^2 at step 0",
                "narrow (dynamical isometry)" if arm == "orthogonal" else "vanishing, spread",
                f"{mean:.3g}, {spread:.3g}",
            ))
    trains = all(learns(entry, prior) for entry in delta)
    fails = all(learns_nothing(entry, prior) for entry in gaussian)
    sentence = (
        f"at the edge of chaos, delta-orthogonal kernels "
        f"{'train' if trains else 'do not train'} the {XIAO_DEPTH}-layer tanh CNN in every "
        f"seed ({final_or_diverged(delta)}) while Gaussian kernels of the same variance "
        f"{'learn nothing' if fails else 'learn something'} in every seed "
        f"({final_or_diverged(gaussian)}; the labels' frequencies alone give {prior:.3f})"
    )
    return verdict(rows, [trains, fails], sentence)


XIAO2018 = Replication(
    paper="Xiao, Bahri, Sohl-Dickstein, Schoenholz & Pennington (2018), *Dynamical Isometry "
    "and a Mean Field Theory of CNNs: How to Train 10,000-Layer Vanilla Convolutional Neural "
    "Networks*, ICML",
    reproduces="at the edge of chaos, delta-orthogonal kernels (an orthogonal matrix at the "
    "centre tap) make a deep vanilla tanh CNN trainable, where Gaussian kernels of the same "
    "variance fail to train it (Figs. 1 and 4)",
    scaled_down=f"their 10,000-layer CNNs on MNIST and CIFAR-10 are {XIAO_DEPTH} 3x3 tanh "
    f"convolutions of {XIAO_WIDTH} filters (zero padding) on 7x7 embeddings of 4x4 patches of "
    "4,000 MNIST digits, 8 epochs of SGD at 0.001 with momentum 0.9, 3 seeds; both arms are "
    "critical(sigma_b2=1e-05) (sigma_w2 = 1.04, the paper's small-q* regime), with orthogonal "
    "and with Gaussian weights, the patch embedding and the read-out drawn alike; the spectrum "
    "is taken on 16 training examples at step 0, up to the read-out's input",
    judge=judge_xiao2018,
)
