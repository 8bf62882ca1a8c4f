"""Intensity normalisation that does not depend on the dtype or the range a file happens to use, after
nnU-Net (Isensee et al. 2021, Nature Methods 18:203; its `documentation/explanation_normalization.md`):

- `image`: per image (nnU-Net's default `zscore`, with percentile clipping added): clip each channel
  to its own 0.5 and 99.5 percentiles, then subtract the clipped image's median (nnU-Net: its mean; the
  median keeps the background of a sparse tile where a crowded tile has it) and divide by its
  standard deviation. Invariant to any positive affine change of the values, so a uint16 image using
  0..235, the same picture as uint8 and as float32 in [0, 1] are normalised alike.
- `dataset`: one rule for the whole data set (nnU-Net's `CT` scheme): the 0.5 / 99.5 percentiles,
  mean and standard deviation of the foreground pixels of all training images; every image is clipped
  to those percentiles and z-scored with those statistics. For absolute units (Hounsfield units, a
  calibrated instrument), where per-image statistics would throw information away.
- `none`: the raw values.

Values are the file's own units (no division by the dtype's maximum). With `joint` (RGB photos) one set
of statistics serves every channel, so colours keep their relations (nnU-Net's custom-preprocessing
tutorial notes that per-channel z-scoring shifts the colour channels against each other).

`choose_scheme` is the fingerprint's rule (see its docstring). The spec is stored in the checkpoint
(`preprocess`) and applied the same way by training (before augmentation), `predict`, exported models
and validation. Statistics of a large image come from a strided subsample (`MAX_STAT_PIXELS`), the
same pixels whether the image is in memory or read band by band from a file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "CLIP_PERCENTILES",
    "MAX_STAT_PIXELS",
    "NORMALIZATIONS",
    "Normalization",
    "choose_scheme",
    "fit_normalization",
    "stat_stride",
]

NORMALIZATIONS = ("auto", "image", "dataset", "none")
CLIP_PERCENTILES = (0.5, 99.5)
MAX_STAT_PIXELS = 1 << 20  # per-image statistics on a strided subsample above this many pixels
DATASET_SAMPLES = 100_000  # foreground values taken per image for the data set's statistics
STD_FLOOR = 1e-8
# `choose_scheme`: per-image percentiles that vary less than this share of the median range mean absolute units
CONSISTENT_RANGE = 0.2


def stat_stride(height: int, width: int) -> int:
    """The row and column step of the subsample that per-image statistics are computed on."""
    return max(1, math.ceil(math.sqrt(height * width / MAX_STAT_PIXELS)))


def _robust(
    values: np.ndarray, percentiles: tuple[float, float], center: str = "mean"
) -> tuple[float, float, float, float]:
    """`(low, high, centre, std)` of `values` clipped to their percentiles, in float64; the centre is the clipped
    values' mean or median."""
    values = values.astype(np.float64, copy=False).ravel()
    if values.size == 0:
        return 0.0, 0.0, 0.0, 1.0
    low, high = (float(v) for v in np.percentile(values, percentiles))
    clipped = np.clip(values, low, high)
    middle = float(np.median(clipped)) if center == "median" else float(clipped.mean())
    return low, high, middle, max(float(clipped.std()), STD_FLOOR)


