"""The input-output Jacobian spectrum of an arm's model at step 0 (`--jacobian_spectrum`).

Pennington et al. (2017) compare networks by the singular values of the Jacobian of their
deep representation with respect to the input: the read-out's input, before the softmax
(whose own Jacobian would squash them). `keras_inits.jacobian_spectrum` computes them on the
first `--jacobian_spectrum` probe examples; each arm logs them to TensorBoard as a histogram
(`jacobian/singular_values`, when computed exactly: a model with more than 2**20 Jacobian
entries per example gets Lanczos's estimates, whose Ritz values are no sample of the
spectrum) with the mean and variance of sigma^2 as scalars, keeps the
statistics and a histogram in `run.json` (`jacobian_spectrum`) and the two moments in the
summary (`jacobian_mean_squared`, `jacobian_variance_squared`).
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

import keras_inits
from keras_inits.taps import find_taps


def readout_input(model: keras.Model) -> str | None:
    """The name of the layer whose output the read-out (the last layer with a kernel) takes,
    or None when the read-out reads the model's input itself."""
    readout = find_taps(model)[-1].layer
    nodes = readout._inbound_nodes
    if not nodes or len(nodes[0].parent_nodes) != 1:
        return None
    source = nodes[0].parent_nodes[0].operation
    if isinstance(source, keras.layers.InputLayer):
        return None
    return source.name


def initial_spectrum(model: keras.Model, x: Any, writer: Any) -> dict[str, Any]:
    """The spectrum of `model` on the batch `x`, logged at step 0 through `writer`, as
    `JacobianSpectrum.to_dict()` plus the layer it ends at (`output`)."""
    output = readout_input(model)
    spectrum = keras_inits.jacobian_spectrum(model, x, output=output)
    with writer.as_default(step=0):
        if spectrum.method == "exact":  # Lanczos's Ritz values mean nothing without weights
            tf.summary.histogram("jacobian/singular_values", spectrum.singular_values)
        tf.summary.scalar("jacobian/mean_squared", spectrum.mean_squared)
        tf.summary.scalar("jacobian/variance_squared", spectrum.variance_squared)
    return {**spectrum.to_dict(), "output": output}
