"""Shapeset-3x2 synthesis: determinism, classes, value range, what the pixels hold."""

import numpy as np

from experiments.data import shapeset


def test_deterministic_in_seed():
    x1, y1 = shapeset.generate(64, seed=3)
    x2, y2 = shapeset.generate(64, seed=3)
    x3, _ = shapeset.generate(64, seed=4)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(x1, x3)


def test_shapes_dtypes_and_range():
    x, y = shapeset.generate(300, seed=0)
    assert x.shape == (300, 32, 32, 1) and x.dtype == np.float32
    assert y.shape == (300,) and y.dtype == np.int32
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert set(np.unique(y)) == set(range(9)) and len(shapeset.CLASSES) == 9


def test_two_greys_per_image_and_swapped_half_the_time():
    x, _ = shapeset.generate(400, seed=1)
    grey = (x[..., 0] + 1) / 2  # back to [0, 1]
    for image in grey[:20]:
        assert len(np.unique(image)) == 2
    # The object is the minority of pixels; its grey is light unless swapped.
    object_light = [
        values[np.argmin(counts)] > values[np.argmax(counts)]
        for values, counts in (np.unique(image, return_counts=True) for image in grey)
    ]
    assert 0.35 < np.mean(object_light) < 0.65


def test_object_areas_are_within_the_specified_sizes():
    x, y = shapeset.generate(500, seed=2)
    grey = x[..., 0]
    background = np.array(
        [
            values[np.argmax(counts)]
            for values, counts in (np.unique(g, return_counts=True) for g in grey)
        ]
    )
    area = (grey != background[:, None, None]).sum(axis=(1, 2))
    single = np.isin(y, [0, 1, 2])
    # A triangle of 0.2 x 0.2 x 32 covers about 10 pixels; an 0.8 x 0.8 ellipse ~ 515.
    assert area.min() >= 5 and area[single].max() <= 0.8**2 * 32**2 * np.pi / 4 + 40
    # Two objects cover more than one on average.
    assert area[~single].mean() > area[single].mean()


def test_empty_request():
    x, y = shapeset.generate(0, seed=0)
    assert x.shape == (0, 32, 32, 1) and y.shape == (0,)


def test_not_prefix_stable():
    # Labels come first for all images, so a smaller count is a different dataset:
    # experiments.data.datasets caches each (count, seed) on its own rather than slicing.
    x_large, y_large = shapeset.generate(100, seed=5)
    x_small, y_small = shapeset.generate(50, seed=5)
    np.testing.assert_array_equal(y_large[:50], y_small)
    assert not np.array_equal(x_large[:50], x_small)
