"""Comparisons from Python: `experiments.run(...)`, the notebook's front door.

The same comparison as `python -m experiments.compare`, with the flags as keyword
arguments and two things a command line cannot pass: a model function and data
already in memory. Both front doors resolve their settings with `config.resolve`
and train with `runner.compare`, so a comparison started here writes the same
TensorBoard runs, `summary.json`/`summary.csv` and `report.md` as `make compare`, and
either resumes what the other started when their settings agree (the same dataset
flag: arrays held in memory and functions defined in a notebook have no flag).

```python
import experiments

results = experiments.run(
    ["xavier_normal", "random_normal(stddev=0.1)"],
    model=build_model,                  # (input_shape, num_classes) -> keras.Model
    data=(x_train, y_train, x_test, y_test),
    epochs=3,
    seeds=[0, 1, 2],
)
results          # in Jupyter: the results table and the report's figures
results.rows     # one dict per run, as in summary.json
```
"""

from __future__ import annotations

import base64
import dataclasses
import html
import inspect
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from experiments import config as config_lib
from experiments import quiet, specs
from experiments.data import datasets
from experiments.errors import ExperimentError, missing_harness

if TYPE_CHECKING:
    import keras


def run(
    initializers: str | Any | Sequence[str | Any] | None = None,
    *,
    model: Any = None,
    data: Any = None,
    preset: str = "lesson",
    callbacks: Sequence[keras.callbacks.Callback] = (),
    progress: Callable[[str], None] | None = print,
    **settings: Any,
) -> Results:
    """Trains identical models that differ only in their initializer, and reports.

    Args:
        initializers: spec strings (`"kaiming_normal(nonlinearity='tanh')"`, `"lsuv"`),
            `keras.initializers.Initializer` instances, or one of either; default:
            the preset's.
        model: `"mlp"`, `"cnn"`, `"package.module:function"`, a `.keras` file, or a
            function `(input_shape, num_classes) -> keras.Model` ending in a softmax
            (defined in the notebook or imported); or a list of these, swept.
            Default: the preset's.
        data: `(x_train, y_train, x_test, y_test)` or `(x_train, y_train)` NumPy
            arrays (integer class labels; uint8 images are mapped to [-1, 1], other
            inputs used as they are; without a test split a random fifth, or
            `test_size` examples, is held out with a fixed seed), or `(train, test)` / `train` as
            `tf.data.Dataset`s of `(x, y)` pairs, batched or not (read once into
            memory, so every arm sees the same examples in the same order). Every
            example is used unless `train_size` / `test_size` say otherwise. Default: the preset's
            `dataset` (Shapeset), or `dataset="npz:PATH"` among the settings.
        preset: the named experiment whose settings the others override.
        callbacks: extra Keras callbacks for every run's `fit`.
        progress: receives one line per finished run; None for silence.
        **settings: any other setting of `experiments.config.ExperimentConfig`, by its
            flag's name: `epochs=3`, `seeds=[0, 1, 2]`, `depth=[10, 30]`,
            `learning_rate=0.01`, `logdir="logs"`, `experiment="mine"`,
            `overwrite=True`, `ray_address="local"`... Lists sweep as the flags do.

    Returns:
        `Results`: the rows of `summary.json` (one dict per run), the experiment's
        folder, `report.md` and its figures; shown as a table and figures in Jupyter.

    Runs already in the experiment's `summary.json` are not trained again, as with
    `make compare`. A model function defined in the notebook is named by its name and a
    digest of its code and the values it uses, so an edited one trains anew; one
    imported from a module is named by its import path, like `--model`: after editing
    that module, pass `overwrite=True`.

    Raises:
        ExperimentError: (a `ValueError`) a bad setting or unusable data, before any
            training.
        TypeError: an argument of the wrong type.
        ModuleNotFoundError: the `harness` extra is not installed (one line saying so).
    """
    missing = missing_harness()
    if missing:
        raise ModuleNotFoundError(f"experiments.run: {missing}")
    quiet.start_tensorflow()  # Deferred: importing the package should not import TensorFlow.
    import keras

    settings = {name: _plain(value) for name, value in settings.items()}
    if initializers is not None:
        settings["initializers"] = tuple(_initializer_spec(i) for i in _listed(initializers))
    if model is not None:
        settings["model"] = tuple(_model_spec(m, keras) for m in _listed(model))
    name = None
    if data is not None:
        if "dataset" in settings:
            raise ExperimentError("Give data or dataset=, not both.")
        x_train, y_train, x_test, y_test = _arrays(data, keras)
        if x_test is None:
            x_train, y_train, x_test, y_test = _hold_out(x_train, y_train, settings)
        name = datasets.register_arrays(x_train, y_train, x_test, y_test)
        settings["dataset"] = name
        settings.setdefault("train_size", len(x_train))  # all the data, unless said otherwise
        settings.setdefault("test_size", len(x_test))
    try:
        experiment = config_lib.resolve(preset, **settings)
        in_process = [m for m in experiment.model if specs.registered_model(m) is not None]
        if experiment.ray_address and in_process:
            raise ExperimentError(
                f"The model function {in_process[0]} lives in this process only; Ray's "
                "workers import models by name: move it into a module and pass "
                "'package.module:function'."
            )
        from experiments import runner  # Deferred with TensorFlow.

        rows = runner.compare(
            experiment, callbacks=callbacks, progress=progress or (lambda line: None)
        )
    finally:
        if name is not None:
            datasets.forget_arrays(name)  # the arrays stay the caller's, not this module's
    return Results(rows=rows, config=experiment)


