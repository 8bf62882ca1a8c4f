"""Synthetic segmentation sets for tests, demos and quick experiments, made in memory.

Three kinds, each hard in its own way:

- `cells`: touching and overlapping bright ellipses with instance labels, in the spirit of the
  ISBI cell-tracking data of the U-Net paper (Ronneberger et al. 2015, arXiv:1505.04597). No
  border is drawn between touching cells, so separating them is the hard part.
- `vessels`: dark branching vessel trees in a circular field of view, like a retinal fundus
  photograph (DRIVE); thin structures and a field-of-view mask.
- `shapes`: one logo-like silhouette (with holes and islands) under a random affine transform, on
  striped, checkered or smooth colour backgrounds.

Every image depends only on `(seed, index, kind)` through `np.random.default_rng([seed, i, kind])`,
so a set of `n` images is a prefix of a larger set made with the same seed.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage import measure

from unetkit._options import look_up_option
from unetkit.data.types import MaskInfo, SegmentationSet

__all__ = ["SYNTHETIC_NAMES", "make_synthetic"]

SYNTHETIC_NAMES = ("cells", "vessels", "shapes")
MIN_SIZE = 32
# `_CellsStyle.count` and `_VesselsStyle.root_width` are for images of this side; they scale with it
REFERENCE_SIZE = 128


@dataclass(frozen=True)
class _CellsStyle:
    """Parameters of the `cells` generator (lengths in pixels, intensities in [0, 1]).

    Attributes:
        count: range of the number of cells in a `REFERENCE_SIZE`^2 image.
        radius: range of the semi-major axis.
        aspect: range of minor / major axis.
        touch_prob: chance that a cell is placed against an existing one rather than anywhere.
        touch_gap: range of the centre distance over the sum of the two minor radii (< 1: overlap).
        background: background intensity before illumination and noise.
        brightness: range of the per-cell intensity.
        min_area: a cell squeezed below this many pixels by its neighbours is merged into one of them.
        shading: relative darkening from a cell's centre to its rim.
        illumination: amplitude of the multiplicative low-frequency illumination field.
        blur: Gaussian blur sigma.
        noise: Gaussian noise sigma.
    """

    count: tuple[int, int] = (8, 25)
    radius: tuple[float, float] = (6.0, 14.0)
    aspect: tuple[float, float] = (0.55, 1.0)
    touch_prob: float = 0.6
    touch_gap: tuple[float, float] = (0.7, 0.98)
    background: float = 0.2
    brightness: tuple[float, float] = (0.6, 0.9)
    min_area: int = 12
    shading: float = 0.12
    illumination: float = 0.25
    blur: float = 1.0
    noise: float = 0.05


@dataclass(frozen=True)
class _VesselsStyle:
    """Parameters of the `vessels` generator (lengths in pixels unless said otherwise).

    Attributes:
        fov_radius: field-of-view radius as a fraction of the image side.
        roots: range of the number of trees leaving the optic disc.
        root_width: range of the width of a tree's first segment in a `REFERENCE_SIZE`^2 image; it
            scales with the square root of the image side.
        min_width: segments thinner than this are not grown.
        segment: range of a segment's length, as a fraction of the field-of-view radius.
        turn: standard deviation of the heading change per pixel step (radians).
        bend: standard deviation of a segment's constant curvature (radians per pixel).
        fork_angle: range of the angle between a fork's children and the parent's heading.
        fork_widths: width factors of the two children of a fork.
        side_rate: expected side branches per pixel of segment length.
        side_width: width factor of a side branch.
        side_angle: range of the angle between a side branch and its parent (radians).
        max_segments: cap on the segments of one image.
        background: range of the background intensity inside the field of view.
        texture: amplitude of the smooth background texture.
        disc: brightness added at the optic disc (Gaussian of sigma `disc_sigma` * side).
        disc_sigma: optic disc size as a fraction of the image side.
        disc_offset: range of the optic disc's horizontal distance from the centre, as a fraction of
            the field-of-view radius (it sits left or right at random).
        contrast: range of the relative darkening on a vessel's centre line.
        illumination: amplitude of the multiplicative low-frequency illumination field.
        outside: intensity outside the field of view.
        blur: Gaussian blur sigma.
        noise: Gaussian noise sigma.
    """

    fov_radius: float = 0.45
    roots: tuple[int, int] = (4, 6)
    root_width: tuple[float, float] = (2.6, 3.6)
    min_width: float = 1.0
    segment: tuple[float, float] = (0.2, 0.45)
    turn: float = 0.04
    bend: float = 0.008
    fork_angle: tuple[float, float] = (0.3, 0.7)
    fork_widths: tuple[float, float] = (0.8, 0.6)
    side_rate: float = 0.015
    side_width: float = 0.45
    side_angle: tuple[float, float] = (0.6, 1.2)
    max_segments: int = 200
    background: tuple[float, float] = (0.5, 0.65)
    texture: float = 0.05
    disc: float = 0.3
    disc_sigma: float = 0.05
    disc_offset: tuple[float, float] = (0.2, 0.35)
    contrast: tuple[float, float] = (0.35, 0.55)
    illumination: float = 0.25
    outside: float = 0.03
    blur: float = 0.5
    noise: float = 0.03


@dataclass(frozen=True)
class _ShapesStyle:
    """Parameters of the `shapes` generator.

    Attributes:
        scale: range of the logo's extent as a fraction of the image side.
        shear: range of the shear factor.
        margin: the centre stays this many logo extents away from the image border.
        period: range of the stripe / checker period as a fraction of the image side.
        hue_gap: range of the hue difference between the logo and the background.
        hue_jitter: largest hue difference between the two background colours.
        saturation: range of the background and logo saturation.
        value: range of the background and logo value (HSV).
        texture: amplitude of the smooth colour variations of backgrounds and logo.
        contrast: range of the final contrast factor.
        brightness: range of the final brightness offset.
        blur: Gaussian blur sigma.
        noise: Gaussian noise sigma.
    """

    scale: tuple[float, float] = (0.25, 0.6)
    shear: tuple[float, float] = (-0.2, 0.2)
    margin: float = 0.35
    period: tuple[float, float] = (0.05, 0.2)
    hue_gap: tuple[float, float] = (0.25, 0.75)
    hue_jitter: float = 0.06
    saturation: tuple[float, float] = (0.45, 0.95)
    value: tuple[float, float] = (0.35, 0.95)
    texture: float = 0.12
    contrast: tuple[float, float] = (0.75, 1.25)
    brightness: tuple[float, float] = (-0.1, 0.1)
    blur: float = 0.6
    noise: float = 0.02


_CELLS = _CellsStyle()
_VESSELS = _VesselsStyle()
_SHAPES = _ShapesStyle()

# the logo, in units where it spans about [-1, 1]^2 (y down): ellipses (sign, cx, cy, rx, ry, angle)
# applied in order, +1 adds and -1 cuts. A gopher-like body with ears, feet and an arm; two eye holes
# with pupils looking right, so the logo has holes, islands and no mirror symmetry.
_LOGO = (
    (+1, 0.0, 0.08, 0.6, 0.82, 0.0),  # body
    (+1, -0.5, -0.66, 0.18, 0.16, 0.0),  # ears
    (+1, 0.5, -0.66, 0.18, 0.16, 0.0),
    (+1, -0.38, 0.9, 0.24, 0.1, 0.2),  # feet
    (+1, 0.38, 0.9, 0.24, 0.1, -0.2),
    (+1, 0.68, 0.15, 0.3, 0.09, -0.6),  # arm
    (-1, -0.26, -0.34, 0.18, 0.18, 0.0),  # eyes
    (-1, 0.26, -0.34, 0.18, 0.18, 0.0),
    (+1, -0.18, -0.32, 0.07, 0.07, 0.0),  # pupils
    (+1, 0.34, -0.32, 0.07, 0.07, 0.0),
    (-1, 0.0, 0.05, 0.16, 0.07, 0.0),  # mouth
)


def _smooth_field(rng: np.random.Generator, size: int, grid: int) -> np.ndarray:
    """A low-frequency random field scaled to peak at 1 in magnitude: `(size, size)` float64.

    Random values on a `grid` x `grid` lattice spread over the image, interpolated by normalised
    Gaussian weights of the lattice spacing (separable, so two small matrix products).
    """
    coarse = rng.uniform(-1.0, 1.0, (grid, grid))
    nodes = np.linspace(0.0, size - 1.0, grid)
    spacing = (size - 1.0) / max(grid - 1, 1)
    weights = np.exp(-0.5 * ((np.arange(size)[:, None] - nodes[None]) / spacing) ** 2)  # (size, grid)
    weights /= weights.sum(axis=1, keepdims=True)
    field = weights @ coarse @ weights.T
    return np.asarray(field / max(float(np.abs(field).max()), 1e-12))


def _finish(image: np.ndarray, rng: np.random.Generator, blur: float, noise: float) -> np.ndarray:
    """Blur the last two axes, add Gaussian noise, clip to [0, 1]: float32, same shape."""
    sigma = (0.0,) * (image.ndim - 2) + (blur, blur)
    image = ndimage.gaussian_filter(image, sigma) + rng.normal(0.0, noise, image.shape)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def _merge_fragments(labels: np.ndarray, min_area: int) -> np.ndarray:
    """Give cut-off pieces of a cell, and cells squeezed below `min_area`, to a touching cell.

    Returns int32 labels `(H, W)` numbered 1..K without gaps; every instance is 4-connected unless
    it touches no other cell.
    """
    pieces = measure.label(labels, background=0, connectivity=1)
    sizes = np.bincount(pieces.ravel())
    owner = np.zeros(sizes.size, dtype=np.int64)
    owner[pieces.ravel()] = labels.ravel()
    by_size = np.argsort(-sizes[1:], kind="stable") + 1
    largest = np.zeros(sizes.size, dtype=bool)
    largest[by_size[np.unique(owner[by_size], return_index=True)[1]]] = True
    touches = np.zeros(sizes.size, dtype=bool)  # 4-neighbour pixel pairs from two different pieces
    for a, b in ((pieces[:, :-1], pieces[:, 1:]), (pieces[:-1], pieces[1:])):
        pair = (a > 0) & (b > 0) & (a != b)
        touches[a[pair]] = touches[b[pair]] = True
    minor = touches & (~largest | (sizes < min_area))
    minor[0] = False
    kept = np.where(minor[pieces], 0, labels)
    if minor.any() and kept.any():
        nearest = ndimage.distance_transform_edt(kept == 0, return_distances=False, return_indices=True)
        kept = np.where(labels > 0, kept[tuple(nearest)], 0)
    present = np.unique(kept[kept > 0])
    relabel = np.zeros(int(labels.max()) + 1, dtype=np.int32)
    relabel[present] = np.arange(1, present.size + 1, dtype=np.int32)
    return np.asarray(relabel[kept])


def _cells(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One `cells` image `(1, H, W)` float32 and its int32 instance labels `(H, W)`."""
    style = _CELLS
    area = (size / REFERENCE_SIZE) ** 2
    count = max(1, round(rng.integers(style.count[0], style.count[1] + 1) * area))
    major = rng.uniform(*style.radius, count)
    minor = major * rng.uniform(*style.aspect, count)
    angle = rng.uniform(0.0, math.pi, count)
    centres = rng.uniform(0.0, size - 1.0, (count, 2))  # (x, y)
    against = rng.integers(0, np.arange(count) + 1)  # an earlier cell (or itself for the first)
    touching = rng.random(count) < style.touch_prob
    direction = rng.uniform(0.0, 2.0 * math.pi, count)
    gap = rng.uniform(*style.touch_gap, count)
    for k in range(1, count):
        if touching[k]:  # centre distance below the sum of the minor radii: the two ellipses overlap
            j = min(int(against[k]), k - 1)
            step = (minor[j] + minor[k]) * gap[k]
            offset = step * np.array([math.cos(direction[k]), math.sin(direction[k])])
            centres[k] = np.clip(centres[j] + offset, 0.0, size - 1.0)

    # each pixel goes to the cell with the smallest normalised ellipse distance: overlaps are split
    best = np.full((size, size), np.inf)
    labels = np.zeros((size, size), dtype=np.int32)
    for k in range(count):
        (cx, cy), reach = centres[k], major[k] + 1.0
        y0, y1 = max(int(cy - reach), 0), min(int(cy + reach) + 2, size)
        x0, x1 = max(int(cx - reach), 0), min(int(cx + reach) + 2, size)
        yy, xx = np.ogrid[y0:y1, x0:x1]
        cos, sin = math.cos(angle[k]), math.sin(angle[k])
        u, v = (xx - cx) * cos + (yy - cy) * sin, (yy - cy) * cos - (xx - cx) * sin
        dist = (u / major[k]) ** 2 + (v / minor[k]) ** 2  # <= 1 inside the ellipse
        closer = (dist <= 1.0) & (dist < best[y0:y1, x0:x1])
        best[y0:y1, x0:x1][closer] = dist[closer]
        labels[y0:y1, x0:x1][closer] = k + 1
    labels = _merge_fragments(labels, style.min_area)
    count = int(labels.max())

    brightness = np.concatenate([[style.background], rng.uniform(*style.brightness, count)])
    rim = np.sqrt(np.where(labels > 0, best, 0.0))  # 0 at a cell's centre, 1 on its rim
    image = brightness[labels] * (1.0 - style.shading * rim)
    image *= 1.0 + style.illumination * _smooth_field(rng, size, 3)
    return _finish(image[None], rng, style.blur, style.noise), labels


