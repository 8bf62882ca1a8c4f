"""Pixel metrics accumulated over a data set on the device: Dice (F1) and IoU from torchmetrics'
stat scores (true / false positives and negatives per class), micro-averaged over all pixels.
Ignored pixels (outside the field of view) are excluded.
"""

from __future__ import annotations

import torch

__all__ = ["PixelMeter"]

IGNORE = -1


class PixelMeter:
    """Accumulate per-class TP / FP / FN over batches; read Dice and IoU once at the end.

    For binary problems the score is that of the foreground class; for multi-class ones the mean
    over foreground classes (class 0 is background) that occur in the target or the prediction.
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
        self.counts = torch.zeros(num_classes, 3, dtype=torch.float64, device=device)  # tp, fp, fn

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
        self.counts += torch.stack([stats[:, 0], stats[:, 1], stats[:, 3]], dim=1).to(self.counts)

    def compute(self) -> dict[str, float]:
        """Dice and IoU (foreground mean) and per-class values, as Python floats."""
        tp, fp, fn = self.counts.cpu().unbind(dim=1)
        present = (tp + fp + fn) > 0
        dice = torch.where(present, 2 * tp / (2 * tp + fp + fn).clamp_min(1), torch.ones_like(tp))
        iou = torch.where(present, tp / (tp + fp + fn).clamp_min(1), torch.ones_like(tp))
        fg = slice(1, None)
        used = present[fg]
        mean_dice = dice[fg][used].mean().item() if used.any() else 1.0
        mean_iou = iou[fg][used].mean().item() if used.any() else 1.0
        result = {"dice": mean_dice, "iou": mean_iou}
        if self.num_classes > 2:
            for k in range(1, self.num_classes):
                result[f"dice_{k}"] = dice[k].item()
        return result