@dataclass
class Normalization:
    """How raw intensities become network inputs (see the module docstring).

    Attributes:
        scheme: `image`, `dataset` or `none`.
        joint: one set of statistics for all channels (RGB photos) instead of one per channel.
        percentiles: the clipping percentiles.
        low, high, mean, std: the `dataset` scheme's statistics, one per channel (one when `joint`).
        reason: why the scheme was chosen, in one line.
        center: `image` scheme: what each image is centred on, `median` (what `fit_normalization` chooses: the
            background of most images, however many objects an image holds; a sparse tile centred on its mean
            has its background brighter than the crowded tiles training saw) or `mean` (nnU-Net's z-score, and
            checkpoints written before the choice existed).
    """

    scheme: str = "image"
    joint: bool = False
    percentiles: tuple[float, float] = CLIP_PERCENTILES
    low: list[float] = field(default_factory=list)
    high: list[float] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    reason: str = ""
    center: str = "mean"

    def __post_init__(self) -> None:
        if self.scheme not in NORMALIZATIONS[1:]:
            raise ValueError(f"`scheme` must be one of {', '.join(NORMALIZATIONS[1:])}, got {self.scheme!r}")
        if self.center not in ("mean", "median"):
            raise ValueError(f"`center` must be mean or median, got {self.center!r}")
        if self.scheme == "dataset" and not (len(self.low) == len(self.high) == len(self.mean) == len(self.std) > 0):
            raise ValueError("a `dataset` normalisation needs low, high, mean and std (one per channel)")

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint's `preprocess` entry (JSON)."""
        out: dict[str, Any] = {"scheme": self.scheme, "joint": self.joint, "percentiles": list(self.percentiles)}
        if self.scheme == "image":
            out["center"] = self.center
        if self.scheme == "dataset":
            out |= {"low": self.low, "high": self.high, "mean": self.mean, "std": self.std}
        if self.reason:
            out["reason"] = self.reason
        out["units"] = "raw file values (no division by the dtype maximum)"
        return out

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> Normalization:
        """The normalisation of a checkpoint's `preprocess` entry."""
        return cls(
            scheme=str(spec["scheme"]),
            joint=bool(spec.get("joint", False)),
            percentiles=tuple(float(p) for p in spec.get("percentiles", CLIP_PERCENTILES)),  # type: ignore[arg-type]
            low=[float(v) for v in spec.get("low", [])],
            high=[float(v) for v in spec.get("high", [])],
            mean=[float(v) for v in spec.get("mean", [])],
            std=[float(v) for v in spec.get("std", [])],
            reason=str(spec.get("reason", "")),
            center=str(spec.get("center", "mean")),
        )

    def params(self, sample: np.ndarray) -> np.ndarray:
        """`(4, C)` float64 rows low, high, mean, std for an image: its own (scheme `image`; pass the
        strided subsample of `stat_stride`, or the whole image when small) or the data set's."""
        channels = sample.shape[0]
        if self.scheme == "none":
            return np.array([[-np.inf] * channels, [np.inf] * channels, [0.0] * channels, [1.0] * channels])
        if self.scheme == "dataset":
            rows = np.array([self.low, self.high, self.mean, self.std], dtype=np.float64)
        elif self.joint:
            rows = np.array(_robust(sample, self.percentiles, self.center), dtype=np.float64)[:, None]
        else:
            per_channel = [_robust(sample[c], self.percentiles, self.center) for c in range(channels)]
            rows = np.array(per_channel, dtype=np.float64).T
        return np.repeat(rows, channels, axis=1) if rows.shape[1] == 1 else rows

    def image_params(self, image: np.ndarray) -> np.ndarray:
        """`params` of a whole `(C, H, W)` image (its strided subsample when large)."""
        step = stat_stride(image.shape[-2], image.shape[-1])
        return self.params(image[:, ::step, ::step] if step > 1 else image)

    def apply(self, image: np.ndarray, params: np.ndarray | None = None) -> np.ndarray:
        """A `(C, H, W)` image (or `(C, D, H, W)` volume) normalised, float32 (with `params` from `image_params` or
        computed here)."""
        if self.scheme == "none":
            return np.asarray(image, dtype=np.float32)
        p = self.image_params(image) if params is None else params
        axes = (-1,) + (1,) * (image.ndim - 1)  # one value per channel of a (C, H, W) image or (C, D, H, W) volume
        low, high, mean, std = (p[i].reshape(axes) for i in range(4))
        return ((np.clip(image, low, high) - mean) / std).astype(np.float32)


def choose_scheme(
    per_image: Sequence[np.ndarray], dtypes: Sequence[str], levels: Sequence[tuple[float, float]] | None = None
) -> tuple[str, str]:
    """The fingerprint's rule: `dataset` when the intensities look absolute, else `image`; with the reason.

    Absolute: every image has the same dtype and either its 0.5 and 99.5 percentiles vary between images by
    less than `CONSISTENT_RANGE` of the median range (as Hounsfield units do: air is -1000 in every CT
    slice), or, where the masks tell background from objects, the background's and the objects' median
    intensities vary by less than `CONSISTENT_RANGE` of their contrast (one acquisition setting: tiles of one
    slide, whose percentiles vary with how many objects a tile holds, not with the units). Exposure, gain or
    bit depth that change from image to image make both vary: `image`.

    Args:
        per_image: `(2,)` (or `(2, C)`) 0.5 / 99.5 percentiles of each training image.
        dtypes: the image files' dtypes.
        levels: `(background median, foreground median)` of the images that have both, from their masks.
    """
    lows = np.array([np.mean(p[0]) for p in per_image], dtype=np.float64)
    highs = np.array([np.mean(p[1]) for p in per_image], dtype=np.float64)
    span = float(np.median(highs - lows))
    if len(per_image) < 2 or span <= 0:
        return "image", "per image: too few images (or constant ones) to judge whether the units are absolute"
    drift = max(float(np.ptp(lows)), float(np.ptp(highs))) / span
    same = len(set(dtypes)) == 1
    if same and drift < CONSISTENT_RANGE:
        return "dataset", (
            f"one rule for the data set: the images' 0.5/99.5 percentiles vary by {drift:.0%} of their range "
            f"(< {CONSISTENT_RANGE:.0%}), so the units look absolute (as Hounsfield units are)"
        )
    if same and levels is not None and len(levels) >= 2:
        background = np.array([b for b, _ in levels], dtype=np.float64)
        objects = np.array([f for _, f in levels], dtype=np.float64)
        contrast = float(np.median(objects - background))
        if contrast != 0:
            shift = max(float(np.ptp(background)), float(np.ptp(objects))) / abs(contrast)
            if shift < CONSISTENT_RANGE:
                return "dataset", (
                    f"one rule for the data set: the background and the objects (from the masks) keep their "
                    f"intensities from image to image, within {shift:.0%} of their contrast "
                    f"(< {CONSISTENT_RANGE:.0%}), while the percentiles vary by {drift:.0%} with what each image "
                    "holds: one acquisition setting"
                )
    why = "dtypes differ" if not same else f"their 0.5/99.5 percentiles vary by {drift:.0%} of the range"
    return "image", f"per image: {why} between images (exposure, gain or bit depth), so each image is z-scored alone"


