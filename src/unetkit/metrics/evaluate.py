"""Evaluation as papers report it: pixel scores from the confusion matrix (accuracy, sensitivity,
specificity, precision, Dice = F1, IoU, MCC and ROC AUC, the columns of the SA-UNet paper), the ISBI 2012
measures of the U-Net paper (pixel error and Rand error), instance scores and, with `surface=True`, the
surface distances of `unetkit.metrics.surface` (HD95, ASD, NSD in units of the spacing: mm for volumes), for
one image or volume, or a data set.

Data-set summaries: `micro` pools the counts (and, for AUC, the pixels) of all images before scoring;
`macro` is the mean over images of each per-image value, leaving out images where it is None. Undefined
values follow the policy of `unetkit.metrics.confusion` and `unetkit.metrics.instance`: there is never a
NaN, and every result is JSON-serialisable (floats, ints, None, strings, dicts).

Rand error is `1 - V_rand`, the foreground-restricted adapted Rand F-score of the ISBI 2012 challenge
(`skimage.metrics.adapted_rand_error`): regions are the connected components (4-connectivity) of the
foreground (any nonzero class), or the instance labels when `instances=True` and a side holds labels;
target background pixels are ignored. It is None when the target has no foreground pair of pixels, and
it is not pooled (micro is None; macro is the mean over images). Neither are the surface distances.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from unetkit.metrics.confusion import class_scores, mean_defined, stat_scores
from unetkit.metrics.instance import AP_THRESHOLDS, instance_counts, instance_scores, label_components
from unetkit.metrics.surface import SURFACE_SCORES, surface_scores

__all__ = ["evaluate", "evaluate_dataset"]


@dataclass
class _Image:
    """One image's scores plus what the micro summary pools."""

    row: dict[str, Any]
    counts: np.ndarray  # (K, 4) tp, fp, tn, fn
    roc: list[tuple[np.ndarray, np.ndarray]] | None  # per scored class: (scores, is-class) of valid pixels
    instance: np.ndarray | None  # (T, 3) tp, fp, fn


def _as_labels(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim not in (2, 3):
        raise ValueError(f"`{name}` must be a 2-D (H, W) mask or a 3-D (D, H, W) volume, got shape {array.shape}")
    if array.dtype == bool:
        return array.astype(np.int64)
    integer = np.issubdtype(array.dtype, np.integer)
    if not integer and (not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array))):
        raise ValueError(f"`{name}` must hold integer labels, got non-integer values of dtype {array.dtype}")
    out = array.astype(np.int64)
    if out.size and out.min() < 0:
        raise ValueError(f"`{name}` must hold labels >= 0, got minimum {out.min()}")
    return out


def _probs_per_class(probs: np.ndarray, num_classes: int, shape: tuple[int, ...]) -> np.ndarray:
    """`(H, W)`, `(1, H, W)` (foreground, binary only) or `(K, H, W)` -> float `(K', H, W)` for classes 1..K-1."""
    if len(shape) != 2:
        raise ValueError(f"`probs` are scored for 2-D masks only, got a mask of shape {shape}")
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim == 2:
        probs = probs[None]
    if probs.ndim != 3 or probs.shape[1:] != shape:
        raise ValueError(f"`probs` must be (H, W) or (K, H, W) with (H, W) = {shape}, got shape {probs.shape}")
    if not np.all(np.isfinite(probs)) or probs.min() < 0 or probs.max() > 1:
        raise ValueError(f"`probs` must be probabilities in [0, 1], got range [{probs.min()}, {probs.max()}]")
    if probs.shape[0] == 1 and num_classes == 2:
        return probs  # foreground probability (sigmoid output)
    if probs.shape[0] != num_classes:
        raise ValueError(f"`probs` must have {num_classes} channels (one per class), got {probs.shape[0]}")
    return probs[1:]


def _auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """ROC AUC; None when only one class occurs (the ROC curve is undefined)."""
    import torch
    from torchmetrics.functional.classification import binary_auroc

    n_pos = int(positive.sum())
    if n_pos == 0 or n_pos == positive.size:
        return None
    value = binary_auroc(torch.from_numpy(scores), torch.from_numpy(positive.astype(np.int64)), validate_args=False)
    return float(value)


def _rand_error(true_regions: np.ndarray, pred_regions: np.ndarray) -> float | None:
    from skimage.metrics import adapted_rand_error

    if np.count_nonzero(true_regions) < 2:
        return None
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        error = float(adapted_rand_error(true_regions, pred_regions)[0])
    return None if not np.isfinite(error) else error


def _regions(labels: np.ndarray, instances: bool) -> np.ndarray:
    """Instance labels as given (`instances` and values beyond {0, 1}) or connected components of nonzero."""
    if instances and labels.size and labels.max() > 1:
        return labels
    return label_components(labels)


