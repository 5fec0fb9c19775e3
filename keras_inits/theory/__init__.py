"""Mean-field theory of deep random networks: which initialization lets a signal through.

Poole et al. (2016) and Schoenholz et al. (2017) follow a pair of inputs through a deep,
infinitely wide network with weights N(0, sigma_w^2 / fan_in) and biases N(0, sigma_b^2): the
variance q of the pre-activations and the correlation c of the two inputs obey deterministic
maps from layer to layer. Their fixed points and slopes give the network's phase (ordered:
every input maps to the same output; chaotic: nearby inputs decorrelate), the depth scales
xi_q and xi_c over which information about the inputs' lengths and correlation survives, and
the depth to which the network can be trained (about 6 xi_c). At the edge of chaos
(chi_1 = 1) xi_c diverges: `critical_sigma_w2` gives that weight variance for any
activation.

Everything here is float64 NumPy (closed forms for the relu family, erf and linear; accurate
quadrature for the rest: `keras_inits.theory.moments`), independent of the Keras backend.

- `mean_field(activation, sigma_w2, sigma_b2)`: q*, chi_1, c*, xi_q, xi_c, the phase and
  the trainable depth, as a `MeanField`.
- `length_map`, `correlation_map`, `propagate`: the recursions themselves.
- `critical_sigma_w2(activation, sigma_b2)`: the edge of chaos.
- `phase_diagram(activation, sigma_w2_values, sigma_b2_values)`: all of it on a grid, as
  rows and as a figure (`PhaseDiagram.plot`).
"""

from keras_inits.theory.activations import ACTIVATIONS
from keras_inits.theory.phase import PhaseDiagram, phase_diagram
from keras_inits.theory.recursions import (
    PHASES,
    MeanField,
    NoFixedPointError,
    correlation_map,
    critical_sigma_w2,
    length_map,
    mean_field,
    propagate,
)

__all__ = [
    "ACTIVATIONS",
    "PHASES",
    "MeanField",
    "NoFixedPointError",
    "PhaseDiagram",
    "correlation_map",
    "critical_sigma_w2",
    "length_map",
    "mean_field",
    "phase_diagram",
    "propagate",
]
