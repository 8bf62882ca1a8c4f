"""Whole-image forward passes for any model: padded models take any size; unpadded ones (the
classic U-Net) get their missing context by mirroring, as in the paper's overlap-tile strategy
(Ronneberger et al. 2015, Fig. 2), and a size raised to the next legal one. Tiling of large images
lives in `unetkit.infer`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["context_margin", "forward_whole", "mirror_pad"]


def mirror_pad(x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
    """Reflect-pad `(left, right, top, bottom)`, repeating the reflection for pads larger than the image."""
    left, right, top, bottom = pad
    while left or right or top or bottom:
        height, width = x.shape[-2], x.shape[-1]
        step = (min(left, width - 1), min(right, width - 1), min(top, height - 1), min(bottom, height - 1))
        if step == (0, 0, 0, 0):  # a 1-pixel side cannot reflect: replicate the rest
            return F.pad(x, (left, right, top, bottom), mode="replicate")
        x = F.pad(x, step, mode="reflect")
        left, right, top, bottom = (p - s for p, s in zip((left, right, top, bottom), step, strict=True))
    return x


def context_margin(model: object) -> int:
    """The context an unpadded model loses on each side (`model.context_margin()`), 0 for any other."""
    margin_fn = getattr(model, "context_margin", None)
    return int(margin_fn()) if callable(margin_fn) else 0


def forward_whole(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`(B, C, H, W) -> (B, K, H, W)` logits for any model and any `H, W`.

    Unpadded models see the image mirror-padded by their context margin and extended on the
    bottom/right to a legal size; the output is cropped back to `H x W`.
    """
    margin = context_margin(model)
    if margin == 0:
        return model(x)
    height, width = x.shape[-2], x.shape[-1]
    legal_h = model.valid_input_size(height + 2 * margin)  # type: ignore[operator]
    legal_w = model.valid_input_size(width + 2 * margin)  # type: ignore[operator]
    padded = mirror_pad(x, (margin, legal_w - width - margin, margin, legal_h - height - margin))
    return model(padded)[..., :height, :width]