def _vessel_tree(
    rng: np.random.Generator, size: int, root: np.ndarray, radius: float
) -> list[tuple[np.ndarray, float]]:
    """Centre lines `(N, 2)` (x, y) and widths of the segments of the vessel trees leaving `root`."""
    style = _VESSELS
    centre = (size - 1) / 2.0
    n_roots = int(rng.integers(style.roots[0], style.roots[1] + 1))
    spread = (np.arange(n_roots) + rng.uniform(-0.2, 0.2, n_roots)) / n_roots  # roughly even directions
    headings = rng.uniform(0.0, 2.0 * math.pi) + 2.0 * math.pi * spread
    widths = rng.uniform(*style.root_width, n_roots) * math.sqrt(size / REFERENCE_SIZE)
    stack = [(root, float(h), float(w)) for h, w in zip(headings, widths, strict=True)]
    segments: list[tuple[np.ndarray, float]] = []
    while stack and len(segments) < style.max_segments:
        start, heading, width = stack.pop()
        steps = max(2, int(rng.uniform(*style.segment) * radius))
        turn = rng.normal(0.0, style.bend) + rng.normal(0.0, style.turn, steps)
        heads = heading + np.cumsum(turn)
        points = start + np.cumsum(np.stack([np.cos(heads), np.sin(heads)], axis=1), axis=0)
        outside = np.hypot(points[:, 0] - centre, points[:, 1] - centre) > radius
        end = int(np.argmax(outside)) if outside.any() else steps
        if end == 0:
            continue
        segments.append((points[:end], width))
        n_side = rng.poisson(style.side_rate * end)
        if width * style.side_width >= style.min_width:  # thin side branches leave at random points
            for at in rng.integers(0, end, n_side):
                side = heads[at] + rng.choice((-1.0, 1.0)) * rng.uniform(*style.side_angle)
                stack.append((points[at], side, width * style.side_width))
        if end == steps:  # the segment stayed in the field of view: it forks
            spread = rng.uniform(*style.fork_angle, 2) * np.array([1.0, -1.0]) * rng.choice((-1.0, 1.0))
            for factor, angle in zip(style.fork_widths, spread, strict=True):
                if width * factor >= style.min_width:
                    stack.append((points[-1], heads[-1] + angle, width * factor))
    return segments


