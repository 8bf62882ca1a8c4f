"""The noise-prediction U-Net of DDPM (Ho, Jain, Abbeel 2020, arXiv:2006.11239, Appendix B), scaled
down for small images on a CPU.

What follows the paper: a 3x3 stem; per level `blocks` residual blocks (GroupNorm(32 channels per
group at most) -> SiLU -> 3x3 conv, the timestep embedding projected and added, GroupNorm -> SiLU ->
dropout -> 3x3 conv, a 1x1 conv on the shortcut when the width changes; after Zagoruyko & Komodakis'
wide ResNet); a stride-2 3x3 conv down between levels and nearest up-sampling + 3x3 conv up; a middle
of residual block, self-attention, residual block; an up path with `blocks + 1` residual blocks per
level, each on the concatenation of the previous output and one skip of the down path; single-head
self-attention on the levels in `attention`; GroupNorm -> SiLU -> 3x3 conv out. As in the paper's
code the last conv of every residual block, of every attention and of the output is initialised to
zero, so the untrained network is the identity on its residual paths and predicts zero noise.

What differs: widths and depth are small (`channels=(16, 32, 64)`, one block per level, attention
only at the coarsest level: 28² -> 14² -> 7²; DDPM's CIFAR-10 model has 128-256 channels, 2 blocks
and attention at 16²), the timestep embedding is optional (off by default,
like the other zoo models), and any H x W is accepted by padding to a multiple of the down-sampling
factor.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from unetkit.layers import (
    GradCheckpointMixin,
    TimeProjection,
    TimestepEmbedding,
    unpad,
)
from unetkit.models._any_size import AnySizeTimeMixin
from unetkit.models._registry import build_model, register_model

__all__ = ["DDPMUNet", "ddpm_unet"]


def _group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with at most 32 groups (the paper's 32, fewer for narrow layers), >= 4 channels each."""
    groups = max(1, min(32, channels // 4))
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels)


def _zero(module: nn.Conv2d) -> nn.Conv2d:
    nn.init.zeros_(module.weight)
    if module.bias is not None:
        nn.init.zeros_(module.bias)
    return module


class ResidualBlock(nn.Module):
    """`x + f(x, emb)`: two GroupNorm-SiLU-conv layers, the timestep projection added between them."""

    def __init__(self, in_channels: int, out_channels: int, time_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = _group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time = TimeProjection(time_dim, out_channels) if time_dim else None
        self.norm2 = _group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None) -> torch.Tensor:
        """`(B, C_in, H, W)`, `(B, E)` or None -> `(B, C_out, H, W)`."""
        h = self.conv1(F.silu(self.norm1(x)))
        if self.time is not None and emb is not None:
            h = h + self.time(emb)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.shortcut(x) + h


class SelfAttention(nn.Module):
    """`x + proj(softmax(q k^T / sqrt(C)) v)` over the H x W positions, single head (DDPM's AttnBlock)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        """`(B, C, H, W) -> (B, C, H, W)`; `emb` is ignored (the block signature of the U-Net)."""
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(-1, -2).unbind(1)  # (B, HW, C) each
        if x.is_cuda:  # fused kernels
            out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]  # (B, HW, C)
        else:  # on a CPU, plain matmuls train 4x faster than SDPA's bf16 path (torch 2.13, 49 positions)
            out = torch.softmax(q @ k.transpose(-1, -2) * c**-0.5, dim=-1) @ v
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class _Stage(nn.Module):
    """Residual blocks (each optionally followed by attention) that all see the timestep embedding."""

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, emb)
        return x


class DDPMUNet(AnySizeTimeMixin, GradCheckpointMixin, nn.Module):
    """DDPM's residual U-Net with GroupNorm, skip concatenation and self-attention at coarse levels."""

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: tuple[int, ...] = (16, 32, 64),
        blocks: int = 1,
        attention: tuple[int, ...] = (-1,),
        dropout: float = 0.0,
        time_embedding: int = 0,
    ) -> None:
        """
        Args:
            in_channels: image channels.
            out_channels: output channels (the noise estimate has the image's channels).
            channels: width of each level; a stride-2 conv between consecutive levels.
            blocks: residual blocks per level on the way down (`blocks + 1` on the way up, as DDPM).
            attention: levels with self-attention after each residual block, 0 = full resolution,
                negative from the coarsest (-1, the default); the middle always has one.
            dropout: dropout inside the residual blocks (0.1 in DDPM's CIFAR-10 model).
            time_embedding: width of the sinusoidal timestep embedding (widened to 4x by an MLP and
                added in every residual block); `0` = none, `forward(x)` without timesteps.
        """
        super().__init__()
        channels = tuple(channels)
        if len(channels) < 2 or any(not isinstance(c, int) or c < 1 for c in channels):
            raise ValueError(f"`channels` must list at least two positive integers, got {channels!r}")
        if not isinstance(blocks, int) or blocks < 1:
            raise ValueError(f"`blocks` must be an integer >= 1, got {blocks!r}")
        attention = tuple(attention)
        if any(not isinstance(a, int) or not -len(channels) <= a < len(channels) for a in attention):
            raise ValueError(
                f"`attention` must list levels in [{-len(channels)}, {len(channels) - 1}], got {attention!r}"
            )
        attention = tuple(a % len(channels) for a in attention)
        if not 0 <= dropout < 1:
            raise ValueError(f"`dropout` must be in [0, 1), got {dropout!r}")
        self.time_embed = TimestepEmbedding(time_embedding) if time_embedding else None
        t_dim = self.time_embed.out_dim if self.time_embed is not None else 0

        def level_blocks(c_in: int, c_out: int, level: int) -> list[nn.Module]:
            layers: list[nn.Module] = [ResidualBlock(c_in, c_out, t_dim, dropout)]
            if level in attention:
                layers.append(SelfAttention(c_out))
            return layers

        self.stem = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skip_widths = [channels[0]]
        prev = channels[0]
        for level, c in enumerate(channels):
            for _ in range(blocks):
                self.down.append(_Stage(level_blocks(prev, c, level)))
                prev = c
                skip_widths.append(c)
            if level < len(channels) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skip_widths.append(c)
        self.middle = _Stage(
            [ResidualBlock(prev, prev, t_dim, dropout), SelfAttention(prev), ResidualBlock(prev, prev, t_dim, dropout)]
        )
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level in reversed(range(len(channels))):
            c = channels[level]
            for _ in range(blocks + 1):
                self.up.append(_Stage(level_blocks(prev + skip_widths.pop(), c, level)))
                prev = c
            if level > 0:
                self.upsample.append(nn.Conv2d(c, c, 3, padding=1))
        self.head = nn.Sequential(_group_norm(prev), nn.SiLU(), _zero(nn.Conv2d(prev, out_channels, 3, padding=1)))
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.blocks = blocks
        self.levels = len(channels)
        self.downsample_factor = 2 ** (len(channels) - 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor | float | None = None) -> torch.Tensor:
        """`(B, in_channels, H, W)`, timesteps `(B,)` or a number (only with a time embedding)
        `-> (B, out_channels, H, W)`."""
        x, emb, pad = self._prepare(x, t)
        h = self.stem(x)
        skips = [h]
        stages = iter(self.down)
        for level in range(self.levels):
            for _ in range(self.blocks):
                h = self._run_stage(next(stages), h, emb)
                skips.append(h)
            if level < self.levels - 1:
                h = self.downsample[level](h)
                skips.append(h)
        h = self._run_stage(self.middle, h, emb)
        stages = iter(self.up)
        for i, level in enumerate(reversed(range(self.levels))):
            for _ in range(self.blocks + 1):
                h = self._run_stage(next(stages), torch.cat([h, skips.pop()], dim=1), emb)
            if level > 0:
                h = self.upsample[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return unpad(self.head(h), pad)


@register_model(example_size=28)
def ddpm_unet(**kwargs: Any) -> DDPMUNet:
    """DDPM's residual U-Net (GroupNorm, self-attention), small: the diffusion recipe's noise predictor."""
    args: dict[str, Any] = dict(in_channels=1, out_channels=1)
    return build_model(DDPMUNet, args, **kwargs)  # type: ignore[return-value]
