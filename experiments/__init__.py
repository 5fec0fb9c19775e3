"""The comparison harness: identical models that differ only in their kernel initializer.

Two front doors, one implementation: `python -m experiments.compare` (or
`keras-inits-compare`, `make compare`) from a shell, `experiments.run(...)` from
Python or a notebook. Both resolve their settings with `experiments.config.resolve`
and call `experiments.runner.compare`, which trains one model per initializer and
seed, logs activation and gradient histograms to TensorBoard and writes
`summary.json`, `summary.csv` and `report.md` under `logs/<experiment>/`.

The layout follows the data's way: settings (`config`, `specs`) -> the plan
(`plan`) -> the runner (`runner`, `models`) -> how runs train (`engine/`) -> what
they leave behind (`results/`); `papers/` holds the presets and their judges,
`data/` the datasets. Imports flow the same way: no module imports one that
imports it back.
"""

import os

# The harness uses TensorFlow directly (tf.summary, tf.data); its probes are keras_inits's
# SignalHistograms callback.
# Choose it before Keras is first imported, unless the user chose a backend; an
# explicit other backend is refused with a clear message by `config.validate`.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from experiments.notebook import Results, run  # noqa: E402  (after the backend's choice)

__all__ = ["Results", "run"]
