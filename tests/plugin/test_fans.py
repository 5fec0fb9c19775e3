"""`compute_fans` against torch's and Keras's own fan computations, layout by layout."""

import pytest
import torch
from keras.src.initializers.random_initializers import compute_fans as keras_compute_fans

from keras_inits import compute_fans
from tests.plugin.util import SHAPES, torch_shape


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_default_layout_matches_torch(name):
    shape = SHAPES[name]
    expected = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(torch_shape(shape)))
    assert compute_fans(shape) == expected


def test_transpose_layout_swaps_channel_axes():
    # Conv2DTranspose(filters=8) on 3 input channels has kernel (k, k, out=8, in=3);
    # torch's ConvTranspose2d weight is (in=3, out=8, k, k) and torch reads
    # fan_in from dim 1, so torch itself is wrong here too; the truth is below.
    assert compute_fans((5, 5, 8, 3), "transpose") == (3 * 25, 8 * 25)
    assert compute_fans((5, 5, 8, 3)) == (8 * 25, 3 * 25)


def test_depthwise_layout_counts_one_input_channel():
    # DepthwiseConv2D on 16 channels, multiplier 2: each output sees k*k inputs.
    assert compute_fans((3, 3, 16, 2), "depthwise") == (9, 18)
    # torch's depthwise weight (16*2, 1, 3, 3) has the same fan_in.
    torch_fans = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(32, 1, 3, 3))
    assert compute_fans((3, 3, 16, 2), "depthwise")[0] == torch_fans[0]


def test_rank_one_uses_the_size_for_both():
    assert compute_fans((7,)) == (7, 7)


def test_scalar_and_unknown_layout_are_refused():
    with pytest.raises(ValueError, match="scalar"):
        compute_fans(())
    with pytest.raises(ValueError, match="layout='transposed'.*transpose"):
        compute_fans((3, 3), "transposed")


# Kernels with a receptive field whose axes all differ (and differ from the channel axes),
# so a fan that skipped, repeated or swapped an axis would come out different.
RECEPTIVE_FIELD_SHAPES = [(7, 5, 6), (2, 3, 5, 6), (2, 3, 4, 5, 6)]


@pytest.mark.parametrize("shape", RECEPTIVE_FIELD_SHAPES, ids=str)
def test_receptive_field_multiplies_both_fans_as_torch_and_keras_count_them(shape):
    torch_fans = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(torch_shape(shape)))
    keras_fans = keras_compute_fans(shape)
    assert compute_fans(shape) == torch_fans == keras_fans


@pytest.mark.parametrize("shape", RECEPTIVE_FIELD_SHAPES, ids=str)
def test_transpose_and_depthwise_layouts_as_keras_counts_the_kernel_they_stand_for(shape):
    *field, before_last, last = shape
    # A transpose kernel (..., out, in) is Keras's (..., in, out) kernel with the channel
    # axes swapped; a depthwise kernel (..., in, multiplier) is, per input channel, a
    # (..., 1, multiplier) kernel. (Keras 3.7's compute_fans takes a shape only.)
    assert compute_fans(shape, "transpose") == keras_compute_fans((*field, last, before_last))
    assert compute_fans(shape, "depthwise") == keras_compute_fans((*field, 1, last))
