"""report.md and its figures from synthetic summary entries: swept settings as columns,
means over the seeds that did not diverge, the final-loss-against-depth figure, and
entries of older summaries that lack the swept settings' fields. The figures are read
back from their matplotlib `Figure`s: the lines hold the numbers of the runs given."""

import math
import os
import statistics
import types
from pathlib import Path

import numpy as np
import pytest

from experiments import config
from experiments.results import plots, report

XAVIER, KAIMING = "xavier_normal", "kaiming_normal"
CELL_FIELDS = ("model", "depth", "width", "activation", "optimizer", "learning_rate", "batch_size")


def _details(depth: int, diverged: bool = False, final: float = 1.6, seed: int = 0) -> dict:
    """A run.json of a net with `depth` hidden layers, three epochs (two when it diverged)
    ending at the training loss `final`; its per-layer statistics depend on the layer and
    the seed, so a figure's lines tell which runs they were drawn from."""
    layers = [f"hidden_{index}" for index in range(1, depth + 1)] + ["output"]
    epochs = 2 if diverged else 3
    loss = [2.3, 1.9] if diverged else [2.3, 1.9, final]
    positions = range(1, len(layers) + 1)
    profile = {
        "activation_std": [(1 + seed) * 0.5 / index for index in positions],
        "activation_gradient_std": [(1 + seed) * 0.01 * index for index in positions],
        # Buckets (left edge, right edge, count): [-1, 0) holds index + seed, [0, 1) 5.
        "activation_histograms": [
            [[-1.0, 0.0, float(index + seed)], [0.0, 1.0, 5.0]] for index in positions
        ],
    }
    return {
        "layers": layers,
        "fallback": None,
        "fallback_layers": [],
        "history": {
            "step": [0, 10, 20][:epochs],
            "epoch": [0, 1, 2][:epochs],
            "loss": loss,
            "accuracy": [0.1, 0.3, 0.5][:epochs],
            "test_loss": [value and value + 0.1 for value in loss],
            "test_accuracy": [0.1, 0.3, 0.5][:epochs],
        },
        "profiles": {"initial": {"step": 0, **profile}, "final": {"step": 20, **profile}},
    }


def _entry(initializer: str, seed: int, depth: int, diverged: bool = False) -> dict:
    """A summary entry whose losses depend on the initializer, depth and seed."""
    final = 1.0 + 0.1 * depth + 0.01 * seed + (0.5 if initializer == XAVIER else 0.0)
    return {
        "initializer": initializer,
        "seed": seed,
        "model": "mlp",
        "depth": depth,
        "width": 256,
        "activation": "tanh",
        "optimizer": "sgd",
        "learning_rate": 0.01,
        "batch_size": 32,
        "run_dir": f"{initializer}_depth{depth}_seed{seed}",
        "status": "diverged" if diverged else "ok",
        "steps": 10 if diverged else 20,
        "train_seconds": 4.0 + seed,
        "group_size": 2,
        "initial_loss": 2.3,
        "final_loss": None if diverged else final,
        "final_test_loss": None if diverged else final + 0.2,
        "final_test_accuracy": None if diverged else 0.9 - 0.1 * depth,
        "diverged_at_step": 15 if diverged else None,
        "fallback_layers": [],
    }


def _rows(text: str, header_start: str) -> tuple[list[str], list[list[str]]]:
    """The header and body rows (as cells) of the first table whose header starts so."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    body = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        body.append([cell.strip() for cell in line.strip("|").split("|")])
    return [cell.strip() for cell in lines[start].strip("|").split("|")], body


def _expected(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def _mean_by_position(rows: list[list[float | None]]) -> list[float]:
    """Position by position, the mean of the rows' values (None and missing ones left
    out); NaN where there is none."""
    width = max(len(row) for row in rows)
    columns = [
        [row[i] for row in rows if i < len(row) and row[i] is not None] for i in range(width)
    ]
    return [statistics.mean(column) if column else math.nan for column in columns]


def _lines(axes) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Label -> (x, y) of each line drawn on `axes`."""
    return {
        line.get_label(): (np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float))
        for line in axes.get_lines()
    }


