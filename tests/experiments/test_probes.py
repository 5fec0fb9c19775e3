"""Histogram bucketing and saturation rules of the probes."""

import numpy as np
import tensorflow as tf

from experiments import probes


def test_histogram_counts_every_value_in_tensorboards_layout():
    values = np.random.default_rng(0).normal(size=(64, 16)).astype(np.float32)
    buckets = probes.histogram(tf.constant(values)).numpy()
    assert buckets.shape == (probes.BINS, 3) and buckets.dtype == np.float64
    assert buckets[:, 2].sum() == values.size
    np.testing.assert_allclose(buckets[0, 0], values.min(), rtol=1e-6)
    np.testing.assert_allclose(buckets[-1, 1], values.max(), rtol=1e-6)
    np.testing.assert_allclose(buckets[1:, 0], buckets[:-1, 1], rtol=1e-6)


def test_histogram_of_a_constant_and_of_non_finite_values():
    constant = probes.histogram(tf.zeros((10, 10))).numpy()
    assert constant[:, 2].sum() == 100 and constant[0, 0] == -0.5 and constant[-1, 1] == 0.5
    mixed = probes.histogram(tf.constant([1.0, 2.0, np.nan, np.inf, 3.0])).numpy()
    assert mixed[:, 2].sum() == 3 and mixed[0, 0] == 1.0 and mixed[-1, 1] == 3.0
    empty = probes.histogram(tf.constant([np.nan, np.nan])).numpy()
    assert empty[:, 2].sum() == 0


def test_saturation_rules():
    values = tf.constant([-0.95, -0.5, 0.05, 0.5, 0.95])
    tanh = probes.saturation_rule("tanh")(values).numpy()
    np.testing.assert_array_equal(tanh, [True, False, False, False, True])
    sigmoid = probes.saturation_rule("sigmoid")(values).numpy()
    np.testing.assert_array_equal(sigmoid, [True, True, True, False, True])
    assert probes.saturation_rule("relu") is None