def _evaluate_one(
    pred: np.ndarray,
    target: np.ndarray,
    *,
    probs: np.ndarray | None,
    fov: np.ndarray | None,
    num_classes: int | None,
    instances: bool,
    iou_threshold: float,
    surface: bool = False,
    spacing: Sequence[float] | None = None,
    tolerance: float = 1.0,
) -> _Image:
    if instances and iou_threshold not in AP_THRESHOLDS:
        raise ValueError(f"`iou_threshold` must be one of {AP_THRESHOLDS}, got {iou_threshold}")
    pred, target = _as_labels(pred, "pred"), _as_labels(target, "target")
    if pred.shape != target.shape:
        raise ValueError(f"`pred` and `target` must have one shape, got {pred.shape} and {target.shape}")
    valid = None
    if fov is not None:
        fov = np.asarray(fov)
        if fov.shape != pred.shape:
            raise ValueError(f"`fov` must have the shape of `pred` {pred.shape}, got {fov.shape}")
        valid = fov != 0
    if instances:
        if num_classes not in (None, 2):
            raise ValueError(f"`num_classes` must be None or 2 with `instances=True`, got {num_classes}")
        sem_pred, sem_target, k = (pred > 0).astype(np.int64), (target > 0).astype(np.int64), 2
    else:
        sem_pred, sem_target = pred, target
        top = int(max(pred.max(initial=0), target.max(initial=0)))
        k = max(2, top + 1) if num_classes is None else num_classes
        if top >= k:
            raise ValueError(f"labels must be < `num_classes` ({k}), got label {top}")
    counts = stat_scores(sem_pred, sem_target, k, valid)
    headline, per_class = class_scores(counts)
    row: dict[str, Any] = {"pixels": int(counts[0].sum()), **headline}
    roc = None
    if probs is not None:
        scored = _probs_per_class(probs, k, pred.shape)
        keep = np.ones(pred.shape, bool) if valid is None else valid
        roc = [(scored[i][keep], sem_target[keep] == i + 1) for i in range(scored.shape[0])]
        aucs = [_auc(s, t) for s, t in roc]
        row["auc"] = mean_defined(aucs)
        for i, value in enumerate(aucs):
            per_class[str(i + 1)]["auc"] = value
    row["pixel_error"] = None if headline["accuracy"] is None else 1.0 - headline["accuracy"]
    # regions (and objects) are labelled inside the FOV only, so nothing connects through ignored pixels
    true_regions = _regions(target if valid is None else np.where(valid, target, 0), instances)
    pred_regions = _regions(pred if valid is None else np.where(valid, pred, 0), instances)
    row["rand_error"] = _rand_error(true_regions, pred_regions)
    inst = None
    if instances:
        inst = instance_counts(true_regions, pred_regions, AP_THRESHOLDS)
        row.update(instance_scores(inst, AP_THRESHOLDS, iou_threshold))
    if surface:  # outside the valid pixels both sides count as background
        keep = (lambda a: a) if valid is None else (lambda a: np.where(valid, a, 0))
        distances, per_class_distances = surface_scores(
            keep(sem_pred), keep(sem_target), k, spacing=spacing, tolerance=tolerance
        )
        row.update(distances)
        for cls, scores in per_class_distances.items():
            per_class[cls].update(scores)
    if k > 2:
        row["per_class"] = per_class
    return _Image(row, counts, roc, inst)


def evaluate(
    pred: np.ndarray,
    target: np.ndarray,
    *,
    probs: np.ndarray | None = None,
    fov: np.ndarray | None = None,
    num_classes: int | None = None,
    instances: bool = False,
    iou_threshold: float = 0.5,
    surface: bool = False,
    spacing: Sequence[float] | None = None,
    tolerance: float = 1.0,
) -> dict[str, Any]:
    """Score one predicted mask (or volume) against its ground truth.

    Args:
        pred: `(H, W)` or `(D, H, W)` class indices (0 = background; bool for binary), or instance labels with
            `instances`.
        target: the ground truth, as `pred`.
        probs: `(H, W)` or `(1, H, W)` foreground probability (binary) or `(K, H, W)` class probabilities;
            adds `auc` (one-vs-rest ROC AUC, mean over foreground classes); 2-D masks only.
        fov: field of view or ignore mask of `pred`'s shape: pixels where it is 0 are left out of every count,
            AUC, Rand error and instance (objects are cut at its border), and are background for the surfaces.
        num_classes: classes including background; None: the largest label + 1 (at least 2).
        instances: also match objects (instance labels where a side holds values beyond {0, 1}, else
            connected components); pixel scores are then foreground vs background.
        iou_threshold: IoU at which `instance_precision`, `instance_recall` and `instance_f1` are reported;
            one of 0.5, 0.55, ..., 0.95.
        surface: also the surface distances `hd95`, `asd` and `nsd` (`unetkit.metrics.surface`), per class too.
        spacing: pixel (voxel) size per axis for them; default 1.
        tolerance: the NSD's tolerance in units of `spacing`.

    Returns:
        `pixels` (valid pixels), `accuracy`, `sensitivity`, `specificity`, `precision`, `dice` (= F1),
        `iou`, `mcc`, [`auc`], `pixel_error`, `rand_error`, [instance scores], [`hd95`, `asd`, `nsd`],
        [`per_class` when K > 2], and `num_classes`. Binary: the scores of class 1; multi-class: means over
        foreground classes (None values left out), except `accuracy` (overall) and `pixel_error` (`1 - accuracy`, the
        ISBI 2012 pixel error on the binary map).
    """
    image = _evaluate_one(
        pred, target, probs=probs, fov=fov, num_classes=num_classes, instances=instances,
        iou_threshold=iou_threshold, surface=surface, spacing=spacing, tolerance=tolerance,
    )  # fmt: skip
    return {**image.row, "num_classes": int(image.counts.shape[0])}


