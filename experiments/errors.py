"""The one error the harness reports to users as a single line, before any training."""


class ExperimentError(ValueError):
    """A bad setting (flag, preset, initializer...) or data that cannot be loaded."""
