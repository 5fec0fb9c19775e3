"""Histogram bucketing (TensorFlow and NumPy alike) and the saturation and dead-unit rules."""

import keras
import numpy as np
import pytest

from keras_inits.callbacks import BINS, np_histogram, tf_histogram
from keras_inits.signals import dead_units, saturation

try:
    import tensorflow as tf
except ModuleNotFoundError:  # an install without keras-inits[harness]: NumPy buckets only
    tf = None
needs_tensorflow = pytest.mark.skipif(tf is None, reason="tensorflow is not installed")
BUCKETS = [
    pytest.param(
        lambda v: tf_histogram(tf.constant(v)).numpy(), marks=needs_tensorflow, id="tensorflow"
    ),
    pytest.param(np_histogram, id="numpy"),
]
BUCKETS_OF_BINS = [
    pytest.param(
        lambda v, bins: tf_histogram(tf.constant(v), bins).numpy(),
        marks=needs_tensorflow,
        id="tensorflow",
    ),
    pytest.param(np_histogram, id="numpy"),
]


@pytest.mark.parametrize("bucket", BUCKETS)
def test_histogram_counts_every_value_in_tensorboards_layout(bucket):
    values = np.random.default_rng(0).normal(size=(64, 16)).astype(np.float32)
    buckets = bucket(values)
    assert buckets.shape == (BINS, 3) and buckets.dtype == np.float64
    assert buckets[:, 2].sum() == values.size
    np.testing.assert_allclose(buckets[0, 0], values.min(), rtol=1e-6)
    np.testing.assert_allclose(buckets[-1, 1], values.max(), rtol=1e-6)
    np.testing.assert_allclose(buckets[1:, 0], buckets[:-1, 1], rtol=1e-6)


@pytest.mark.parametrize("bins", [1, 7, 64])
@pytest.mark.parametrize("bucket", BUCKETS_OF_BINS)
def test_histogram_has_the_buckets_asked_for_spanning_the_data(bucket, bins):
    values = (np.random.default_rng(2).normal(size=(64, 16)) * 3 + 1).astype(np.float32)
    buckets = bucket(values, bins)
    assert buckets.shape == (bins, 3)
    low, high = float(values.min()), float(values.max())
    np.testing.assert_allclose(buckets[0, 0], low, rtol=1e-6)
    np.testing.assert_allclose(buckets[-1, 1], high, rtol=1e-6)
    np.testing.assert_allclose(buckets[:, 1] - buckets[:, 0], (high - low) / bins, rtol=1e-4)
    # Each value's bucket by the closed form floor((v - low) / width), the maximum in the
    # last; a value on an edge may fall either side in float32.
    index = np.minimum(((values - low) / (high - low) * bins).astype(int), bins - 1)
    expected = np.bincount(index.reshape(-1), minlength=bins)
    assert np.abs(expected - buckets[:, 2]).sum() <= 2


@pytest.mark.parametrize("bucket", BUCKETS)
def test_histogram_of_a_constant_and_of_non_finite_values(bucket):
    constant = bucket(np.zeros((10, 10), np.float32))
    assert constant[:, 2].sum() == 100 and constant[0, 0] == -0.5 and constant[-1, 1] == 0.5
    mixed = bucket(np.array([1.0, 2.0, np.nan, np.inf, 3.0], np.float32))
    assert mixed[:, 2].sum() == 3 and mixed[0, 0] == 1.0 and mixed[-1, 1] == 3.0
    empty = bucket(np.array([np.nan, np.nan], np.float32))
    assert empty[:, 2].sum() == 0
    # A huge constant (a weight of 1e20): float32 cannot hold 1e20 +- 0.5, so the range
    # widens with the value instead of collapsing to nothing.
    huge = bucket(np.full((4,), 1e20, np.float32))
    assert huge[:, 2].sum() == 4 and huge[0, 0] < 1e20 < huge[-1, 1]


@needs_tensorflow
def test_tensorflow_and_numpy_buckets_agree():
    values = np.random.default_rng(1).standard_t(3, size=5000).astype(np.float32)
    ours, theirs = tf_histogram(tf.constant(values)).numpy(), np_histogram(values)
    np.testing.assert_allclose(ours[:, :2], theirs[:, :2], rtol=1e-5)
    # Values on a bucket edge may fall either side in float32: a handful at most.
    assert np.abs(ours[:, 2] - theirs[:, 2]).sum() <= 4