def _assert_lines(axes, expected: dict[str, tuple[list[float], list[float]]]) -> None:
    drawn = _lines(axes)
    assert sorted(drawn) == sorted(expected)
    for label, (x, y) in expected.items():
        np.testing.assert_allclose(drawn[label][0], x, rtol=1e-12, err_msg=label)
        np.testing.assert_allclose(drawn[label][1], y, rtol=1e-12, err_msg=label)


def _legend(axes) -> list[str]:
    return [text.get_text() for text in axes.get_legend().get_texts()]


def _recording_figures(patch: pytest.MonkeyPatch) -> dict:
    """File name -> the Figure `plots` saved there, for every figure saved from now on;
    the PNGs are still written."""
    figures, save = {}, plots._save

    def keep(figure, path, dpi):
        figures[Path(path).name] = figure
        save(figure, path, dpi)

    patch.setattr(plots, "_save", keep)
    return figures


@pytest.fixture(scope="module")
def depth_sweep(tmp_path_factory):
    """Depths 2 and 3 x xavier and kaiming x seeds 0 and 1; xavier at depth 3 diverges
    with seed 1; an earlier run of another initializer sits in the same folder."""
    settings = config.resolve(depth=(2, 3), initializers=(XAVIER, KAIMING), seeds=(0, 1))
    entries = [
        _entry(initializer, seed, depth, diverged=(initializer, depth, seed) == (XAVIER, 3, 1))
        for depth in (2, 3)
        for initializer in (KAIMING, XAVIER)  # not the config's order: the report sorts
        for seed in (0, 1)
    ]
    earlier = {**_entry("orthogonal", 0, 2), "run_dir": "orthogonal_seed0"}
    entries.insert(0, earlier)
    details = {
        entry["run_dir"]: _details(
            entry["depth"], entry["status"] == "diverged", entry["final_loss"], entry["seed"]
        )
        for entry in entries
    }
    root = tmp_path_factory.mktemp("depth_sweep")
    with pytest.MonkeyPatch.context() as patch:
        figures = _recording_figures(patch)
        path = report.write(root, settings, entries, details, chance=0.25, num_classes=4)
    return types.SimpleNamespace(
        root=root, text=Path(path).read_text(), entries=entries, details=details, figures=figures
    )


def test_sweep_tables_have_a_column_per_swept_setting_and_means_over_ok_seeds(depth_sweep):
    text, entries = depth_sweep.text, depth_sweep.entries
    header, rows = _rows(text, "| depth | initializer | runs |")
    assert header[:5] == ["depth", "initializer", "runs", "diverged", "initial loss"]
    assert "test accuracy (chance 0.250)" in header
    order = [(depth, initializer) for depth in (2, 3) for initializer in (XAVIER, KAIMING)]
    assert [(int(row[0]), row[1].strip("`")) for row in rows[:4]] == order
    assert rows[4][:2] == ["2", "`orthogonal`"]  # not in the grid: after it
    final_loss, test_loss = header.index("last epoch's train loss"), header.index("final test loss")
    for row, (depth, initializer) in zip(rows, order, strict=False):
        members = [e for e in entries if (e["depth"], e["initializer"]) == (depth, initializer)]
        ok = [e for e in members if e["status"] == "ok"]
        assert row[2:4] == [str(len(members)), str(len(members) - len(ok))]
        assert row[final_loss] == _expected([e["final_loss"] for e in ok])
        assert row[test_loss] == _expected([e["final_test_loss"] for e in ok])
    diverged = rows[order.index((3, XAVIER))]
    assert diverged[3] == "1" and "±" not in diverged[final_loss]

    header, runs = _rows(text, "| depth | initializer | seed |")
    assert len(runs) == len(entries)
    assert ["3", f"`{XAVIER}`", "1", "diverged at step 15", "10"] in [row[:5] for row in runs]
    assert runs[-1][:3] == ["2", "`orthogonal`", "0"]


