"""keras-inits: every weight initializer of the literature as a Keras 3 string name.

After `import keras_inits`, `Dense(64, kernel_initializer="xavier_normal")`
works in any Keras layer, on the TensorFlow, JAX and PyTorch backends, and a
model using these names saves to and reloads from `.keras` files (in a process
that has imported keras_inits).
"""

from keras_inits.base import CheckedInitializer, FanScaling, SeededInitializer
from keras_inits.fans import LAYOUTS, compute_fans
from keras_inits.gains import calculate_gain
from keras_inits.initializers import (
    DeltaOrthogonal,
    Dirac,
    KaimingNormal,
    KaimingUniform,
    Sparse,
    StandardUniform,
    XavierNormal,
    XavierUniform,
)
from keras_inits.registry import INITIALIZERS, get, names, parse_spec, register_names, reseed

__version__ = "0.1.0"

__all__ = [
    "INITIALIZERS",
    "LAYOUTS",
    "CheckedInitializer",
    "DeltaOrthogonal",
    "Dirac",
    "FanScaling",
    "KaimingNormal",
    "KaimingUniform",
    "SeededInitializer",
    "Sparse",
    "StandardUniform",
    "XavierNormal",
    "XavierUniform",
    "calculate_gain",
    "compute_fans",
    "get",
    "names",
    "parse_spec",
    "register_names",
    "reseed",
]

register_names()