def test_saturation_rules():
    values = keras.ops.convert_to_tensor(np.array([-0.95, -0.5, 0.05, 0.5, 0.95], np.float32))
    assert float(saturation("tanh", values)) == pytest.approx(2 / 5)
    assert float(saturation("sigmoid", values)) == pytest.approx(4 / 5)
    assert saturation("relu", values) is None and saturation(None, values) is None


def test_dead_units_are_units_never_active_anywhere_in_the_batch():
    outputs = np.zeros((4, 3, 5), np.float32)  # batch, positions, units
    outputs[2, 1, 0] = 1.0  # unit 0 active once
    outputs[:, :, 3] = 0.5  # unit 3 always active
    assert float(dead_units("relu", keras.ops.convert_to_tensor(outputs))) == pytest.approx(3 / 5)
    assert dead_units("tanh", keras.ops.convert_to_tensor(outputs)) is None


@needs_tensorflow
def test_tensors_bucketed_together_get_the_buckets_each_gets_alone(monkeypatch):
    """`tf_histograms` batches tensors of one size (chunked by `_ROW_BUDGET`): the result,
    in the order given, is each tensor's own histogram, a None an empty one."""
    from keras_inits import callbacks

    rng = np.random.default_rng(3)
    shapes = [(64, 16), (1024,), (16, 64), (7,), (32, 32), (5, 3, 2), (1024,), (30,)]
    tensors = [rng.standard_t(3, size=shape).astype(np.float32) for shape in shapes]
    tensors[3][2] = np.nan
    tensors[7][:] = 2.5  # a constant
    monkeypatch.setattr(callbacks, "_ROW_BUDGET", 2048)  # 2 tensors of 1024 a batch at most
    together = callbacks.tf_histograms([tf.constant(t) for t in tensors] + [None]).numpy()
    assert together.shape == (len(tensors) + 1, BINS, 3)
    for values, buckets in zip(tensors, together, strict=False):
        np.testing.assert_array_equal(buckets, tf_histogram(tf.constant(values)).numpy())
        finite = values[np.isfinite(values)]
        if np.ptp(finite) == 0:  # a constant: all of it in the bucket of its value
            assert buckets[:, 2].max() == finite.size
            continue
        # An outside reference: TensorFlow's own bucketing of one tensor, over the same range.
        theirs = tf.histogram_fixed_width(
            finite, [buckets[0, 0], buckets[-1, 1]], nbins=BINS
        ).numpy()
        assert np.abs(theirs - buckets[:, 2]).sum() <= 2  # a value on an edge, either side
    assert together[-1, :, 2].sum() == 0


@needs_tensorflow
def test_grouped_tensors_get_one_histogram_per_model():
    from keras_inits.callbacks import tf_histograms

    rng = np.random.default_rng(4)
    activations = rng.normal(size=(3, 40, 8)).astype(np.float32) * [[[1.0]], [[5.0]], [[0.1]]]
    kernels = rng.uniform(size=(3, 8, 4)).astype(np.float32)
    grouped = tf_histograms(
        [tf.constant(activations), None, tf.constant(kernels)], grouped=True
    ).numpy()
    assert grouped.shape == (3, 3, BINS, 3)
    for model in range(3):
        for index, values in ((0, activations), (2, kernels)):
            np.testing.assert_array_equal(
                grouped[index, model], tf_histogram(tf.constant(values[model])).numpy()
            )
        assert grouped[1, model, :, 2].sum() == 0


@needs_tensorflow
def test_tensors_of_a_size_unknown_when_traced_are_bucketed_alone():
    # Inside a tf.function, an op may leave a dimension unknown (Keras's attention einsums
    # in a traced snapshot did): such a tensor cannot be grouped with others by size.
    from keras_inits.callbacks import tf_histograms

    rng = np.random.default_rng(5)
    known = rng.normal(size=(2, 6, 4)).astype(np.float32)
    unknown = rng.normal(size=(2, 5, 4)).astype(np.float32) * 3

    @tf.function(input_signature=[tf.TensorSpec((2, None, 4), tf.float32)])
    def buckets(dynamic):
        return tf_histograms([tf.constant(known), dynamic, tf.constant(known) * 2], grouped=True)

    traced = buckets(tf.constant(unknown)).numpy()
    for index, values in ((0, known), (1, unknown), (2, known * 2)):
        for model in range(2):
            alone = tf_histogram(tf.constant(values[model])).numpy()
            np.testing.assert_array_equal(traced[index, model, :, 2], alone[:, 2])  # counts
            # The edges up to float32 rounding (the traced graph may fuse their arithmetic).
            np.testing.assert_allclose(traced[index, model, :, :2], alone[:, :2], atol=1e-5)
