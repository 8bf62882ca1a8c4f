"""Segmentation losses on logits: (weighted) cross-entropy, soft Dice and their sums.

`"weighted_ce"` is the pixel-weighted cross-entropy of the U-Net paper (Ronneberger et al. 2015,
arXiv:1505.04597, eq. 1), to be used with the weight map of `unetkit.data.weightmap`. Soft Dice
follows Milletari et al. 2016 (V-Net, arXiv:1606.04797) with an additive smoothing term.

Every loss honours a `valid` mask (field of view, ignored pixels): a pixel where `valid` is False
adds nothing to any sum, numerator or denominator, and its target value is never read, so it may
hold anything (e.g. an ignore label such as 255). A batch with no valid pixel gives a zero loss that
keeps the graph (gradient zero), never NaN.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unetkit._options import look_up_option

__all__ = ["LOSSES", "SegmentationLoss", "SeparationLoss", "compute_pos_weight", "soft_dice_loss"]

LOSSES = ("bce", "ce", "dice", "dice_bce", "dice_ce", "weighted_ce")
# which names fit a sigmoid (K == 1) or a softmax (K >= 2) output
_BINARY_LOSSES = ("bce", "dice", "dice_bce", "weighted_ce")
_MULTICLASS_LOSSES = ("ce", "dice", "dice_ce", "weighted_ce")


def _check_inputs(logits: Tensor, target: Tensor, weight: Tensor | None, valid: Tensor | None) -> None:
    """Shape and dtype checks shared by every loss; raise `ValueError` naming the argument."""
    if not isinstance(logits, Tensor) or logits.ndim < 3 or not logits.is_floating_point():
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"`logits` must be a floating (B, K, H, W) tensor, got {shape}")
    expected = (logits.shape[0], *logits.shape[2:])
    if not isinstance(target, Tensor) or tuple(target.shape) != expected:
        shape = tuple(target.shape) if isinstance(target, Tensor) else type(target).__name__
        raise ValueError(f"`target` must be a (B, H, W) tensor of shape {expected} to match `logits`, got {shape}")
    if target.is_floating_point() or target.is_complex():
        raise ValueError(f"`target` must hold integer class indices, got dtype {target.dtype}")
    if weight is not None and (not isinstance(weight, Tensor) or tuple(weight.shape) != expected):
        shape = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise ValueError(f"`weight` must be a (B, H, W) tensor of shape {expected}, got {shape}")
    if valid is not None and (
        not isinstance(valid, Tensor) or tuple(valid.shape) != expected or valid.dtype != torch.bool
    ):
        got = f"{tuple(valid.shape)} {valid.dtype}" if isinstance(valid, Tensor) else type(valid).__name__
        raise ValueError(f"`valid` must be a bool (B, H, W) tensor of shape {expected}, got {got}")


def _safe_target(logits: Tensor, target: Tensor, valid: Tensor | None) -> Tensor:
    """int64 `(B, H, W)` target with invalid pixels set to 0; checks the valid values fit the classes."""
    num_classes = logits.shape[1]
    high = 2 if num_classes == 1 else num_classes
    target = target.long()
    if valid is not None:
        target = torch.where(valid, target, torch.zeros_like(target))
    if bool(((target < 0) | (target >= high)).any()):
        low_seen, high_seen = int(target.min()), int(target.max())
        raise ValueError(
            f"`target` values at valid pixels must lie in [0, {high}) for K = {num_classes}, "
            f"got values in [{low_seen}, {high_seen}]"
        )
    return target


def _weighted_mean(per_pixel: Tensor, pixel_weight: Tensor) -> Tensor:
    """`sum(w * l) / sum(w)`; 0 (graph kept) when the weights sum to 0, e.g. no valid pixel."""
    total = pixel_weight.sum()
    return (pixel_weight * per_pixel).sum() / total.clamp_min(torch.finfo(total.dtype).tiny)


def soft_dice_loss(
    logits: Tensor,
    target: Tensor,
    *,
    valid: Tensor | None = None,
    smooth: float = 1.0,
    ignore_empty: bool = False,
) -> Tensor:
    """Soft Dice loss `1 - mean_c Dice_c`, with `Dice_c = (2 sum(p g) + s) / (sum(p) + sum(g) + s)`.

    Sums run over the whole batch (B, H, W) per class ("batch Dice"), which stays stable on small
    patches where a class is often missing from a single image. With `K == 1` the probabilities
    are `sigmoid(logits)` and only the foreground class is scored; with `K >= 2` they are
    `softmax(logits)` and every class, background included, enters the mean.

    Empty-mask policy: with `smooth > 0`, a class absent from the target and not predicted scores
    Dice 1 (loss 0), while false positives on an absent class are penalised
    (`Dice = s / (sum(p) + s)`). With `smooth == 0` an absent class scores Dice 0 (loss 1) as soon
    as any probability falls on it, so pair it with `ignore_empty`; only a class with nothing
    counted at all (e.g. no valid pixel) is taken as Dice 1 rather than 0 / 0. With
    `ignore_empty=True`, classes absent from the (valid) target of the batch are left out of the
    mean; if every class is absent the loss is a zero that keeps the graph.

    Args:
        logits: `(B, K, H, W)` raw scores (any number of spatial dimensions works the same).
        target: integer `(B, H, W)` class indices in `[0, K)` (`{0, 1}` when `K == 1`).
        valid: bool `(B, H, W)`; pixels where False are left out of every sum.
        smooth: `s`, added to numerator and denominator, >= 0.
        ignore_empty: leave classes absent from the target out of the mean.

    Returns:
        Scalar loss in `[0, 1]`.
    """
    _check_inputs(logits, target, None, valid)
    if not math.isfinite(smooth) or smooth < 0:
        raise ValueError(f"`smooth` must be finite and >= 0, got {smooth}")
    return _soft_dice(logits, _safe_target(logits, target, valid), valid, smooth, ignore_empty)


def _soft_dice(logits: Tensor, target: Tensor, valid: Tensor | None, smooth: float, ignore_empty: bool) -> Tensor:
    """`soft_dice_loss` without the checks; `target` already made safe by `_safe_target`."""
    num_classes = logits.shape[1]
    logits = logits.float()
    if num_classes == 1:
        probs = torch.sigmoid(logits)  # (B, 1, H, W) foreground only
        onehot = target.unsqueeze(1).float()  # (B, 1, H, W)
    else:
        probs = logits.softmax(dim=1)  # (B, K, H, W)
        onehot = F.one_hot(target, num_classes).movedim(-1, 1).float()  # (B, K, H, W)
    if valid is not None:
        mask = valid.unsqueeze(1).float()  # (B, 1, H, W)
        probs = probs * mask
        onehot = onehot * mask
    dims = [0, *range(2, logits.ndim)]
    intersection = (probs * onehot).sum(dims)  # (K,)
    pred_sum = probs.sum(dims)  # (K,)
    true_sum = onehot.sum(dims)  # (K,)
    denominator = pred_sum + true_sum + smooth  # (K,)
    nonzero = denominator > 0
    # the where-twice pattern keeps the gradient finite when smooth == 0 and a class is empty
    dice = torch.where(nonzero, (2 * intersection + smooth) / torch.where(nonzero, denominator, 1.0), 1.0)  # (K,)
    if not ignore_empty:
        return 1.0 - dice.mean()
    present = (true_sum > 0).float()  # (K,)
    # all classes absent: the sum is a zero tied to logits, divided by 1
    return (present * (1.0 - dice)).sum() / present.sum().clamp_min(1.0)


def compute_pos_weight(
    targets: Iterable[np.ndarray | Tensor],
    valid: Iterable[np.ndarray | Tensor] | None = None,
) -> float:
    """The `pos_weight` for `"bce"`: negative / positive pixels over a whole training set.

    A pixel is positive where its target is nonzero.

    Args:
        targets: binary `(H, W)` masks (numpy arrays or tensors).
        valid: optional bool `(H, W)` masks, one per target, in the same order; only pixels where
            True are counted.

    Returns:
        `negatives / positives`.
    """
    masks = list(targets)
    valids: list[np.ndarray | Tensor | None] = [None] * len(masks) if valid is None else list(valid)
    if len(valids) != len(masks):
        raise ValueError(f"`valid` must hold one mask per target ({len(masks)}), got {len(valids)}")
    positives = negatives = 0
    for index, (mask, keep) in enumerate(zip(masks, valids, strict=True)):
        mask_np = mask.detach().cpu().numpy() if isinstance(mask, Tensor) else np.asarray(mask)
        if keep is None:
            counted = np.ones(mask_np.shape, dtype=bool)
        else:
            counted = keep.detach().cpu().numpy() if isinstance(keep, Tensor) else np.asarray(keep)
            if counted.shape != mask_np.shape:
                raise ValueError(
                    f"`valid[{index}]` must have the shape of its target {mask_np.shape}, got {counted.shape}"
                )
            counted = counted.astype(bool)
        pos = int(np.count_nonzero((mask_np != 0) & counted))
        positives += pos
        negatives += int(np.count_nonzero(counted)) - pos
    if positives == 0:
        raise ValueError(
            f"`targets` must contain at least one positive (nonzero) valid pixel to compute `pos_weight`, "
            f"got 0 positives among {negatives} pixels"
        )
    return negatives / positives


class SegmentationLoss(nn.Module):
    """Cross-entropy, soft Dice or their sum, by name, for `K == 1` (sigmoid) or `K >= 2` (softmax).

    Names: `"bce"`, `"dice"`, `"dice_bce"`, `"weighted_ce"` for `K == 1`; `"ce"`, `"dice"`,
    `"dice_ce"`, `"weighted_ce"` for `K >= 2`; `"auto"` is `"bce"` for `K == 1`, else `"ce"`.

    The cross-entropy part is averaged over valid pixels; where a per-pixel `weight` is given (and,
    for `"ce"`, class weights, as in `F.cross_entropy`), it is the weighted mean
    `sum(w * l) / sum(w)`. `pos_weight` scales the positive term of BCE without entering that
    normalisation, as in `BCEWithLogitsLoss`. `"weighted_ce"` is eq. 1 of Ronneberger et al. 2015
    with the weight map `w(x)`, normalised by the sum of `w` over valid pixels; it needs `weight`
    (with all-ones weights it equals `"ce"`/`"bce"`). The Dice part (`soft_dice_loss`) ignores
    `weight`; the sums add it as `ce + dice_weight * dice`.
    """

    def __init__(
        self,
        name: str = "auto",
        num_classes: int = 2,
        *,
        pos_weight: float | None = None,
        class_weights: Sequence[float] | None = None,
        dice_weight: float = 1.0,
        smooth: float = 1.0,
        ignore_empty: bool = False,
    ) -> None:
        """
        Args:
            name: one of `LOSSES` or `"auto"`.
            num_classes: `K`, the channels of the logits; 1 means a sigmoid output.
            pos_weight: weight of positive pixels in BCE (`K == 1` only), e.g. from `compute_pos_weight`.
            class_weights: `K` weights for the cross-entropy classes (`K >= 2` only), >= 0.
            dice_weight: factor of the Dice part in `"dice_bce"` / `"dice_ce"`, >= 0.
            smooth: additive smoothing of soft Dice, >= 0 (see `soft_dice_loss` for empty masks).
            ignore_empty: leave classes absent from the batch's target out of the Dice mean.
        """
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"`num_classes` must be an integer >= 1, got {num_classes!r}")
        name = look_up_option("name", name, ("auto", *LOSSES))
        if name == "auto":
            name = "bce" if num_classes == 1 else "ce"
        if num_classes == 1 and name not in _BINARY_LOSSES:
            raise ValueError(
                f"`name` {name!r} does not fit `num_classes` = 1 (a sigmoid output): "
                f"for K = 1 use {', '.join(_BINARY_LOSSES)}; for K >= 2 use {', '.join(_MULTICLASS_LOSSES)}"
            )
        if num_classes >= 2 and name not in _MULTICLASS_LOSSES:
            raise ValueError(
                f"`name` {name!r} does not fit `num_classes` = {num_classes} (a softmax output): "
                f"for K >= 2 use {', '.join(_MULTICLASS_LOSSES)}; for K = 1 use {', '.join(_BINARY_LOSSES)}"
            )
        if pos_weight is not None:
            if num_classes != 1:
                raise ValueError(
                    f"`pos_weight` applies to `num_classes` = 1 (BCE) only, got num_classes = {num_classes}; "
                    "use `class_weights` for K >= 2"
                )
            if not math.isfinite(pos_weight) or pos_weight <= 0:
                raise ValueError(f"`pos_weight` must be finite and > 0, got {pos_weight}")
        if class_weights is not None:
            if num_classes == 1:
                raise ValueError("`class_weights` applies to `num_classes` >= 2 only; use `pos_weight` for K = 1")
            weights = [float(w) for w in class_weights]
            if len(weights) != num_classes:
                raise ValueError(f"`class_weights` must hold {num_classes} weights, got {len(weights)}")
            if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
                raise ValueError(f"`class_weights` must be finite, >= 0 and not all zero, got {weights}")
        if not math.isfinite(dice_weight) or dice_weight < 0:
            raise ValueError(f"`dice_weight` must be finite and >= 0, got {dice_weight}")
        if not math.isfinite(smooth) or smooth < 0:
            raise ValueError(f"`smooth` must be finite and >= 0, got {smooth}")

        self.name = name
        self.num_classes = num_classes
        self.dice_weight = dice_weight
        self.smooth = smooth
        self.ignore_empty = ignore_empty
        self.pos_weight: Tensor | None
        self.class_weights: Tensor | None
        # buffers so that `.to(device)` moves them; not saved in checkpoints
        self.register_buffer(
            "pos_weight", None if pos_weight is None else torch.tensor(float(pos_weight)), persistent=False
        )
        self.register_buffer(
            "class_weights",
            None if class_weights is None else torch.tensor([float(w) for w in class_weights]),
            persistent=False,
        )

    def extra_repr(self) -> str:
        return f"name={self.name!r}, num_classes={self.num_classes}"

    def _cross_entropy(self, logits: Tensor, target: Tensor, weight: Tensor | None, valid: Tensor | None) -> Tensor:
        """Weighted mean of the per-pixel (B)CE over valid pixels; `target` already made safe."""
        logits = logits.float()
        pixel_weight = torch.ones(target.shape, dtype=logits.dtype, device=logits.device)  # (B, H, W)
        if weight is not None:
            pixel_weight = pixel_weight * weight.to(logits.dtype)
        if valid is not None:
            pixel_weight = torch.where(valid, pixel_weight, torch.zeros_like(pixel_weight))
        if self.num_classes == 1:
            per_pixel = F.binary_cross_entropy_with_logits(
                logits[:, 0], target.to(logits.dtype), pos_weight=self.pos_weight, reduction="none"
            )  # (B, H, W)
        else:
            # -log p_{l(x)}(x) of eq. 1 of Ronneberger et al. 2015, unweighted
            per_pixel = F.cross_entropy(logits, target, reduction="none")  # (B, H, W)
            if self.class_weights is not None:
                pixel_weight = pixel_weight * self.class_weights.to(logits.dtype)[target]
        return _weighted_mean(per_pixel, pixel_weight)

    def forward(
        self, logits: Tensor, target: Tensor, *, weight: Tensor | None = None, valid: Tensor | None = None
    ) -> Tensor:
        """`(B, K, H, W)` logits and `(B, H, W)` targets -> scalar loss.

        Args:
            logits: `(B, K, H, W)` raw scores, `K == num_classes`.
            target: integer `(B, H, W)` class indices (`{0, 1}` when `K == 1`); ignored where not valid.
            weight: float `(B, H, W)` per-pixel weights >= 0 (e.g. `unet_weight_map`); required by
                `"weighted_ce"`, multiplies the cross-entropy part of the other losses.
            valid: bool `(B, H, W)`; pixels where False count for nothing.
        """
        _check_inputs(logits, target, weight, valid)
        if logits.shape[1] != self.num_classes:
            raise ValueError(
                f"`logits` must have num_classes = {self.num_classes} channels, got shape {tuple(logits.shape)}"
            )
        if self.name == "weighted_ce" and weight is None:
            raise ValueError("`weight` is required by the 'weighted_ce' loss (the U-Net weight map), got None")
        if weight is not None:
            if not weight.is_floating_point():
                raise ValueError(f"`weight` must be a floating tensor, got dtype {weight.dtype}")
            if bool((weight < 0).any()):
                raise ValueError(f"`weight` must be >= 0, got minimum {float(weight.min())}")
        safe_target = _safe_target(logits, target, valid)

        if self.name == "dice":
            return self._dice(logits, safe_target, valid)
        loss = self._cross_entropy(logits, safe_target, weight, valid)
        if self.name in ("dice_bce", "dice_ce"):
            loss = loss + self.dice_weight * self._dice(logits, safe_target, valid)
        return loss

    def _dice(self, logits: Tensor, target: Tensor, valid: Tensor | None) -> Tensor:
        return _soft_dice(logits, target, valid, self.smooth, self.ignore_empty)


class SeparationLoss(nn.Module):
    """A segmentation loss on the class channels plus, on one more output channel, the binary cross-entropy to the
    normalised object distance (`unetkit.data.distance.object_distance`, a soft target in [0, 1]) that separates
    touching objects; the output is `(B, K + 1, ...)`, class logits first.

    The distance term is averaged over valid pixels (the background, where the target is 0, included, as StarDist
    trains its object probability) and added with `distance_weight`.

    Args:
        classes: the loss of the `K` class channels.
        distance_weight: factor of the distance term, >= 0.
    """

    def __init__(self, classes: SegmentationLoss, distance_weight: float = 1.0) -> None:
        super().__init__()
        if not math.isfinite(distance_weight) or distance_weight < 0:
            raise ValueError(f"`distance_weight` must be finite and >= 0, got {distance_weight}")
        self.classes = classes
        self.distance_weight = distance_weight

    @property
    def name(self) -> str:
        """The class loss's name (what validation asks of the loss)."""
        return self.classes.name

    def forward(
        self,
        logits: Tensor,
        target: Tensor,
        *,
        weight: Tensor | None = None,
        valid: Tensor | None = None,
        distance: Tensor | None = None,
    ) -> Tensor:
        """`(B, K + 1, ...)` logits, `(B, ...)` class targets and distance targets -> scalar loss.

        Args:
            logits: the class logits, then the distance logit.
            target, weight, valid: as `SegmentationLoss.forward`, for the class channels.
            distance: float `(B, ...)` targets in [0, 1]; None (validation images without them): the class loss alone.
        """
        loss = self.classes(logits[:, :-1], target, weight=weight, valid=valid)
        if distance is None:
            return loss
        expected = (logits.shape[0], *logits.shape[2:])
        if tuple(distance.shape) != expected or not distance.is_floating_point():
            raise ValueError(f"`distance` must be a floating tensor of shape {expected}, got {tuple(distance.shape)}")
        per_pixel = F.binary_cross_entropy_with_logits(logits[:, -1].float(), distance.float(), reduction="none")
        share = torch.ones_like(per_pixel) if valid is None else valid.to(per_pixel.dtype)
        return loss + self.distance_weight * _weighted_mean(per_pixel, share)
