"""The report's figures, drawn with matplotlib's object API (no pyplot, no display needed).

Each function writes one PNG and returns its `Figure`, whose lines hold the numbers drawn.
`loss_curves`, `depth_profiles` and `activation_histograms` take `groups`: label -> the
`run.json` details of that label's runs (one per seed); each run names its own layers, so
labels of a depth sweep may have different layers. `final_loss_sweep` takes summary entries.
"""

from __future__ import annotations

import textwrap
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from experiments import files
from experiments.papers.trainability import Grid
from experiments.papers.width_transfer import TRAINED_LOSS, best_learning_rate

Groups = Mapping[str, Sequence[dict]]
_MAX_HISTOGRAM_COLUMNS = 8  # deeper nets show evenly spaced layers, first and last included
_MAX_SWEEP_TICKS = 12  # a sweep of more values gets matplotlib's ticks
_MAX_LAYER_TICKS = 40  # deeper nets name every k-th layer and the last on the depth axis
_LEGEND_INSIDE = 8  # more labels than this get a legend below the panels, in columns
_LEGEND_MAX = 36  # more than this get a line saying so instead: 12 rows of 3 columns at most
# Swept settings whose values are spread geometrically (0.001, 0.01, 0.1; 16, 32, 64).
LOG_SCALE_SETTINGS = ("learning_rate", "batch_size")
# The learning-rate transfer figure's loss axis ends at this multiple of the initial loss.
TRANSFER_TOP = 1.5


def _array(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if value is None else value for value in values], dtype=float)


def _stack(rows: Sequence[Sequence[float | None]]) -> np.ndarray:
    """Rows of unequal length (a run that diverged early) padded with NaN."""
    width = max(len(row) for row in rows)
    return np.array(
        [np.pad(_array(row), (0, width - len(row)), constant_values=np.nan) for row in rows]
    )


