"""The numbers a comparison records, recomputed from its own folder with plain Keras.

A comparison on an `npz:` dataset of uint8 images, with training and test sets whose
last batches are smaller than the others (the evaluations' batch of 256 and the training
batch of 32 both leave a remainder): each run folder's `model.keras` (trained) and
`initial.weights.h5` (step 0) give back the summary's `initial_loss`, `final_train_loss`,
`final_test_loss` and `final_test_accuracy` through `keras.losses` and `model.evaluate`, on
arrays the test prepares itself from the file as the documentation says (pixels to [-1, 1]).
"""

import dataclasses

import keras
import numpy as np
import pytest

from experiments import config, notebook, runner
from experiments.engine import training
from experiments.errors import ExperimentError

TRAIN, TEST = 300, 290  # 256 + 44 and 256 + 34 in the evaluations; 9 x 32 + 12 in training
CLASSES = 3


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """8x8 grey uint8 images whose class is the brightest third of the image."""
    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, size=(TRAIN + TEST, 8, 8), dtype=np.uint8)
    thirds = [x[:, :, :3].mean((1, 2)), x[:, :, 3:5].mean((1, 2)), x[:, :, 5:].mean((1, 2))]
    y = np.argmax(np.stack(thirds, axis=1), axis=1).astype(np.int64)
    path = tmp_path_factory.mktemp("data") / "images.npz"
    np.savez(path, x_train=x[:TRAIN], y_train=y[:TRAIN], x_test=x[TRAIN:], y_test=y[TRAIN:])
    return path, (x[:TRAIN], y[:TRAIN]), (x[TRAIN:], y[TRAIN:])


@pytest.fixture(scope="module")
def comparison(images, tmp_path_factory):
    path, _, _ = images
    settings = config.resolve(
        initializers=("xavier_normal", "kaiming_uniform"),
        dataset=f"npz:{path}",
        train_size=TRAIN,
        test_size=TEST,
        seeds=(3,),
        depth=2,
        width=16,
        activation="relu",
        epochs=2,
        batch_size=32,
        learning_rate=0.05,
        histogram_every=0,
        logdir=str(tmp_path_factory.mktemp("logs")),
        experiment="npz",
    )
    entries = runner.compare(settings, progress=lambda _: None)
    return settings, notebook.Results(rows=entries, config=settings)


def _prepared(x: np.ndarray) -> np.ndarray:
    """Pixels 0..255 to [-1, 1] and a channel axis, as docs/harness.md says of uint8 data."""
    return (x.astype(np.float32) / 127.5 - 1.0)[..., None]


def test_each_run_folder_gives_back_the_recorded_numbers_with_plain_keras(images, comparison):
    _, (x_train, y_train), (x_test, y_test) = images
    settings, results = comparison
    assert [row["status"] for row in results] == ["ok", "ok"]
    assert {row["engine"] for row in results} == {"stacked"}
    for row in results:
        model = results.model(row)  # the folder's model.keras, through the notebook API
        probabilities = model.predict(_prepared(x_test), batch_size=64, verbose=0)
        test_loss = keras.ops.mean(
            keras.losses.sparse_categorical_crossentropy(y_test, probabilities)
        )
        accuracy = np.mean(np.argmax(probabilities, axis=1) == y_test)
        assert row["final_test_loss"] == pytest.approx(float(test_loss), rel=1e-5)
        assert row["final_test_accuracy"] == pytest.approx(accuracy, abs=1e-6)
        # The trained model on the whole training set (not Keras's running epoch mean).
        train_probabilities = model.predict(_prepared(x_train), batch_size=64, verbose=0)
        train_loss = keras.ops.mean(
            keras.losses.sparse_categorical_crossentropy(y_train, train_probabilities)
        )
        assert row["final_train_loss"] == pytest.approx(float(train_loss), rel=1e-5)
        assert row["final_train_loss"] != pytest.approx(row["final_loss"], rel=1e-3)

        # Step 0: the same architecture with the weights it started from, evaluated in
        # batches of 7 (any batching gives the mean over the set).
        run_dir = f"{results.folder}/{row['run_dir']}"
        model.load_weights(f"{run_dir}/{training.INITIAL_WEIGHTS}")
        model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        initial_loss, _ = model.evaluate(_prepared(x_train), y_train, batch_size=7, verbose=0)
        assert row["initial_loss"] == pytest.approx(initial_loss, rel=1e-5)
        # Trained at all: the recorded final loss is not the initial one.
        assert abs(row["final_test_loss"] - initial_loss) > 1e-3


def test_the_arms_models_differ_and_keep_the_initializers_names(comparison):
    settings, results = comparison
    first, second = ([layer for layer in results.model(index).layers if layer.weights]
                     for index in range(2))
    assert len(first) == len(second) == 3  # two hidden layers and the softmax
    for mine, other in zip(first, second, strict=True):
        assert not np.allclose(mine.kernel.numpy(), other.kernel.numpy())
    # Reloaded by name: the saved layers name keras_inits' initializers.
    assert type(first[0].kernel_initializer).__name__ == "XavierNormal"
    assert type(second[0].kernel_initializer).__name__ == "KaimingUniform"


def test_without_save_models_the_folders_hold_no_model(images, comparison, tmp_path):
    settings, _ = comparison
    lean = dataclasses.replace(
        settings, save_models=False, initializers=("xavier_normal",), logdir=str(tmp_path)
    )
    rows = runner.compare(lean, progress=lambda _: None)
    run_dir = tmp_path / lean.experiment / rows[0]["run_dir"]
    assert (run_dir / training.RUN_DETAILS).exists()
    assert not (run_dir / training.MODEL_FILE).exists()
    assert not (run_dir / training.INITIAL_WEIGHTS).exists()
    with pytest.raises(ExperimentError, match="save_models=False"):
        notebook.Results(rows=rows, config=lean).model(0)


def test_save_models_must_be_a_bool():
    with pytest.raises(ExperimentError, match="save_models must be True or False, got 'no'"):
        config.validate(config.resolve(save_models="no"))


def test_a_model_keras_cannot_save_costs_a_warning_not_the_run(tmp_path):
    class Table:
        pass

    class Unsaveable(keras.layers.Layer):  # an argument Keras cannot serialize, no get_config
        def __init__(self, table):
            super().__init__()
            self.table = table

        def call(self, x):
            return x

    inputs = keras.Input((4,))
    model = keras.Model(inputs, Unsaveable(Table())(keras.layers.Dense(3)(inputs)))
    with pytest.warns(UserWarning, match="non-serializable argument.*--nosave_models") as caught:
        training._save(model.save, str(tmp_path), training.MODEL_FILE)
    assert "\n" not in str(caught[0].message)
    assert not (tmp_path / training.MODEL_FILE).exists()
