"""Replications: what a paper's preset reproduces, the paper's numbers, and a verdict from the runs.

A preset that reproduces a result carries a `Replication`: the paper, the figure or
table, what was scaled down to fit a few minutes on 2 cores, and a `judge` that
reads the finished runs and returns a `Finding`: rows of (quantity, the paper's
value, ours) and one sentence saying whether the effect is reproduced. The sentence
is computed from the runs every time the report is written, never written in advance.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

# (cell, initializer) -> that group's summary entries, one per seed (`report.group`).
Groups = Mapping[tuple[Any, str], Sequence[dict[str, Any]]]

# A loss that fell by less than this fraction of its initial value has stalled;
# one that fell by at least TRAINS has trained.
STALLS = 0.01
TRAINS = 0.05


@dataclasses.dataclass(frozen=True)
class Finding:
    """What the runs show: a table of (quantity, paper, ours) and the verdict."""

    rows: list[tuple[str, str, str]]
    reproduced: bool
    sentence: str


@dataclasses.dataclass(frozen=True)
class Replication:
    """A paper's result that a preset reproduces."""

    paper: str
    reproduces: str
    scaled_down: str
    judge: Callable[[Groups, Mapping[str, dict]], Finding]


def verdict(rows: list[tuple[str, str, str]], checks: Sequence[bool], sentence: str) -> Finding:
    """The finding: reproduced when every check holds, partly when some do."""
    passed = sum(bool(check) for check in checks)
    word = (
        "Reproduced" if passed == len(checks)
        else "Partly reproduced" if passed else "Not reproduced"
    )
    return Finding(rows, passed == len(checks), f"{word}: {sentence}.")


def relative_drop(entries: Sequence[dict[str, Any]]) -> float | None:
    """Mean over the seeds that did not diverge of (initial - final) / initial training loss;
    None when every seed diverged."""
    drops = [
        (entry["initial_loss"] - entry["final_loss"]) / entry["initial_loss"]
        for entry in entries
        if entry["status"] == "ok" and entry["final_loss"] is not None
    ]
    return statistics.mean(drops) if drops else None


def mean_of(entries: Sequence[dict[str, Any]], key: str) -> float | None:
    values = [e[key] for e in entries if e.get(key) is not None and math.isfinite(e[key])]
    return statistics.mean(values) if values else None


def describe_loss(entries: Sequence[dict[str, Any]]) -> str:
    """`train loss 2.197 -> 1.990 (-9.4%)`, means over the seeds; or how many diverged."""
    diverged = sum(entry["status"] == "diverged" for entry in entries)
    if diverged == len(entries):
        return f"diverged ({diverged} of {len(entries)} seeds)"
    initial, final = mean_of(entries, "initial_loss"), mean_of(entries, "final_loss")
    text = f"train loss {initial:.3f} -> {final:.3f} ({-relative_drop(entries):+.1%})"
    return text + (f", {diverged} of {len(entries)} seeds diverged" if diverged else "")


def _by_depth_and_family(groups: Groups, families: Sequence[str]) -> dict[int, dict[str, list]]:
    """Entries by depth, then by initializer family (the spec's name before any '(')."""
    found: dict[int, dict[str, list]] = {}
    for (cell, spec), members in groups.items():
        family = spec.split("(")[0]
        if family in families and cell.depth is not None:
            found.setdefault(cell.depth, {}).setdefault(family, []).extend(members)
    return found


_HE = ("xavier_normal", "kaiming_normal")


