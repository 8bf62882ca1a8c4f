"""Instance matching on 3-D labels (nuclei in a stack): hand-computed IoUs, a split and a merge."""

import numpy as np
import pytest

from unetkit.metrics.instance import AP_THRESHOLDS, instance_counts, instance_scores, iou_matrix, label_components


def _stack() -> tuple[np.ndarray, np.ndarray]:
    """Target: object 1 = a 2x2x2 cube (8 voxels), object 2 = a 1x2x4 bar (8 voxels), object 3 = one voxel.
    Prediction (ids 5, 9): 5 = the cube plus one voxel above it (9 voxels), 9 = half of the bar (4 voxels)."""
    target = np.zeros((4, 6, 6), np.int32)
    target[0:2, 0:2, 0:2] = 1
    target[3, 4:6, 2:6] = 2
    target[3, 0, 5] = 3
    pred = np.zeros_like(target)
    pred[0:2, 0:2, 0:2] = 5
    pred[2, 0, 0] = 5
    pred[3, 4:6, 2:4] = 9
    return target, pred


def test_iou_matrix_and_counts_on_3d_labels_by_hand():
    target, pred = _stack()
    iou = iou_matrix(target, pred)
    # 1 vs 5: 8 shared / 9 union; 2 vs 9: 4 / 8; object 3 overlaps nothing
    np.testing.assert_allclose(iou, [[8 / 9, 0.0], [0.0, 0.5], [0.0, 0.0]])
    counts = instance_counts(target, pred, AP_THRESHOLDS)
    assert counts[0].tolist() == [2, 0, 1]  # at 0.5: both matched, object 3 missed
    assert counts[AP_THRESHOLDS.index(0.55)].tolist() == [1, 1, 2]  # the half bar no longer matches
    scores = instance_scores(counts, AP_THRESHOLDS, 0.5)
    assert scores["instance_f1"] == pytest.approx(4 / 5) and scores["ap50"] == pytest.approx(2 / 3)


def test_components_in_3d_connect_through_faces_only():
    mask = np.zeros((3, 3, 3), bool)
    mask[0, 0, 0] = mask[1, 0, 0] = True  # face neighbours: one object
    mask[2, 1, 1] = True  # touches (1, 0, 0) only at a corner: its own object
    labels = label_components(mask)
    assert labels.dtype == np.int32 and labels.max() == 2
    assert labels[0, 0, 0] == labels[1, 0, 0] != labels[2, 1, 1]
