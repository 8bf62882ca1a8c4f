"""Pixel scores against hand-counted confusion matrices, including every empty-mask case of the policy."""

import json
import math

import numpy as np
import pytest

from unetkit.metrics import evaluate, evaluate_dataset, scores_from_counts, stat_scores

TARGET = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
PRED = np.array([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
# by hand: tp (0,0) (0,1) (1,0) = 3; fp (0,2) = 1; fn (1,1) = 1; tn = 12 - 5 = 7


def test_binary_scores_by_hand():
    m = evaluate(PRED, TARGET)
    assert m["pixels"] == 12 and m["num_classes"] == 2
    assert m["accuracy"] == pytest.approx(10 / 12)
    assert m["sensitivity"] == pytest.approx(3 / 4)
    assert m["specificity"] == pytest.approx(7 / 8)
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["dice"] == pytest.approx(6 / 8)
    assert m["iou"] == pytest.approx(3 / 5)
    assert m["mcc"] == pytest.approx((3 * 7 - 1 * 1) / math.sqrt(4 * 4 * 8 * 8))
    assert m["pixel_error"] == pytest.approx(2 / 12)
    assert "auc" not in m and "per_class" not in m


def test_stat_scores_columns_and_bool_input():
    counts = stat_scores(PRED, TARGET, 2)
    assert counts.tolist() == [[7, 1, 3, 1], [3, 1, 7, 1]]  # tp, fp, tn, fn per class
    assert evaluate(PRED.astype(bool), TARGET.astype(bool))["dice"] == pytest.approx(0.75)


def test_fov_excludes_pixels_from_every_count():
    fov = np.ones_like(TARGET)
    fov[:, 2] = 0  # removes the false positive at (0, 2): tp 3, fp 0, fn 1, tn 5 over 9 pixels
    m = evaluate(PRED, TARGET, fov=fov)
    assert m["pixels"] == 9
    assert m["accuracy"] == pytest.approx(8 / 9)
    assert m["specificity"] == 1.0 and m["precision"] == 1.0
    assert m["dice"] == pytest.approx(6 / 7)
    assert m["mcc"] == pytest.approx(3 * 5 / math.sqrt(3 * 4 * 5 * 6))


ZEROS = np.zeros((3, 4), dtype=np.int64)
TWO = np.zeros((3, 4), dtype=np.int64)
TWO[0, :2] = 1


@pytest.mark.parametrize(
    ("pred", "target", "expected"),
    [
        # both empty: the class is absent, not scored (None, left out of means); specificity 12/12; MCC 1
        (ZEROS, ZEROS, dict(sensitivity=None, precision=None, specificity=1.0, dice=None, iou=None, mcc=1.0)),
        # empty target, 2 predicted: tp 0 fp 2 tn 10 fn 0; sensitivity 0/0 -> None; MCC 0 (degenerate)
        (TWO, ZEROS, dict(sensitivity=None, precision=0.0, specificity=10 / 12, dice=0.0, iou=0.0, mcc=0.0)),
        # empty prediction, 2 in target: tp 0 fp 0 tn 10 fn 2; precision 0/0 -> None
        (ZEROS, TWO, dict(sensitivity=0.0, precision=None, specificity=1.0, dice=0.0, iou=0.0, mcc=0.0)),
        # target and prediction all foreground: specificity 0/0 with nothing to disagree on -> 1.0
        (ZEROS + 1, ZEROS + 1, dict(sensitivity=1.0, precision=1.0, specificity=1.0, dice=1.0, iou=1.0, mcc=1.0)),
        # target all foreground, prediction only 2: tn + fp = 0 with fn 10 -> specificity None
        (TWO, ZEROS + 1, dict(sensitivity=2 / 12, precision=1.0, specificity=None, dice=4 / 14, iou=2 / 12, mcc=0.0)),
        # every pixel wrong: MCC -1 by convention (denominator 0)
        (ZEROS + 1, ZEROS, dict(sensitivity=None, precision=0.0, specificity=0.0, dice=0.0, iou=0.0, mcc=-1.0)),
    ],
    ids=["both-empty", "empty-target", "empty-pred", "all-foreground", "target-all-foreground", "all-wrong"],
)
def test_empty_policy(pred, target, expected):
    m = evaluate(pred, target)
    for key, value in expected.items():
        assert m[key] == (None if value is None else pytest.approx(value)), key
    json.dumps(m, allow_nan=False)


def test_no_valid_pixel_gives_none_everywhere():
    m = evaluate(PRED, TARGET, fov=np.zeros_like(TARGET))
    assert m["pixels"] == 0
    assert all(m[k] is None for k in ("accuracy", "sensitivity", "dice", "mcc", "pixel_error", "rand_error"))
    assert scores_from_counts(0, 0, 0, 0)["dice"] is None


# multi-class, K = 3, counted by hand per class (one-vs-rest):
#   class 0: tp 5 fp 0 tn 6 fn 1; class 1: tp 2 fp 2 tn 7 fn 1; class 2: tp 2 fp 1 tn 8 fn 1
MC_TARGET = np.array([[0, 1, 1, 2], [0, 1, 2, 2], [0, 0, 0, 0]])
MC_PRED = np.array([[0, 1, 2, 2], [0, 1, 1, 2], [0, 0, 0, 1]])


def test_multiclass_per_class_and_foreground_mean():
    assert stat_scores(MC_PRED, MC_TARGET, 3).tolist() == [[5, 0, 6, 1], [2, 2, 7, 1], [2, 1, 8, 1]]
    m = evaluate(MC_PRED, MC_TARGET)
    assert m["num_classes"] == 3
    per = m["per_class"]
    assert per["1"]["dice"] == pytest.approx(4 / 7) and per["2"]["dice"] == pytest.approx(4 / 6)
    assert per["1"]["iou"] == pytest.approx(2 / 5) and per["2"]["iou"] == pytest.approx(2 / 4)
    assert per["1"]["specificity"] == pytest.approx(7 / 9) and per["2"]["specificity"] == pytest.approx(8 / 9)
    assert per["1"]["mcc"] == pytest.approx(12 / math.sqrt(4 * 3 * 9 * 8))
    assert per["2"]["mcc"] == pytest.approx(15 / math.sqrt(3 * 3 * 9 * 9))
    assert per["0"]["sensitivity"] == pytest.approx(5 / 6)
    assert m["dice"] == pytest.approx((4 / 7 + 4 / 6) / 2)  # mean over foreground classes 1, 2
    assert m["precision"] == pytest.approx((2 / 4 + 2 / 3) / 2)
    assert m["accuracy"] == pytest.approx(9 / 12)  # overall: correct pixels / pixels
    assert m["pixel_error"] == pytest.approx(3 / 12)


def test_multiclass_mean_skips_undefined_and_checks_labels():
    target = np.where(MC_TARGET == 2, 0, MC_TARGET)  # class 2 absent from target, still predicted
    m = evaluate(MC_PRED, target)
    assert m["per_class"]["2"]["sensitivity"] is None
    assert m["sensitivity"] == pytest.approx(m["per_class"]["1"]["sensitivity"])
    with pytest.raises(ValueError, match="num_classes"):
        evaluate(MC_PRED, MC_TARGET, num_classes=2)
    with pytest.raises(ValueError, match="shape"):
        evaluate(PRED, TARGET[:2])


def test_dataset_micro_pools_counts_and_macro_skips_none():
    result = evaluate_dataset([TWO, PRED], [ZEROS, TARGET], names=["empty", "cells"])
    assert [r["name"] for r in result["images"]] == ["empty", "cells"]
    micro, macro = result["micro"], result["macro"]
    # pooled: tp 3, fp 1 + 2, fn 1, tn 7 + 10
    assert micro["pixels"] == 24
    assert micro["dice"] == pytest.approx(6 / 10) and micro["precision"] == pytest.approx(3 / 6)
    assert micro["sensitivity"] == pytest.approx(3 / 4) and micro["specificity"] == pytest.approx(17 / 20)
    assert macro["sensitivity"] == pytest.approx(3 / 4)  # None on the empty image is left out
    assert macro["dice"] == pytest.approx((0 + 6 / 8) / 2)
    assert macro["precision"] == pytest.approx((0 + 3 / 4) / 2)
    json.dumps(result, allow_nan=False)


def test_dataset_uses_one_class_count_for_all_images():
    result = evaluate_dataset([MC_PRED, PRED], [MC_TARGET, TARGET])
    assert result["num_classes"] == 3
    assert result["images"][1]["per_class"]["2"]["dice"] is None  # absent from both: absent, not 1.0
    assert result["images"][1]["dice"] == pytest.approx(0.75)  # the mean leaves the absent class out
    with pytest.raises(ValueError, match="targets"):
        evaluate_dataset([PRED], [])


def test_absent_classes_do_not_inflate_the_mean():
    """The issue's case: masks of values 0/128/255 read as 256 classes scored 0.9978 with 253 absent classes at
    1.0; absent classes are now left out, so the mean is the mean over the classes that occur."""
    from unetkit.metrics.confusion import absent_classes

    target = np.array([[0, 128, 255, 255]])
    pred = np.array([[0, 128, 128, 255]])
    m = evaluate(pred, target, num_classes=256)
    # class 128: tp 1 fp 1 fn 0 -> 2/3; class 255: tp 1 fp 0 fn 1 -> 2/3; the 253 absent classes are None
    assert m["dice"] == pytest.approx(2 / 3)
    assert sum(v["dice"] is None for v in m["per_class"].values()) == 253
    assert absent_classes(stat_scores(pred, target, 256))[:3] == [1, 2, 3]