def _vessels(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One `vessels` image `(1, H, W)` float32, its bool vessel mask and its bool field of view."""
    style = _VESSELS
    radius = style.fov_radius * size
    centre = (size - 1) / 2.0
    yy, xx = np.mgrid[0:size, 0:size]
    fov = np.hypot(xx - centre, yy - centre) <= radius
    side = rng.choice((-1.0, 1.0))
    root = np.array([centre + side * rng.uniform(*style.disc_offset) * radius, centre])

    # rasterise each width (rounded to half pixels) on its own: distance to the centre lines, soft edges
    lines: dict[float, np.ndarray] = {}
    for points, width in _vessel_tree(rng, size, root, radius):
        half = round(width) / 2.0
        mask = lines.setdefault(half, np.zeros((size, size), dtype=bool))
        cols, rows = np.clip(np.rint(points).astype(np.intp), 0, size - 1).T
        mask[rows, cols] = True
    darkness = np.zeros((size, size))
    for half, mask in lines.items():
        coverage = np.clip(half + 0.5 - ndimage.distance_transform_edt(~mask), 0.0, 1.0)
        darkness = np.maximum(darkness, coverage)
    vessels = (darkness >= 0.5) & fov

    disc_sigma = style.disc_sigma * size
    disc = np.exp(-((xx - root[0]) ** 2 + (yy - root[1]) ** 2) / (2.0 * disc_sigma**2))
    background = rng.uniform(*style.background) + style.texture * _smooth_field(rng, size, 8) + style.disc * disc
    image = background * (1.0 - rng.uniform(*style.contrast) * darkness)
    image *= 1.0 + style.illumination * _smooth_field(rng, size, 3)
    image = np.where(fov, image, style.outside)
    return _finish(image[None], rng, style.blur, style.noise), vessels, fov


def _logo_mask(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The logo at logo coordinates `(u, v)` (any equal shapes): bool, True inside."""
    inside = np.zeros(u.shape, dtype=bool)
    for sign, cx, cy, rx, ry, angle in _LOGO:
        cos, sin = math.cos(angle), math.sin(angle)
        a, b = (u - cx) * cos + (v - cy) * sin, (v - cy) * cos - (u - cx) * sin
        ellipse = (a / rx) ** 2 + (b / ry) ** 2 <= 1.0
        inside = inside | ellipse if sign > 0 else inside & ~ellipse
    return inside


def _hsv(hue: float, saturation: float, value: float) -> np.ndarray:
    """An RGB colour `(3, 1, 1)` from HSV components in [0, 1] (hue wraps)."""
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, saturation, value)).reshape(3, 1, 1)


