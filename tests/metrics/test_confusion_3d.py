"""The confusion core (Dice, IoU, ...) counts voxels of 3-D label maps as it counts pixels: hand-counted cases."""

import numpy as np
import pytest

from unetkit.metrics.confusion import class_scores, scores_from_counts, stat_scores


def _volumes() -> tuple[np.ndarray, np.ndarray]:
    """A 4x4x4 target with a 2x2x2 cube of class 1 (8 voxels) and a 1x2x2 slab of class 2 (4 voxels); the
    prediction moves the cube one voxel along axis 0 and misses the slab."""
    target = np.zeros((4, 4, 4), np.int64)
    target[0:2, 0:2, 0:2] = 1
    target[3, 2:4, 2:4] = 2
    pred = np.zeros_like(target)
    pred[1:3, 0:2, 0:2] = 1
    return pred, target


def test_stat_scores_count_voxels_by_hand():
    pred, target = _volumes()
    counts = stat_scores(pred, target, 3)
    # class 1: the cubes share the slice 1 (4 voxels): tp 4, fp 4, fn 4, tn 64 - 12 = 52
    assert counts[1].tolist() == [4, 4, 52, 4]
    # class 2: never predicted: tp 0, fp 0, fn 4, tn 60
    assert counts[2].tolist() == [0, 0, 60, 4]
    assert scores_from_counts(*counts[1])["dice"] == pytest.approx(8 / 16)
    assert scores_from_counts(*counts[1])["iou"] == pytest.approx(4 / 12)
    headline, per_class = class_scores(counts)
    assert per_class["2"]["dice"] == 0.0 and headline["dice"] == pytest.approx(0.25)
    assert headline["accuracy"] == pytest.approx((64 - 12) / 64)  # wrong: 4 fp + 4 fn of class 1, 4 fn of class 2


def test_valid_mask_in_3d_and_the_flat_equivalence():
    pred, target = _volumes()
    valid = np.ones_like(target, bool)
    valid[2] = False  # drops slice 2 (16 voxels) with the 4 false positives of class 1
    counts = stat_scores(pred, target, 3, valid=valid)
    assert counts[1].tolist() == [4, 0, 48 - 8, 4]
    np.testing.assert_array_equal(stat_scores(pred, target, 3), stat_scores(pred.ravel(), target.ravel(), 3))
