"""Image-to-image metrics, per image: PSNR and SSIM (Wang et al. 2004, Gaussian window 11, sigma 1.5)
from torchmetrics, for images in a known range (`data_range`, 1.0 for images in [0, 1])."""

from __future__ import annotations

import torch

__all__ = ["psnr", "ssim"]


def _check(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(
            f"`pred` and `target` must both be (B, C, H, W), got {tuple(pred.shape)} and {tuple(target.shape)}"
        )


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """`(B, C, H, W)` x 2 -> `(B,)` peak signal-to-noise ratio in dB, `10 log10(range^2 / MSE)`."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    _check(pred, target)
    return peak_signal_noise_ratio(pred.float(), target.float(), data_range=data_range, reduction="none", dim=(1, 2, 3))


def ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """`(B, C, H, W)` x 2 -> `(B,)` structural similarity (1 for identical images)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    _check(pred, target)
    return structural_similarity_index_measure(  # type: ignore[return-value]
        pred.float(), target.float(), data_range=data_range, reduction="none"
    )
