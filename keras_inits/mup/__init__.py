"""The Maximal Update Parametrization (muP) for Keras 3: tune a narrow model, train a wide one.

`parametrize` and `optimizer` put a model in muP (`keras_inits.mup.parametrization`, where the
rules are described); `coord_check` is the test of any muP implementation: every layer's
activation scale against the width over the first steps of training, flat under muP
(`keras_inits.mup.coord_check`).
"""

from keras_inits.mup.coord_check import CoordCheck, coord_check
from keras_inits.mup.parametrization import (
    KINDS,
    MultiHeadAttention,
    MupReport,
    MupWeight,
    Readout,
    ScaledSchedule,
    classify,
    multipliers,
    optimizer,
    optimizer_groups,
    parametrize,
)

__all__ = [
    "KINDS",
    "CoordCheck",
    "MultiHeadAttention",
    "MupReport",
    "MupWeight",
    "Readout",
    "ScaledSchedule",
    "classify",
    "coord_check",
    "multipliers",
    "optimizer",
    "optimizer_groups",
    "parametrize",
]