def judge_he2015(groups: Groups, details: Mapping[str, dict]) -> Finding:
    """Fig. 3: at the deepest depth xavier stalls while kaiming trains; Fig. 2: at the
    shallowest both train, kaiming earlier (lower training loss after the first epoch)."""
    depths = _by_depth_and_family(groups, _HE)
    complete = sorted(depth for depth, found in depths.items() if len(found) == len(_HE))
    if not complete:
        return Finding([], False, "Not judged: no depth has both xavier_normal and kaiming_normal.")
    deep, shallow = complete[-1], complete[0]
    rows = []
    for depth in complete:
        paper = {
            deep: ("stalls (Fig. 3, 30 layers)", "trains (Fig. 3)"),
            shallow: ("trains (Fig. 2, 22 layers)", "trains, earlier (Fig. 2)"),
        }.get(depth, ("–", "–"))
        for family, expected in zip(_HE, paper, strict=True):
            ours = describe_loss(depths[depth][family])
            rows.append((f"{depth} layers, {family}", expected, ours))
    xavier, kaiming = (relative_drop(depths[deep][family]) for family in _HE)
    checks = [xavier is not None and xavier < STALLS, kaiming is not None and kaiming >= TRAINS]
    sentence = (
        f"at {deep} layers xavier_normal's training loss "
        f"{'stalls' if checks[0] else 'does not stall'} ({_percent(xavier)}) while "
        f"kaiming_normal's {'trains' if checks[1] else 'does not train'} ({_percent(kaiming)})"
    )
    if shallow != deep:
        drops = [relative_drop(depths[shallow][family]) for family in _HE]
        early = [_first_epoch_loss(depths[shallow][family], details) for family in _HE]
        both = all(drop is not None and drop >= TRAINS for drop in drops)
        earlier = None not in early and early[1] < early[0]
        checks += [both, earlier]
        sentence += (
            f"; at {shallow} layers {'both train' if both else 'they do not both train'} "
            f"({_percent(drops[0])}, {_percent(drops[1])}), kaiming_normal "
            f"{'earlier' if earlier else 'not earlier'}"
        )
        if None not in early:
            sentence += f" (loss after epoch 1: {early[1]:.3f} vs {early[0]:.3f})"
    return verdict(rows, checks, sentence)


def _percent(drop: float | None) -> str:
    # A loss that did not move reads +0.0%, not -0.0%.
    return "diverged" if drop is None else f"{-drop + 0.0:+.1%}"


def _first_epoch_loss(
    entries: Sequence[dict[str, Any]], details: Mapping[str, dict]
) -> float | None:
    """Mean training loss after the first epoch over the seeds whose run.json is there."""
    losses = []
    for entry in entries:
        history = details.get(entry["run_dir"], {}).get("history")
        if history and len(history["loss"]) > 1 and history["loss"][1] is not None:
            losses.append(history["loss"][1])
    return statistics.mean(losses) if losses else None


HE2015 = Replication(
    paper="He, Zhang, Ren & Sun (2015), *Delving Deep into Rectifiers*, ICCV",
    reproduces="Figs. 2 and 3: a 22-layer plain ReLU net trains with both initializations, "
    "He's earlier; at 30 layers Xavier's stalls and He's trains",
    scaled_down="the paper's ImageNet convolutional nets are plain ReLU MLPs of width 256 on "
    "8,000 Shapeset images, trained for 5 epochs; in these MLPs Xavier's init already stalls "
    "from about 20 layers, so the moderate depth that plays Fig. 2's 22 layers is 10",
    judge=judge_he2015,
)


_SELU_SCALES = {"variance_scaling(scale=0.5)": 0.5, "lecun_normal": 1.0,
                "variance_scaling(scale=2.0)": 2.0}


def _hidden_moments(entries: Sequence[dict[str, Any]], details: Mapping[str, dict]):
    """Per seed: the step-0 (mean, variance) of each hidden layer's activations (the
    output layer left out), from the runs' run.json."""
    moments = []
    for entry in entries:
        profile = details.get(entry["run_dir"], {}).get("profiles", {}).get("initial")
        if profile and profile.get("activation_mean"):
            means, stds = profile["activation_mean"][:-1], profile["activation_std"][:-1]
            moments.append(
                [(m, s * s) if None not in (m, s) else (math.nan, math.inf)
                 for m, s in zip(means, stds, strict=True)]
            )
    return moments


