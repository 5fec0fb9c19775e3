"""The report's figures, drawn with matplotlib's object API (no pyplot, no display needed).

Each function takes `groups`: label -> the `run.json` details of that label's
runs (one per seed), and writes one PNG.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

Groups = Mapping[str, Sequence[dict]]
_MAX_HISTOGRAM_COLUMNS = 8  # deeper nets show evenly spaced layers, first and last included


def _array(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if value is None else value for value in values], dtype=float)


def _stack(rows: Sequence[Sequence[float | None]]) -> np.ndarray:
    """Rows of unequal length (a run that diverged early) padded with NaN."""
    width = max(len(row) for row in rows)
    return np.array(
        [np.pad(_array(row), (0, width - len(row)), constant_values=np.nan) for row in rows]
    )


def _band(axes, x: np.ndarray, rows: np.ndarray, label: str, color, style: str = "-") -> None:
    """Mean line; with several seeds, a min-max band around it."""
    with np.errstate(all="ignore"):
        mean = np.nanmean(rows, axis=0) if len(rows) > 1 else rows[0]
    axes.plot(x, mean, style, color=color, label=label, marker="o", markersize=3)
    if len(rows) > 1:
        axes.fill_between(x, np.nanmin(rows, 0), np.nanmax(rows, 0), color=color, alpha=0.2)


def loss_curves(path: Path, groups: Groups) -> None:
    """Train (solid) and test (dashed) loss per epoch, epoch 0 being before any update."""
    figure = Figure(figsize=(11, 4.5), layout="constrained")
    train_axes, test_axes = figure.subplots(1, 2, sharey=True)
    colors = _colors(len(groups))
    for color, (label, runs) in zip(colors, groups.items(), strict=True):
        for axes, key in ((train_axes, "loss"), (test_axes, "test_loss")):
            rows = _stack([run["history"][key] for run in runs])
            _band(axes, np.arange(rows.shape[1]), rows, label, color)
    for axes, title in ((train_axes, "training loss"), (test_axes, "test loss")):
        axes.set(title=title, xlabel="epoch")
        _log_scale(axes, min_span=20)  # a diverging run can reach 1e30; others stay ~1
        axes.grid(alpha=0.3)
    train_axes.set_ylabel("cross-entropy (gaps: diverged)")
    test_axes.legend(fontsize="small")
    figure.savefig(path, dpi=110)


def depth_profiles(path: Path, groups: Groups, layers: Sequence[str]) -> None:
    """Per-layer activation std and back-propagated gradient std at step 0 and at the end."""
    figure = Figure(figsize=(11, 8), layout="constrained")
    grid = figure.subplots(2, 2, sharex=True)
    colors = _colors(len(groups))
    x = np.arange(1, len(layers) + 1)
    for color, (label, runs) in zip(colors, groups.items(), strict=True):
        for column, moment in enumerate(("initial", "final")):
            for row, key in enumerate(("activation_std", "activation_gradient_std")):
                rows = _stack([run["profiles"][moment][key] for run in runs])
                _band(grid[row, column], x, rows, label, color)
    titles = {
        (0, 0): "activation std, step 0",
        (0, 1): "activation std, end of training",
        (1, 0): "back-propagated gradient std dL/d(output), step 0",
        (1, 1): "back-propagated gradient std dL/d(output), end of training",
    }
    for (row, column), title in titles.items():
        axes = grid[row, column]
        axes.set_title(title)
        _log_scale(axes)
        axes.grid(alpha=0.3)
        names = _short_names(layers)
        # Your own model's names (`block_3_expand`...) are longer than h1, h2...: turn them
        # when they would overlap.
        crowded = len(layers) > 12 or sum(map(len, names)) > 60
        axes.set_xticks(x, names, rotation=90 if crowded else 0)
    grid[0, 1].legend(fontsize="small")
    figure.suptitle("Per-layer statistics on the probe batch (log scale; zero std not drawn)")
    figure.savefig(path, dpi=110)


def activation_histograms(path: Path, groups: Groups, layers: Sequence[str], moment: str) -> None:
    """Grid of activation histograms: one row per initializer, one column per layer.

    Drawn from each label's first run (first seed), as in Glorot & Bengio's Fig. 6.
    """
    columns = _histogram_columns(len(layers))
    figure = Figure(figsize=(2.1 * len(columns) + 1.5, 1.6 * len(groups) + 1), layout="constrained")
    grid = figure.subplots(len(groups), len(columns), squeeze=False, sharex="col")
    for row, (label, runs) in enumerate(groups.items()):
        histograms = runs[0]["profiles"][moment].get("activation_histograms")
        for column, layer in enumerate(columns):
            axes = grid[row, column]
            if histograms:
                buckets = np.array(histograms[layer])
                edges = np.append(buckets[:, 0], buckets[-1, 1])
                total = max(buckets[:, 2].sum(), 1.0)
                axes.stairs(buckets[:, 2] / total, edges, fill=True, alpha=0.7)
            axes.tick_params(labelsize="x-small")
            axes.set_yticks([])
            if row == 0:
                axes.set_title(layers[layer], fontsize="small")
            if column == 0:
                axes.set_ylabel(_wrap(label), fontsize="x-small", rotation=0, ha="right")
    when = "at step 0" if moment == "initial" else "at the end of training"
    figure.suptitle(f"Activation histograms {when} (probe batch, first seed)")
    figure.savefig(path, dpi=100)


def _log_scale(axes, min_span: float = 1.0) -> None:
    """Log y scale when the positive values drawn span at least `min_span` (max / min).

    Left linear when nothing positive is drawn (every run diverged, or all zeros).
    """
    values = np.concatenate(
        [np.asarray(line.get_ydata(), dtype=float) for line in axes.get_lines()]
    )
    positive = values[np.isfinite(values) & (values > 0)]
    if positive.size and positive.max() >= min_span * positive.min():
        axes.set_yscale("log")


def _histogram_columns(count: int) -> list[int]:
    if count <= _MAX_HISTOGRAM_COLUMNS:
        return list(range(count))
    return sorted({round(i) for i in np.linspace(0, count - 1, _MAX_HISTOGRAM_COLUMNS)})


def _short_names(layers: Sequence[str]) -> list[str]:
    return [name.replace("hidden_", "h") for name in layers]


def _wrap(label: str, width: int = 22) -> str:
    return textwrap.fill(label, width)


def _colors(count: int) -> list:
    from matplotlib import colormaps

    palette = colormaps["tab10" if count <= 10 else "tab20"]
    return [palette(i % palette.N) for i in range(count)]
