"""The plugin in a core-only install: `pip install keras-inits` (Keras, NumPy) plus JAX.

`make test-core` runs this in `.venv-core`, a virtual environment made for it
with `pip install -e . jax` and nothing else, so neither TensorFlow,
TensorBoard nor matplotlib is there. It checks that such a JAX user can import
keras_inits and use the model tools (`reinitialize`, `lsuv`, `diagnose`) on a
Functional model, and that what needs an extra (`SignalHistograms`,
`Diagnosis.plot`) says in one line which one to install, when it is built or
called rather than deep inside `fit`.

A plain script rather than a pytest file: the core install has no pytest, and the
main suite, run where the extras are installed, must not collect it (its name does
not match `test_*.py`). absl-py is not checked for: Keras itself depends on it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXTRAS = ("tensorflow", "tensorboard", "matplotlib")  # keras-inits[harness], absl-py aside
INSTALL_HARNESS = "pip install 'keras-inits[harness]'"


def check_no_extra_is_installed() -> None:
    installed = [name for name in EXTRAS if importlib.util.find_spec(name) is not None]
    assert not installed, (
        f"{installed} installed in the core-only environment: a core dependency pulls them "
        "in (pyproject.toml's `dependencies` must be keras and numpy only)."
    )


def check_the_backend_is_jax() -> None:
    import keras

    assert keras.backend.backend() == "jax", f"backend {keras.backend.backend()!r}, not jax"


def check_import_loads_no_extra() -> None:
    import keras_inits

    assert keras_inits.names(), "no initializer registered"
    loaded = [name for name in EXTRAS if name in sys.modules]
    assert not loaded, f"import keras_inits imported {loaded}"


def functional_model() -> Any:
    """A small Functional MLP (keras.Model; Keras is imported only once the backend is set)."""
    import keras

    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(32, activation="tanh", name="hidden")(inputs)
    hidden = keras.layers.Dense(32, activation="relu", name="hidden2")(hidden)
    return keras.Model(inputs, keras.layers.Dense(4, name="out")(hidden))


def batch() -> Any:
    """One batch of 64 examples for `functional_model`."""
    import numpy as np

    return np.random.default_rng(0).normal(size=(64, 8)).astype("float32")


def check_reinitialize() -> None:
    import keras_inits

    report = keras_inits.reinitialize(functional_model(), "kaiming_normal", seed=0)
    kernels = [row for row in report.rows if row["weight"] == "kernel"]
    assert [row["path"] for row in kernels] == ["hidden", "hidden2", "out"], report.rows


def check_lsuv() -> None:
    import keras_inits

    report = keras_inits.lsuv(functional_model(), batch(), seed=0)
    assert report.converged and len(report.rows) == 3, report.table()


def check_diagnose() -> None:
    import keras_inits

    diagnosis = keras_inits.diagnose(functional_model(), batch())
    assert [row["path"] for row in diagnosis.layers] == ["hidden", "hidden2", "out"]
    assert all(row["gradient_std"] > 0 for row in diagnosis.layers), diagnosis.table()
    assert "tensorflow" not in sys.modules, "diagnose imported TensorFlow under JAX"


def one_line_error(action: Callable[[], object], needs: str) -> str:
    """The message of the ModuleNotFoundError that `action` raises, checked to be one line
    that names the extra and the missing package `needs`."""
    try:
        action()
    except ModuleNotFoundError as error:
        message = str(error)
    else:
        raise AssertionError(f"no ModuleNotFoundError without {needs}")
    assert "\n" not in message, f"not one line: {message!r}"
    assert INSTALL_HARNESS in message and needs in message, message
    return message


def check_signal_histograms_names_the_extra() -> None:
    import keras_inits

    print("    " + one_line_error(lambda: keras_inits.SignalHistograms(batch()), "tensorflow"))


def check_plot_names_the_extra() -> None:
    import keras_inits

    diagnosis = keras_inits.diagnose(functional_model(), batch())
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "profile.png"
        print("    " + one_line_error(lambda: diagnosis.plot(path), "matplotlib"))
        assert not path.exists()


def check_the_harness_names_its_extra() -> None:
    """The harness (installed as part of the package) says in one line what to install:
    its command lines exit with it, `experiments.run` raises it."""
    import subprocess

    for program in ("experiments.compare", "experiments.diagnose"):
        done = subprocess.run(
            [sys.executable, "-m", program, "--help"], capture_output=True, text=True
        )
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1, (done.returncode, done.stderr)
        assert INSTALL_HARNESS in lines[0] and "tensorflow" in lines[0], lines
        print("    " + lines[0])
    import experiments

    print("    " + one_line_error(experiments.run, "tensorflow"))


CHECKS = [
    check_no_extra_is_installed,
    check_the_backend_is_jax,
    check_import_loads_no_extra,
    check_reinitialize,
    check_lsuv,
    check_diagnose,
    check_signal_histograms_names_the_extra,
    check_plot_names_the_extra,
    check_the_harness_names_its_extra,
]


def main() -> int:
    """Runs every check, prints each outcome, and returns the exit status (1 if any failed)."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    failed = 0
    for check in CHECKS:
        name = check.__name__.removeprefix("check_")
        try:
            check()
        except Exception:
            failed += 1
            print(f"FAILED {name}\n{traceback.format_exc()}")
        else:
            print(f"ok     {name}")
    print(f"core-only: {len(CHECKS) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