def judge_klambauer2017(groups: Groups, details: Mapping[str, dict]) -> Finding:
    """SELU with LeCun-normal (Var(W) = 1/fan_in) keeps the activations near mean 0 and
    variance 1 through depth at step 0, and trains; half that variance makes it shrink
    layer by layer, twice makes it grow, and training suffers."""
    arms = {spec: members for (_, spec), members in groups.items() if spec in _SELU_SCALES}
    if "lecun_normal" not in arms:
        return Finding([], False, "Not judged: no lecun_normal arm.")
    rows, last = [], {}
    for spec, members in sorted(arms.items(), key=lambda item: _SELU_SCALES[item[0]]):
        per_seed = _hidden_moments(members, details)
        if not per_seed:
            return Finding([], False, f"Not judged: {spec}'s run.json files are missing.")
        depth = len(per_seed[0])
        mean = statistics.mean(seed[-1][0] for seed in per_seed)
        first = statistics.mean(seed[0][1] for seed in per_seed)
        last[spec] = statistics.mean(seed[-1][1] for seed in per_seed)
        paper = {0.5: "variance shrinks", 1.0: "mean ~0, variance ~1", 2.0: "variance grows"}
        rows.append((
            f"{spec}: step 0, hidden layer 1 -> {depth}",
            paper[_SELU_SCALES[spec]],
            f"variance {first:.3g} -> {last[spec]:.3g}, last mean {mean:+.2f}",
        ))
        rows.append((f"{spec}: training", "trains" if spec == "lecun_normal" else "suffers",
                     describe_loss(members)))
    lecun = arms["lecun_normal"]
    lecun_mean = statistics.mean(s[-1][0] for s in _hidden_moments(lecun, details))
    level = 0.5 <= last["lecun_normal"] <= 2.0 and abs(lecun_mean) < 0.25
    drifts = [
        (last[spec] < last["lecun_normal"] / 4) if _SELU_SCALES[spec] < 1
        else (last[spec] > last["lecun_normal"] * 4)
        for spec in arms if spec != "lecun_normal"
    ]
    lecun_final = mean_of(lecun, "final_loss")
    trains = relative_drop(lecun) is not None and relative_drop(lecun) >= TRAINS
    others = {spec: members for spec, members in arms.items() if spec != "lecun_normal"}
    suffer = {spec: _worse(members, lecun_final) for spec, members in others.items()}
    checks = [level, bool(drifts) and all(drifts), trains and all(suffer.values())]
    sentence = (
        f"with lecun_normal the deepest hidden layer's activations start at mean "
        f"{lecun_mean:+.2f} and variance {last['lecun_normal']:.2f}"
        f" ({'level' if level else 'not level'}), the other scalings' variance "
        f"{'drifts away' if checks[1] else 'does not drift away'} "
        f"({', '.join(f'{spec}: {last[spec]:.3g}' for spec in others)}); lecun_normal "
        f"{'trains' if trains else 'does not train'} to a training loss of "
        + ("–" if lecun_final is None else f"{lecun_final:.3f}")
        + ", and training "
        + "; ".join(
            f"{'suffers' if suffer[spec] else 'does not suffer'} with {spec} "
            f"({final_or_diverged(members)})"
            for spec, members in others.items()
        )
    )
    return verdict(rows, checks, sentence)


def _worse(entries: Sequence[dict[str, Any]], reference: float | None) -> bool:
    """Whether these runs did worse than a final training loss of `reference`: a seed
    diverged, or their mean final loss is higher."""
    if any(entry["status"] == "diverged" for entry in entries):
        return True
    final = mean_of(entries, "final_loss")
    return reference is not None and final is not None and final > reference


def final_or_diverged(entries: Sequence[dict[str, Any]]) -> str:
    """`loss 1.234` (the mean over the seeds), and how many seeds diverged, if any."""
    diverged = sum(entry["status"] == "diverged" for entry in entries)
    final = mean_of(entries, "final_loss")
    parts = [] if final is None else [f"loss {final:.3f}"]
    parts += [f"{diverged} of {len(entries)} seeds diverged"] if diverged else []
    return ", ".join(parts)


KLAMBAUER2017 = Replication(
    paper="Klambauer, Unterthiner, Mayr & Hochreiter (2017), *Self-Normalizing Neural "
    "Networks*, NeurIPS",
    reproduces="SELU with LeCun-normal init (Var(W) = 1/fan_in) keeps activations at mean 0 "
    "and variance 1 through depth (the fixed point of Sec. 3) and trains deep MLPs",
    scaled_down="the paper's 121 UCI tasks and 8-32-layer nets are one 32-layer SELU MLP of "
    "width 256 on 8,000 Shapeset images, 3 epochs, with Var(W) = 0.5, 1 and 2 over fan_in",
    judge=judge_klambauer2017,
)


# LSUV counts as at least as fast as the best fan-based init within this training loss.
AS_FAST = 0.01


