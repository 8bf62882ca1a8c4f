"""Surface-distance metrics in 2D and 3D, in physical units (voxel spacing): the 95th-percentile Hausdorff distance,
the average symmetric surface distance and the normalised surface Dice at a tolerance (Nikolov et al. 2021,
arXiv:1809.04430), per class.

Surfaces are the border voxels of a mask: those with a background neighbour along an axis (the mask minus its
erosion by the face-connected cross, outside the image counting as background). The distance of a voxel to a
surface is the Euclidean distance between voxel centres, scaled by `spacing`, to the nearest voxel of that surface
(`scipy.ndimage.distance_transform_edt` with `sampling`, on the bounding box of the two masks, which holds every
surface voxel). The conventions are MONAI's (`compute_hausdorff_distance`, `compute_average_surface_distance`,
`compute_surface_dice` with its defaults), and the tests check the two agree:

- HD95 = max(95th percentile of the distances from the predicted surface to the true one, 95th percentile the
  other way); `percentile=100` gives the Hausdorff distance.
- ASD = the mean of both sets of directed distances together.
- NSD(tau) = (predicted surface voxels within tau of the true surface + true surface voxels within tau of the
  predicted one) / (all surface voxels of both).

Empty masks (per class, per image), so that no score is NaN: both empty gives HD95 = ASD = 0 and NSD = 1 (nothing to
disagree on); exactly one empty gives HD95 = ASD = None (no distance exists; left out of means, as the confusion
scores' undefined ratios) and NSD = 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from unetkit.metrics.confusion import mean_defined

__all__ = [
    "SURFACE_SCORES",
    "average_surface_distance",
    "hausdorff_distance",
    "normalized_surface_dice",
    "surface_distances",
    "surface_scores",
    "surface_voxels",
]

SURFACE_SCORES = ("hd95", "asd", "nsd")


def _check_pair(pred: np.ndarray, target: np.ndarray, spacing: Sequence[float] | None) -> tuple[float, ...]:
    if pred.shape != target.shape:
        raise ValueError(f"`pred` and `target` must have one shape, got {pred.shape} and {target.shape}")
    if pred.ndim not in (2, 3):
        raise ValueError(f"`pred` and `target` must be 2-D or 3-D masks, got {pred.ndim} dimensions")
    if spacing is None:
        return (1.0,) * pred.ndim
    step = tuple(float(s) for s in spacing)
    if len(step) != pred.ndim or not all(np.isfinite(s) and s > 0 for s in step):
        raise ValueError(f"`spacing` must give {pred.ndim} positive numbers (one per axis), got {tuple(spacing)}")
    return step


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """The border voxels of a binary mask (2-D or 3-D): in the mask, with a background neighbour along an axis."""
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def surface_distances(
    pred: np.ndarray, target: np.ndarray, spacing: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances between two binary masks.

    Args:
        pred: bool (or 0/1) mask, 2-D or 3-D.
        target: a mask of the same shape.
        spacing: voxel size per axis (default 1: distances in voxels).

    Returns:
        float64 distances from each surface voxel of `pred` to the surface of `target`, and from each surface
        voxel of `target` to the surface of `pred`; empty where either mask is empty.
    """
    from scipy import ndimage

    step = _check_pair(np.asarray(pred), np.asarray(target), spacing)
    pred, target = np.asarray(pred, dtype=bool), np.asarray(target, dtype=bool)
    if not pred.any() or not target.any():
        return np.zeros(0), np.zeros(0)
    # every surface voxel lies in the bounding box of the union, and outside it all is background: crop to it
    coords = np.argwhere(pred | target)
    box = tuple(slice(lo, hi + 1) for lo, hi in zip(coords.min(0), coords.max(0), strict=True))
    pred_surface, target_surface = surface_voxels(pred[box]), surface_voxels(target[box])
    to_target = ndimage.distance_transform_edt(~target_surface, sampling=step)  # distance to the true surface
    to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=step)
    return np.asarray(to_target[pred_surface], np.float64), np.asarray(to_pred[target_surface], np.float64)


