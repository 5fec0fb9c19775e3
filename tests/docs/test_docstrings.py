"""The `>>>` examples of the docstrings that the API reference (docs/api/) renders run too.

The objects are the `::: name` directives of docs/api/*.md (keras_inits's; the harness's
notebook page is the harness's to test), with the public methods of each class. A docstring
example may use data it does not define (`x`, `x_train`, a compiled `model`), as Keras's do:
`FIXTURES` gives those, small. An example with an expected output must print exactly that;
one without runs for its effects (its output is not checked).
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
_DIRECTIVE = re.compile(r"^::: ([\w.]+)\s*$", re.M)


def _small_mlp(rng: np.random.Generator) -> dict[str, Any]:
    import keras

    model = keras.Sequential([
        keras.Input((20,)),
        keras.layers.Dense(16, activation="tanh"),
        keras.layers.Dense(3, activation="softmax"),
    ])
    model.compile("sgd", "sparse_categorical_crossentropy")
    return {
        "model": model,
        "x_train": rng.standard_normal((64, 20)).astype("float32"),
        "y_train": rng.integers(0, 3, 64),
    }


FIXTURES: dict[str, Callable[[np.random.Generator], dict[str, Any]]] = {
    "keras_inits.diagnose": lambda rng: {
        "x": rng.standard_normal((4, 64, 64, 3)).astype("float32"),
        "y": rng.integers(0, 1000, 4),
    },
    "keras_inits.lsuv.lsuv": lambda rng: {
        "x_train": rng.standard_normal((8, 64, 64, 3)).astype("float32"),
    },
    "keras_inits.SignalHistograms": _small_mlp,
}
# Docstrings whose examples build ResNet50 or MobileNetV2.
SLOW = {"keras_inits.diagnose", "keras_inits.lsuv.lsuv", "keras_inits.reinitialize"}


def _resolve(name: str) -> Any:
    """The object `name` names, as mkdocstrings reads it: the longest importable module, then
    attributes (so `keras_inits.lsuv.lsuv` is the function in the module `keras_inits.lsuv`)."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            obj = getattr(obj, attribute)
        return obj
    raise ImportError(name)


def rendered() -> dict[str, list[doctest.Example]]:
    """Every rendered keras_inits object with examples: name -> its examples, in order."""
    found = {}
    for page in sorted((ROOT / "docs" / "api").glob("*.md")):
        for name in _DIRECTIVE.findall(page.read_text(encoding="utf-8")):
            if not name.startswith("keras_inits."):
                continue
            obj = _resolve(name)
            docs = [inspect.getdoc(obj) or ""]
            if inspect.isclass(obj):
                docs += [
                    inspect.getdoc(member) or ""
                    for member_name, member in vars(obj).items()
                    if not member_name.startswith("_") and callable(member)
                ]
            examples = [ex for doc in docs for ex in doctest.DocTestParser().get_examples(doc)]
            if examples:
                found[name] = examples
    return found


def _params() -> list:
    return [
        pytest.param(name, examples, id=name, marks=[pytest.mark.slow] if name in SLOW else [])
        for name, examples in rendered().items()
    ]


@pytest.mark.parametrize(("name", "examples"), _params())
def test_docstring_examples_run(name, examples, tmp_path, monkeypatch, capsys):
    import keras

    import keras_inits

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace = {"keras": keras, "keras_inits": keras_inits, "np": np}
    namespace.update(vars(keras_inits))  # `parse_spec(...)` as its module's docstring writes it
    namespace.update(FIXTURES.get(name, lambda rng: {})(np.random.default_rng(0)))
    for example in examples:
        code = compile(example.source, f"<docstring of {name}>", "single")
        capsys.readouterr()
        exec(code, namespace)
        if example.want:
            assert capsys.readouterr().out == example.want, example.source


def test_docstring_examples_are_found():
    assert {"keras_inits.calculate_gain", "keras_inits.XavierNormal"} <= set(rendered())