def judge_mishkin2016(groups: Groups, details: Mapping[str, dict]) -> Finding:
    """LSUV (orthonormal, then each layer's output variance scaled to 1 on a batch) trains
    at least as fast as the best fan-based initializer: training loss after the first
    epoch and at the end no higher than the best one's (within `AS_FAST`)."""
    arms = {spec: members for (_, spec), members in groups.items()}
    lsuv = [spec for spec in arms if spec.split("(")[0] == "lsuv"]
    fan = [spec for spec in arms if spec not in lsuv]
    if len(lsuv) != 1 or not fan:
        return Finding([], False, "Not judged: needs one lsuv arm and fan-based arms.")
    early = {spec: _first_epoch_loss(arms[spec], details) for spec in arms}
    final = {spec: mean_of(arms[spec], "final_loss") for spec in arms}
    diverged = {spec: any(e["status"] == "diverged" for e in arms[spec]) for spec in arms}
    rows = [
        (spec, "at least as fast as the best" if spec in lsuv else "–",
         f"loss after epoch 1 {_loss(early[spec])}, final {describe_loss(arms[spec])}")
        for spec in arms
    ]
    usable = [spec for spec in fan if not diverged[spec] and final[spec] is not None]
    (mine,) = lsuv
    if diverged[mine] or final[mine] is None or not usable:
        return Finding(rows, False, "Not reproduced: LSUV diverged or no fan-based arm trained.")
    best = min(usable, key=lambda spec: final[spec])
    fastest = min((spec for spec in usable if early[spec] is not None), key=lambda s: early[s])
    checks = [
        early[mine] is not None and early[mine] <= early[fastest] + AS_FAST,
        final[mine] <= final[best] + AS_FAST,
    ]
    stalled = [spec for spec in usable if relative_drop(arms[spec]) < STALLS]
    slower = [
        spec for spec in fan
        if spec not in stalled and (diverged[spec] or final[spec] > final[mine] + AS_FAST)
    ]
    sentence = (
        f"{mine} reaches a training loss of {early[mine]:.3f} after epoch 1 and "
        f"{final[mine]:.3f} at the end, against {early[fastest]:.3f} ({fastest}) and "
        f"{final[best]:.3f} ({best}) for the best fan-based init"
    )
    if stalled:
        sentence += f"; {' and '.join(stalled)} stall{'s' * (len(stalled) == 1)}"
    if slower:
        sentence += f"; {' and '.join(slower)} train{'s' * (len(slower) == 1)} slower"
    return verdict(rows, checks, sentence)


