"""Datasets the harness trains on: Shapeset-3x2, `.npz` files and `keras.datasets`.

`--dataset` takes `shapeset` (synthesized, no download), `npz:PATH` (a NumPy
archive with `x_train`, `y_train` and optionally `x_test`, `y_test`) or one of
`KERAS_DATASETS` (downloaded by Keras, so only for users who are online).
Images stored as integers (uint8) are mapped from [0, 255] to [-1, 1] like
Shapeset's pixels; float data is used as it is.
"""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path

import numpy as np

from experiments import shapeset
from experiments.errors import ExperimentError

KERAS_DATASETS = ("mnist", "fashion_mnist", "cifar10")
NPZ_PREFIX = "npz:"
# Fixed, so every seed and every initializer sees the same synthesized examples;
# the test set is drawn with SHAPESET_SEED + 1, independently of the train set.
SHAPESET_SEED = 2010


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Arrays of one dataset: images (or vectors) and integer class labels."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def chance_accuracy(self) -> float:
        """The test accuracy of always predicting the test set's most frequent class:
        what a model that learned nothing about the inputs reaches (1/num_classes on
        balanced classes, more on unbalanced ones)."""
        return float(np.bincount(self.y_test).max() / len(self.y_test))


def check_name(name: str) -> None:
    """Rejects an unknown dataset or an unreadable `.npz` before any work is done."""
    if name == "shapeset" or name in KERAS_DATASETS:
        return
    if name.startswith(NPZ_PREFIX):
        _read_npz(Path(name[len(NPZ_PREFIX) :]), arrays=False)
        return
    choices = ", ".join(("shapeset", *KERAS_DATASETS, "npz:PATH"))
    raise ExperimentError(f"Unknown dataset {name!r}; choose one of {choices}.")


def load(name: str, train_size: int, test_size: int) -> Dataset:
    """Loads `name` and keeps the first `train_size` / `test_size` examples.

    Shapeset is synthesized with exactly these sizes; other datasets are cut to
    them (or keep all they have when they are smaller).
    """
    check_name(name)
    if name == "shapeset":
        x_train, y_train = shapeset.generate(train_size, SHAPESET_SEED)
        x_test, y_test = shapeset.generate(test_size, SHAPESET_SEED + 1)
    elif name in KERAS_DATASETS:
        (x_train, y_train), (x_test, y_test) = _download(name)
    else:
        x_train, y_train, x_test, y_test = _read_npz(Path(name[len(NPZ_PREFIX) :]))
        if x_test is None:
            if len(x_train) < 2:
                raise ExperimentError(f"{name} has fewer than 2 examples to split.")
            # No test split in the file: hold out its last examples.
            held_out = min(test_size, len(x_train) // 2)
            x_train, x_test = x_train[:-held_out], x_train[-held_out:]
            y_train, y_test = y_train[:-held_out], y_train[-held_out:]
    x_train, y_train = _prepare(name, x_train[:train_size], y_train[:train_size])
    x_test, y_test = _prepare(name, x_test[:test_size], y_test[:test_size])
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    return Dataset(name, x_train, y_train, x_test, y_test, num_classes)


def _download(name: str) -> tuple:
    import keras  # Imported here: Shapeset and npz users need no Keras import for data.

    try:
        return getattr(keras.datasets, name).load_data()
    except Exception as error:  # Keras raises several types for a failed download.
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ExperimentError(
            f"Could not load {name} through keras.datasets ({type(error).__name__}: "
            f"{reason}). Downloads need internet; offline, use --dataset=shapeset or "
            "--dataset=npz:PATH."
        ) from None


def _read_npz(path: Path, arrays: bool = True) -> tuple:
    """Opens the archive and checks its keys; with `arrays`, returns them."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            missing = {"x_train", "y_train"} - keys
            if missing:
                raise ExperimentError(
                    f"{path} lacks {', '.join(sorted(missing))}; an npz dataset needs "
                    "x_train and y_train (x_test and y_test optional)."
                )
            if ("x_test" in keys) != ("y_test" in keys):
                raise ExperimentError(f"{path} has only one of x_test and y_test.")
            if not arrays:
                return ()
            test = ("x_test", "y_test") if "x_test" in keys else None
            return (
                archive["x_train"],
                archive["y_train"],
                archive[test[0]] if test else None,
                archive[test[1]] if test else None,
            )
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        if isinstance(error, ExperimentError):
            raise
        raise ExperimentError(f"Cannot read npz dataset {str(path)!r}: {error}") from None


def _prepare(name: str, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 inputs (integer images mapped to [-1, 1]) and int32 labels of shape (n,)."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:  # cifar10 stores labels as (n, 1)
        y = y[:, 0]
    if y.ndim != 1 or len(y) != len(x) or len(x) == 0:
        raise ExperimentError(
            f"{name}: expected non-empty x of shape (n, ...) and integer labels of "
            f"shape (n,), got x {x.shape} and y {y.shape}."
        )
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise ExperimentError(f"{name}: labels must be integers >= 0, got dtype {y.dtype}.")
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32) / 127.5 - 1.0
    if x.ndim == 3:  # grey images without a channel axis (mnist)
        x = x[..., None]
    return x.astype(np.float32), y.astype(np.int32)
