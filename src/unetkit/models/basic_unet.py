"""A minimal U-Net from diffusion tutorials (the Hugging Face diffusion course's `BasicUNet`):
three 5x5 convs down with SiLU and 2x2 max-pool, three up with nearest up-sampling and additive
skips. Trained with MSE as a denoiser. Unlike the tutorial, the last conv has no activation, so the
model returns unbounded outputs (logits / noise estimates), and any H x W is accepted by padding to
a multiple of the downsample factor. With `time_embedding > 0` every layer but the last adds a
projection of a sinusoidal timestep embedding to its feature maps (the DDPM U-Net's `temb_proj`), so
the model can serve as the noise predictor of a diffusion model; it is off by default.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from unetkit.layers import (
    GradCheckpointMixin,
    TimeProjection,
    TimestepEmbedding,
    make_act,
    unpad,
)
from unetkit.models._any_size import AnySizeTimeMixin
from unetkit.models._registry import build_model, register_model

__all__ = ["BasicUNet", "basic_unet"]


class BasicUNet(AnySizeTimeMixin, GradCheckpointMixin, nn.Module):
    """Conv U-Net with additive skips: `channels=(32, 64, 64)` gives the tutorial's 309,057 parameters."""

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: tuple[int, ...] = (32, 64, 64),
        kernel_size: int = 5,
        act: str = "silu",
        time_embedding: int = 0,
    ) -> None:
        """
        Args:
            in_channels: image channels.
            out_channels: output channels.
            channels: channels of each level; one max-pool between consecutive levels.
            kernel_size: odd conv kernel side (5 in the tutorial).
            act: activation between convs.
            time_embedding: width of the sinusoidal timestep embedding (widened to 4x by an MLP and
                added to every layer's output but the last); `0` = none, `forward(x)` as before.
        """
        super().__init__()
        channels = tuple(channels)
        if len(channels) < 2 or any(not isinstance(c, int) or c < 1 for c in channels):
            raise ValueError(f"`channels` must list at least two positive integers, got {channels!r}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"`kernel_size` must be an odd integer >= 1, got {kernel_size}")
        pad = kernel_size // 2
        downs, prev = [], in_channels
        for c in channels:
            downs.append(nn.Sequential(nn.Conv2d(prev, c, kernel_size, padding=pad), make_act(act)))
            prev = c
        ups = []
        targets = [*reversed(channels[:-1]), out_channels]  # additive skips need matching widths
        for i, c in enumerate(targets):
            conv = nn.Conv2d(prev, c, kernel_size, padding=pad)
            ups.append(conv if i == len(targets) - 1 else nn.Sequential(conv, make_act(act)))
            prev = c
        self.down_layers = nn.ModuleList(downs)
        self.up_layers = nn.ModuleList(ups)
        self.downscale = nn.MaxPool2d(2)
        self.upscale = nn.Upsample(scale_factor=2, mode="nearest")
        self.time_embed: TimestepEmbedding | None = None
        if time_embedding:
            self.time_embed = TimestepEmbedding(time_embedding)
            width = self.time_embed.out_dim
            self.down_time = nn.ModuleList([TimeProjection(width, c) for c in channels])
            self.up_time = nn.ModuleList([TimeProjection(width, c) for c in targets[:-1]])
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.downsample_factor = 2 ** (len(channels) - 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor | float | None = None) -> torch.Tensor:
        """`(B, in_channels, H, W)`, timesteps `(B,)` or a number (only with a time embedding)
        `-> (B, out_channels, H, W)`."""
        x, emb, pad = self._prepare(x, t)
        skips = []
        for i, layer in enumerate(self.down_layers):
            x = self._run_stage(layer, x)
            if emb is not None:
                x = x + self.down_time[i](emb)  # (B, C, 1, 1) broadcast over H, W
            if i < len(self.down_layers) - 1:
                skips.append(x)
                x = self.downscale(x)
        for i, layer in enumerate(self.up_layers):
            if i > 0:
                x = self.upscale(x) + skips.pop()
            x = self._run_stage(layer, x)
            if emb is not None and i < len(self.up_layers) - 1:
                x = x + self.up_time[i](emb)
        return unpad(x, pad)


@register_model(example_size=28)
def basic_unet(**kwargs: Any) -> BasicUNet:
    """3-level conv U-Net with SiLU, max-pool down, nearest up, additive skips (diffusion tutorial)."""
    args: dict[str, Any] = dict(in_channels=1, out_channels=1)
    return build_model(BasicUNet, args, **kwargs)  # type: ignore[return-value]