def _loss(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


MISHKIN2016 = Replication(
    paper="Mishkin & Matas (2016), *All you need is a good init*, ICLR",
    reproduces="LSUV (orthonormal init, then each layer scaled to unit output variance on one "
    "batch) trains deep nets at least as fast as the best of the fan-based inits (their "
    "FitNet and CIFAR tables)",
    scaled_down="the paper's CIFAR FitNets and ImageNet nets are a 20-layer ReLU MLP of width "
    "256 on 8,000 Shapeset images, 5 epochs; LSUV is fitted on the run's probe batch "
    "(its first 256 training examples) with tol 0.1",
    judge=judge_mishkin2016,
)


# Saxe et al. time learning by the steps to a loss criterion; ours is a training loss
# that the shallowest nets reach in about half the preset's budget.
SAXE_CRITERION = 2.05
_SAXE = ("orthogonal", "lecun_normal")


def steps_to(entry: dict[str, Any], details: Mapping[str, dict], criterion: float) -> int | None:
    """The optimizer step of the first epoch end at which the run's training loss was at
    most `criterion`; None when it never was (or its run.json is missing)."""
    history = details.get(entry["run_dir"], {}).get("history")
    if not history:
        return None
    for step, loss in zip(history["step"], history["loss"], strict=True):
        if loss is not None and loss <= criterion:
            return step
    return None


def judge_saxe2013(groups: Groups, details: Mapping[str, dict]) -> Finding:
    """Deep linear nets: with orthogonal init the steps to a loss criterion stay nearly
    flat with depth (within 1.5x); with scaled Gaussian init (LeCun normal, Var(W) =
    1/fan_in) they grow: the deepest net needs over 1.5x the shallowest's steps, or never
    reaches the criterion in the budget."""
    depths = _by_depth_and_family(groups, _SAXE)
    complete = sorted(depth for depth, found in depths.items() if len(found) == len(_SAXE))
    if len(complete) < 2:
        return Finding([], False, "Not judged: needs at least two depths with both inits.")
    steps: dict[str, dict[int, float | None]] = {family: {} for family in _SAXE}
    rows = []
    for depth in complete:
        for family in _SAXE:
            per_seed = [steps_to(e, details, SAXE_CRITERION) for e in depths[depth][family]]
            reached = None not in per_seed
            steps[family][depth] = statistics.mean(per_seed) if reached else None
            paper = "flat in depth" if family == "orthogonal" else "grows with depth"
            ours = (
                f"{steps[family][depth]:.0f} steps"
                if reached
                else f"not reached by {sum(s is None for s in per_seed)} of {len(per_seed)} seeds"
            )
            rows.append((f"{depth} layers, {family}", paper, ours))
    shallow, deep = complete[0], complete[-1]
    orthogonal = list(steps["orthogonal"].values())
    flat = None not in orthogonal and max(orthogonal) <= 1.5 * min(orthogonal)
    gaussian_shallow, gaussian_deep = steps["lecun_normal"][shallow], steps["lecun_normal"][deep]
    grows = gaussian_shallow is not None and (
        gaussian_deep is None or gaussian_deep > 1.5 * gaussian_shallow
    )
    described = ", ".join(
        f"{depth}: {_steps(steps['orthogonal'][depth])} vs {_steps(steps['lecun_normal'][depth])}"
        for depth in complete
    )
    sentence = (
        f"steps to a training loss of {SAXE_CRITERION} (orthogonal vs lecun_normal, by depth: "
        f"{described}): orthogonal's {'stay flat' if flat else 'do not stay flat'}, "
        f"lecun_normal's {'grow' if grows else 'do not grow'} with depth"
    )
    return verdict(rows, [flat, grows], sentence)


def _steps(value: float | None) -> str:
    return "never" if value is None else f"{value:.0f}"


SAXE2013 = Replication(
    paper="Saxe, McClelland & Ganguli (2013), *Exact solutions to the nonlinear dynamics of "
    "learning in deep linear neural networks*, ICLR 2014",
    reproduces="deep linear nets: with random orthogonal init the learning time (steps to a "
    "loss criterion) is nearly independent of depth; with scaled random Gaussian init it "
    "grows with depth (their Fig. 6 on MNIST)",
    scaled_down="MNIST is 2,048 Shapeset images; linear MLPs of width 128 at depths 4, 16 and "
    f"64, 20 epochs of 64 steps; the criterion is a training loss of {SAXE_CRITERION}, read "
    "at each epoch's end",
    judge=judge_saxe2013,
)


# Table 1 of Glorot & Bengio 2010: test error (%) on Shapeset-3x2, 5 hidden layers.
GLOROT_TABLE1 = {
    ("tanh", "standard_uniform"): 27.15,
    ("tanh", "xavier_uniform"): 15.60,
    ("softsign", "standard_uniform"): 16.27,
    ("softsign", "xavier_uniform"): 16.06,
    ("sigmoid", "standard_uniform"): 82.61,
}
# Errors closer than this (in points of test error) count as a tie.
TIE = 1.0
NEAR = 5.0


def judge_glorot2010(groups: Groups, details: Mapping[str, dict]) -> Finding:
    """Table 1's order in test error: normalized init beats standard for tanh, softsign
    (its best init) comes near tanh with normalized init, and sigmoid is the worst."""
    error: dict[tuple[str, str], float] = {}
    for (cell, spec), members in groups.items():
        accuracy = mean_of(members, "final_test_accuracy")
        if cell.activation is not None and accuracy is not None:
            error[(cell.activation, spec)] = 100 * (1 - accuracy)
    needed = {("tanh", "standard_uniform"), ("tanh", "xavier_uniform")}
    activations = {activation for activation, _ in error}
    if not needed <= set(error) or not {"softsign", "sigmoid"} <= activations:
        return Finding([], False, "Not judged: needs tanh with both inits, softsign and sigmoid.")
    rows = [
        (f"{activation}, {spec}", _points(GLOROT_TABLE1.get((activation, spec))),
         _points(error[(activation, spec)]))
        for activation, spec in sorted(error, key=lambda key: (key[0], key[1]))
    ]
    tanh_n, tanh_s = error[("tanh", "xavier_uniform")], error[("tanh", "standard_uniform")]
    softsign = min(value for (act, _), value in error.items() if act == "softsign")
    sigmoid = min(value for (act, _), value in error.items() if act == "sigmoid")
    others = max(value for (act, _), value in error.items() if act != "sigmoid")
    checks = [tanh_n < tanh_s - TIE, abs(softsign - tanh_n) <= NEAR, sigmoid >= others - TIE]
    sentence = (
        f"test error (%): tanh {tanh_s:.1f} standard vs {tanh_n:.1f} normalized "
        f"({'normalized better' if checks[0] else 'normalized not better'}); softsign's best "
        f"{softsign:.1f} ({'near' if checks[1] else 'not near'} tanh normalized); sigmoid's "
        f"best {sigmoid:.1f} ({'the worst' if checks[2] else 'not the worst'}, the others at "
        f"most {others:.1f})"
    )
    return verdict(rows, checks, sentence)


def _points(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}% error"


GLOROT2010 = Replication(
    paper="Glorot & Bengio (2010), *Understanding the difficulty of training deep feedforward "
    "neural networks*, AISTATS",
    reproduces="Table 1 on Shapeset-3x2: normalized init (Var(W) = 2/(n_in+n_out)) beats "
    "standard init (U(±1/sqrt(n))) for tanh, softsign comes near tanh with normalized init, "
    "and sigmoid is the worst (their Figs. 6-7 at step 0 are in the depth profiles below)",
    scaled_down="the paper's 5 hidden layers of 1,000 units trained on an endless stream of "
    "images with plain SGD (batch 10) are 5 layers of 256 units trained on 24,000 images for "
    "10 epochs with SGD momentum 0.9 (batch 32); our errors are far higher than the paper's, "
    "only their order is compared",
    judge=judge_glorot2010,
)


def judge_zhang2019(groups: Groups, details: Mapping[str, dict]) -> Finding:
    """Fixup's claim, scaled down: without normalization the default He init makes a deep
    residual network diverge or stall (its stream multiplies at every block), while Fixup
    trains it."""
    found: dict[str, list] = {}
    for (cell, spec), members in groups.items():
        if cell.normalization in (None, "none"):
            found.setdefault(spec, []).extend(members)
    he, fixup = found.get(_ZHANG[0]), found.get(_ZHANG[1])
    if not he or not fixup:
        return Finding(
            [], False, "Not judged: no runs of he_normal and scheme:fixup without normalization."
        )
    rows = [
        ("he_normal", "diverges or stalls", describe_loss(he)),
        ("scheme:fixup", "trains", describe_loss(fixup)),
    ]
    fails = all(
        entry["status"] == "diverged" or (relative_drop([entry]) or 0.0) < STALLS
        for entry in he
    )
    drop = relative_drop(fixup)
    trains = all(entry["status"] == "ok" for entry in fixup) and (drop or 0) >= TRAINS
    sentence = (
        f"without normalization he_normal {'diverges or stalls' if fails else 'trains'} "
        f"in every seed while scheme:fixup {'trains' if trains else 'does not train'} "
        f"({_percent(drop)})"
    )
    return verdict(rows, [fails, trains], sentence)


_ZHANG = ("he_normal", "scheme:fixup")

ZHANG2019 = Replication(
    paper="Zhang, Dauphin & Ma (2019), *Fixup Initialization: Residual Learning Without "
    "Normalization*, ICLR",
    reproduces="without normalization a deep residual network with He's init diverges "
    "(its stream's second moment triples at every block) while Fixup trains it",
    scaled_down="the paper's 110-layer CIFAR-10 ResNets are residual MLPs of 16 blocks of "
    "width 64 (resmlp: x + W2 relu(W1 x)) on 8,000 Shapeset images, 5 epochs of SGD at 0.05",
    judge=judge_zhang2019,
)


_RADFORD = ("random_normal(stddev=0.02)", "scheme:gpt2")
# The stream "stays level" under gpt2 when its std grows by less than this from the first
# block to the last; the unscaled arm's "grows" when it grows by at least STREAM_GROWS at the
# largest depth (and more at each larger depth).
STREAM_LEVEL = 1.25
STREAM_GROWS = 1.5
# Test losses (nats per token) closer than this are "as good": the seeds of one arm spread
# by 0.01-0.06 nats in the preset's runs (radford2019).
LOSS_TIE = 0.02


def stream_growth(entries: Sequence[dict[str, Any]], details: Mapping[str, dict]) -> float | None:
    """Mean over the seeds of the residual stream's std at the last block over the first's,
    at step 0 (from each run's `run.json`); None without a recorded stream."""
    ratios = []
    for entry in entries:
        profile = details.get(entry.get("run_dir", ""), {}).get("profiles", {}).get("initial", {})
        stds = profile.get("stream", {}).get("output_std") or []
        if len(stds) >= 2 and stds[0] and stds[-1] is not None:
            ratios.append(stds[-1] / stds[0])
    return statistics.mean(ratios) if ratios else None


def _test_loss(entries: Sequence[dict[str, Any]]) -> float:
    """Mean final test loss over the seeds; infinite when any seed diverged."""
    if any(entry["status"] != "ok" or entry["final_test_loss"] is None for entry in entries):
        return math.inf
    return statistics.mean(entry["final_test_loss"] for entry in entries)


def judge_radford2019(groups: Groups, details: Mapping[str, dict]) -> Finding:
    """GPT-2's depth scaling, scaled down: in a pre-LN Transformer the residual stream grows
    with depth at init under unscaled N(0, 0.02) and stays level under `gpt2` (residual
    outputs / sqrt(2 L)); at a fixed budget the scaled arm is at least as good at every
    depth and better at the largest."""
    depths = _by_depth_and_family(groups, ("random_normal", "scheme:gpt2"))
    depths = {
        depth: found for depth, found in depths.items()
        if all(spec.split("(")[0] in found for spec in _RADFORD)
    }
    if not depths:
        return Finding(
            [], False, "Not judged: no depth has both random_normal(stddev=0.02) and scheme:gpt2."
        )
    ordered = sorted(depths)
    growth = {
        depth: [stream_growth(depths[depth][name], details) for name in ("random_normal",
                                                                          "scheme:gpt2")]
        for depth in ordered
    }
    losses = {
        depth: [_test_loss(depths[depth][name]) for name in ("random_normal", "scheme:gpt2")]
        for depth in ordered
    }
    rows = []
    for depth in ordered:
        unscaled, scaled = growth[depth]
        rows.append((
            f"{depth} layers: stream std, last block / first, at init",
            "grows with depth unscaled; level with 1/sqrt(2L)",
            f"N(0, 0.02) {_times(unscaled)}, gpt2 {_times(scaled)}",
        ))
        rows.append((
            f"{depth} layers: final test loss (bits/char)",
            "gpt2 at least as good; better deeper",
            f"N(0, 0.02) {_bits(losses[depth][0])}, gpt2 {_bits(losses[depth][1])}",
        ))
    unscaled = [growth[depth][0] for depth in ordered]
    scaled = [growth[depth][1] for depth in ordered]
    grows = None not in unscaled and all(
        later > earlier for earlier, later in zip(unscaled, unscaled[1:], strict=False)
    ) and unscaled[-1] >= STREAM_GROWS
    level = None not in scaled and max(scaled) < STREAM_LEVEL
    deep = ordered[-1]
    as_good = all(losses[d][1] <= losses[d][0] + LOSS_TIE for d in ordered)
    better = losses[deep][1] < losses[deep][0] - LOSS_TIE and all(
        scaled_run["final_test_loss"] is not None
        and (plain_run["final_test_loss"] is None
             or scaled_run["final_test_loss"] < plain_run["final_test_loss"])
        for plain_run, scaled_run in zip(
            _by_seed(depths[deep]["random_normal"]), _by_seed(depths[deep]["scheme:gpt2"]),
            strict=False,
        )
    )
    sentence = (
        f"at init the unscaled stream {'grows' if grows else 'does not grow'} with depth "
        f"({', '.join(_times(value) for value in unscaled)} at {_listed_depths(ordered)} layers) "
        f"while gpt2's {'stays level' if level else 'does not stay level'} "
        f"({', '.join(_times(value) for value in scaled)}); gpt2's test loss is "
        f"{'at least as good at every depth' if as_good else 'worse at some depth'} and "
        f"{'lower' if better else 'not lower in every seed'} at {deep} layers "
        f"({_bits(losses[deep][1])} vs {_bits(losses[deep][0])} bits/char)"
    )
    return verdict(rows, [grows, level, as_good, better], sentence)


def _by_seed(entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(entries, key=lambda entry: entry["seed"])


def _times(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}x"


def _bits(nats: float) -> str:
    return "diverged" if not math.isfinite(nats) else f"{nats / math.log(2):.3f}"


def _listed_depths(depths: Sequence[int]) -> str:
    return ", ".join(map(str, depths))


RADFORD2019 = Replication(
    paper="Radford et al. (2019), *Language Models are Unsupervised Multitask Learners* "
    "(GPT-2), section 2.3",
    reproduces="scaling the residual layers' weights at init by 1/sqrt(N), N residual layers, "
    "keeps a pre-LN Transformer's residual stream level with depth (unscaled N(0, 0.02) lets "
    "it grow), and the scaled model trains at least as well, better when deep",
    scaled_down="GPT-2's 12-48 layers of width 768-1600 on WebText are pre-LN Transformers of "
    "2, 4 and 8 layers of width 64 (4 heads, GELU) on the Sonnets, character-level (windows of "
    "64), 6 epochs of Adam at 0.003, 3 seeds",
    judge=judge_radford2019,
)


_WANG = ("xavier_normal", "scheme:deepnet")
# An arm "learns only the labels' frequencies" (the characters', for a language model) when its
# final training loss is within this of the training labels' prior loss (their entropy, in
# run.json); one that "trains" ends at most LEARNS times the prior loss.
PRIOR_MARGIN = 0.05
LEARNS = 0.9


def prior_loss(entries: Sequence[dict[str, Any]], details: Mapping[str, dict]) -> float | None:
    """The training labels' prior loss recorded in the runs' run.json; None if none has it."""
    found = [
        details[entry["run_dir"]]["prior_loss"] for entry in entries
        if details.get(entry.get("run_dir", ""), {}).get("prior_loss") is not None
    ]
    return found[0] if found else None


def learns_nothing(entry: dict[str, Any], prior: float) -> bool:
    """Diverged, or ended within `PRIOR_MARGIN` of what the labels' frequencies alone give."""
    return entry["status"] == "diverged" or entry["final_loss"] >= prior - PRIOR_MARGIN


def learns(entry: dict[str, Any], prior: float) -> bool:
    """Ended at `LEARNS` times the labels' prior loss or below, without diverging."""
    return entry["status"] == "ok" and entry["final_loss"] <= LEARNS * prior


def judge_wang2022(groups: Groups, details: Mapping[str, dict]) -> Finding:
    """DeepNet's claim, scaled down: a deep post-LN Transformer trained with Adam and no
    warm-up fails from Xavier's init (it diverges, or learns nothing past the characters'
    frequencies), while DeepNorm (alpha in the blocks, beta at init) trains it; at a shallow
    depth both train."""
    depths = _by_depth_and_family(groups, _WANG)
    depths = {depth: found for depth, found in depths.items() if len(found) == len(_WANG)}
    if not depths:
        return Finding([], False, "Not judged: no depth has both xavier_normal and scheme:deepnet.")
    deep, shallow = max(depths), min(depths)
    prior = prior_loss([e for found in depths.values() for m in found.values() for e in m],
                        details)
    if prior is None:
        return Finding([], False, "Not judged: the runs' run.json hold no prior_loss.")
    rows = []
    for depth in sorted(depths):
        paper = {
            deep: ("fails: diverges or stalls (Post-LN, no warm-up)", "trains (DeepNorm)"),
            shallow: ("trains", "trains"),
        }[depth]
        for family, expected in zip(_WANG, paper, strict=True):
            rows.append((f"{depth} layers, {family}", expected,
                         describe_loss(depths[depth][family])))
    xavier, deepnet = (depths[deep][family] for family in _WANG)
    fails = all(learns_nothing(entry, prior) for entry in xavier)
    trains = all(learns(entry, prior) for entry in deepnet)
    sentence = (
        f"at {deep} layers xavier_normal {'fails' if fails else 'does not fail'} in every "
        f"seed ({final_or_diverged(xavier)}; the characters' frequencies alone give "
        f"{prior:.3f}) while scheme:deepnet {'trains' if trains else 'does not train'} "
        f"({final_or_diverged(deepnet)})"
    )
    checks = [fails, trains]
    if shallow != deep:
        both = all(
            learns(entry, prior) for family in _WANG for entry in depths[shallow][family]
        )
        checks.append(both)
        sentence += f"; at {shallow} layers {'both train' if both else 'they do not both train'}"
    return verdict(rows, checks, sentence)


WANG2022 = Replication(
    paper="Wang et al. (2022), *DeepNet: Scaling Transformers to 1,000 Layers*, arXiv 2203.00555",
    reproduces="a deep post-LN Transformer trained with Adam and no learning-rate warm-up fails "
    "from Xavier's init, while DeepNorm (x <- LN(alpha x + f(x)) with alpha = (2N)^(1/4), and "
    "the value, output and feed-forward kernels' Xavier gain beta = (8N)^(-1/4)) trains it",
    scaled_down="the paper's 18-1,000-layer translation models are decoder-only post-LN "
    "Transformers of 2 and 12 layers of width 64 (4 heads, GELU) on the Sonnets, "
    "character-level (windows of 64), 2 epochs of Adam at 0.001 without warm-up, 3 seeds",
    judge=judge_wang2022,
)
