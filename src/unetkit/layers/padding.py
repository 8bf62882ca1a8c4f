"""Crop and pad helpers in 2D or 3D: the U-Net paper's copy-and-crop, and padding to a multiple of the
downsample factor so that padded models accept any size (Ronneberger et al. 2015, arXiv:1505.04597).

Paddings are tuples in `torch.nn.functional.pad` order: the last axis first, `(left, right, top, bottom)`
in 2D and `(left, right, top, bottom, front, back)` in 3D.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, overload

import torch
import torch.nn.functional as F

from unetkit.layers.dims import check_spatial_dims, per_axis

__all__ = ["center_crop", "pad_to_multiple", "unpad"]


def center_crop(x: torch.Tensor, like: torch.Tensor | Sequence[int], *, spatial_dims: int = 2) -> torch.Tensor:
    """Crop the centre of `x` to the spatial size of `like` (copy-and-crop, Fig. 1 of the paper).

    Args:
        x: `(..., H, W)` or `(..., D, H, W)` tensor.
        like: a tensor whose last `spatial_dims` dimensions give the target size, or the size itself
            (`(h, w)` or `(d, h, w)`; its length decides the axes).
        spatial_dims: axes to take from a tensor `like` (2 or 3).

    Returns:
        A view of `x` cropped on its last axes.
    """
    if isinstance(like, torch.Tensor):
        size = tuple(like.shape[-check_spatial_dims(spatial_dims) :])
    else:
        size = tuple(int(s) for s in like)
    have = tuple(x.shape[-len(size) :])
    if any(s > n for s, n in zip(size, have, strict=True)):
        shown, wanted = "x".join(map(str, have)), "x".join(map(str, size))
        raise ValueError(f"cannot crop a {shown} tensor to the larger size {wanted}")
    first = x.ndim - len(size)
    for axis, (n, s) in enumerate(zip(have, size, strict=True)):
        x = x.narrow(first + axis, (n - s) // 2, s)  # a view, as slicing
    return x


@overload
def pad_to_multiple(
    x: torch.Tensor, multiple: int | Sequence[int], mode: str = ..., *, spatial_dims: Literal[2] = ...
) -> tuple[torch.Tensor, tuple[int, int, int, int]]: ...


@overload
def pad_to_multiple(
    x: torch.Tensor, multiple: int | Sequence[int], mode: str = ..., *, spatial_dims: int
) -> tuple[torch.Tensor, tuple[int, ...]]: ...


def pad_to_multiple(
    x: torch.Tensor, multiple: int | Sequence[int], mode: str = "reflect", *, spatial_dims: int = 2
) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Pad the last `spatial_dims` dimensions of `x` up to the next multiple of `multiple`.

    Padding is split evenly between both sides. `"reflect"` falls back to `"replicate"` where the
    input is too small to reflect (a side no longer than the padding).

    Args:
        x: `(B, C, H, W)` or `(B, C, D, H, W)` tensor.
        multiple: each size must become divisible by this (a model's `downsample_factor`), or one
            multiple per axis (`downsample_factors` of an anisotropic model).
        mode: `"reflect"`, `"replicate"` or `"constant"` (zeros).
        spatial_dims: 2 or 3.

    Returns:
        The padded tensor and the padding (F.pad order, `(left, right, top, bottom)` in 2D) for `unpad`.
    """
    dims = check_spatial_dims(spatial_dims)
    if isinstance(multiple, int) and not isinstance(multiple, bool) and multiple < 1:
        raise ValueError(f"`multiple` must be >= 1, got {multiple}")
    multiples = per_axis(multiple, dims, "multiple")
    sizes = tuple(x.shape[-dims:])
    pad: tuple[int, ...] = ()
    for n, m in zip(reversed(sizes), reversed(multiples), strict=True):  # F.pad order: last axis first
        extra = -n % m
        pad += (extra // 2, extra - extra // 2)
    if not any(pad):
        return x, pad
    sides = [n for n in reversed(sizes) for _ in range(2)]  # the size each padding entry reflects within
    if mode == "reflect" and any(p >= n for p, n in zip(pad, sides, strict=True)):
        mode = "replicate"
    if mode == "constant":
        return F.pad(x, pad, mode="constant", value=0.0), pad
    return F.pad(x, pad, mode=mode), pad


def unpad(x: torch.Tensor, pad: Sequence[int]) -> torch.Tensor:
    """Undo `pad_to_multiple`: crop the padding (F.pad order, 2 entries per axis) off the last axes."""
    for k in range(len(pad) // 2):  # entries 2k, 2k + 1 pad the k-th axis from the end
        low, high = pad[2 * k], pad[2 * k + 1]
        dim = x.ndim - 1 - k
        x = x.narrow(dim, low, x.shape[dim] - low - high)
    return x
