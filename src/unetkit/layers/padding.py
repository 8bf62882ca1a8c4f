"""Crop and pad helpers: the U-Net paper's copy-and-crop, and padding to a multiple of the
downsample factor so that padded models accept any H x W (Ronneberger et al. 2015, arXiv:1505.04597).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["center_crop", "pad_to_multiple", "unpad"]


def center_crop(x: torch.Tensor, like: torch.Tensor | tuple[int, int]) -> torch.Tensor:
    """Crop the centre of `x` to the spatial size of `like` (copy-and-crop, Fig. 1 of the paper).

    Args:
        x: `(B, C, H, W)` tensor.
        like: a tensor whose last two dimensions give the target size, or `(h, w)`.

    Returns:
        `(B, C, h, w)` view of `x`.
    """
    h, w = (like.shape[-2], like.shape[-1]) if isinstance(like, torch.Tensor) else like
    height, width = x.shape[-2], x.shape[-1]
    if h > height or w > width:
        raise ValueError(f"cannot crop a {height}x{width} tensor to the larger size {h}x{w}")
    top = (height - h) // 2
    left = (width - w) // 2
    return x[..., top : top + h, left : left + w]


def pad_to_multiple(
    x: torch.Tensor, multiple: int, mode: str = "reflect"
) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Pad the last two dimensions of `x` up to the next multiple of `multiple`.

    Padding is split evenly between both sides. `"reflect"` falls back to `"replicate"` where the
    input is too small to reflect (a side no longer than the padding).

    Args:
        x: `(B, C, H, W)` tensor.
        multiple: the size must become divisible by this (a model's `downsample_factor`).
        mode: `"reflect"`, `"replicate"` or `"constant"` (zeros).

    Returns:
        The padded tensor and the padding `(left, right, top, bottom)` for `unpad`.
    """
    if multiple < 1:
        raise ValueError(f"`multiple` must be >= 1, got {multiple}")
    height, width = x.shape[-2], x.shape[-1]
    pad_h = -height % multiple
    pad_w = -width % multiple
    pad = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
    if pad_h == 0 and pad_w == 0:
        return x, pad
    if mode == "reflect" and (max(pad[0], pad[1]) >= width or max(pad[2], pad[3]) >= height):
        mode = "replicate"
    if mode == "constant":
        return F.pad(x, pad, mode="constant", value=0.0), pad
    return F.pad(x, pad, mode=mode), pad


def unpad(x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
    """Undo `pad_to_multiple`: crop `(left, right, top, bottom)` off the last two dimensions."""
    left, right, top, bottom = pad
    height, width = x.shape[-2], x.shape[-1]
    return x[..., top : height - bottom, left : width - right]
