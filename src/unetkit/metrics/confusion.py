"""Pixel metrics from a confusion matrix: per-class (one-vs-rest) true / false positives and negatives
counted by torchmetrics' `multiclass_stat_scores`, and the scores papers report, written from the counts.

The one empty-mask rule of the package (per class `c`, counts over the valid pixels of one image or a
pooled data set), so that no score is ever NaN and no absent class inflates a mean:

| case                                   | dice, iou | sensitivity | precision | specificity |
|----------------------------------------|-----------|-------------|-----------|-------------|
| `c` absent from target and prediction  | None      | None        | None      | formula     |
| `c` absent from target, predicted      | 0.0       | None        | formula   | formula     |
| `c` in target, never predicted         | 0.0       | formula     | None      | formula     |
| target is all `c` and so is prediction | formula   | formula     | formula   | 1.0         |
| target is all `c`, prediction is not   | formula   | formula     | formula   | None        |

"formula" means the plain ratio, whose denominator is then positive. `None` marks an undefined ratio
(0/0): a class absent from both sides is *absent* (nothing to score, as nnU-Net's NaN and MONAI's
`ignore_empty`), and it is left out of means over classes and of macro means over images, never counted
as 1.0. Validation during training (`PixelMeter`), `unetkit evaluate` and the demo all score through here.
Matthews correlation, when its denominator is 0 (a row or column of the 2x2 table is empty): 1.0 when
prediction and target agree on every pixel, -1.0 when they disagree on every pixel, otherwise 0.0 (the first
two rules are those of torchmetrics' `matthews_corrcoef`). With no valid pixel at all, every score is None.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["SCORES", "absent_classes", "class_scores", "mean_defined", "scores_from_counts", "stat_scores"]

# the scores computed for every class, in report order
SCORES = ("accuracy", "sensitivity", "specificity", "precision", "dice", "iou", "mcc")


def stat_scores(pred: np.ndarray, target: np.ndarray, num_classes: int, valid: np.ndarray | None = None) -> np.ndarray:
    """Per-class one-vs-rest counts over the valid pixels.

    Args:
        pred: integer class indices, any shape.
        target: integer class indices, the shape of `pred`.
        num_classes: classes including background (>= 2).
        valid: bool mask of the shape of `pred`; pixels where it is False are not counted. None: all.

    Returns:
        int64 `(K, 4)`: columns tp, fp, tn, fn.
    """
    from torchmetrics.functional.classification import multiclass_stat_scores

    if pred.shape != target.shape:
        raise ValueError(f"`pred` and `target` must have one shape, got {pred.shape} and {target.shape}")
    if num_classes < 2:
        raise ValueError(f"`num_classes` must be >= 2, got {num_classes}")
    p = torch.from_numpy(np.ascontiguousarray(pred).astype(np.int64).ravel())
    t = torch.from_numpy(np.ascontiguousarray(target).astype(np.int64).ravel())
    if valid is not None:
        keep = torch.from_numpy(np.ascontiguousarray(valid).astype(bool).ravel())
        p, t = p[keep], t[keep]
    if p.numel() == 0:
        return np.zeros((num_classes, 4), dtype=np.int64)
    stats = multiclass_stat_scores(
        p, t, num_classes=num_classes, average="none", multidim_average="global", validate_args=False
    )  # (K, 5): tp, fp, tn, fn, support
    return stats[:, :4].numpy().astype(np.int64)


def _ratio(num: int, den: int) -> float | None:
    return num / den if den > 0 else None


def scores_from_counts(tp: int, fp: int, tn: int, fn: int) -> dict[str, float | None]:
    """The scores of one class from its counts, under the policy of the module docstring."""
    tp, fp, tn, fn = int(tp), int(fp), int(tn), int(fn)
    total = tp + fp + tn + fn
    if total == 0:
        return dict.fromkeys(SCORES)
    both_empty = tp + fp + fn == 0  # class absent from target and prediction: absent, not scored
    sensitivity = _ratio(tp, tp + fn)
    precision = _ratio(tp, tp + fp)
    specificity = 1.0 if fp + tn + fn == 0 else _ratio(tn, tn + fp)
    dice = None if both_empty else 2 * tp / (2 * tp + fp + fn)
    iou = None if both_empty else tp / (tp + fp + fn)
    den = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
    if den > 0:
        mcc = (tp * tn - fp * fn) / math.sqrt(den)
    elif fp + fn == 0:
        mcc = 1.0
    elif tp + tn == 0:
        mcc = -1.0
    else:
        mcc = 0.0
    return {
        "accuracy": (tp + tn) / total,
        "sensitivity": sensitivity,
        "specificity": specificity,
        "precision": precision,
        "dice": dice,
        "iou": iou,
        "mcc": mcc,
    }


def mean_defined(values: list[float | None]) -> float | None:
    """Mean of the values that are not None; None when there are none."""
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def class_scores(counts: np.ndarray) -> tuple[dict[str, float | None], dict[str, dict[str, float | None]]]:
    """Headline scores and per-class scores from `(K, 4)` counts (tp, fp, tn, fn).

    Binary (K = 2): the headline is the foreground class (1). Multi-class: the mean over foreground
    classes 1..K-1 of the defined values, except `accuracy`, which is the overall pixel accuracy
    (correct pixels / valid pixels).

    Returns:
        `(headline, per_class)` where `per_class` maps the class index as a string to its scores.
    """
    per_class = {str(k): scores_from_counts(*counts[k]) for k in range(counts.shape[0])}
    if counts.shape[0] == 2:
        return dict(per_class["1"]), per_class
    headline = {name: mean_defined([per_class[str(k)][name] for k in range(1, counts.shape[0])]) for name in SCORES}
    total = int(counts[0].sum())  # tp + fp + tn + fn of any class = valid pixels
    headline["accuracy"] = int(counts[:, 0].sum()) / total if total else None
    return headline, per_class


def absent_classes(counts: np.ndarray) -> list[int]:
    """Classes (indices) in neither the target nor the prediction of `(K, 4)` counts."""
    return [k for k in range(counts.shape[0]) if int(counts[k, 0] + counts[k, 1] + counts[k, 3]) == 0]
