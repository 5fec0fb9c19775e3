"""keras-inits: every weight initializer of the literature as a Keras 3 string name.

After `import keras_inits`, `Dense(64, kernel_initializer="xavier_normal")`
works in any Keras layer, on the TensorFlow, JAX and PyTorch backends, and a
model using these names saves to and reloads from `.keras` files (in a process
that has imported keras_inits).

For any built model: `reinitialize` (every kernel with the fans of its layer
type), `lsuv` (data-dependent unit-variance init), `diagnose` (signal
propagation in numbers and words), `roles` (what each kernel does in a residual
network or Transformer, and its block), `reinitialize(model, scheme=...)` (the
schemes of `keras_inits.schemes`: GPT-2's, Fixup, T-Fixup, DeepNet...), the
`SignalHistograms` callback
(activation and gradient histograms in TensorBoard during `fit`) and `jacobian_spectrum`
(the singular values of the input-output Jacobian: dynamical isometry or not).
`keras_inits.mup`: the Maximal Update Parametrization (muP), for hyperparameters that
transfer across widths.
"""

from keras_inits import mup, schemes, theory
from keras_inits.base import CheckedInitializer, FanScaling, SeededInitializer
from keras_inits.callbacks import SignalHistograms
from keras_inits.diagnosis import Diagnosis, Verdict, diagnose
from keras_inits.fans import LAYOUTS, compute_fans
from keras_inits.gains import calculate_gain
from keras_inits.initializers import (
    DeltaOrthogonal,
    Dirac,
    KaimingNormal,
    KaimingUniform,
    Sparse,
    StandardUniform,
    TruncNormal,
    XavierNormal,
    XavierUniform,
)
from keras_inits.lsuv import LSUVReport, lsuv
from keras_inits.registry import INITIALIZERS, get, names, parse_spec, register_names, reseed
from keras_inits.reinit import ReinitReport, reinitialize
from keras_inits.roles import ROLES, KernelRole, Roles, roles
from keras_inits.spectrum import JacobianSpectrum, jacobian_spectrum

__version__ = "0.1.0"

__all__ = [
    "INITIALIZERS",
    "LAYOUTS",
    "ROLES",
    "CheckedInitializer",
    "DeltaOrthogonal",
    "Diagnosis",
    "Dirac",
    "FanScaling",
    "JacobianSpectrum",
    "KernelRole",
    "KaimingNormal",
    "KaimingUniform",
    "LSUVReport",
    "ReinitReport",
    "Roles",
    "SeededInitializer",
    "SignalHistograms",
    "Sparse",
    "StandardUniform",
    "TruncNormal",
    "Verdict",
    "XavierNormal",
    "XavierUniform",
    "calculate_gain",
    "compute_fans",
    "diagnose",
    "get",
    "jacobian_spectrum",
    "lsuv",
    "mup",
    "names",
    "parse_spec",
    "register_names",
    "reinitialize",
    "reseed",
    "roles",
    "schemes",
    "theory",
]

register_names()
