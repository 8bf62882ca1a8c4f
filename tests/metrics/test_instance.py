"""Instance matching: a split and a merge with hand-counted TP / FP / FN and AP over thresholds."""

import json

import numpy as np
import pytest

from unetkit.metrics import evaluate, evaluate_dataset, instance_counts, iou_matrix

# columns  0 1 2 3 4 5 6 7 8 9 10 11   (two identical rows)
# target   1 1 1 1 1 0 2 2 2 0 3  3    instance labels
# pred     1 1 1 0 1 0 1 1 1 1 1  1    binary: components A = 0..2, B = 4, C = 6..11
# IoU(1, A) = 6/10, IoU(1, B) = 2/10 (split); IoU(2, C) = 6/12, IoU(3, C) = 4/12 (merge)
TARGET = np.tile([1, 1, 1, 1, 1, 0, 2, 2, 2, 0, 3, 3], (2, 1))
PRED = np.tile([1, 1, 1, 0, 1, 0, 1, 1, 1, 1, 1, 1], (2, 1))


def test_split_and_merge_at_half():
    m = evaluate(PRED, TARGET, instances=True)
    assert (m["n_true"], m["n_pred"]) == (3, 3)
    # at 0.5: 1-A and 2-C match; B is a false positive (split), 3 a false negative (merge)
    assert (m["instance_tp"], m["instance_fp"], m["instance_fn"]) == (2, 1, 1)
    assert m["instance_precision"] == pytest.approx(2 / 3) and m["instance_recall"] == pytest.approx(2 / 3)
    assert m["instance_f1"] == pytest.approx(2 / 3)
    assert m["ap50"] == pytest.approx(2 / 4)  # TP / (TP + FP + FN)
    assert m["ap55"] == pytest.approx(1 / 5) and m["ap60"] == pytest.approx(1 / 5)  # only 1-A (0.6) left
    assert all(m[f"ap{t}"] == 0.0 for t in range(65, 100, 5))
    assert m["mean_ap"] == pytest.approx((0.5 + 0.2 + 0.2) / 10)
    json.dumps(m, allow_nan=False)


def test_iou_matrix_by_hand():
    from unetkit.metrics.instance import label_components

    iou = iou_matrix(TARGET, label_components(PRED))
    assert iou == pytest.approx(np.array([[0.6, 0.2, 0.0], [0.0, 0.0, 0.5], [0.0, 0.0, 4 / 12]]))


def test_matching_is_one_to_one():
    target = np.array([[1, 1, 1, 1]])
    pred = np.array([[1, 1, 2, 2]])  # two halves, each IoU exactly 0.5 with the one target object
    counts = instance_counts(target, pred, (0.5,))
    assert counts.tolist() == [[1, 1, 0]]


def test_instance_empty_policy_and_pooling():
    empty = np.zeros((2, 3), int)
    one = np.array([[1, 1, 0], [0, 0, 0]])
    both = evaluate(empty, empty, instances=True)
    assert both["instance_f1"] is None and both["mean_ap"] is None and both["instance_recall"] is None  # not scored
    missed = evaluate(empty, one, instances=True)
    assert missed["instance_precision"] is None and missed["instance_recall"] == 0.0 and missed["ap50"] == 0.0
    spurious = evaluate(one, empty, instances=True)
    assert spurious["instance_recall"] is None and spurious["instance_precision"] == 0.0
    result = evaluate_dataset([PRED, empty], [TARGET, one], instances=True)
    micro = result["micro"]  # pooled: tp 2, fp 1, fn 1 + 1
    assert (micro["instance_tp"], micro["instance_fp"], micro["instance_fn"]) == (2, 1, 2)
    assert micro["ap50"] == pytest.approx(2 / 5)
    assert result["macro"]["instance_precision"] == pytest.approx(2 / 3)  # None left out


def test_fov_cuts_objects():
    fov = np.ones_like(TARGET)
    fov[:, 4] = 0  # removes B entirely and one column of target object 1: IoU(1, A) = 6/8
    m = evaluate(PRED, TARGET, fov=fov, instances=True)
    assert (m["instance_tp"], m["instance_fp"], m["instance_fn"]) == (2, 0, 1)
    assert m["ap75"] == pytest.approx(1 / (1 + 1 + 2))  # at 0.75 only 1-A: C and target 2, 3 unmatched
    with pytest.raises(ValueError, match="num_classes"):
        evaluate(PRED, TARGET, instances=True, num_classes=3)


def test_objects_do_not_connect_through_ignored_pixels():
    target = np.array([[1, 1, 1, 1, 1]])
    pred = target.copy()
    fov = np.array([[1, 1, 0, 1, 1]])  # the target object is two objects inside the FOV, so is the prediction
    m = evaluate(pred, target, fov=fov, instances=True)
    assert (m["n_true"], m["n_pred"], m["instance_tp"]) == (2, 2, 2)
    with pytest.raises(ValueError, match="iou_threshold"):
        evaluate(pred, target, instances=True, iou_threshold=0.3)
