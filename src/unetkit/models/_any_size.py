"""What the any-size image-to-image models share: padding to their down-sampling factor, and the
checks of `forward(x, t)` with an optional timestep embedding."""

from __future__ import annotations

import torch

from unetkit.layers import TimestepEmbedding, embed_timesteps, pad_to_multiple

__all__ = ["AnySizeTimeMixin"]


class AnySizeTimeMixin:
    """For a model with `in_channels`, `downsample_factor` and `time_embed` (a `TimestepEmbedding` or None)
    that pads its input inside and returns the input's size."""

    in_channels: int
    downsample_factor: int
    time_embed: TimestepEmbedding | None
    spatial_dims: int = 2  # 2D only

    def output_size(self, n: int) -> int | None:
        """Output side for input side `n`: the same, for any `n >= 1`."""
        return n if n >= 1 else None

    def valid_input_size(self, n: int) -> int:
        """Any side is legal (inputs are padded internally)."""
        return max(int(n), 1)

    def _prepare(
        self, x: torch.Tensor, t: torch.Tensor | float | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, tuple[int, ...]]:
        """Check `x` `(B, in_channels, H, W)` and `t`; -> (padded `x`, embedding `(B, E)` or None, padding
        for `unpad`)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        emb = embed_timesteps(self.time_embed, t, x)
        x, pad = pad_to_multiple(x, self.downsample_factor)
        return x, emb, pad
