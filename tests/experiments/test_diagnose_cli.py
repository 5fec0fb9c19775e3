"""`python -m experiments.diagnose`: the side-by-side table, JSON, plot, saved models, errors."""

import json
import subprocess
import sys
from pathlib import Path

import keras
import pytest

from experiments import config, inspect_init
from keras_inits.diagnosis import Diagnosis
from tests.experiments.cli import run_diagnose

REPO = Path(__file__).resolve().parents[2]
TINY = ["--depth=3", "--width=16", "--probe_size=32"]
SPECS = ("xavier_normal", "random_normal(stddev=0.1)")
LAYERS = ("hidden_1", "hidden_2", "hidden_3", "output")


def _error(*argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run_diagnose(*argv)
    message = str(exit_info.value.code)
    assert "\n" not in message and message.startswith("keras-inits-diagnose: error: ")
    return message


def _table_rows(text: str, names) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        cells = line.split()
        if cells and cells[0] in names:
            assert cells[0] not in rows, f"{cells[0]} twice in\n{text}"
            rows[cells[0]] = cells[1:]
    return rows


def test_table_json_and_plot(tmp_path, capsys):
    json_path, plot_path = tmp_path / "out" / "d.json", tmp_path / "d.png"
    run_diagnose(
        *TINY, f"--initializers={','.join(SPECS)}", f"--json={json_path}", f"--plot={plot_path}"
    )
    out = capsys.readouterr().out
    # One row per layer in forward order; per initializer act, grad and sat% (tanh).
    rows = _table_rows(out, LAYERS)
    assert list(rows) == list(LAYERS)
    assert all(len(cells) == 3 * len(SPECS) for cells in rows.values())
    header = next(line for line in out.splitlines() if line.startswith("layer "))
    assert header.split() == ["layer", *["act", "grad", "sat%"] * len(SPECS)]
    assert "1 xavier_normal" in out and "2 random_normal(" in out
    assert "the first 32 shapeset training examples" in out and "cross-entropy" in out
    # Verdicts under each initializer's number and full spec.
    assert "2 random_normal(stddev=0.1) (loss " in out

    saved = json.loads(json_path.read_text())
    assert {"model", "batch", "loss", "seed", "diagnoses"} <= set(saved)
    assert list(saved["diagnoses"]) == ["tanh"] and tuple(saved["diagnoses"]["tanh"]) == SPECS
    for entry in saved["diagnoses"]["tanh"].values():
        assert {"layers", "verdicts", "loss", "surrogate_loss"} <= set(entry)
        assert [row["name"] for row in entry["layers"]] == list(LAYERS)
        assert entry["surrogate_loss"] is False
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"json: {json_path}" in out and f"plot: {plot_path}" in out


def test_standard_uniform_vanishes_in_a_deep_tanh_net_and_xavier_does_not(capsys):
    run_diagnose(
        "--depth=8",
        "--width=16",
        "--probe_size=32",
        "--initializers=standard_uniform,xavier_normal",
    )
    out = capsys.readouterr().out
    verdicts = out.split("1 standard_uniform (loss", 1)[1]
    standard, xavier = verdicts.split("2 xavier_normal (loss", 1)
    assert "Vanishing activations" in standard and "Vanishing gradients" in standard
    assert xavier.splitlines()[0].endswith("no problem found")


def test_several_activations_and_the_surrogate_loss():
    settings = config.resolve(
        depth=2, width=8, probe_size=16, initializers=SPECS, activation=("tanh", "relu")
    )
    inspection = inspect_init.inspect(settings, with_labels=False)
    assert list(inspection.groups) == ["tanh", "relu"]
    assert all(d.surrogate for group in inspection.groups.values() for d in group.values())
    text = inspection.table()
    assert "== tanh ==" in text and "== relu ==" in text and "dead%" in text
    assert "surrogate" in text


def _fake(layers: int, std: float) -> Diagnosis:
    row = {
        "name": "",
        "activation": "tanh",
        "output_std": std,
        "gradient_std": std / 1e4,
        "saturated_fraction": 0.25,
        "dead_fraction": None,
    }
    rows = [{**row, "name": f"layer_{i}"} for i in range(layers)]
    return Diagnosis(rows, [], 1.0, False)


def test_groups_wrap_into_blocks_that_fit_the_width():
    diagnoses = {f"spec_{i}": _fake(3, 0.5 / (i + 1)) for i in range(6)}
    wide = inspect_init.side_by_side(diagnoses, width=200)
    assert "\n\n" not in wide and max(map(len, wide.splitlines())) <= 200
    narrow = inspect_init.side_by_side(diagnoses, width=70)
    blocks = narrow.split("\n\n")
    assert len(blocks) == 2 and max(map(len, narrow.splitlines())) <= 70
    for block in blocks:  # every block repeats every layer
        assert list(_table_rows(block, {"layer_0", "layer_1", "layer_2"})) == [
            "layer_0",
            "layer_1",
            "layer_2",
        ]
    assert inspect_init.short_number(1.44e-5) == "1.4e-5"
    assert inspect_init.short_number(0.2997) == "0.3" and inspect_init.short_number(0) == "0"


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """A model that takes Shapeset images and one that takes 10-vectors."""
    folder = tmp_path_factory.mktemp("saved")
    images = keras.Sequential(
        [
            keras.Input((32, 32, 1)),
            keras.layers.Conv2D(4, 3, strides=2, activation="relu", name="conv"),
            keras.layers.Flatten(),
            keras.layers.Dense(8, activation="tanh", name="dense"),
            keras.layers.Dense(9, activation="softmax", name="probs"),
        ]
    )
    vectors = keras.Sequential(
        [
            keras.Input((10,)),
            keras.layers.Dense(12, activation="relu", name="a"),
            keras.layers.Dense(12, activation="relu", name="b"),
            keras.layers.Dense(3, name="logits"),
        ]
    )
    images.save(folder / "images.keras")
    vectors.save(folder / "vectors.keras")
    return folder / "images.keras", folder / "vectors.keras"


def test_saved_model_on_the_dataset_with_labels(saved_models, capsys):
    images, _ = saved_models
    run_diagnose(
        f"--saved_model={images}",
        "--initializers=kaiming_normal,xavier_uniform",
        "--probe_size=32",
        "--with_labels",
    )
    out = capsys.readouterr().out
    assert list(_table_rows(out, ("conv", "dense", "probs"))) == ["conv", "dense", "probs"]
    assert "the first 32 shapeset training examples" in out and "cross-entropy" in out
    assert "== saved model ==" in out and "1 kaiming_normal" in out


def test_saved_model_with_a_normal_batch_reinitializes_fresh_copies(saved_models, capsys):
    _, vectors = saved_models
    settings = config.resolve(initializers=("orthogonal", "kaiming_normal"), probe_size=32)
    both = inspect_init.inspect(settings, saved_model=str(vectors)).groups["saved model"]
    alone = inspect_init.inspect(
        config.resolve(initializers=("kaiming_normal",), probe_size=32), saved_model=str(vectors)
    ).groups["saved model"]
    # The same seed and a fresh copy each: kaiming_normal's numbers do not depend on
    # what was diagnosed before it.
    assert both["kaiming_normal"].layers == alone["kaiming_normal"].layers
    assert both["orthogonal"].layers != both["kaiming_normal"].layers
    run_diagnose(f"--saved_model={vectors}", "--initializers=orthogonal", "--probe_size=32")
    out = capsys.readouterr().out
    assert "batch: standard-normal, shape (32, 10)" in out and "surrogate" in out
    assert list(_table_rows(out, ("a", "b", "logits"))) == ["a", "b", "logits"]


def test_bad_input_gives_one_line_errors(saved_models, tmp_path):
    images, vectors = saved_models
    assert "no such file" in _error(f"--saved_model={tmp_path / 'nope.keras'}")
    (tmp_path / "broken.keras").write_text("not a zip file")
    assert "Cannot load saved model" in _error(f"--saved_model={tmp_path / 'broken.keras'}")
    assert "does not apply" in _error(f"--saved_model={images}", "--depth=3")
    assert "--with_labels needs a batch from --dataset" in _error(
        f"--saved_model={vectors}", "--with_labels"
    )
    assert "Unknown initializer 'xavier_normall'" in _error("--initializers=xavier_normall")
    assert "--depth must be integers >= 1, got 0" in _error("--depth=0")


def test_the_command_line_exits_non_zero_without_a_traceback(tmp_path):
    missing = tmp_path / "missing.keras"
    result = subprocess.run(
        [sys.executable, "-m", "experiments.diagnose", f"--saved_model={missing}"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"keras-inits-diagnose: error: --saved_model {str(missing)!r}: no such file."
    )
