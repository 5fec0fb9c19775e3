"""Sequence tasks in the harness: character-level text (`--dataset=sonnets`, `text:PATH`),
token `.npz` files, the built-in Transformer (`--model=transformer`), your own sequence
model, per-token metrics, and a comparison end to end."""

import hashlib
import math
from collections import Counter

import keras
import numpy as np
import pytest

import keras_inits
from experiments import config, models, runner, transformer
from experiments.data import datasets, text
from experiments.engine import towers
from experiments.engine.evaluation import GroupEvaluation
from experiments.errors import ExperimentError

# The shipped text is the dataset's definition: every machine must train on these bytes.
SONNETS_SHA256 = "9c634787d1904f7cd1c6179c7dad8811b2556a758c396f2453bb02fcd9498caa"


def test_the_sonnets_are_the_shipped_public_domain_text():
    content = text.SONNETS.read_bytes()
    assert hashlib.sha256(content).hexdigest() == SONNETS_SHA256
    words = content.decode("utf-8")
    assert words.startswith("I\n\nFrom fairest creatures we desire increase,\n")
    assert words.count("\n\n") >= 2 * 154 - 1  # 154 sonnets: a number and a blank line each
    assert "Shall I compare thee to a summer's day?" in words


def test_windows_are_the_text_and_its_next_characters():
    data = datasets.load("sonnets", train_size=10**6, test_size=10**6, sequence_length=32)
    words = text.SONNETS.read_text(encoding="utf-8")
    vocabulary = data.vocabulary
    assert vocabulary == "".join(sorted(set(words))) and data.num_classes == len(vocabulary)

    def decode(tokens):
        return "".join(vocabulary[t] for t in tokens)

    assert data.is_sequence and data.x_train.dtype == np.int32
    assert data.x_train.shape[1:] == data.y_train.shape[1:] == (32,)
    # Example i is the text at i * T, its labels the same characters one further on.
    for i in (0, 1, 500):
        assert decode(data.x_train[i]) == words[32 * i : 32 * i + 32]
        assert decode(data.y_train[i]) == words[32 * i + 1 : 32 * i + 33]
    cut = int(len(words) * text.TRAIN_FRACTION)
    assert decode(data.x_test[0]) == words[cut : cut + 32]
    # No training window reaches into the test part of the text.
    assert 32 * len(data.x_train) + 1 <= cut
    assert len(data.x_train) == (cut - 1) // 32
    counts = np.bincount(data.y_test.ravel(), minlength=data.num_classes)
    assert data.chance_accuracy == pytest.approx(counts.max() / data.y_test.size)
    assert vocabulary[counts.argmax()] == " "


def test_any_text_file_is_a_dataset_and_bad_ones_are_refused(tmp_path):
    path = tmp_path / "abc.txt"
    path.write_text("abcabcabcabc" * 10, encoding="utf-8")
    data = datasets.load(f"text:{path}", 100, 100, sequence_length=4)
    assert data.vocabulary == "abc" and data.x_train.shape == (26, 4)
    assert "".join("abc"[t] for t in data.y_train[0]) == "bcab"
    (tmp_path / "one.txt").write_text("aaaa", encoding="utf-8")
    with pytest.raises(ExperimentError, match="at least two distinct characters"):
        datasets.check_name(f"text:{tmp_path / 'one.txt'}")
    with pytest.raises(ExperimentError, match="Cannot read text dataset"):
        datasets.check_name(f"text:{tmp_path / 'missing.txt'}")
    with pytest.raises(ExperimentError, match="fewer than one window"):
        datasets.load(f"text:{path}", 100, 100, sequence_length=100)


def test_token_npz_files_are_sequence_tasks(tmp_path):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 7, size=(20, 9))
    np.savez(tmp_path / "tokens.npz", x_train=tokens[:, :-1], y_train=tokens[:, 1:])
    data = datasets.load(f"npz:{tmp_path / 'tokens.npz'}", 100, 5)
    assert data.is_sequence and data.num_classes == 7 and data.x_test.shape == (5, 8)
    assert data.x_train.dtype == data.y_train.dtype == np.int32
    np.savez(tmp_path / "bad.npz", x_train=tokens[:, :-1].astype("float32"), y_train=tokens[:, 1:])
    with pytest.raises(ExperimentError, match="token ids must be integers"):
        datasets.load(f"npz:{tmp_path / 'bad.npz'}", 100, 5)
    np.savez(tmp_path / "short.npz", x_train=tokens[:, :-2], y_train=tokens[:, 1:])
    with pytest.raises(ExperimentError, match="needs token ids of the same shape"):
        datasets.load(f"npz:{tmp_path / 'short.npz'}", 100, 5)


