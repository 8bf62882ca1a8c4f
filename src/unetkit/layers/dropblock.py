"""DropBlock (Ghiasi et al. 2018, arXiv:1810.12890): drop contiguous square (2D) or cubic (3D) regions of a
feature map.

Used by SA-UNet (Guo et al. 2020, arXiv:2004.03696) in every conv block. Unlike the SA-UNet reference code,
masks are drawn per sample and per channel on the input's device, with no Python loop over pixels, and the
layer is the identity in `eval()`. One implementation for any number of spatial axes; `DropBlock2d` and
`DropBlock3d` only fix that number, as `BatchNorm2d` / `BatchNorm3d` do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.layers.dims import check_spatial_dims, per_axis

__all__ = ["DropBlock", "DropBlock2d", "DropBlock3d", "drop_block_gamma", "make_dropblock"]

_MAX_POOL = {2: F.max_pool2d, 3: F.max_pool3d}


def drop_block_gamma(keep_prob: float, block_size: int | Sequence[int], *sizes: int) -> float:
    """The seed-drop rate of eq. (1) in Ghiasi et al. 2018 for a feature map of `sizes` (H, W or D, H, W).

    gamma = (1 - keep_prob) / prod(block) * prod(sizes) / prod(sizes - block + 1); in 2D with a square block
    that is (1 - keep_prob) / block_size^2 * (H * W) / ((H - block_size + 1) * (W - block_size + 1)).
    """
    block = per_axis(block_size, len(sizes), "block_size")
    valid = math.prod(n - b + 1 for n, b in zip(sizes, block, strict=True))
    return (1.0 - keep_prob) / math.prod(block) * math.prod(sizes) / valid


class DropBlock(nn.Module):
    """Drop `block_size`-sided blocks so that about `1 - keep_prob` of each map is zeroed.

    Block seeds are drawn where a whole block fits (the paper's valid seed region), expanded to blocks by a
    max-pool, and the kept activations are rescaled per sample by `numel / kept` so that the expected
    activation is unchanged. An integer `block_size` gives a square / cube clipped to the map's smallest
    side; one size per axis (`(3, 7, 7)` for thick slices) clips each axis to its own side.
    """

    def __init__(self, block_size: int | Sequence[int] = 7, keep_prob: float = 0.9, spatial_dims: int = 2) -> None:
        """
        Args:
            block_size: side of the blocks, or one side per spatial axis.
            keep_prob: fraction of activations kept; `1.0` makes the layer the identity.
            spatial_dims: 2 for `(B, C, H, W)` maps, 3 for `(B, C, D, H, W)`.
        """
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        if isinstance(block_size, int) and not isinstance(block_size, bool):
            if block_size < 1:
                raise ValueError(f"`block_size` must be an integer >= 1, got {block_size!r}")
        elif not isinstance(block_size, Sequence) or isinstance(block_size, str):
            raise ValueError(f"`block_size` must be an integer >= 1, got {block_size!r}")
        else:
            block_size = per_axis(block_size, self.spatial_dims, "block_size")
        if not 0.0 < keep_prob <= 1.0:
            raise ValueError(f"`keep_prob` must be in (0, 1], got {keep_prob!r}")
        self.block_size = block_size
        self.keep_prob = float(keep_prob)

    def extra_repr(self) -> str:
        return f"block_size={self.block_size}, keep_prob={self.keep_prob}"

    def _block(self, sizes: tuple[int, ...]) -> tuple[int, ...]:
        if isinstance(self.block_size, int):
            side = min(self.block_size, *sizes)
            return (side,) * len(sizes)
        return tuple(min(b, n) for b, n in zip(self.block_size, sizes, strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, C, *S) -> (B, C, *S)`; returns `x` itself in eval mode or at `keep_prob=1`."""
        if not self.training or self.keep_prob >= 1.0:
            return x
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"{type(self).__name__} expects {self.spatial_dims} spatial axes (B, C, ...), got {tuple(x.shape)}"
            )
        batch, channels, *spatial = x.shape
        sizes = tuple(spatial)
        block = self._block(sizes)
        gamma = drop_block_gamma(self.keep_prob, block, *sizes)
        valid = [n - b + 1 for n, b in zip(sizes, block, strict=True)]
        # seeds mark the first corner of each dropped block; all lie in the valid region
        seeds = torch.rand(batch, channels, *valid, device=x.device) < gamma
        pad = [p for b in reversed(block) for p in (b - 1, b - 1)]  # F.pad order: last axis first
        seeds = F.pad(seeds.to(x.dtype), pad)
        kernel = block[0] if len(set(block)) == 1 else block
        dropped = _MAX_POOL[self.spatial_dims](seeds, kernel_size=kernel, stride=1)  # (B, C, *S)
        keep = 1.0 - dropped
        kept = keep.flatten(1).sum(dim=1, dtype=torch.float32).clamp_min(1.0)  # (B,)
        scale = (keep[0].numel() / kept).to(x.dtype).view(batch, *([1] * (x.ndim - 1)))
        return x * keep * scale


class DropBlock2d(DropBlock):
    """DropBlock on `(B, C, H, W)` maps."""

    def __init__(self, block_size: int | Sequence[int] = 7, keep_prob: float = 0.9) -> None:
        super().__init__(block_size, keep_prob, spatial_dims=2)


class DropBlock3d(DropBlock):
    """DropBlock on `(B, C, D, H, W)` maps."""

    def __init__(self, block_size: int | Sequence[int] = 7, keep_prob: float = 0.9) -> None:
        super().__init__(block_size, keep_prob, spatial_dims=3)


def make_dropblock(block_size: int | Sequence[int], keep_prob: float, spatial_dims: int = 2) -> DropBlock:
    """`DropBlock2d` or `DropBlock3d` by `spatial_dims`."""
    dims = check_spatial_dims(spatial_dims)
    return DropBlock2d(block_size, keep_prob) if dims == 2 else DropBlock3d(block_size, keep_prob)
