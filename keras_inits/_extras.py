"""Optional dependencies: import one, or say in one line which extra brings it.

The plugin itself needs only Keras and NumPy (`pip install keras-inits`), so a
JAX or PyTorch user is not made to install TensorFlow. The few parts that need
more import it when they are used, through `require`, and a missing package
fails there with the command that fixes it rather than with a bare
`No module named ...` from deep inside a library:

    SignalHistograms writes TensorBoard summaries: pip install 'keras-inits[harness]'
    (tensorflow is not installed)
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

HARNESS = "harness"  # TensorFlow, TensorBoard, absl-py, matplotlib: pyproject.toml's extras


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """`import module`, or a `ModuleNotFoundError` whose message is one line: what needs
    it, the `pip install 'keras-inits[extra]'` that installs it, and what is missing.

    Args:
        module: the dotted module to import, e.g. "tensorflow" or
            "tensorboard.plugins.histogram.metadata".
        extra: the keras-inits extra that installs it, e.g. "harness".
        purpose: what needs it, as the start of a sentence, e.g.
            "SignalHistograms writes TensorBoard summaries".

    Returns:
        The imported module.

    Raises:
        ModuleNotFoundError: `module`, or a package it imports, is not installed.
            Its `name` is the missing module's, as Python's own error has it.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        missing = error.name or module
        message = f"{purpose}: pip install 'keras-inits[{extra}]' ({missing} is not installed)"
        # The package itself missing needs no traceback; one of its own dependencies
        # missing (a broken install) keeps Python's error as the cause.
        ours = missing.split(".")[0] == module.split(".")[0]
        raise ModuleNotFoundError(message, name=missing) from (None if ours else error)


def save_figure(figure: Any, path: str | Path) -> Path:
    """Writes a matplotlib `figure` as a PNG at `path` (its folders made), at the plugin's
    one resolution, and returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path
