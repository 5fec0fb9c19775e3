"""Shapeset-3x2, the synthetic image task of Glorot & Bengio (2010), synthesized with NumPy.

Each 32x32 grey image holds one or two objects among a triangle, a parallelogram
and an ellipse, so there are 9 classes (`CLASSES`): T, P, E, TP, PE, TE, TT, PP, EE.
Every object gets a random rotation, a per-axis size U[0.2, 0.8] x 32 and a
position that keeps it inside the image; a second object overlaps the first by at
most 50% (of the smaller object's area). Foreground grey is U[0.55, 1] and
background grey U[0, 0.45], swapped with probability 0.5; pixels are mapped from
[0, 1] to [-1, 1].

The generator is vectorised: objects are rasterised by mapping the pixel grid
into each object's own frame and testing a canonical shape there, so 10,000
images take about half a second on one core. Output is a pure function of `(count, seed)`,
but not prefix-stable: the first k of `generate(n, seed)` differ from `generate(k, seed)`
(labels are drawn for all n images before any pixel), so each count is its own dataset.
`experiments.data.datasets` caches the arrays on disk under `VERSION`.
"""

from __future__ import annotations

import numpy as np

# Bump whenever a change alters what `generate` returns for some (count, seed): it is
# part of the names of cached arrays (experiments.data.datasets), so stale caches are ignored.
VERSION = 1
SIZE = 32
CLASSES = ("T", "P", "E", "TP", "PE", "TE", "TT", "PP", "EE")
_SHAPE_INDEX = {"T": 0, "P": 1, "E": 2}
# Shape indices of the first and second object of each class (-1: no second object).
_FIRST = np.array([_SHAPE_INDEX[name[0]] for name in CLASSES])
_SECOND = np.array([_SHAPE_INDEX[name[1]] if len(name) == 2 else -1 for name in CLASSES])
_MAX_OVERLAP = 0.5
_CHUNK = 2048  # images rasterised at once: bounds memory to ~100 MB of float64 grids.

# Pixel centres, shared by every rasterisation.
_COORDS = np.arange(SIZE, dtype=np.float64) + 0.5
_GRID_Y, _GRID_X = np.meshgrid(_COORDS, _COORDS, indexing="ij")


def _sample_objects(rng: np.random.Generator, count: int) -> dict[str, np.ndarray]:
    """Draws rotation, per-axis size and a centre that keeps the object inside the image."""
    # A full turn: the triangle, unlike the ellipse and parallelogram, has no
    # half-turn symmetry.
    angle = rng.uniform(0.0, 2.0 * np.pi, count)
    size_x, size_y = rng.uniform(0.2, 0.8, (2, count)) * SIZE
    # Half extent of the rotated bounding box along the image axes.
    cos, sin = np.abs(np.cos(angle)), np.abs(np.sin(angle))
    half_x = np.minimum((cos * size_x + sin * size_y) / 2, SIZE / 2)
    half_y = np.minimum((sin * size_x + cos * size_y) / 2, SIZE / 2)
    centre_x = rng.uniform(half_x, SIZE - half_x)
    centre_y = rng.uniform(half_y, SIZE - half_y)
    return {
        "angle": angle,
        "size_x": size_x,
        "size_y": size_y,
        "centre_x": centre_x,
        "centre_y": centre_y,
    }


def _rasterise(shape: np.ndarray, objects: dict[str, np.ndarray]) -> np.ndarray:
    """Boolean masks [n, 32, 32] of one object per image, `shape` indexing T, P, E."""
    angle = objects["angle"][:, None, None]
    dx = _GRID_X - objects["centre_x"][:, None, None]
    dy = _GRID_Y - objects["centre_y"][:, None, None]
    # Rotate the grid by -angle and scale so the object spans [-1, 1] on both axes.
    u = (np.cos(angle) * dx + np.sin(angle) * dy) / (objects["size_x"][:, None, None] / 2)
    v = (-np.sin(angle) * dx + np.cos(angle) * dy) / (objects["size_y"][:, None, None] / 2)
    triangle = (v >= -1) & (v <= 1 - 2 * np.abs(u))  # apex at (0, 1), base at v = -1
    parallelogram = (np.abs(v) <= 1) & (np.abs(u - 0.5 * v) <= 0.5)  # sheared square
    ellipse = u**2 + v**2 <= 1
    return np.choose(shape[:, None, None], [triangle, parallelogram, ellipse])


def _second_masks(rng: np.random.Generator, shape: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Masks of second objects, redrawn until each overlaps the first by at most 50%."""
    masks = np.zeros_like(first)
    pending = np.arange(len(shape))
    while len(pending):
        candidate = _rasterise(shape[pending], _sample_objects(rng, len(pending)))
        overlap = (candidate & first[pending]).sum(axis=(1, 2))
        smaller = np.minimum(candidate.sum(axis=(1, 2)), first[pending].sum(axis=(1, 2)))
        accepted = overlap <= _MAX_OVERLAP * np.maximum(smaller, 1)
        masks[pending[accepted]] = candidate[accepted]
        pending = pending[~accepted]
    return masks


def _images(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    count = len(labels)
    mask = _rasterise(_FIRST[labels], _sample_objects(rng, count))
    two = _SECOND[labels] >= 0
    if two.any():
        mask[two] |= _second_masks(rng, _SECOND[labels][two], mask[two])
    foreground = rng.uniform(0.55, 1.0, count)
    background = rng.uniform(0.0, 0.45, count)
    swap = rng.random(count) < 0.5
    foreground, background = (
        np.where(swap, background, foreground),
        np.where(swap, foreground, background),
    )
    grey = np.where(mask, foreground[:, None, None], background[:, None, None])
    return (2.0 * grey - 1.0).astype(np.float32)


def generate(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Synthesizes `count` Shapeset-3x2 examples, deterministically in `seed`.

    Returns:
        `(x, y)`: `x` float32 of shape `(count, 32, 32, 1)` in [-1, 1] and `y`
        int32 labels in `range(9)` indexing `CLASSES`, drawn uniformly.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}.")
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASSES), count).astype(np.int32)
    chunks = [_images(rng, labels[i : i + _CHUNK]) for i in range(0, count, _CHUNK)]
    x = np.concatenate(chunks) if chunks else np.zeros((0, SIZE, SIZE), np.float32)
    return x[..., None], labels