def test_sweep_settings_figure_and_train_seconds(depth_sweep):
    root, text = depth_sweep.root, depth_sweep.text
    assert ": 3 initializers × 2 settings of depth, 5 groups, 9 runs" in text  # orthogonal too
    assert "- model: MLP of 2, 3 (swept) hidden layers, width 256, activation tanh" in text
    assert "- swept: depth" in text
    assert "Within a seed and one value of each swept setting (depth)" in text
    assert "share one compiled step" in text  # group_size 2
    assert "Chance level: test accuracy 0.250" in text and "1/4 = 0.250" in text
    assert (root / "sweep_depth.png").read_bytes()[:4] == b"\x89PNG"
    assert "## Final loss against depth" in text and "](sweep_depth.png)" in text
    for name in report.FIGURES:  # each label's own layers: 2 and 3 hidden layers side by side
        assert (root / name).read_bytes()[:4] == b"\x89PNG" and f"]({name})" in text
    assert not list(root.glob("sweep_*.png"))[1:]  # depth only
    assert sorted(depth_sweep.figures) == sorted(["sweep_depth.png", *report.FIGURES])


def _by_initializer_and_depth(entries):
    """(initializer, depth) -> its entries."""
    found = {}
    for entry in entries:
        found.setdefault((entry["initializer"], entry["depth"]), []).append(entry)
    return found


def test_the_depth_sweep_figure_plots_each_initializers_mean_final_loss(depth_sweep):
    groups = _by_initializer_and_depth(depth_sweep.entries)
    figure = depth_sweep.figures["sweep_depth.png"]
    train_axes, test_axes = figure.axes
    # xavier diverged at depth 3 in one of its 2 seeds: the legend says so.
    labels = {
        XAVIER: f"{XAVIER} (diverged: depth=3 1/2 runs)",
        KAIMING: KAIMING,
        "orthogonal": "orthogonal",
    }
    for axes, key in ((train_axes, "final_loss"), (test_axes, "final_test_loss")):
        expected = {}
        for initializer, label in labels.items():
            depths = sorted(depth for name, depth in groups if name == initializer)
            means = [
                statistics.mean(e[key] for e in groups[(initializer, depth)] if e["status"] == "ok")
                for depth in depths
            ]
            expected[label] = (depths, means)
        _assert_lines(axes, expected)
        assert axes.get_xlabel() == "depth"
        assert axes.get_xscale() == "linear"  # depth: linear, as in He et al.'s Figs. 2-3
        assert [tick.get_text() for tick in axes.get_xticklabels()] == ["2", "3"]
        assert axes.get_yscale() == "linear"  # losses 1.2-2.0: far from a 20x span, not log
    assert _legend(test_axes) == list(labels.values())
    assert "diverged runs left out" in figure.get_suptitle()


def _runs_by_label(sweep) -> dict[str, list[dict]]:
    """The report's label of each group of the depth sweep -> its runs' run.json, by seed."""
    runs = {}
    for (initializer, depth), members in _by_initializer_and_depth(sweep.entries).items():
        label = f"{initializer} · depth={depth}"
        members = sorted(members, key=lambda entry: entry["seed"])
        runs[label] = [sweep.details[entry["run_dir"]] for entry in members]
    return runs


def test_the_loss_curves_plot_each_groups_mean_loss_per_epoch(depth_sweep):
    runs = _runs_by_label(depth_sweep)
    train_axes, test_axes = depth_sweep.figures["loss_curves.png"].axes
    for axes, key in ((train_axes, "loss"), (test_axes, "test_loss")):
        expected = {}
        for label, found in runs.items():
            mean = _mean_by_position([run["history"][key] for run in found])
            expected[label] = (list(range(len(mean))), mean)
        _assert_lines(axes, expected)
        assert axes.get_xlabel() == "epoch"
    # xavier at depth 3: the seed that diverged has no last epoch; the other one's is drawn.
    xavier_3 = _lines(train_axes)[f"{XAVIER} · depth=3"][1]
    assert xavier_3[-1] == _entry(XAVIER, 0, 3)["final_loss"]
    assert sorted(_legend(test_axes)) == sorted(runs)


def test_the_depth_profiles_plot_each_groups_mean_per_layer_on_log_axes(depth_sweep):
    runs = _runs_by_label(depth_sweep)
    panels = depth_sweep.figures["depth_profiles.png"].axes
    assert len(panels) == 4
    for axes, (moment, key) in zip(
        panels,
        [
            ("initial", "activation_std"),
            ("final", "activation_std"),
            ("initial", "activation_gradient_std"),
            ("final", "activation_gradient_std"),
        ],
        strict=True,
    ):
        title = axes.get_title()
        assert ("step 0" if moment == "initial" else "end of training") in title
        assert ("gradient std" if "gradient" in key else "activation std") in title
        expected = {}
        for label, found in runs.items():
            mean = _mean_by_position([run["profiles"][moment][key] for run in found])
            expected[label] = (list(range(1, len(mean) + 1)), mean)  # position 1 = hidden_1
        _assert_lines(axes, expected)
        assert axes.get_yscale() == "log"  # documented: per-layer spreads on a log scale