def build(layer_norm="pre", depth=2, initializer="random_normal(stddev=0.02)"):
    return models.initialize(
        "transformer", input_shape=(12,), num_classes=11,
        x_sample=np.zeros((2, 12), "int32"), depth=depth, width=16, activation="gelu",
        initializer=initializer, fallback="xavier_normal", seed=0, heads=2,
        layer_norm=layer_norm, sequence=True,
    ).model


@pytest.mark.parametrize("layer_norm", ["pre", "post"])
def test_the_transformer_is_causal_and_reads_as_attention_and_feedforward_blocks(layer_norm):
    model = build(layer_norm, initializer="xavier_uniform")
    tokens = np.random.default_rng(0).integers(0, 11, size=(3, 12)).astype("int32")
    changed = tokens.copy()
    changed[:, 7:] = (changed[:, 7:] + 1) % 11
    before, after = (model(t).numpy() for t in (tokens, changed))
    assert before.shape == (3, 12, 11) and np.allclose(before.sum(-1), 1, atol=1e-5)
    # Positions 0..6 see only tokens 0..6: a change from position 7 on cannot reach them.
    np.testing.assert_allclose(before[:, :7], after[:, :7], atol=1e-6)
    assert not np.allclose(before[:, 7:], after[:, 7:], atol=1e-4)
    found = keras_inits.roles(model)
    assert found.blocks == 4  # attention and feed-forward, per layer
    roles = [(k.path, k.role, k.block) for k in found.kernels]
    assert roles[:2] == [
        ("token_embedding/embeddings", "embedding", None),
        ("position_embedding/embeddings", "embedding", None),
    ]
    assert roles[2:8] == [
        ("block1_attention/query/kernel", "query", 0),
        ("block1_attention/key/kernel", "key", 0),
        ("block1_attention/value/kernel", "value", 0),
        ("block1_attention/attention_output/kernel", "attention_output", 0),
        ("block1_ffn_in/kernel", "branch_inner", 1),
        ("block1_ffn_out/kernel", "branch_output", 1),
    ]
    assert roles[-1] == ("output/kernel", "head", None)
    norms = [layer.name for layer in model.layers if "norm" in layer.name]
    assert ("final_norm" in norms) == (layer_norm == "pre")


def test_kernels_get_the_spec_with_their_layer_aware_fans():
    model = build(initializer="he_normal")
    # The query kernel (16, 2 heads, 8): fan_in 16 (the model width), not the 16 * 2
    # a plain 3-D kernel's receptive-field rule would give.
    query = model.get_layer("block1_attention")._query_dense.kernel.numpy()
    ffn_in = model.get_layer("block1_ffn_in").kernel.numpy()
    both = [query.ravel(), ffn_in.ravel()]
    assert np.std(np.concatenate(both)) == pytest.approx(math.sqrt(2 / 16), rel=0.08)


def test_deepnets_arm_puts_alpha_in_the_post_ln_blocks_and_it_saves(tmp_path):
    model = build("post", depth=3, initializer="scheme:deepnet")
    alphas = [float(layer.alpha.numpy()) for layer in model.layers
              if isinstance(layer, transformer.ResidualScale)]
    assert alphas == pytest.approx([(2 * 3) ** 0.25] * 6)  # Wang et al. 2022, N = 3 layers
    plain = build("post", depth=3, initializer="xavier_normal")
    assert {float(layer.alpha.numpy()) for layer in plain.layers
            if isinstance(layer, transformer.ResidualScale)} == {1.0}
    path = tmp_path / "deepnet.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    tokens = np.arange(12, dtype="int32")[None] % 11
    np.testing.assert_allclose(loaded(tokens).numpy(), model(tokens).numpy(), atol=1e-6)


def test_per_token_metrics_equal_keras_own_evaluate():
    model = build()
    rng = np.random.default_rng(1)
    x = rng.integers(0, 11, size=(37, 12)).astype("int32")
    y = rng.integers(0, 11, size=(37, 12)).astype("int32")
    group = towers.build_group([model], (12,), "int32")
    ours = GroupEvaluation(group, ["arm0"], batch=16)(x, y)["arm0"]
    model.compile(loss="sparse_categorical_crossentropy", metrics=["sparse_categorical_accuracy"])
    loss, accuracy = model.evaluate(x, y, batch_size=37, verbose=0)
    assert ours["loss"] == pytest.approx(loss, rel=1e-5)
    assert ours["accuracy"] == pytest.approx(accuracy, abs=1e-6)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"model": ("mlp",), "dataset": "sonnets"}, "--model=mlp classifies whole examples"),
        ({"model": ("transformer",)}, "--model=transformer is a language model"),
        ({"model": ("transformer",), "dataset": "sonnets", "width": (30,), "heads": 4},
         "--heads=4 must divide --width=30"),
        ({"heads": 2}, "--heads only applies to --model=transformer"),
        ({"model": ("transformer",), "dataset": "sonnets", "layer_norm": "sandwich"},
         "--layer_norm must be pre or post"),
        ({"model": ("transformer",), "dataset": "sonnets", "sequence_length": 0},
         "--sequence_length must be an integer >= 1"),
    ],
)
def test_bad_sequence_settings_are_told_before_training(settings, message):
    with pytest.raises(ExperimentError, match=message):
        config.resolve(**settings)


