import math

import pytest
import torch

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


def test_receptive_field_multiplies_both_fans():
    fan_in, fan_out = compute_fans((2, 3, 4, 5, 6))
    assert (fan_in, fan_out) == (5 * 24, 6 * 24)
    assert math.prod((2, 3, 4)) == 24