def _levels(images: Sequence[np.ndarray], foreground: Sequence[np.ndarray | None] | None) -> list[tuple[float, float]]:
    """`(background median, foreground median)` (the channels' mean) of each image with both, on a subsample."""
    levels: list[tuple[float, float]] = []
    for i, image in enumerate(images):
        keep = None if foreground is None else foreground[i]
        if keep is None or not keep.any() or keep.all():
            continue
        flat = image.mean(axis=0).ravel()
        mask = np.asarray(keep).ravel()
        step = max(1, flat.size // DATASET_SAMPLES)
        flat, mask = flat[::step], mask[::step]
        if mask.any() and not mask.all():
            levels.append((float(np.median(flat[~mask])), float(np.median(flat[mask]))))
    return levels


def fit_normalization(
    images: Sequence[np.ndarray],
    *,
    scheme: str = "auto",
    dtypes: Sequence[str] | None = None,
    foreground: Sequence[np.ndarray | None] | None = None,
) -> Normalization:
    """The normalisation of a training set.

    Args:
        images: float32 `(C, H, W)` training images in their own units.
        scheme: `auto` (`choose_scheme`), `image`, `dataset` or `none`.
        dtypes: the files' dtypes (`auto` and `joint` use them); default `float32` for all.
        foreground: bool `(H, W)` foreground (valid) pixels per image, for the `dataset` statistics
            (nnU-Net uses the foreground classes); None or a None entry: every pixel.

    Raises:
        ValueError: no images, an unknown scheme, or differing channel counts.
    """
    if not images:
        raise ValueError("`images` must hold at least one image, got none")
    if scheme not in NORMALIZATIONS:
        raise ValueError(f"`normalize` must be one of {', '.join(NORMALIZATIONS)}, got {scheme!r}")
    channels = images[0].shape[0]
    if any(image.shape[0] != channels for image in images):
        raise ValueError("`images` must share one channel count")
    dtypes = list(dtypes) if dtypes is not None else ["float32"] * len(images)
    joint = channels == 3 and all(d == "uint8" for d in dtypes)  # RGB photos keep their colour relations
    reason = ""
    if scheme == "auto":
        samples = [x[:, :: stat_stride(*x.shape[-2:]), :: stat_stride(*x.shape[-2:])] for x in images]
        per_image = [np.percentile(s.reshape(channels, -1), CLIP_PERCENTILES, axis=1) for s in samples]
        scheme, reason = choose_scheme(per_image, dtypes, _levels(images, foreground))
    if scheme != "dataset":
        return Normalization(scheme, joint=joint, reason=reason or f"{scheme}, as asked", center="median")
    pooled = []
    for i, image in enumerate(images):
        keep = None if foreground is None else foreground[i]
        values = image.reshape(channels, -1) if keep is None or not keep.any() else image[:, keep]
        step = max(1, values.shape[1] // DATASET_SAMPLES)
        pooled.append(values[:, ::step])
    stacked = np.concatenate(pooled, axis=1)  # (C, N)
    if joint:
        stacked = stacked.reshape(1, -1)
    stats = np.array([_robust(row, CLIP_PERCENTILES) for row in stacked], dtype=np.float64).T  # (4, C')
    low, high, mean, std = ([float(v) for v in row] for row in stats)
    return Normalization("dataset", joint=joint, low=low, high=high, mean=mean, std=std,
                         reason=reason or "dataset, as asked")  # fmt: skip
