"""Spatial attention of SA-UNet (Guo et al. 2020, arXiv:2004.03696, Sec. 2.2), after CBAM
(Woo et al. 2018): channel-wise mean and max -> 7x7 (7x7x7 in 3D) conv -> sigmoid gate on every position.
"""

from __future__ import annotations

import torch
from torch import nn

from unetkit.layers.dims import conv_nd

__all__ = ["SpatialAttention"]


class SpatialAttention(nn.Module):
    """Gate each spatial position by a map computed from the channel mean and max of that sample."""

    def __init__(self, kernel_size: int = 7, spatial_dims: int = 2) -> None:
        """
        Args:
            kernel_size: odd side of the conv over the two pooled maps (7 in the paper).
            spatial_dims: 2 or 3.
        """
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"`kernel_size` must be an odd integer >= 1, got {kernel_size}")
        self.conv = conv_nd(spatial_dims)(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, C, *S) -> (B, C, *S)`."""
        pooled = torch.cat(
            [x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1
        )  # (B, 2, *S): per sample, never across the batch
        return x * torch.sigmoid(self.conv(pooled))