def test_your_own_sequence_model_must_predict_every_position():
    data = datasets.load("sonnets", 8, 4, sequence_length=16)
    common = dict(input_shape=data.input_shape, num_classes=data.num_classes,
                  x_sample=data.x_train[:2], sequence=True)
    model = models.own_model("tests.experiments.custom_models:tiny_lm", **common)
    assert model.output.shape == (None, 16, data.num_classes)
    with pytest.raises(ExperimentError, match=r"needs \(None, 16, 62\): probabilities over"):
        models.own_model("tests.experiments.custom_models:last_token_lm", **common)


def test_a_comparison_of_transformer_arms_on_the_sonnets(tmp_path):
    settings = config.resolve(
        model=("transformer",), dataset="sonnets", depth=(2,), width=(16,), heads=2,
        activation=("gelu",), initializers=("random_normal(stddev=0.02)", "scheme:gpt2"),
        optimizer=("adam",), learning_rate=(0.003,), sequence_length=32, seeds=(0,),
        train_size=64, test_size=16, epochs=1, histogram_every=2, probe_size=8,
        logdir=str(tmp_path),
    )
    entries = runner.compare(settings, progress=lambda line: None)
    assert [e["status"] for e in entries] == ["ok", "ok"]
    # Small weights predict every character about equally: ln 62 nats per token at step 0.
    for entry in entries:
        assert entry["initial_loss"] == pytest.approx(math.log(62), abs=0.02)
        assert entry["final_loss"] < entry["initial_loss"]
    root = tmp_path / settings.experiment
    report = (root / "report.md").read_text()
    assert "TRANSFORMER language model of 2 layers" in report and "test bits/char" in report
    bits = entries[0]["final_test_loss"] / math.log(2)
    assert f"| {bits:.3f} |" in report
    # The group's snapshots log the residual stream, block by block (4 blocks).
    import json

    details = json.loads((root / entries[1]["run_dir"] / "run.json").read_text())
    stream = details["profiles"]["initial"]["stream"]
    assert stream["blocks"] == ["block_000", "block_001", "block_002", "block_003"]
    assert all(value > 0 for value in stream["output_std"])
    # The labels' prior loss, the unigram model's: the entropy of the characters the 64
    # training windows ask for, counted here from the text itself.
    words = text.SONNETS.read_text(encoding="utf-8")
    asked = Counter(words[1 : 1 + 64 * 32])
    entropy = -sum(n / (64 * 32) * math.log(n / (64 * 32)) for n in asked.values())
    assert details["prior_loss"] == pytest.approx(entropy, rel=1e-9)


def test_your_own_sequence_model_in_a_comparison(tmp_path):
    settings = config.resolve(
        model=("tests.experiments.custom_models:tiny_lm",), dataset="sonnets",
        initializers=("xavier_uniform",), optimizer=("adam",), learning_rate=(0.01,),
        sequence_length=16, seeds=(0,), train_size=64, test_size=16, epochs=1,
        histogram_every=0, probe_size=8, logdir=str(tmp_path),
    )
    [entry] = runner.compare(settings, progress=lambda line: None)
    assert entry["status"] == "ok" and entry["final_loss"] < entry["initial_loss"]


def test_the_built_transformer_draws_every_layer_with_its_own_seed():
    settings = dict(input_shape=(12,), num_classes=11, depth=2, width=16, heads=2,
                    activation="gelu", initializer="he_normal", seed=0)
    model = models.build("transformer", **settings)
    kernels = [model.get_layer(f"block{b}_ffn_in").kernel.numpy() for b in (1, 2)]
    assert not np.allclose(kernels[0], kernels[1])
    again = models.build("transformer", **settings)  # the same (spec, seed): the same model
    np.testing.assert_array_equal(again.get_layer("block1_ffn_in").kernel.numpy(), kernels[0])
