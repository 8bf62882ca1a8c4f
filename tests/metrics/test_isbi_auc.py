"""ROC AUC against a hand-counted ROC area; ISBI 2012 pixel and Rand error on tiny cases."""

import numpy as np
import pytest

from unetkit.metrics import evaluate, evaluate_dataset

AUC_TARGET = np.array([[1, 0, 1], [0, 1, 0]])
AUC_PROBS = np.array([[0.9, 0.8, 0.5], [0.5, 0.2, 0.1]])
# positives 0.9, 0.5, 0.2 vs negatives 0.8, 0.5, 0.1: pairs ranked right (ties count 1/2)
# 0.9 -> 3; 0.5 -> 0 + 0.5 + 1; 0.2 -> 1: AUC = 5.5 / 9


def test_auc_is_the_hand_counted_roc_area():
    m = evaluate(AUC_PROBS >= 0.5, AUC_TARGET, probs=AUC_PROBS)
    assert m["auc"] == pytest.approx(5.5 / 9)


def test_auc_channel_layouts_agree():
    two = np.stack([1 - AUC_PROBS, AUC_PROBS])
    for probs in (AUC_PROBS[None], two):
        assert evaluate(AUC_PROBS >= 0.5, AUC_TARGET, probs=probs)["auc"] == pytest.approx(5.5 / 9)
    with pytest.raises(ValueError, match="probs"):
        evaluate(AUC_PROBS >= 0.5, AUC_TARGET, probs=AUC_PROBS * 2)


def test_auc_respects_fov_and_is_none_for_one_class():
    fov = np.ones_like(AUC_TARGET)
    fov[0, 1] = 0  # drops the negative 0.8: 0.9 -> 2, 0.5 -> 1.5, 0.2 -> 1 over 3 x 2 pairs
    assert evaluate(AUC_PROBS >= 0.5, AUC_TARGET, probs=AUC_PROBS, fov=fov)["auc"] == pytest.approx(4.5 / 6)
    assert evaluate(AUC_PROBS >= 0.5, np.zeros_like(AUC_TARGET), probs=AUC_PROBS)["auc"] is None


def test_micro_auc_pools_pixels():
    # image 2 holds only negatives (AUC None on its own) that outrank nothing: pooled by hand
    t2, p2 = np.zeros((1, 2), int), np.array([[0.95, 0.05]])
    result = evaluate_dataset([AUC_PROBS >= 0.5, p2 >= 0.5], [AUC_TARGET, t2], probs=[AUC_PROBS, p2])
    # extra negatives 0.95 (beats every positive) and 0.05 (below every positive): (5.5 + 0 + 3) / 15
    assert result["micro"]["auc"] == pytest.approx(8.5 / 15)
    assert result["macro"]["auc"] == pytest.approx(5.5 / 9)  # None left out


def test_multiclass_auc_one_vs_rest():
    target = np.array([[0, 1, 2], [2, 1, 0]])
    probs = np.zeros((3, 2, 3))
    probs[1] = [[0.1, 0.9, 0.2], [0.3, 0.4, 0.5]]  # class 1: positives 0.9, 0.4 vs 0.1, 0.2, 0.3, 0.5 -> 7 / 8
    probs[2] = [[0.0, 0.1, 0.6], [0.7, 0.0, 0.0]]  # class 2: perfectly ranked -> 1
    probs[0] = np.clip(1 - probs[1] - probs[2], 0, 1)
    m = evaluate(probs.argmax(0), target, probs=probs)
    assert m["per_class"]["1"]["auc"] == pytest.approx(7 / 8)
    assert m["per_class"]["2"]["auc"] == pytest.approx(1.0)
    assert m["auc"] == pytest.approx((7 / 8 + 1) / 2)


TARGET = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
PRED = np.array([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])


def test_pixel_and_rand_error():
    m = evaluate(PRED, TARGET)
    assert m["pixel_error"] == pytest.approx(2 / 12)
    # V_rand over the 4 target-foreground pixels (one region); the prediction labels them {1, 1, 1, 0}.
    # Pixel pairs: 6 together in the target, 3 together in the prediction, 3 together in both.
    # Rand precision 3/6 (target pairs kept), recall 3/3; V_rand = 2 * 0.5 * 1 / 1.5 = 2/3.
    assert m["rand_error"] == pytest.approx(1 - 2 / 3)
    assert evaluate(TARGET, TARGET)["rand_error"] == pytest.approx(0.0)
    assert evaluate(PRED, np.zeros_like(TARGET))["rand_error"] is None  # no target foreground: undefined


def test_rand_error_sees_a_merge_of_two_regions():
    target = np.array([[1, 1, 0, 1, 1]])  # two regions (components) of two pixels
    pred = np.array([[1, 1, 1, 1, 1]])  # one region
    # target pairs together: 2; prediction pairs together (over target foreground): 6; both: 2
    # precision 2/2, recall 2/6: V_rand = 2 * 1 * (1/3) / (4/3) = 1/2
    assert evaluate(pred, target)["rand_error"] == pytest.approx(0.5)
    assert evaluate_dataset([pred], [target])["micro"]["rand_error"] is None  # not pooled
