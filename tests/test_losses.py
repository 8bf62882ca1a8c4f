"""Segmentation losses against hand-computed values on tiny arrays."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unetkit.losses import LOSSES, SegmentationLoss, compute_pos_weight, soft_dice_loss

BINARY_NAMES = ["bce", "dice", "dice_bce", "weighted_ce"]
MULTICLASS_NAMES = ["ce", "dice", "dice_ce", "weighted_ce"]


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_bce_with_pos_weight_by_hand() -> None:
    values = [0.5, -1.0, 2.0, 0.0]
    labels = [1, 0, 0, 1]
    logits = torch.tensor(values).reshape(1, 1, 2, 2)
    target = torch.tensor(labels).reshape(1, 2, 2)
    loss = SegmentationLoss("bce", 1, pos_weight=3.0)(logits, target)
    per_pixel = [
        -3.0 * math.log(_sigmoid(x)) if y else -math.log(1 - _sigmoid(x)) for x, y in zip(values, labels, strict=True)
    ]
    assert loss.item() == pytest.approx(sum(per_pixel) / 4, rel=1e-6)
    torch_loss = F.binary_cross_entropy_with_logits(logits[:, 0], target.float(), pos_weight=torch.tensor(3.0))
    assert loss.item() == pytest.approx(torch_loss.item(), rel=1e-6)


def test_ce_with_class_weights_by_hand() -> None:
    # one row of two pixels, three classes
    logits = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.5]]).reshape(1, 3, 1, 2)
    target = torch.tensor([[[0, 2]]])
    class_weights = [1.0, 2.0, 0.5]
    loss = SegmentationLoss("ce", 3, class_weights=class_weights)(logits, target)

    def neg_log_softmax(column: list[float], label: int) -> float:
        return -(column[label] - math.log(sum(math.exp(v) for v in column)))

    l0 = neg_log_softmax([1.0, 0.0, -1.0], 0)
    l1 = neg_log_softmax([0.0, 2.0, 0.5], 2)
    hand = (1.0 * l0 + 0.5 * l1) / (1.0 + 0.5)
    assert loss.item() == pytest.approx(hand, rel=1e-6)
    reference = F.cross_entropy(logits, target, weight=torch.tensor(class_weights))
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)


def test_auto_name() -> None:
    assert SegmentationLoss("auto", 1).name == "bce"
    assert SegmentationLoss("auto", 4).name == "ce"
    assert SegmentationLoss().name == "ce"


PROBS = [0.8, 0.2, 0.6, 0.1]
LABELS = [1, 0, 1, 0]


def test_binary_soft_dice_by_hand() -> None:
    logits = torch.tensor([_logit(p) for p in PROBS]).reshape(1, 1, 2, 2)
    target = torch.tensor(LABELS).reshape(1, 2, 2)
    # intersection 1.4, sum(p) 1.7, sum(g) 2
    expected = 1 - (2 * 1.4 + 1) / (1.7 + 2 + 1)
    assert soft_dice_loss(logits, target).item() == pytest.approx(expected, rel=1e-5)
    assert SegmentationLoss("dice", 1)(logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_multiclass_soft_dice_by_hand() -> None:
    # softmax over [0, logit(p)] gives p for class 1 and 1 - p for class 0
    column = torch.tensor([_logit(p) for p in PROBS]).reshape(1, 1, 2, 2)
    logits = torch.cat([torch.zeros_like(column), column], dim=1)
    target = torch.tensor(LABELS).reshape(1, 2, 2)
    dice_fg = (2 * 1.4 + 1) / (1.7 + 2 + 1)
    dice_bg = (2 * 1.7 + 1) / (2.3 + 2 + 1)  # p = [.2, .8, .4, .9], g = [0, 1, 0, 1]
    expected = 1 - (dice_fg + dice_bg) / 2
    assert soft_dice_loss(logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_dice_is_summed_over_the_batch() -> None:
    logits = torch.tensor([_logit(p) for p in PROBS]).reshape(2, 1, 1, 2)
    target = torch.tensor(LABELS).reshape(2, 1, 2)
    expected = 1 - (2 * 1.4 + 1) / (1.7 + 2 + 1)
    assert soft_dice_loss(logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_empty_target_and_empty_prediction_is_zero() -> None:
    logits = torch.full((1, 1, 2, 2), -30.0)
    target = torch.zeros(1, 2, 2, dtype=torch.long)
    assert soft_dice_loss(logits, target).item() == pytest.approx(0.0, abs=1e-6)
    # without smoothing an absent class needs ignore_empty
    assert soft_dice_loss(logits, target, smooth=0.0).item() == pytest.approx(1.0)
    assert soft_dice_loss(logits, target, smooth=0.0, ignore_empty=True).item() == 0.0


def test_empty_target_with_false_positives_is_penalised() -> None:
    logits = torch.full((1, 1, 2, 2), 30.0)
    target = torch.zeros(1, 2, 2, dtype=torch.long)
    # sum(p) = 4: Dice = 1 / 5
    assert soft_dice_loss(logits, target).item() == pytest.approx(0.8, rel=1e-5)


def test_ignore_empty() -> None:
    logits = torch.full((1, 1, 2, 2), 30.0, requires_grad=True)
    target = torch.zeros(1, 2, 2, dtype=torch.long)
    loss = soft_dice_loss(logits, target, ignore_empty=True)
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None and torch.all(logits.grad == 0)

    # K = 3, class 2 absent: the mean runs over classes 0 and 1 only
    torch.manual_seed(0)
    multi = torch.randn(1, 3, 2, 2)
    target = torch.tensor([[[0, 1], [1, 0]]])
    probs = multi.softmax(1)[0]
    onehot = F.one_hot(target[0], 3).permute(2, 0, 1).float()
    dice = [(2 * (probs[c] * onehot[c]).sum() + 1) / (probs[c].sum() + onehot[c].sum() + 1) for c in range(3)]
    expected = 1 - (dice[0] + dice[1]) / 2
    assert soft_dice_loss(multi, target, ignore_empty=True).item() == pytest.approx(expected.item(), rel=1e-5)
    assert soft_dice_loss(multi, target).item() == pytest.approx((1 - sum(dice) / 3).item(), rel=1e-5)


def _cases() -> list[tuple[str, int]]:
    return [(name, 1) for name in BINARY_NAMES] + [(name, 3) for name in MULTICLASS_NAMES]


@pytest.mark.parametrize(("name", "num_classes"), _cases())
def test_invalid_pixels_count_for_nothing(name: str, num_classes: int) -> None:
    torch.manual_seed(0)
    target = torch.randint(0, max(num_classes, 2), (2, 4, 5))
    valid = torch.ones(2, 4, 5, dtype=torch.bool)
    valid[0, :2, :] = False
    target[~valid] = 255  # an ignore label, never read
    weight = torch.rand(2, 4, 5) + 0.5
    loss_fn = SegmentationLoss(name, num_classes)
    logits = torch.randn(2, num_classes, 4, 5, requires_grad=True)
    loss = loss_fn(logits, target, weight=weight, valid=valid)
    loss.backward()
    assert logits.grad is not None
    assert torch.all(logits.grad[0, :, :2, :] == 0)
    assert torch.all(torch.isfinite(logits.grad))

    changed = logits.detach().clone()
    changed[0, :, :2, :] = torch.randn(num_classes, 2, 5) * 10
    assert loss_fn(changed, target, weight=weight, valid=valid).item() == pytest.approx(loss.item(), rel=1e-6)


@pytest.mark.parametrize(("name", "num_classes"), _cases())
def test_all_invalid_is_zero_with_graph(name: str, num_classes: int) -> None:
    logits = torch.randn(1, num_classes, 3, 3, requires_grad=True)
    target = torch.zeros(1, 3, 3, dtype=torch.long)
    valid = torch.zeros(1, 3, 3, dtype=torch.bool)
    loss = SegmentationLoss(name, num_classes, smooth=0.0)(logits, target, weight=torch.ones(1, 3, 3), valid=valid)
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None and torch.all(logits.grad == 0)


@pytest.mark.parametrize(("name", "num_classes"), _cases())
def test_gradients_are_finite(name: str, num_classes: int) -> None:
    logits = (torch.randn(2, num_classes, 6, 7) * 20).requires_grad_()
    target = torch.randint(0, max(num_classes, 2), (2, 6, 7))
    loss = SegmentationLoss(name, num_classes)(logits, target, weight=torch.rand(2, 6, 7))
    loss.backward()
    assert torch.isfinite(loss)
    assert logits.grad is not None and torch.all(torch.isfinite(logits.grad))


@pytest.mark.parametrize(("reference", "num_classes"), [("bce", 1), ("ce", 3)])
def test_weighted_ce_with_unit_weight_equals_plain(reference: str, num_classes: int) -> None:
    logits = torch.randn(2, num_classes, 4, 4)
    target = torch.randint(0, max(num_classes, 2), (2, 4, 4))
    plain = SegmentationLoss(reference, num_classes)(logits, target)
    weighted = SegmentationLoss("weighted_ce", num_classes)(logits, target, weight=torch.ones(2, 4, 4))
    assert weighted.item() == pytest.approx(plain.item(), rel=1e-6)


def test_weighted_ce_two_pixels_by_hand() -> None:
    logits = torch.tensor([[0.0, 1.0], [2.0, -1.0]]).reshape(1, 2, 1, 2)  # pixel 0: [0, 2], pixel 1: [1, -1]
    target = torch.tensor([[[1, 1]]])
    weight = torch.tensor([[[1.0, 3.0]]])
    l0 = -(2.0 - math.log(math.exp(0.0) + math.exp(2.0)))
    l1 = -(-1.0 - math.log(math.exp(1.0) + math.exp(-1.0)))
    expected = (1.0 * l0 + 3.0 * l1) / 4.0
    loss = SegmentationLoss("weighted_ce", 2)(logits, target, weight=weight)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_weight_multiplies_ce_part_of_dice_ce() -> None:
    logits = torch.randn(1, 2, 3, 3)
    target = torch.randint(0, 2, (1, 3, 3))
    weight = torch.rand(1, 3, 3) + 0.1
    combined = SegmentationLoss("dice_ce", 2, dice_weight=0.5)(logits, target, weight=weight)
    ce = SegmentationLoss("weighted_ce", 2)(logits, target, weight=weight)
    assert combined.item() == pytest.approx((ce + 0.5 * soft_dice_loss(logits, target)).item(), rel=1e-6)


def test_compute_pos_weight() -> None:
    targets = [np.array([[0, 1], [0, 0]]), torch.tensor([[1, 1], [0, 0]])]
    assert compute_pos_weight(targets) == pytest.approx(5 / 3)
    valid = [np.array([[True, True], [False, False]]), torch.ones(2, 2, dtype=torch.bool)]
    assert compute_pos_weight(targets, valid) == pytest.approx(3 / 3)
    with pytest.raises(ValueError, match="positive"):
        compute_pos_weight([np.zeros((2, 2))])
    with pytest.raises(ValueError, match="positive"):
        compute_pos_weight([])


@pytest.mark.parametrize(
    ("name", "num_classes", "match"),
    [("bce", 3, "K = 1"), ("ce", 1, "K >= 2"), ("dice_bce", 2, "K = 1"), ("dice_ce", 1, "K >= 2")],
)
def test_name_that_does_not_fit_k_raises(name: str, num_classes: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SegmentationLoss(name, num_classes)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "dcie"}, "did you mean"),
        ({"num_classes": 0}, "`num_classes`"),
        ({"num_classes": 1, "class_weights": [1.0]}, "`class_weights`"),
        ({"num_classes": 3, "class_weights": [1.0, 2.0]}, "`class_weights`"),
        ({"num_classes": 3, "pos_weight": 2.0}, "`pos_weight`"),
        ({"num_classes": 1, "pos_weight": -1.0}, "`pos_weight`"),
        ({"smooth": -1.0}, "`smooth`"),
        ({"dice_weight": float("inf")}, "`dice_weight`"),
    ],
)
def test_bad_options_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SegmentationLoss(**kwargs)


def test_bad_inputs_raise() -> None:
    loss_fn = SegmentationLoss("weighted_ce", 2)
    logits = torch.randn(1, 2, 3, 3)
    target = torch.zeros(1, 3, 3, dtype=torch.long)
    weight = torch.ones(1, 3, 3)
    with pytest.raises(ValueError, match="`logits`"):
        loss_fn(torch.randn(1, 3, 3, 3), target, weight=weight)
    with pytest.raises(ValueError, match="`target`"):
        loss_fn(logits, torch.zeros(1, 3, 4, dtype=torch.long), weight=weight)
    with pytest.raises(ValueError, match="`target`"):
        loss_fn(logits, torch.full((1, 3, 3), 2), weight=weight)
    with pytest.raises(ValueError, match="`target`"):
        loss_fn(logits, target.float(), weight=weight)
    with pytest.raises(ValueError, match="`weight`"):
        loss_fn(logits, target)
    with pytest.raises(ValueError, match="`weight`"):
        loss_fn(logits, target, weight=-weight)
    with pytest.raises(ValueError, match="`valid`"):
        loss_fn(logits, target, weight=weight, valid=torch.ones(1, 3, 3))
    with pytest.raises(ValueError, match="`target`"):
        SegmentationLoss("bce", 1)(torch.randn(1, 1, 2, 2), torch.full((1, 2, 2), 2))


def test_losses_tuple_is_complete() -> None:
    assert set(LOSSES) == set(BINARY_NAMES) | set(MULTICLASS_NAMES)


def test_separation_loss_adds_the_distance_bce_by_hand() -> None:
    from unetkit.losses import SeparationLoss

    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 5)  # two class logits, then the distance logit
    target = torch.randint(0, 2, (2, 4, 5))
    distance = torch.rand(2, 4, 5)
    valid = torch.rand(2, 4, 5) > 0.3
    classes = SegmentationLoss("dice_ce", 2)
    loss = SeparationLoss(classes, distance_weight=0.5)
    p = torch.sigmoid(logits[:, 2])
    bce = -(distance * torch.log(p) + (1 - distance) * torch.log(1 - p))
    expected = classes(logits[:, :2], target, valid=valid) + 0.5 * bce[valid].mean()
    assert torch.allclose(loss(logits, target, valid=valid, distance=distance), expected, atol=1e-6)
    assert torch.equal(loss(logits, target, valid=valid), classes(logits[:, :2], target, valid=valid))
    assert loss.name == "dice_ce"
    with pytest.raises(ValueError, match="`distance` must be a floating tensor of shape"):
        loss(logits, target, distance=distance[:, :2])
    with pytest.raises(ValueError, match="`distance_weight`"):
        SeparationLoss(classes, distance_weight=-1.0)
