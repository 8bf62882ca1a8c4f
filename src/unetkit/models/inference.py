"""Whole-image (and whole-volume) forward passes for any model: padded models take any size; unpadded ones
(the classic U-Nets) get their missing context by mirroring, as in the paper's overlap-tile strategy
(Ronneberger et al. 2015, Fig. 2), and a size raised to the next legal one. Tiling of large images lives in
`unetkit.infer`.

The per-axis helpers (`spatial_dims`, `context_margins`, `valid_input_shape`, `output_shape`) read a model's
size rules for 2D and 3D alike: a model with per-axis methods (`UNet`) answers for each axis, any other by its
one-axis methods applied to every axis.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "context_margin",
    "context_margins",
    "forward_whole",
    "mirror_pad",
    "model_spatial_dims",
    "output_shape",
    "valid_input_shape",
]


def mirror_pad(x: torch.Tensor, pad: Sequence[int]) -> torch.Tensor:
    """Reflect-pad (F.pad order: `(left, right, top, bottom[, front, back])`), repeating the reflection for pads
    larger than the image."""
    todo = [int(p) for p in pad]
    axes = len(todo) // 2
    while any(todo):
        # entry 2k / 2k+1 pads the k-th axis from the end
        sizes = [x.shape[-1 - k] for k in range(axes) for _ in range(2)]
        step = [min(p, n - 1) for p, n in zip(todo, sizes, strict=True)]
        if not any(step):  # a 1-pixel side cannot reflect: replicate the rest
            return F.pad(x, todo, mode="replicate")
        x = F.pad(x, step, mode="reflect")
        todo = [p - s for p, s in zip(todo, step, strict=True)]
    return x


def context_margin(model: object) -> int:
    """The context an unpadded model loses on each side (`model.context_margin()`), 0 for any other."""
    margin_fn = getattr(model, "context_margin", None)
    return int(margin_fn()) if callable(margin_fn) else 0


def model_spatial_dims(model: object) -> int:
    """The model's number of spatial axes (`model.spatial_dims`; 2 for models without the attribute)."""
    return int(getattr(model, "spatial_dims", 2) or 2)


def context_margins(model: object, spatial_dims: int | None = None) -> tuple[int, ...]:
    """The context lost on each side, per spatial axis (`(0, ..., 0)` for padded models)."""
    dims = spatial_dims or model_spatial_dims(model)
    margins_fn = getattr(model, "context_margins", None)
    if callable(margins_fn):
        return tuple(int(m) for m in margins_fn())
    return (context_margin(model),) * dims


def valid_input_shape(model: object, shape: Sequence[int]) -> tuple[int, ...]:
    """The smallest spatial shape >= `shape` the model accepts, axis by axis (`shape` itself for a model
    without size rules)."""
    shape_fn = getattr(model, "valid_input_shape", None)
    if callable(shape_fn):
        return tuple(int(n) for n in shape_fn(tuple(shape)))
    size_fn = getattr(model, "valid_input_size", None)
    if callable(size_fn):
        return tuple(int(size_fn(int(n))) for n in shape)
    return tuple(int(n) for n in shape)


def output_shape(model: object, shape: Sequence[int]) -> tuple[int, ...] | None:
    """The model's output spatial shape for an input of spatial `shape`, or None where an axis is not legal."""
    shape_fn = getattr(model, "output_shape", None)
    if callable(shape_fn):
        out = shape_fn(tuple(shape))
        return None if out is None else tuple(int(n) for n in out)
    size_fn = getattr(model, "output_size", None)
    if not callable(size_fn):
        return tuple(int(n) for n in shape)
    sizes = [size_fn(int(n)) for n in shape]
    return None if any(s is None for s in sizes) else tuple(int(s) for s in sizes)


def forward_whole(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`(B, C, *S) -> (B, K, *S)` logits for any model and any spatial size `S` (`(H, W)` or `(D, H, W)`).

    Unpadded models see the input mirror-padded by their context margin and extended at the end of each
    axis to a legal size; the output is cropped back to `S`.
    """
    dims = x.ndim - 2
    margins = context_margins(model, dims)
    if not any(margins):
        return model(x)
    sizes = tuple(x.shape[2:])
    legal = valid_input_shape(model, [n + 2 * m for n, m in zip(sizes, margins, strict=True)])
    pad: list[int] = []
    for n, m, target in zip(reversed(sizes), reversed(margins), reversed(legal), strict=True):  # F.pad order
        pad += [m, target - n - m]
    out = model(mirror_pad(x, pad))
    return out[(..., *(slice(0, n) for n in sizes))]