def _binary_scores(
    pred: np.ndarray, target: np.ndarray, spacing: Sequence[float] | None, tolerance: float, percentile: float
) -> dict[str, float | None]:
    """HD (at `percentile`), ASD and NSD (at `tolerance`) of two binary masks from one distance computation."""
    if not 0 <= percentile <= 100:
        raise ValueError(f"`percentile` must be in [0, 100], got {percentile}")
    if not np.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"`tolerance` must be a finite number >= 0, got {tolerance}")
    _check_pair(np.asarray(pred), np.asarray(target), spacing)
    has_pred, has_target = bool(np.any(pred)), bool(np.any(target))
    if not has_pred and not has_target:  # nothing to disagree on
        return {"hd95": 0.0, "asd": 0.0, "nsd": 1.0}
    if not has_pred or not has_target:  # no distance exists
        return {"hd95": None, "asd": None, "nsd": 0.0}
    forward, backward = surface_distances(pred, target, spacing)
    both = np.concatenate([forward, backward])
    return {
        "hd95": float(max(np.percentile(forward, percentile), np.percentile(backward, percentile))),
        "asd": float(both.mean()),
        "nsd": float((both <= tolerance).sum() / both.size),
    }


def hausdorff_distance(
    pred: np.ndarray, target: np.ndarray, spacing: Sequence[float] | None = None, *, percentile: float = 95.0
) -> float | None:
    """The `percentile`-th percentile Hausdorff distance (HD95 by default; 100 = Hausdorff) in units of `spacing`;
    0 when both masks are empty, None when exactly one is."""
    return _binary_scores(pred, target, spacing, 0.0, percentile)["hd95"]


def average_surface_distance(
    pred: np.ndarray, target: np.ndarray, spacing: Sequence[float] | None = None
) -> float | None:
    """The average symmetric surface distance in units of `spacing`: the mean of both directed distance sets
    together; 0 when both masks are empty, None when exactly one is."""
    return _binary_scores(pred, target, spacing, 0.0, 95.0)["asd"]


def normalized_surface_dice(
    pred: np.ndarray, target: np.ndarray, tolerance: float, spacing: Sequence[float] | None = None
) -> float:
    """The share of both surfaces within `tolerance` (units of `spacing`) of the other (Nikolov et al. 2021);
    1 when both masks are empty, 0 when exactly one is."""
    nsd = _binary_scores(pred, target, spacing, tolerance, 95.0)["nsd"]
    assert nsd is not None  # always defined
    return nsd


def surface_scores(
    pred: np.ndarray,
    target: np.ndarray,
    num_classes: int,
    *,
    spacing: Sequence[float] | None = None,
    tolerance: float = 1.0,
    percentile: float = 95.0,
) -> tuple[dict[str, float | None], dict[str, dict[str, float | None]]]:
    """HD95, ASD and NSD of every foreground class of two class-index maps.

    Args:
        pred: integer class indices, 2-D `(H, W)` or 3-D `(D, H, W)` (any axis order, matching `spacing`).
        target: integer class indices of the same shape.
        num_classes: classes including background 0 (>= 2); classes 1 .. K-1 are scored.
        spacing: voxel size per axis (mm for volumes read by `unetkit.data.volume`); default 1.
        tolerance: the NSD's tolerance in units of `spacing`.
        percentile: of the Hausdorff distance (95: HD95).

    Returns:
        `(headline, per_class)`: per class (index as a string) `{"hd95", "asd", "nsd"}`; the headline is class 1
        for binary maps and otherwise the mean over foreground classes of the defined values.
    """
    pred, target = np.asarray(pred), np.asarray(target)
    _check_pair(pred, target, spacing)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"`num_classes` must be an integer >= 2, got {num_classes!r}")
    per_class = {
        str(k): _binary_scores(pred == k, target == k, spacing, tolerance, percentile) for k in range(1, num_classes)
    }
    if num_classes == 2:
        return dict(per_class["1"]), per_class
    headline = {name: mean_defined([scores[name] for scores in per_class.values()]) for name in SURFACE_SCORES}
    return headline, per_class