@dataclasses.dataclass(frozen=True)
class Results(Sequence):
    """A finished comparison: its rows, and where its logs, summary and report are.

    A sequence of the rows of `summary.json` (one dict per run: initializer, seed,
    the swept settings, status, losses and accuracies); `pandas.DataFrame(results)`
    makes a data frame of it. In Jupyter the object shows the report's results table
    and figures.
    """

    rows: list[dict[str, Any]]
    config: config_lib.ExperimentConfig

    @property
    def folder(self) -> str:
        """`<logdir>/<experiment>`: TensorBoard's runs, the summary and the report."""
        from experiments import files  # Deferred with TensorFlow (tf.io.gfile).

        return files.join(self.config.logdir, self.config.experiment)

    @property
    def report(self) -> str:
        """The path of `report.md`."""
        from experiments import files
        from experiments.results.report import REPORT_NAME

        return files.join(self.folder, REPORT_NAME)

    def model(self, run: int | Mapping[str, Any], **load_options: Any) -> keras.Model:
        """A run's trained model, loaded from its folder's `model.keras`.

        Args:
            run: a row of these results, or its index.
            **load_options: passed to `keras.saving.load_model`, e.g. `custom_objects`
                for the layers of your own model.

        Example:

        ```python
        best = max(results, key=lambda row: row["final_test_accuracy"])
        model = results.model(best)
        ```

        Raises:
            ExperimentError: the run failed, or its folder holds no model (trained with
                `save_models=False`).
        """
        from experiments import files
        from experiments.engine.training import MODEL_FILE

        row = self.rows[run] if isinstance(run, int) else run
        if not row.get("run_dir"):
            raise ExperimentError(
                f"Run {row['initializer']} seed {row['seed']} has no folder: it "
                f"{row['status']} ({row.get('error')})."
            )
        path = files.join(self.folder, row["run_dir"], MODEL_FILE)
        if not files.exists(path):
            raise ExperimentError(
                f"{path} does not exist: the run was trained with save_models=False; "
                "run it again with overwrite=True to keep its model."
            )
        import keras

        return keras.saving.load_model(path, **load_options)

    def figures(self) -> list[tuple[str, str]]:
        """The report's figures, in its order: (title, path of the PNG)."""
        from experiments import files

        found = re.findall(r"^!\[(.*)\]\((.+\.png)\)$", self._report_text(), flags=re.M)
        return [(title, files.join(self.folder, name)) for title, name in found]

    def table(self) -> str:
        """The report's results table (mean ± std over seeds), as Markdown."""
        lines = self._report_text().splitlines()
        start = lines.index("## Results") + 2 if "## Results" in lines else len(lines)
        table = []
        for line in lines[start:]:
            if not line.startswith("|"):
                break
            table.append(line)
        return "\n".join(table)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index):  # type: ignore[override]
        return self.rows[index]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)

    def __repr__(self) -> str:
        return f"Results({len(self.rows)} runs in {self.folder!r})"

    def _repr_markdown_(self) -> str:
        return f"{self.table()}\n\nReport: `{self.report}`"

    def _repr_html_(self) -> str:
        """What Jupyter shows: the headline, the results table and every figure."""
        from experiments import files

        text = self._report_text()
        title = text.splitlines()[0].lstrip("# ") if text else repr(self)
        parts = [f"<h3>{html.escape(title)}</h3>", _html_table(self.table())]
        for caption, path in self.figures():
            encoded = base64.b64encode(files.read_bytes(path)).decode("ascii")
            parts.append(
                f"<figure><img src='data:image/png;base64,{encoded}' "
                f"style='max-width:100%'><figcaption>{html.escape(caption)}</figcaption></figure>"
            )
        parts.append(f"<p>Report: <code>{html.escape(self.report)}</code>; "
                     f"<code>tensorboard --logdir {html.escape(self.config.logdir)}</code></p>")
        return "\n".join(parts)

    def _report_text(self) -> str:
        from experiments import files

        return files.read_text(self.report) if files.exists(self.report) else ""


