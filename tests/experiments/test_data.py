"""Dataset loading: shapeset sizes, npz archives, keras.datasets failing offline."""

import keras
import numpy as np
import pytest

from experiments import data
from experiments.errors import ExperimentError


def test_shapeset_sizes_and_fixed_content():
    first = data.load("shapeset", train_size=40, test_size=20)
    again = data.load("shapeset", train_size=40, test_size=20)
    assert first.x_train.shape == (40, 32, 32, 1) and first.x_test.shape == (20, 32, 32, 1)
    assert first.num_classes == 9 and first.input_shape == (32, 32, 1)
    np.testing.assert_array_equal(first.x_train, again.x_train)
    assert not np.array_equal(first.x_train[:20], first.x_test)


def test_npz_with_and_without_test_split(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (50, 8, 8), dtype=np.uint8)
    labels = rng.integers(0, 3, 50)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=images, y_train=labels)
    loaded = data.load(f"npz:{path}", train_size=100, test_size=10)
    assert loaded.x_train.shape == (40, 8, 8, 1) and loaded.x_test.shape == (10, 8, 8, 1)
    assert loaded.x_train.min() >= -1 and loaded.x_train.max() <= 1  # uint8 -> [-1, 1]
    np.savez(path, x_train=images[:30], y_train=labels[:30], x_test=images[30:], y_test=labels[30:])
    loaded = data.load(f"npz:{path}", train_size=25, test_size=100)
    assert (len(loaded.x_train), len(loaded.x_test)) == (25, 20)


def test_bad_npz_files(tmp_path):
    missing = tmp_path / "missing.npz"
    np.savez(missing, x_train=np.zeros((3, 2)))
    with pytest.raises(ExperimentError, match="lacks y_train"):
        data.check_name(f"npz:{missing}")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(ExperimentError, match="Cannot read npz dataset"):
        data.check_name(f"npz:{garbage}")


def test_download_failure_is_a_clear_error(monkeypatch):
    def offline():
        raise OSError("URL fetch failure on https://storage.googleapis.com/...: no network")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    with pytest.raises(ExperimentError, match="Downloads need internet") as error:
        data.load("mnist", train_size=10, test_size=10)
    assert "\n" not in str(error.value)