def _shapes(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One `shapes` image `(3, H, W)` float32 and its bool logo mask `(H, W)`."""
    style = _SHAPES
    # the affine: pixel = centre + scale * rotation @ shear @ logo; rasterised through its inverse
    extent = rng.uniform(*style.scale) * size
    theta = rng.uniform(0.0, 2.0 * math.pi)
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    shear = np.array([[1.0, rng.uniform(*style.shear)], [rng.uniform(*style.shear), 1.0]])
    inverse = np.linalg.inv(extent / 2.0 * rotation @ shear)
    low, high = style.margin * extent, size - 1 - style.margin * extent
    centre = rng.uniform(min(low, high), max(low, high), 2)
    yy, xx = np.mgrid[0:size, 0:size]
    dx, dy = xx - centre[0], yy - centre[1]
    mask = _logo_mask(inverse[0, 0] * dx + inverse[0, 1] * dy, inverse[1, 0] * dx + inverse[1, 1] * dy)

    hue = rng.uniform()
    first = _hsv(hue, rng.uniform(*style.saturation), rng.uniform(*style.value))
    second = _hsv(
        hue + rng.uniform(-style.hue_jitter, style.hue_jitter),
        rng.uniform(*style.saturation),
        rng.uniform(*style.value),
    )
    phi = rng.uniform(0.0, math.pi)
    along, across = xx * math.cos(phi) + yy * math.sin(phi), yy * math.cos(phi) - xx * math.sin(phi)
    period = rng.uniform(*style.period) * size
    pattern = int(rng.integers(3))
    if pattern == 0:  # stripes
        mix = 0.5 + 0.5 * np.sin(2.0 * math.pi * along / period + rng.uniform(0.0, 2.0 * math.pi))
    elif pattern == 1:  # checkerboard
        mix = ((np.floor(along / period) + np.floor(across / period)) % 2).astype(np.float64)
    else:  # smooth colour noise
        mix = 0.5 + 0.5 * _smooth_field(rng, size, 5)
    background = first + (second - first) * mix[None]
    background += style.texture * np.stack([_smooth_field(rng, size, 4) for _ in range(3)])
    logo_colour = _hsv(hue + rng.uniform(*style.hue_gap), rng.uniform(*style.saturation), rng.uniform(*style.value))
    logo = logo_colour * (1.0 + style.texture * _smooth_field(rng, size, 3)[None])
    image = np.where(mask[None], logo, background)
    mean = image.mean()
    image = (image - mean) * rng.uniform(*style.contrast) + mean + rng.uniform(*style.brightness)
    return _finish(image, rng, style.blur, style.noise), mask


def make_synthetic(name: str, n: int, size: int = 128, seed: int = 0) -> tuple[SegmentationSet, MaskInfo]:
    """Make `n` synthetic images of kind `name` with their targets.

    Image `i` depends only on `(name, size, seed, i)`, so `make_synthetic(name, 10, seed=s)` is a
    prefix of `make_synthetic(name, 20, seed=s)`.

    Args:
        name: one of `SYNTHETIC_NAMES`: `"cells"` (1 channel, instance labels in `instances`),
            `"vessels"` (1 channel, field of view in `fov`) or `"shapes"` (3 channels, RGB).
        n: number of images, >= 1.
        size: side of the square images in pixels, >= 32.
        seed: non-negative random seed.

    Returns:
        The set (float32 `(C, size, size)` images in [0, 1], int64 `(size, size)` targets in {0, 1},
        names like `"cells_0007"`) and how its masks map to classes.
    """
    name = look_up_option("name", name, SYNTHETIC_NAMES)
    for arg, value, least in (("n", n, 1), ("size", size, MIN_SIZE), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise ValueError(f"`{arg}` must be an integer >= {least}, got {value!r}")
    from unetkit.data.io import pixel_limit

    if n * size * size > pixel_limit():  # the images live in memory, as decoded ones do
        raise ValueError(
            f"{n} synthetic image(s) of {size}x{size} hold {n * size * size:,} pixels, more than the pixel limit "
            f"{pixel_limit()} (raise it with UNETKIT_MAX_PIXELS)"
        )
    kind = SYNTHETIC_NAMES.index(name)
    images, targets, instances, fovs = [], [], [], []
    for i in range(n):
        rng = np.random.default_rng([int(seed), i, kind])
        if name == "cells":
            image, labels = _cells(rng, int(size))
            instances.append(labels)
            target = labels > 0
        elif name == "vessels":
            image, target, fov = _vessels(rng, int(size))
            fovs.append(fov)
        else:
            image, target = _shapes(rng, int(size))
        images.append(image)
        targets.append(target.astype(np.int64))
    data = SegmentationSet(
        images=images,
        targets=targets,
        names=[f"{name}_{i:04d}" for i in range(n)],
        instances=instances if name == "cells" else None,
        fov=fovs if name == "vessels" else None,
        extra={"synthetic": name, "seed": int(seed)},
    )
    if name == "cells":
        return data, MaskInfo("instances", 2, [0, 1])
    return data, MaskInfo("binary", 2, [0, 255])