def _plain(value: Any) -> Any:
    """A setting as the flags give it: NumPy scalars as Python numbers, ranges, lists and
    arrays as tuples (a comparison's settings are compared by value and saved as JSON)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (range, list, tuple)):
        return tuple(_plain(item) for item in value)
    return value


def _hold_out(
    x: np.ndarray, y: np.ndarray, settings: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): `test_size` examples (default a fifth) drawn at
    random, with a fixed seed, from arrays without a test split. At random, because
    arrays are often sorted by class, and a held-out tail would then be one class."""
    datasets.check_pair(x, y)
    held = settings.get("test_size", max(1, len(x) // 5))
    if not isinstance(held, int) or not 0 < held < len(x):
        raise ExperimentError(
            f"test_size={held!r}: without a test split, hold out between 1 and "
            f"{len(x) - 1} of the {len(x)} examples."
        )
    test = np.zeros(len(x), bool)
    test[np.random.default_rng(datasets.SHAPESET_SEED).permutation(len(x))[:held]] = True
    return x[~test], y[~test], x[test], y[test]


def _listed(value: Any) -> list[Any]:
    """`value` as a list: a string, a function or an initializer alone is one value."""
    if isinstance(value, (str, bytes)) or callable(value) or not isinstance(value, Sequence):
        return [value]
    return list(value)


def _initializer_spec(initializer: Any) -> str:
    """A spec string for `initializer`: a string as it is, an instance by its class and
    the arguments that differ from the defaults (checked to rebuild the same config).

    The seed is left out: the harness reseeds every layer of every run from the run's
    seed, so two instances that differ only in their seed would train the same arm.
    """
    if isinstance(initializer, str):
        return initializer
    import keras

    import keras_inits

    if not isinstance(initializer, keras.initializers.Initializer):
        raise TypeError(
            f"initializers: expected spec strings or keras.initializers.Initializer "
            f"instances, got {type(initializer).__name__}."
        )
    cls = type(initializer)
    config = {key: _plain(value) for key, value in initializer.get_config().items()}
    config.pop("seed", None)
    parameters = inspect.signature(cls.__init__).parameters
    # In the constructor's order, as a user writes them.
    keys = [name for name in parameters if name in config]
    keys += [name for name in config if name not in parameters]
    arguments = ", ".join(
        f"{key}={config[key]!r}"
        for key in keys
        if key not in parameters or parameters[key].default != config[key]
    )
    snake = {type_: name for name, type_ in keras_inits.INITIALIZERS.items()}
    spec = f"{snake.get(cls, cls.__name__)}({arguments})"
    try:
        rebuilt = keras_inits.get(spec)
    except (TypeError, ValueError):
        rebuilt = None
    rebuilt_config = {} if rebuilt is None else _plain(rebuilt.get_config())
    rebuilt_config.pop("seed", None)
    if rebuilt is None or type(rebuilt) is not cls or rebuilt_config != config:
        raise TypeError(
            f"initializers: {cls.__name__} with config {config} has no spec string that "
            "keras_inits.get rebuilds it from; pass a spec string naming one of "
            "keras_inits.names()."
        )
    return spec


def _model_spec(model: Any, keras: Any) -> str:
    """The `--model` spec of `model`: strings as they are, a function by its name."""
    if isinstance(model, str):
        return model
    if isinstance(model, keras.layers.Layer):
        raise TypeError(
            f"model: got a built {type(model).__name__}; every arm needs a model of its own, "
            "so pass the function that builds it, or save it (model.save('m.keras')) and "
            "pass the path."
        )
    if callable(model):
        return specs.register_model(model)
    raise TypeError(
        f"model: expected 'mlp', 'cnn', 'package.module:function', a .keras path or a "
        f"function (input_shape, num_classes) -> keras.Model; got {type(model).__name__}."
    )


def _arrays(data: Any, keras: Any) -> tuple[np.ndarray, np.ndarray, Any, Any]:
    """`data` as (x_train, y_train, x_test, y_test) arrays; the test pair may be None."""
    if _is_tf_dataset(data):
        data = (data,)
    if not isinstance(data, (tuple, list)) or len(data) not in (1, 2, 4):
        raise TypeError(
            "data: expected (x_train, y_train, x_test, y_test) or (x_train, y_train) "
            "arrays, or (train, test) tf.data.Datasets of (x, y) pairs; got "
            f"{type(data).__name__}{f' of {len(data)}' if isinstance(data, (tuple, list)) else ''}."
        )
    if all(_is_tf_dataset(part) for part in data) and len(data) <= 2:
        pairs = [_materialize(part) for part in data]
        return (*pairs[0], *(pairs[1] if len(pairs) == 2 else (None, None)))
    if len(data) == 1 or any(_is_tf_dataset(part) for part in data):
        raise TypeError("data: mix no arrays with tf.data.Datasets; give one kind.")
    arrays = [keras.ops.convert_to_numpy(part) for part in data]
    return (*arrays, *((None, None) if len(arrays) == 2 else ()))


def _is_tf_dataset(value: Any) -> bool:
    return type(value).__module__.startswith("tensorflow") and hasattr(value, "element_spec")


def _materialize(dataset: Any) -> tuple[np.ndarray, np.ndarray]:
    """The (x, y) pairs of a finite tf.data pipeline as two arrays, batched or not."""
    import tensorflow as tf

    spec = dataset.element_spec
    if not (
        isinstance(spec, tuple)
        and len(spec) == 2
        and all(isinstance(part, tf.TensorSpec) for part in spec)
    ):
        raise TypeError(
            f"data: a tf.data.Dataset must yield (x, y) pairs of single tensors (inputs, "
            f"integer labels); this one yields {spec}."
        )
    if dataset.cardinality() == tf.data.INFINITE_CARDINALITY:
        raise ExperimentError(
            "data: the tf.data.Dataset repeats forever; pass it without .repeat()."
        )
    # Batched when x and y share a leading axis (the batch's, None or the batch size);
    # unbatched labels are scalars, or a short vector such as shape (1,).
    x_shape, y_shape = spec[0].shape, spec[1].shape
    batched = (
        x_shape.rank is not None
        and y_shape.rank is not None
        and x_shape.rank >= 1
        and y_shape.rank >= 1
        and x_shape[0] == y_shape[0]
    )
    xs, ys = [], []
    for x, y in dataset.as_numpy_iterator():
        xs.append(x)
        ys.append(y)
    if not xs:
        raise ExperimentError("data: a tf.data.Dataset yielded no examples.")
    join = np.concatenate if batched else np.stack
    return join(xs), join(ys)


def _html_table(markdown: str) -> str:
    """A Markdown pipe table as an HTML table (`code` spans kept)."""
    rows = [line.strip("|").split(" | ") for line in markdown.splitlines()]
    rows = [row for row in rows if not all(set(cell.strip()) <= {"-"} for cell in row)]
    if not rows:
        return ""

    def cell(text: str, tag: str) -> str:
        escaped = html.escape(text.strip())
        escaped = re.sub(r"`([^`]*)`", r"<code>\1</code>", escaped)
        return f"<{tag}>{escaped}</{tag}>"

    head = "".join(cell(text, "th") for text in rows[0])
    body = "".join("<tr>" + "".join(cell(t, "td") for t in row) + "</tr>" for row in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