def _macro(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean over images of every numeric value (None left out), per class too."""
    out: dict[str, Any] = {"pixels": sum(r["pixels"] for r in rows)}
    for key in rows[0]:
        if key == "pixels":
            continue
        if key == "per_class":
            out[key] = {c: _macro_scores([r[key][c] for r in rows]) for c in rows[0][key]}
        else:
            out[key] = mean_defined([r.get(key) for r in rows])
    return out


def _macro_scores(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {key: mean_defined([r.get(key) for r in rows]) for key in rows[0]}


def _micro(images: list[_Image], iou_threshold: float) -> dict[str, Any]:
    counts = np.sum([im.counts for im in images], axis=0)
    headline, per_class = class_scores(counts)
    out: dict[str, Any] = {"pixels": int(counts[0].sum()), **headline}
    if images[0].roc is not None:
        aucs = []
        for i in range(len(images[0].roc)):
            pooled = [im.roc[i] for im in images if im.roc is not None]
            aucs.append(_auc(np.concatenate([s for s, _ in pooled]), np.concatenate([t for _, t in pooled])))
            per_class[str(i + 1)]["auc"] = aucs[-1]
        out["auc"] = mean_defined(aucs)
    out["pixel_error"] = None if headline["accuracy"] is None else 1.0 - headline["accuracy"]
    out["rand_error"] = None  # not poolable over images: see macro
    if "hd95" in images[0].row:  # nor are distances
        out.update(dict.fromkeys(SURFACE_SCORES))
        for scores in per_class.values():
            scores.update(dict.fromkeys(SURFACE_SCORES))
    if images[0].instance is not None:
        pooled_inst = np.sum([im.instance for im in images if im.instance is not None], axis=0)
        out.update(instance_scores(pooled_inst, AP_THRESHOLDS, iou_threshold))
    if counts.shape[0] > 2:
        out["per_class"] = per_class
    return out


def evaluate_dataset(
    preds: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    *,
    probs: Sequence[np.ndarray | None] | None = None,
    fovs: Sequence[np.ndarray | None] | None = None,
    names: Sequence[str] | None = None,
    num_classes: int | None = None,
    instances: bool = False,
    iou_threshold: float = 0.5,
    surface: bool = False,
    spacings: Sequence[Sequence[float] | None] | None = None,
    tolerance: float = 1.0,
) -> dict[str, Any]:
    """Score a data set: per-image rows and micro / macro summaries.

    Args:
        preds: predicted masks, as `pred` of `evaluate`.
        targets: ground truths, one per prediction.
        probs: probabilities per image (as in `evaluate`), all given or None.
        fovs: field-of-view masks per image (None entries: whole image).
        names: image names for the rows; default `"0"`, `"1"`, ...
        num_classes: classes including background; None: the largest label over all images + 1.
        instances: as in `evaluate`.
        iou_threshold: as in `evaluate`.
        surface: as in `evaluate` (micro holds None for the distances: they are means over images only).
        spacings: the `spacing` of each image (None entries: 1).
        tolerance: as in `evaluate`.

    Returns:
        `{"num_classes": K, "images": [{"name": ..., **scores}, ...], "micro": {...}, "macro": {...}}`.
    """
    n = len(preds)
    if n == 0:
        raise ValueError("`preds` must hold at least one image, got 0")
    for arg, seq in (("targets", targets), ("probs", probs), ("fovs", fovs), ("names", names), ("spacings", spacings)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"`{arg}` must hold one entry per prediction ({n}), got {len(seq)}")
    if probs is not None and any(p is None for p in probs) and not all(p is None for p in probs):
        raise ValueError("`probs` must be given for every image or for none")
    if probs is not None and all(p is None for p in probs):
        probs = None
    if num_classes is None and not instances:
        top = max(int(max(np.max(p, initial=0), np.max(t, initial=0))) for p, t in zip(preds, targets, strict=True))
        num_classes = max(2, top + 1)
    images = [
        _evaluate_one(
            preds[i],
            targets[i],
            probs=None if probs is None else probs[i],
            fov=None if fovs is None else fovs[i],
            num_classes=num_classes,
            instances=instances,
            iou_threshold=iou_threshold,
            surface=surface,
            spacing=None if spacings is None else spacings[i],
            tolerance=tolerance,
        )
        for i in range(n)
    ]
    rows = [{"name": str(i) if names is None else names[i], **im.row} for i, im in enumerate(images)]
    macro = _macro([im.row for im in images])
    return {
        "num_classes": int(images[0].counts.shape[0]),
        "images": rows,
        "micro": _micro(images, iou_threshold),
        "macro": macro,
    }
