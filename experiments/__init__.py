"""The comparison harness: identical models that differ only in their kernel initializer.

`python -m experiments.compare` (or `keras-inits-compare`, `make compare`) trains one
model per initializer and seed, logs activation and gradient histograms to
TensorBoard and writes `summary.json`, `summary.csv` and `report.md` under
`logs/<experiment>/`. The library entry point is `experiments.runner.compare`.
"""

import os

# The harness uses TensorFlow directly (tf.summary, tf.data); its probes are keras_inits's
# SignalHistograms callback.
# Choose it before Keras is first imported, unless the user chose a backend; an
# explicit other backend is refused with a clear message by `config.validate`.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
