"""The errors the harness reports to users as a single line, before any training."""

from __future__ import annotations

import importlib.util

# What the harness imports beyond the plugin: pyproject.toml's `harness` extra, by the
# name each is imported under and the name pip installs it by.
HARNESS_PACKAGES = {
    "tensorflow": "tensorflow",
    "tensorboard": "tensorboard",
    "absl": "absl-py",
    "matplotlib": "matplotlib",
}


class ExperimentError(ValueError):
    """A bad setting (flag, preset, initializer...) or data that cannot be loaded."""


def missing_harness() -> str | None:
    """One line naming the harness's packages that are not installed and the command that
    installs them, or None when all are. Looks them up without importing them."""
    missing = [
        package for module, package in HARNESS_PACKAGES.items()
        if importlib.util.find_spec(module) is None
    ]
    if not missing:
        return None
    return (
        f"the harness needs {', '.join(missing)}, not installed: "
        "pip install 'keras-inits[harness]'"
    )