def _band(axes, x: np.ndarray, rows: np.ndarray, label: str, color, style: str = "-") -> None:
    """Mean line; with several seeds, a min-max band around it (NaN: a gap)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: every seed diverged
        mean = np.nanmean(rows, axis=0) if len(rows) > 1 else rows[0]
        axes.plot(x, mean, style, color=color, label=label, marker="o", markersize=3)
        if len(rows) > 1:
            axes.fill_between(x, np.nanmin(rows, 0), np.nanmax(rows, 0), color=color, alpha=0.2)


def _save(figure: Figure, path: str, dpi: int) -> None:
    """Writes `figure` as a PNG through `experiments.files` (`--logdir` may be a URI)."""
    with files.open_binary(path) as file:
        figure.savefig(file, format="png", dpi=dpi)


def loss_curves(path: str, groups: Groups) -> Figure:
    """Train (solid) and test (dashed) loss per epoch, epoch 0 being before any update."""
    # Taller by the legend's rows below the panels: yang2022's 100 labels would otherwise
    # squeeze the panels to nothing.
    figure = Figure(figsize=(11, 4.5 + _legend_height(len(groups))), layout="constrained")
    train_axes, test_axes = figure.subplots(1, 2, sharey=True)
    colors = _colors(len(groups))
    for color, (label, runs) in zip(colors, groups.items(), strict=True):
        for axes, key in ((train_axes, "loss"), (test_axes, "test_loss")):
            rows = _stack([run["history"][key] for run in runs])
            _band(axes, np.arange(rows.shape[1]), rows, label, color)
    for axes, title in ((train_axes, "training loss"), (test_axes, "test loss")):
        axes.set(title=title, xlabel="epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        _log_scale(axes, min_span=20)  # a diverging run can reach 1e30; others stay ~1
        axes.grid(alpha=0.3)
    train_axes.set_ylabel("cross-entropy (gaps: diverged)")
    _legend(figure, test_axes, len(groups))
    _save(figure, path, dpi=110)
    return figure


def depth_profiles(path: str, groups: Groups) -> Figure:
    """Per-layer activation std and back-propagated gradient std at step 0 and at the end.

    When the labels' layers differ (a depth sweep), the x axis is the layer's position
    (1 = first layer with weights, each line's last point its output layer).
    """
    layer_lists = {tuple(runs[0]["layers"]) for runs in groups.values()}
    names = _short_names(next(iter(layer_lists))) if len(layer_lists) == 1 else []
    # Your own model's names (`block_3_expand`...) are longer than h1, h2...: turn them
    # when they would overlap.
    crowded = len(names) > 12 or sum(map(len, names)) > 60
    # Fixed margins, in inches, rather than a constrained layout, which measures every
    # tick of the log axes: 2x slower to draw. Below: the tick labels (turned: as long as
    # the longest name), the axis label of a depth sweep, a legend of many labels.
    bottom = 0.45 + (0.075 * max(map(len, names)) if crowded else 0.0)
    bottom += 0.0 if names else 0.25
    bottom += _legend_height(len(groups))
    figure = Figure(figsize=(11, 8 + bottom - 0.45))
    figure.subplots_adjust(
        left=0.75 / 11, right=1 - 0.25 / 11, top=1 - 0.75 / figure.get_figheight(),
        bottom=bottom / figure.get_figheight(), hspace=0.3, wspace=0.15,
    )
    grid = figure.subplots(2, 2, sharex=True)
    colors = _colors(len(groups))
    for color, (label, runs) in zip(colors, groups.items(), strict=True):
        x = np.arange(1, len(runs[0]["layers"]) + 1)
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
        if names:
            # Past _MAX_LAYER_TICKS layers (xiao2018 has 130) every step-th name and the last
            # are written: all of them would overlap into a black band.
            step = max(1, -(-len(names) // _MAX_LAYER_TICKS))
            shown = list(range(0, len(names) - 1, step))
            if shown and len(names) - 1 - shown[-1] < step / 2:  # too close to the last to read
                shown.pop()
            shown.append(len(names) - 1)
            axes.set_xticks(np.array(shown) + 1, [names[i] for i in shown],
                            rotation=90 if crowded else 0)
        else:
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
            if row == 1:
                axes.set_xlabel("layer (1 = first; each line ends at its output layer)")
    _legend(figure, grid[0, 1], len(groups), constrained=False)
    figure.suptitle("Per-layer statistics on the probe batch (log scale; zero std not drawn)")
    _save(figure, path, dpi=110)
    return figure


def activation_histograms(path: str, groups: Groups, moment: str) -> Figure:
    """Activation histograms: one row per label, one column per layer.

    Drawn from each label's first run (first seed), as in Glorot & Bengio's Fig. 6.
    Deep nets show evenly spaced layers. When every label has the same layers, each
    column is one panel with the labels' histograms stacked as rows on the layer's
    shared x axis (a ridgeline: one panel per layer draws 3-5x faster than one per
    label and layer); when they differ (a depth sweep), every label and layer gets its
    own panel and x axis, naming its layer, so that one net's exploding layer does not
    flatten another's.
    """
    layer_lists = [runs[0]["layers"] for runs in groups.values()]
    if all(layers == layer_lists[0] for layers in layer_lists):
        figure = _ridgelines(groups, layer_lists[0], moment)
    else:
        figure = _histogram_grid(groups, layer_lists, moment)
    when = "at step 0" if moment == "initial" else "at the end of training"
    # Placed by its top, in inches: the default (2% of the height below the top) fell on
    # the column titles of a tall grid.
    figure.suptitle(
        f"Activation histograms {when} (probe batch, first seed)",
        y=1 - 0.1 / figure.get_figheight(), va="top",
    )
    _save(figure, path, dpi=100)
    return figure


# A ridgeline's tallest bucket, in rows: the rest of the row separates it from the next.
RIDGE_HEIGHT = 0.85


def _ridgelines(groups: Groups, layers: Sequence[str], moment: str) -> Figure:
    """One panel per shown layer; row r (from the top: the first label) is label r's
    histogram, its tallest bucket `RIDGE_HEIGHT` high above the baseline y = -r."""
    columns = _histogram_columns(len(layers))
    size = (2.1 * len(columns) + 1.5, 1.6 * len(groups) + 1)
    figure = _fixed_margins(size, hspace=0.0)
    grid = figure.subplots(1, len(columns), squeeze=False, sharey=True)[0]
    baselines = -np.arange(len(groups), dtype=float)
    colors = _colors(len(groups))  # each label's color in the other figures
    for axes, layer in zip(grid, columns, strict=True):
        for baseline, color, runs in zip(baselines, colors, groups.values(), strict=True):
            histograms = runs[0]["profiles"][moment].get("activation_histograms")
            axes.axhline(baseline, color="0.8", linewidth=0.6)
            if not histograms:
                continue
            buckets = np.array(histograms[layer])
            edges = np.append(buckets[:, 0], buckets[-1, 1])
            heights = buckets[:, 2] / max(buckets[:, 2].max(), 1.0) * RIDGE_HEIGHT
            axes.stairs(
                baseline + heights, edges, baseline=baseline, fill=True, alpha=0.7, color=color
            )
        axes.set_title(layers[layer], fontsize="small")
        axes.tick_params(labelsize="x-small")
        axes.tick_params(axis="y", length=0)
    grid[0].set_ylim(baselines[-1] - 0.1, 1.0)
    grid[0].set_yticks(baselines + RIDGE_HEIGHT / 2, [_wrap(label) for label in groups])
    grid[0].tick_params(axis="y", labelsize="x-small")
    return figure


def _histogram_grid(groups: Groups, layer_lists: Sequence[Sequence[str]], moment: str) -> Figure:
    """One panel per label and shown layer, each with its own x axis and layer name."""
    width = max(len(_histogram_columns(len(layers))) for layers in layer_lists)
    figure = _fixed_margins((2.1 * width + 1.5, 1.6 * len(groups) + 1), hspace=0.3)
    grid = figure.subplots(len(groups), width, squeeze=False)
    for row, ((label, runs), layers) in enumerate(zip(groups.items(), layer_lists, strict=True)):
        histograms = runs[0]["profiles"][moment].get("activation_histograms")
        columns = _histogram_columns(len(layers))
        for column in range(width):
            axes = grid[row, column]
            if column >= len(columns):
                axes.set_axis_off()
                continue
            layer = columns[column]
            if histograms:
                buckets = np.array(histograms[layer])
                edges = np.append(buckets[:, 0], buckets[-1, 1])
                total = max(buckets[:, 2].sum(), 1.0)
                axes.stairs(buckets[:, 2] / total, edges, fill=True, alpha=0.7)
            axes.tick_params(labelsize="x-small")
            axes.set_yticks([])
            axes.set_title(layers[layer], fontsize="x-small")
            if column == 0:
                axes.set_ylabel(_wrap(label), fontsize="x-small", rotation=0, ha="right")
    return figure


def _fixed_margins(size: tuple[float, float], hspace: float) -> Figure:
    """A figure of `size` inches with fixed margins, in inches (the labels' column on the
    left, the titles on top), rather than a constrained layout, which measures every
    panel's ticks: 3x slower to draw."""
    figure = Figure(figsize=size)
    figure.subplots_adjust(
        left=1.5 / size[0], right=1 - 0.1 / size[0], bottom=0.35 / size[1],
        top=1 - 0.65 / size[1], wspace=0.08, hspace=hspace,
    )
    return figure


def final_loss_sweep(
    path: str, setting: str, lines: Mapping[str, Sequence[dict[str, Any]]]
) -> Figure:
    """Final training and test loss against the numeric swept `setting`, one line per label.

    `lines` maps a label (an initializer, with the other swept settings' values) to its
    summary entries, each holding `setting`, `status`, `final_loss` and `final_test_loss`.
    Each point is the mean over the seeds that did not diverge, with a min-max band;
    where every seed diverged the line has a gap, and the legend says where runs
    diverged. Entries without a value of `setting` (your own model in a depth sweep)
    are left out. The x axis is logarithmic for `LOG_SCALE_SETTINGS`, linear otherwise
    (a depth sweep, as in He et al. 2015, Fig. 2-3, and Saxe et al. 2013).
    """
    # Taller by the legend's rows below the panels, as loss_curves.
    figure = Figure(figsize=(11, 4.5 + _legend_height(len(lines))), layout="constrained")
    train_axes, test_axes = figure.subplots(1, 2, sharey=True)
    colors = _colors(len(lines))
    any_diverged = False
    for color, (label, entries) in zip(colors, lines.items(), strict=True):
        entries = [entry for entry in entries if entry.get(setting) is not None]
        x = np.array(sorted({entry[setting] for entry in entries}), dtype=float)
        if not x.size:
            continue
        note = _diverged_note(setting, entries)
        any_diverged = any_diverged or bool(note)
        for axes, key in ((train_axes, "final_loss"), (test_axes, "final_test_loss")):
            rows = _points(entries, setting, x, key)
            _band(axes, x, rows, label + note, color)
    values = sorted({entry[setting] for entries in lines.values() for entry in entries} - {None})
    for axes, title in (
        (train_axes, "last epoch's training loss (running mean)"), (test_axes, "final test loss")
    ):
        axes.set(title=title, xlabel=setting)
        if setting in LOG_SCALE_SETTINGS:
            axes.set_xscale("log")
            axes.minorticks_off()
        if len(values) <= _MAX_SWEEP_TICKS:  # the swept values themselves, not 2.2, 2.4...
            axes.set_xticks(values, [f"{value:g}" for value in values])
        _log_scale(axes, min_span=20)
        axes.grid(alpha=0.3)
    train_axes.set_ylabel("cross-entropy (mean over seeds, band: min-max)")
    _legend(figure, test_axes, len(lines))
    left_out = "; diverged runs left out" if any_diverged else ""
    figure.suptitle(f"Final loss against {setting}{left_out}")
    _save(figure, path, dpi=110)
    return figure


def _points(entries: Sequence[dict[str, Any]], setting: str, x: np.ndarray, key: str) -> np.ndarray:
    """(seeds, len(x)): the runs that did not diverge, by value of `setting`; NaN-padded."""
    columns = [
        [entry[key] for entry in entries if entry[setting] == value and entry["status"] == "ok"]
        for value in x
    ]
    height = max(1, *(len(column) for column in columns))
    return np.array(
        [
            np.pad(_array(column), (0, height - len(column)), constant_values=np.nan)
            for column in columns
        ]
    ).T


def _diverged_note(setting: str, entries: Sequence[dict[str, Any]]) -> str:
    """` (diverged: depth=30 2/2 runs)` for the values of `setting` where runs diverged."""
    counts = {}
    for value in sorted({entry[setting] for entry in entries}):
        runs = [entry for entry in entries if entry[setting] == value]
        diverged = sum(entry["status"] != "ok" for entry in runs)
        if diverged:
            counts[value] = f"{setting}={value:g} {diverged}/{len(runs)} runs"
    return f" (diverged: {', '.join(counts.values())})" if counts else ""


def _legend(figure: Figure, axes, count: int, constrained: bool = True) -> None:
    """Inside `axes` for a few labels; below the panels, in columns, for many (in the
    `_legend_height` a figure without a constrained layout leaves for it); past
    `_LEGEND_MAX`, a line saying so instead (no legend of 100 labels can be read)."""
    if count <= _LEGEND_INSIDE:
        axes.legend(fontsize="small")
        return
    if count > _LEGEND_MAX:
        figure.supxlabel(
            f"{count} lines, too many to label: the report's tables give each one's numbers",
            fontsize="small",
        )
        return
    handles, labels = axes.get_legend_handles_labels()
    figure.legend(
        handles,
        labels,
        loc="outside lower center" if constrained else "lower center",
        ncol=_legend_columns(count),
        fontsize="small",
    )


def _legend_columns(count: int) -> int:
    return min(3, -(-count // 6))


def _legend_height(count: int) -> float:
    """Inches a legend of `count` labels takes below the panels (0: inside a panel)."""
    if count <= _LEGEND_INSIDE:
        return 0.0
    if count > _LEGEND_MAX:
        return 0.3
    return 0.2 + 0.22 * -(-count // _legend_columns(count))


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


def learning_rate_transfer(path: str, entries: Sequence[dict[str, Any]]) -> Figure:
    """Final training loss against log2 of the learning rate, one line per width, one panel
    per parametrization (and initializer, when several): Yang et al. (2022), Fig. 1 and 3.

    `entries` are summary entries holding `width`, `learning_rate`, `parametrization`,
    `initializer`, `status` and `final_train_loss` (the trained model's loss on the training
    set). Each point is the mean over the seeds that did
    not diverge, with a min-max band; a learning rate where every seed diverged is a gap. A
    star marks each width's best learning rate (lowest mean, counting a diverged seed as
    infinitely bad), the one muP should keep fixed as the width grows.
    """
    entries = [e for e in entries if e.get("width") is not None]
    panels = sorted(
        {(e["initializer"], e.get("parametrization") or "sp") for e in entries},
        key=lambda panel: (panel[0], panel[1] != "sp"),
    )
    several = len({initializer for initializer, _ in panels}) > 1
    widths = sorted({e["width"] for e in entries})
    colors = dict(zip(widths, _colors(len(widths)), strict=True))
    figure = Figure(figsize=(5.5 * len(panels) + 0.5, 4.5), layout="constrained")
    axes_list = np.atleast_1d(figure.subplots(1, len(panels), sharey=True))
    for axes, (initializer, parametrization) in zip(axes_list, panels, strict=True):
        for width in widths:
            mine = [
                e for e in entries
                if e["width"] == width and e["initializer"] == initializer
                and (e.get("parametrization") or "sp") == parametrization
            ]
            if not mine:
                continue
            rates = np.array(sorted({e["learning_rate"] for e in mine}), dtype=float)
            rows = _points(mine, "learning_rate", rates, TRAINED_LOSS)
            x = np.log2(rates)
            _band(axes, x, rows, f"width {width}", colors[width])
            best = best_learning_rate(mine)
            if best is not None:
                column = rows[:, list(rates).index(best)]
                axes.plot(np.log2(best), np.nanmean(column), "*", color=colors[width],
                          markersize=13, markeredgecolor="black", zorder=5)
        title = {"sp": "standard parametrization", "mup": "muP"}.get(
            parametrization, parametrization
        )
        axes.set(title=f"{initializer}, {title}" if several else title,
                 xlabel="log2 learning rate")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
    axes_list[0].set_ylabel("training loss after training (mean over seeds, band: min-max)")
    axes_list[0].set_yscale("log")  # the minima differ by a few percent
    # Rates far past the edge of stability end orders of magnitude above the initial loss;
    # the axis stops above it, where the curves' minima stay readable.
    initial = [e["initial_loss"] for e in entries if e.get("initial_loss") is not None]
    if initial:
        axes_list[0].set_ylim(top=TRANSFER_TOP * max(initial))
    axes_list[-1].legend(fontsize="small")
    figure.suptitle("Learning-rate transfer across widths (star: each width's best rate)")
    _save(figure, path, dpi=110)
    return figure



def trainability_map(path: str, found: Grid) -> Figure:
    """Schoenholz et al. (2017), Figs. 5-6: mean test accuracy over a depth x sigma_w2 grid of
    `mean_field` arms as a heat map (log axes, one cell per run setting), the mean-field
    trainable depth 6 xi_c(sigma_w2) drawn over it, and the edge of chaos dotted. Cells
    marked with a dot trained (`Grid.trained`)."""
    from keras_inits import theory  # Deferred: only this figure needs the theory.

    depths, weights = np.array(found.depths, float), np.array(found.sigma_w2s, float)
    figure = Figure(figsize=(8, 5.5), layout="constrained")
    axes = figure.subplots()
    mesh = axes.pcolormesh(_edges(weights), _edges(depths), found.accuracy, cmap="viridis",
                           vmin=np.nanmin(found.accuracy), vmax=np.nanmax(found.accuracy))
    figure.colorbar(mesh, ax=axes, label="test accuracy after training (mean over seeds)")
    trained = found.trained()
    rows, columns = np.nonzero(trained)
    axes.plot(weights[columns], depths[rows], "o", color="white", markersize=4,
              label="trained (past halfway from the worst cell to the best)")
    dense = np.geomspace(_edges(weights)[0], _edges(weights)[-1], 200)
    limit = np.array([
        theory.mean_field(found.activation, w, found.sigma_b2).trainable_depth for w in dense
    ])
    axes.plot(dense, np.minimum(limit, 1e6), color="white", linestyle="--", linewidth=2,
              label=r"6 $\xi_c$ (mean-field trainable depth)")
    critical = theory.critical_sigma_w2(found.activation, found.sigma_b2)
    axes.axvline(critical, color="orange", linestyle=":", label=f"edge of chaos ({critical:.3g})")
    axes.set(xscale="log", yscale="log", ylim=(_edges(depths)[0], _edges(depths)[-1]),
             xlabel=r"$\sigma_w^2$", ylabel="depth (hidden layers)",
             title=f"{found.activation}, " + r"$\sigma_b^2$" + f" = {found.sigma_b2:g}")
    axes.set_xticks(weights, [f"{w:g}" for w in weights])
    axes.set_yticks(depths, [f"{d:g}" for d in depths])
    axes.minorticks_off()
    figure.legend(fontsize="small", loc="outside lower center", ncols=3, facecolor="0.6")
    _save(figure, path, dpi=110)
    return figure


def _edges(centres: np.ndarray) -> np.ndarray:
    """Cell edges around log-spaced centres: geometric midpoints, and as far again outside."""
    logs = np.log(centres)
    middle = (logs[1:] + logs[:-1]) / 2
    first, last = 2 * logs[0] - middle[0], 2 * logs[-1] - middle[-1]
    return np.exp(np.concatenate([[first], middle, [last]]))
