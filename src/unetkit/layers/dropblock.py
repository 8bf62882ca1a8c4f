"""DropBlock (Ghiasi et al. 2018, arXiv:1810.12890): drop contiguous square regions of a feature map.

Used by SA-UNet (Guo et al. 2020, arXiv:2004.03696) in every conv block. Unlike the SA-UNet
reference code, masks are drawn per sample and per channel on the input's device, with no Python
loop over pixels, and the layer is the identity in `eval()`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DropBlock2d", "drop_block_gamma"]


def drop_block_gamma(keep_prob: float, block_size: int, height: int, width: int) -> float:
    """The seed-drop rate of eq. (1) in Ghiasi et al. 2018, for a `height x width` feature map.

    gamma = (1 - keep_prob) / block_size^2 * (H * W) / ((H - block_size + 1) * (W - block_size + 1))
    """
    valid = (height - block_size + 1) * (width - block_size + 1)
    return (1.0 - keep_prob) / block_size**2 * (height * width) / valid


class DropBlock2d(nn.Module):
    """Drop `block_size x block_size` blocks so that about `1 - keep_prob` of each map is zeroed.

    Block seeds are drawn where a whole block fits (the paper's valid seed region), expanded to
    blocks by a max-pool, and the kept activations are rescaled per sample by
    `numel / kept` so that the expected activation is unchanged.
    """

    def __init__(self, block_size: int = 7, keep_prob: float = 0.9) -> None:
        """
        Args:
            block_size: side of the square blocks, clipped to the feature map's smaller side.
            keep_prob: fraction of activations kept; `1.0` makes the layer the identity.
        """
        super().__init__()
        if not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"`block_size` must be an integer >= 1, got {block_size!r}")
        if not 0.0 < keep_prob <= 1.0:
            raise ValueError(f"`keep_prob` must be in (0, 1], got {keep_prob!r}")
        self.block_size = block_size
        self.keep_prob = float(keep_prob)

    def extra_repr(self) -> str:
        return f"block_size={self.block_size}, keep_prob={self.keep_prob}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, C, H, W) -> (B, C, H, W)`; returns `x` itself in eval mode or at `keep_prob=1`."""
        if not self.training or self.keep_prob >= 1.0:
            return x
        batch, channels, height, width = x.shape
        size = min(self.block_size, height, width)
        gamma = drop_block_gamma(self.keep_prob, size, height, width)
        valid_h, valid_w = height - size + 1, width - size + 1
        # seeds mark the top-left corner of each dropped block; all lie in the valid region
        seeds = torch.rand(batch, channels, valid_h, valid_w, device=x.device) < gamma
        seeds = F.pad(seeds.to(x.dtype), (size - 1, size - 1, size - 1, size - 1))
        dropped = F.max_pool2d(seeds, kernel_size=size, stride=1)  # (B, C, H, W)
        keep = 1.0 - dropped
        kept = keep.flatten(1).sum(dim=1, dtype=torch.float32).clamp_min(1.0)  # (B,)
        scale = (keep[0].numel() / kept).to(x.dtype).view(batch, 1, 1, 1)
        return x * keep * scale
