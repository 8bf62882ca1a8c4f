"""Pixel metrics accumulated over a data set on the device: the per-class confusion counts of
torchmetrics' stat scores, read once at the end and scored by `unetkit.metrics.confusion` (one
implementation of Dice / IoU and one empty-mask rule for validation, `unetkit evaluate` and the demo).
Invalid pixels (outside the field of view, ignored mask values) are excluded.
"""

from __future__ import annotations

import torch

__all__ = ["PixelMeter"]

IGNORE = -1


class PixelMeter:
    """Accumulate per-class TP / FP / TN / FN over batches; read Dice and IoU once at the end.

    For binary problems the score is that of the foreground class; for multi-class ones the mean over
    the foreground classes (class 0 is background) present in the target or the prediction: a class
    absent from both is `None` and left out of the mean (`unetkit.metrics.confusion`).
    """

    def __init__(self, num_classes: int, device: torch.device | str = "cpu") -> None:
        """
        Args:
            num_classes: classes including background (2 for binary).
            device: where counts accumulate (no host sync until `compute`).
        """
        if num_classes < 2:
            raise ValueError(f"`num_classes` must be >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.counts = torch.zeros(num_classes, 4, dtype=torch.float64, device=device)  # tp, fp, tn, fn

    def update(self, pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        """Add a batch. `pred`, `target`: int `(B, H, W)` class indices; `valid`: bool `(B, H, W)` or None."""
        from torchmetrics.functional.classification import multiclass_stat_scores

        target = target.long()
        if valid is not None:
            target = torch.where(valid, target, torch.full_like(target, IGNORE))
        stats = multiclass_stat_scores(
            pred.long(),
            target,
            num_classes=self.num_classes,
            average="none",
            ignore_index=IGNORE,
            validate_args=False,
        )  # (K, 5): tp, fp, tn, fn, support
        self.counts += stats[:, :4].to(self.counts)

    def compute(self) -> dict[str, float | None]:
        """Dice and IoU (foreground mean; None when no foreground class is present) and per-class Dice
        (`dice_k`, None for an absent class) when there are more than two classes."""
        from unetkit.metrics.confusion import class_scores

        headline, per_class = class_scores(self.counts.cpu().round().long().numpy())
        result: dict[str, float | None] = {"dice": headline["dice"], "iou": headline["iou"]}
        if self.num_classes > 2:
            for k in range(1, self.num_classes):
                result[f"dice_{k}"] = per_class[str(k)]["dice"]
        return result