def test_the_activation_histograms_show_each_groups_first_seed_layer_by_layer(depth_sweep):
    runs = _runs_by_label(depth_sweep)
    figure = depth_sweep.figures["activation_histograms_initial.png"]
    width = 4  # the deepest nets' layers: 3 hidden and the output
    assert len(figure.axes) == width * len(runs)
    rows = [figure.axes[start : start + width] for start in range(0, len(figure.axes), width)]
    labels = [row[0].get_ylabel().replace("\n", " ") for row in rows]
    assert sorted(labels) == sorted(runs)
    for label, row in zip(labels, rows, strict=True):
        first = runs[label][0]  # seed 0
        layers, histograms = first["layers"], first["profiles"]["initial"]["activation_histograms"]
        for position, axes in enumerate(row, start=1):
            if position > len(layers):  # a shallower net: the panel is left empty
                assert not axes.axison and not axes.patches
                continue
            assert axes.get_title() == layers[position - 1]
            (stairs,) = axes.patches
            counts = [count for _, _, count in histograms[position - 1]]
            np.testing.assert_allclose(stairs.get_data().values, np.divide(counts, sum(counts)))
            np.testing.assert_allclose(stairs.get_data().edges, [-1.0, 0.0, 1.0])


@pytest.mark.parametrize(("depth", "named"), [(5, 6), (39, 40), (129, 33)])
def test_a_deep_nets_depth_axis_names_evenly_spaced_layers_and_the_last(depth, named):
    # Past 40 layers every k-th name (k = ceil(layers / 40)) and the output's are written;
    # all 130 of xiao2018's would overlap. Its conv_128 sits next to the output: left out.
    figure = plots.depth_profiles(os.devnull, {"a": [_details(depth)]})
    for axes in figure.axes[2:]:  # the bottom row's, which write the names
        names = [label.get_text() for label in axes.get_xticklabels()]
        positions = [int(tick) for tick in axes.get_xticks()]
        assert len(names) == len(positions) == named
        assert positions[0] == 1 and positions[-1] == depth + 1 and names[-1] == "output"
        gaps = {b - a for a, b in zip(positions, positions[1:-1], strict=False)}
        assert gaps == {-(-(depth + 1) // 40)}
        assert positions[-1] - positions[-2] >= min(gaps) / 2


@pytest.mark.parametrize(("labels", "legend"), [(3, "inside"), (36, "below"), (100, None)])
def test_a_figure_of_many_lines_says_so_instead_of_a_legend_no_one_can_read(labels, legend):
    # yang2022 draws 100 lines: 34 rows of legend squeezed the panels to nothing.
    groups = {f"arm {index}": [_details(2)] for index in range(labels)}
    figure = plots.loss_curves(os.devnull, groups)
    below = figure.legends
    inside = [axes.get_legend() for axes in figure.axes if axes.get_legend()]
    assert (legend == "inside") == bool(inside) and (legend == "below") == bool(below)
    if legend == "below":
        assert len(below[0].get_texts()) == labels
    note = figure.get_supxlabel()
    assert (note == "100 lines, too many to label: the report's tables give each one's "
                    "numbers") == (legend is None)
    width, height = figure.get_size_inches()
    assert height >= 4.5 + (0.3 if legend is None else 0.0)


def test_with_the_same_layers_each_layer_is_one_panel_of_every_labels_histogram():
    # Rows from the top in label order, each histogram's tallest bucket RIDGE_HEIGHT above
    # its row's baseline; the row's label on the first panel's y axis, at that row.
    groups = {label: [_details(3, seed=seed)] for seed, label in enumerate(("a", "b", "c"))}
    figure = plots.activation_histograms(os.devnull, groups, "final")
    layers = groups["a"][0]["layers"]
    assert [axes.get_title() for axes in figure.axes] == layers
    first = figure.axes[0]
    labels, heights = first.get_yticklabels(), first.get_yticks()
    ticks = {text.get_text(): y for text, y in zip(labels, heights, strict=True)}
    for position, axes in enumerate(figure.axes):
        assert len(axes.patches) == len(groups)
        rows = zip(axes.patches, groups.items(), strict=True)
        for row, (stairs, (label, runs)) in enumerate(rows):
            counts = np.array([count for _, _, count in
                               runs[0]["profiles"]["final"]["activation_histograms"][position]])
            data = stairs.get_data()
            assert data.baseline == -row
            np.testing.assert_allclose(
                data.values, -row + counts / counts.max() * plots.RIDGE_HEIGHT
            )
            np.testing.assert_allclose(data.edges, [-1.0, 0.0, 1.0])
            assert -row < ticks[label] < -row + 1


def test_lesson_report_without_sweeps_and_entries_of_older_summaries(tmp_path):
    settings = config.resolve(initializers=(XAVIER, KAIMING), seeds=(0,))
    entries = []
    for initializer in settings.initializers:
        entry = _entry(initializer, 0, 5)
        for name in (*CELL_FIELDS, "group_size"):  # a summary written before sweeps
            if name != "activation":
                del entry[name]
        entries.append(entry)
    entries[1]["fallback_layers"] = ["output"]
    details = {entry["run_dir"]: _details(5) for entry in entries}
    text = Path(report.write(str(tmp_path), settings, entries, details)).read_text()

    header, rows = _rows(text, "| initializer | runs |")
    assert header[:3] == ["initializer", "runs", "diverged"]
    assert [row[:3] for row in rows] == [[f"`{XAVIER}`", "1", "0"], [f"`{KAIMING}`", "1", "0"]]
    final_loss = header.index("last epoch's train loss")
    assert rows[0][final_loss] == f"{entries[0]['final_loss']:.3f}"
    assert _rows(text, "| initializer | seed |")[0][:2] == ["initializer", "seed"]
    assert "2 initializer settings, 2 runs" in text
    assert "- model: MLP of 5 hidden layers, width 256, activation tanh, softmax output" in text
    assert "- training: 3 epochs, batch 32, sgd, learning rate 0.01, momentum 0.9" in text
    assert "share one compiled step" not in text and "Chance level" not in text
    assert f"| `{KAIMING}` | `output` |" in text  # the fallback section
    assert not list(tmp_path.glob("sweep_*.png")) and "sweep_" not in text
    assert "](loss_curves.png)" in text


def test_a_missing_swept_field_is_unknown_not_a_crash():
    settings = config.resolve(depth=(2, 3), learning_rate=(0.1, 0.01))
    entry = _entry(XAVIER, 0, 2)
    del entry["depth"], entry["learning_rate"], entry["model"]
    cell = report.cell_of(entry, settings)
    assert (cell.model, cell.depth, cell.learning_rate) == ("mlp", None, None)
    assert report.label_of(XAVIER, cell, ("depth",)) == f"{XAVIER} · depth=None"
    assert report.label_of(XAVIER, cell, ()) == XAVIER


def test_learning_rate_sweep_figure_with_a_value_where_every_seed_diverged(tmp_path):
    lines = {
        XAVIER: [
            {**_entry(XAVIER, seed, 2), "learning_rate": rate, "final_loss": 2.0 - rate - seed}
            for rate in (0.001, 0.01)
            for seed in (0, 1)
        ]
        + [{**_entry(XAVIER, seed, 2, diverged=True), "learning_rate": 1.0} for seed in (0, 1)],
    }
    path = tmp_path / report.sweep_figure("learning_rate")
    figure = plots.final_loss_sweep(path, "learning_rate", lines)
    assert path.read_bytes()[:4] == b"\x89PNG"
    train_axes = figure.axes[0]
    # Means over seeds 0 and 1 (2.0 - rate and 1.0 - rate); a gap where both diverged.
    label = f"{XAVIER} (diverged: learning_rate=1 2/2 runs)"
    _assert_lines(train_axes, {label: ([0.001, 0.01, 1.0], [1.499, 1.49, math.nan])})
    assert train_axes.get_xscale() == "log"  # learning rates are spread geometrically
    assert [tick.get_text() for tick in train_axes.get_xticklabels()] == ["0.001", "0.01", "1"]
