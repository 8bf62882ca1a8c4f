"""Instance metrics: one-to-one matching of predicted to true objects by IoU, and the scores of
cell-segmentation papers built on it.

Matching: the Hungarian algorithm (`scipy.optimize.linear_sum_assignment`) maximises the summed IoU over
pairs whose IoU is at least the threshold `t`; each such pair is a true positive, unmatched predicted
objects are false positives, unmatched true objects false negatives. A predicted object split in two
thus gives at most one TP and one FP; two true objects merged into one prediction at most one TP and one FN.

Average precision at `t` is `AP_t = TP / (TP + FP + FN)` (Caicedo et al. 2019, the 2018 Data Science Bowl;
StarDist, Cellpose), and `mean_ap` its mean over `t = 0.5, 0.55, ..., 0.95`. Empty policy as for pixels
(the package's one rule, `unetkit.metrics.confusion`): a ratio whose denominator is 0 is None, so an
image with no object in target and prediction is not scored (None, left out of macro means) rather
than 1.0; recall with no true object and precision with no predicted one are None too.
"""

from __future__ import annotations

import numpy as np

__all__ = ["AP_THRESHOLDS", "instance_counts", "instance_scores", "iou_matrix", "label_components"]

AP_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # 0.5, 0.55, ..., 0.95


def label_components(mask: np.ndarray) -> np.ndarray:
    """Connected components of the nonzero pixels of a 2-D or 3-D mask (face connectivity: 4 in 2-D, 6 in 3-D)
    -> int32 labels, 0 = background."""
    from scipy import ndimage

    labels, _ = ndimage.label(np.asarray(mask) != 0)
    return labels.astype(np.int32)


def iou_matrix(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU of every true object (rows) with every predicted object (columns); 0 is background.

    Args:
        true: integer instance labels.
        pred: integer instance labels, the shape of `true`.

    Returns:
        float64 `(n_true, n_pred)`, objects in increasing label order.
    """
    if true.shape != pred.shape:
        raise ValueError(f"`true` and `pred` must have one shape, got {true.shape} and {pred.shape}")
    t_ids, t_idx = np.unique(np.asarray(true).ravel(), return_inverse=True)
    p_ids, p_idx = np.unique(np.asarray(pred).ravel(), return_inverse=True)
    # contingency table of label pairs; index 0 is background when the label 0 occurs
    table = np.bincount(t_idx * len(p_ids) + p_idx, minlength=len(t_ids) * len(p_ids)).reshape(len(t_ids), -1)
    table = table[t_ids != 0][:, p_ids != 0].astype(np.float64)
    t_area = np.bincount(t_idx, minlength=len(t_ids))[t_ids != 0].astype(np.float64)
    p_area = np.bincount(p_idx, minlength=len(p_ids))[p_ids != 0].astype(np.float64)
    union = t_area[:, None] + p_area[None, :] - table
    return np.divide(table, union, out=np.zeros_like(table), where=union > 0)


def _matches(iou: np.ndarray, threshold: float) -> int:
    """Number of one-to-one pairs with IoU >= `threshold` in the assignment of largest summed IoU."""
    from scipy.optimize import linear_sum_assignment

    if iou.size == 0:
        return 0
    eligible = iou >= threshold
    if not eligible.any():
        return 0
    rows, cols = linear_sum_assignment(np.where(eligible, iou, 0.0), maximize=True)
    return int(eligible[rows, cols].sum())


def instance_counts(true: np.ndarray, pred: np.ndarray, thresholds: tuple[float, ...]) -> np.ndarray:
    """TP, FP, FN at each IoU threshold for two instance label images.

    Returns:
        int64 `(len(thresholds), 3)`: columns tp, fp, fn.
    """
    for t in thresholds:
        if not 0.0 < t <= 1.0:
            raise ValueError(f"IoU thresholds must be in (0, 1], got {t}")
    iou = iou_matrix(true, pred)
    n_true, n_pred = iou.shape
    rows = []
    for t in thresholds:
        tp = _matches(iou, t)
        rows.append((tp, n_pred - tp, n_true - tp))
    return np.asarray(rows, dtype=np.int64).reshape(len(thresholds), 3)


def _ratio(num: int, den: int) -> float | None:
    return num / den if den > 0 else None


def instance_scores(
    counts: np.ndarray, thresholds: tuple[float, ...], iou_threshold: float
) -> dict[str, float | int | None]:
    """Scores from `(T, 3)` counts (tp, fp, fn) at `thresholds`: precision, recall, F1 and counts at
    `iou_threshold` (one of `thresholds`), `ap50` ... `ap95` for the thresholds and their mean `mean_ap`.
    """
    if iou_threshold not in thresholds:
        raise ValueError(f"`iou_threshold` must be one of {thresholds}, got {iou_threshold}")
    out: dict[str, float | int | None] = {}
    tp, fp, fn = (int(v) for v in counts[thresholds.index(iou_threshold)])
    out["n_true"] = tp + fn
    out["n_pred"] = tp + fp
    out["instance_tp"], out["instance_fp"], out["instance_fn"] = tp, fp, fn
    out["instance_precision"] = _ratio(tp, tp + fp)
    out["instance_recall"] = _ratio(tp, tp + fn)
    out["instance_f1"] = _ratio(2 * tp, 2 * tp + fp + fn)
    aps = []
    for t, (tp_t, fp_t, fn_t) in zip(thresholds, counts.tolist(), strict=True):
        ap = _ratio(tp_t, tp_t + fp_t + fn_t)
        out[f"ap{round(t * 100):d}"] = ap
        aps.append(ap)
    defined = [a for a in aps if a is not None]
    out["mean_ap"] = float(np.mean(defined)) if defined else None
    return out
