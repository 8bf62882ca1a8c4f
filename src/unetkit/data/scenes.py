"""Large annotated scenes of touching nuclei, 2-D or 3-D, and data sets cut from them the way real ones are made.

A second generator, written apart from `unetkit.data.synthetic`'s `cells` (on which the mask-reading rules and
the instance post-processing were first tuned), so that rules can be checked on data they were not tuned on.
What differs, besides the code: nuclei are irregular star-convex blobs (an ellipse or ellipsoid whose outline
is bent by a smooth random field), placed by a clustered point process whose density varies over the scene
(crowded clumps beside empty regions), in fluorescence-like images (chromatin texture, an anisotropic point
spread function, out-of-focus haze, uneven illumination, Poisson noise over a camera offset, uint16 counts);
and ids are what an annotation tool gives a whole slide: unique over the scene, in no spatial order, with gaps.

Data sets are then made as people make them from such a scene (`tiles`): cut into tiles that keep the scene's
ids, so that each tile holds an arbitrary subset of the ids (sparse tiles of 0-3 nuclei beside crowded ones),
some tiles held out for testing. Everything depends only on the arguments and `seed`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["NucleiScene", "nuclei_scene", "scene_tiles"]


@dataclass(frozen=True)
class NucleiScene:
    """A generated scene.

    Attributes:
        image: uint16 counts, `(H, W)` or `(D, H, W)`.
        labels: int32 instance ids (0 = background), same shape; ids unique over the scene, unordered, with gaps.
        spacing: the physical size of a pixel / voxel per axis (micrometres).
    """

    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, ...]


def _density(rng: np.random.Generator, shape: tuple[int, ...], scale: float) -> np.ndarray:
    """A smooth field in [0, 1] with empty and crowded regions (a thresholded low-frequency noise)."""
    field = ndimage.gaussian_filter(rng.normal(size=shape), [scale] * len(shape), mode="wrap")
    field = (field - field.mean()) / max(float(field.std()), 1e-12)
    return np.clip(0.5 + 0.6 * field, 0.0, 1.0)


def _centres(
    rng: np.random.Generator, shape: tuple[int, ...], spacing: np.ndarray, count: int, radius: float
) -> np.ndarray:
    """`count` centres (voxel coordinates) of a Thomas-like cluster process thinned by a density field."""
    extent = np.asarray(shape) * spacing
    cells = tuple(max(4, int(n // 16)) for n in shape)
    density = _density(rng, cells, max(1.5, max(cells) / 8))  # regions about a tile wide: empty and crowded tiles
    placed = np.empty((0, len(shape)))  # micrometres
    tries = 0
    while len(placed) < count and tries < 50 * count:
        tries += 1
        parent = rng.uniform(0, extent)
        cell = tuple(min(int(p / e * n), n - 1) for p, e, n in zip(parent, extent, density.shape, strict=True))
        if rng.random() > density[cell]:
            continue  # sparse where the density is low
        for _ in range(int(rng.integers(1, 7))):  # a clump: children close enough to touch
            child = parent + rng.normal(0, 1.6 * radius, parent.size)
            near = np.sum((placed - child) ** 2, axis=1).min(initial=np.inf) if len(placed) else np.inf
            if np.all((child >= 0) & (child < extent)) and near > (1.3 * radius) ** 2:  # nuclei press, not stack
                placed = np.vstack([placed, child])
    return placed[:count] / spacing


def _rotation(rng: np.random.Generator, dims: int) -> np.ndarray:
    """A random rotation matrix (in the image plane only for 3-D: nuclei lie flat on the slide)."""
    angle = rng.uniform(0, math.pi)
    c, s = math.cos(angle), math.sin(angle)
    plane = np.array([[c, -s], [s, c]])
    if dims == 2:
        return plane
    out = np.eye(3)
    out[1:, 1:] = plane
    return out


def nuclei_scene(
    shape: tuple[int, ...],
    *,
    seed: int = 0,
    spacing: tuple[float, ...] | None = None,
    radius: tuple[float, float] = (3.5, 6.5),
    crowding: float = 0.8,
) -> NucleiScene:
    """A scene of touching fluorescent nuclei with instance ids, 2-D `(H, W)` or 3-D `(D, H, W)`.

    Args:
        shape: the scene's size in pixels (voxels).
        seed: everything is drawn from `numpy.random.default_rng(seed)`.
        spacing: micrometres per pixel per axis (default 0.5 in-plane, 1.5 along Z: anisotropic voxels).
        radius: range of the nuclei's mean radius in micrometres.
        crowding: scales the number of nuclei (1: about a third of the area covered where the density is high).

    Raises:
        ValueError: a shape that is not 2-D or 3-D, or a side below 8.
    """
    dims = len(shape)
    if dims not in (2, 3) or min(shape) < 8:
        raise ValueError(f"`shape` must be 2 or 3 sides >= 8, got {shape}")
    step = np.asarray(spacing if spacing is not None else ((1.5,) if dims == 3 else ()) + (0.5, 0.5), float)
    rng = np.random.default_rng(seed)
    mean_radius = float(np.mean(radius))
    volume = float(np.prod(np.asarray(shape) * step))
    unit = math.pi * mean_radius**2 if dims == 2 else 4 / 3 * math.pi * mean_radius**3
    count = max(1, int(crowding * 0.45 * volume / unit))
    centres = _centres(rng, shape, step, count, mean_radius)
    best = np.full(shape, np.inf, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.int32)
    for k, centre in enumerate(centres, start=1):
        axes = rng.uniform(*radius) * rng.uniform(0.7, 1.15, dims)  # semi-axes in micrometres
        if dims == 3:
            axes[0] *= rng.uniform(0.6, 0.9)  # flatter along Z
        rotation = _rotation(rng, dims)
        reach = np.ceil(1.4 * axes.max() / step).astype(int) + 1
        lo = np.maximum(np.floor(centre).astype(int) - reach, 0)
        hi = np.minimum(np.floor(centre).astype(int) + reach + 1, shape)
        if np.any(hi <= lo):
            continue
        grids = np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi, strict=True)], indexing="ij")
        offset = np.stack([(g - c) * s for g, c, s in zip(grids, centre, step, strict=True)], axis=-1)
        local = offset @ rotation  # coordinates in the nucleus' frame, micrometres
        distance = np.sqrt(np.sum((local / axes) ** 2, axis=-1))  # 1 on the ellipse
        bend = ndimage.gaussian_filter(rng.normal(size=distance.shape), max(1.0, float(reach.mean()) / 2))
        bend /= max(float(np.abs(bend).max()), 1e-12)
        distance = distance * (1.0 + 0.18 * bend)  # an irregular, still star-convex-ish outline
        window = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        closer = (distance <= 1.0) & (distance < best[window])
        best[window][closer] = distance[closer]
        labels[window][closer] = k
    labels = _one_blob_each(labels)
    ids = np.unique(labels)
    ids = ids[ids > 0]
    # an annotation tool's ids: unique over the slide, in no spatial order, with gaps
    codes = np.zeros(int(labels.max()) + 1, dtype=np.int32)
    codes[ids] = rng.choice(np.arange(1, 3 * ids.size + 2), ids.size, replace=False)
    labels = codes[labels]
    return NucleiScene(_fluorescence(rng, labels, best, step), labels, tuple(float(s) for s in step))


def _one_blob_each(labels: np.ndarray) -> np.ndarray:
    """Each id kept as its largest connected blob (neighbours can cut a nucleus in two); the rest is background."""
    from skimage.measure import label

    blobs = label(labels, background=0, connectivity=labels.ndim)
    if blobs.max() == 0:
        return labels
    owner = np.zeros(int(blobs.max()) + 1, dtype=np.int64)
    owner[blobs.ravel()] = labels.ravel()
    sizes = np.bincount(blobs.ravel())
    keep = np.zeros(owner.size, dtype=bool)
    order = np.lexsort((-sizes[1:], owner[1:])) + 1  # by id, largest blob first
    first = np.concatenate([[True], owner[order][1:] != owner[order][:-1]])
    keep[order[first]] = True
    return np.where(keep[blobs], labels, 0).astype(np.int32)


def _fluorescence(rng: np.random.Generator, labels: np.ndarray, rim: np.ndarray, step: np.ndarray) -> np.ndarray:
    """uint16 counts of a widefield fluorescence image of the nuclei `labels`."""
    dims = labels.ndim
    ids = np.unique(labels)
    brightness = np.zeros(int(ids.max()) + 1, dtype=np.float32)
    brightness[ids[ids > 0]] = rng.lognormal(0.0, 0.35, int(np.count_nonzero(ids)))
    inside = labels > 0
    texture = ndimage.gaussian_filter(rng.normal(size=labels.shape), 1.2 / step * step.min())
    texture /= max(float(texture.std()), 1e-12)
    signal = brightness[labels] * (1.0 + 0.25 * texture) * (1.0 - 0.3 * np.where(inside, rim, 1.0) ** 4)
    signal = np.where(inside, signal, 0.0)
    psf = 0.45 / step  # a point spread function of 0.45 um, wider in pixels along a finely sampled axis
    if dims == 3:
        psf[0] = 1.2 / step[0]  # the axial PSF is longer
    image = ndimage.gaussian_filter(signal, psf)
    image += 0.15 * ndimage.gaussian_filter(signal, 6 * psf)  # out-of-focus haze
    illumination = _density(rng, labels.shape, max(labels.shape) / 4)
    image = image * (0.7 + 0.6 * illumination) + 0.03
    gain = rng.uniform(150, 400)
    counts = rng.poisson(np.clip(image, 0, None) * gain) + 100  # Poisson noise over a camera offset
    return np.clip(counts, 0, np.iinfo(np.uint16).max).astype(np.uint16)


def scene_tiles(scene: NucleiScene, tile: int | tuple[int, ...]) -> list[tuple[tuple[int, ...], tuple[slice, ...]]]:
    """The grid of tiles of `tile` pixels (per axis, or the same on every axis) covering the scene: each tile's grid
    position and its window; partial tiles at the far borders are dropped."""
    sides = (tile,) * scene.labels.ndim if isinstance(tile, int) else tuple(tile)
    counts = [n // t for n, t in zip(scene.labels.shape, sides, strict=True)]
    tiles = []
    for index in np.ndindex(*counts):
        tiles.append((index, tuple(slice(i * t, (i + 1) * t) for i, t in zip(index, sides, strict=True))))
    return tiles
