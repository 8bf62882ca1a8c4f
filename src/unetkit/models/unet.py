"""The U-Net family: the classic unpadded U-Net, the padded U-Net with BatchNorm, and SA-UNet.

- Ronneberger, Fischer, Brox 2015, "U-Net: Convolutional Networks for Biomedical Image Segmentation",
  arXiv:1505.04597: unpadded 3x3 convs + ReLU, 2x2 max-pool, 2x2 up-convolution, copy-and-crop,
  1x1 head; 23 conv layers; a 572x572 input gives a 388x388 output.
- The padded variant with BatchNorm and bilinear or transposed up-sampling popularised by the
  best-known PyTorch implementation (the bilinear variant halves the bottleneck and up-stage outputs
  so that concatenations match); it takes any H x W by padding to a multiple of 2**depth.
- Guo et al. 2020, "SA-UNet: Spatial Attention U-Net for Retinal Vessel Segmentation",
  arXiv:2004.03696: conv -> DropBlock -> BN -> ReLU blocks, spatial attention in the bottleneck.

An optional timestep embedding (`time_embedding > 0`, off by default) adds a projection of a
sinusoidal embedding of the diffusion timestep to the output of every encoder and decoder block, as
the DDPM U-Net does (Ho et al. 2020, arXiv:2006.11239).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from unetkit._options import look_up_option
from unetkit.layers import (
    ConvBlock,
    GradCheckpointMixin,
    TimeProjection,
    TimestepEmbedding,
    center_crop,
    embed_timesteps,
    pad_to_multiple,
    unpad,
)
from unetkit.models._registry import build_model, register_model

__all__ = ["UNet", "UNetDecoder", "UNetEncoder", "sa_unet", "unet", "unet_classic"]

PADDINGS = ("same", "valid")
UPSAMPLES = ("transpose", "bilinear")


class EncoderStage(nn.Module):
    """`[2x2 max-pool] -> conv block [+ timestep projection]`; the first stage has no pool."""

    def __init__(self, block: ConvBlock, pool: bool, time_dim: int = 0) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()
        self.block = block
        self.time = TimeProjection(time_dim, block.out_channels) if time_dim else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        """`(B, C, H, W) -> (B, C', H/2, W/2)` (or `H, W` for the first stage), less any unpadded trim."""
        x = self.block(self.pool(x))
        return x + self.time(emb) if self.time is not None and emb is not None else x


class UNetEncoder(GradCheckpointMixin, nn.Module):
    """Contracting path; returns the features of every level, shallowest first (the skips)."""

    def __init__(
        self,
        in_channels: int,
        channels: list[int],
        block_args: dict[str, Any],
        attention: bool,
        time_dim: int = 0,
    ) -> None:
        """
        Args:
            in_channels: image channels.
            channels: output channels per level; the last level is the bottleneck.
            block_args: keyword arguments of every `ConvBlock`.
            attention: spatial attention inside the bottleneck block (SA-UNet).
            time_dim: width of the timestep embedding added after every block; `0` = none.
        """
        super().__init__()
        self.channels = list(channels)
        stages = []
        prev = in_channels
        for level, out in enumerate(channels):
            bottleneck = level == len(channels) - 1
            block = ConvBlock(prev, out, attention=attention and bottleneck, **block_args)
            stages.append(EncoderStage(block, pool=level > 0, time_dim=time_dim))
            prev = out
        self.stages = nn.ModuleList(stages)
        self.shrink: int = stages[0].block.shrink  # pixels each unpadded block trims

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> list[torch.Tensor]:
        """`(B, C, H, W)` [+ timestep embedding `(B, E)`] `-> [(B, c_0, H, W), ..., (B, c_depth, H / 2**depth,
        W / 2**depth)]`."""
        features = []
        for stage in self.stages:
            x = self._run_stage(stage, x, emb)
            features.append(x)
        return features


class DecoderStage(nn.Module):
    """Up-sample, copy-and-crop the skip, concatenate `[skip, up]`, conv block."""

    def __init__(self, up: nn.Module, block: ConvBlock, time_dim: int = 0) -> None:
        super().__init__()
        self.up = up
        self.block = block
        self.time = TimeProjection(time_dim, block.out_channels) if time_dim else None

    def forward(self, x: torch.Tensor, skip: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        """`(B, C, h, w), (B, S, H, W) -> (B, C', 2h - trim, 2w - trim)`."""
        x = self.up(x)
        if skip.shape[-2:] != x.shape[-2:]:
            skip = center_crop(skip, like=x)  # copy-and-crop, Fig. 1 of Ronneberger et al.
        x = self.block(torch.cat([skip, x], dim=1))
        return x + self.time(emb) if self.time is not None and emb is not None else x


class UNetDecoder(GradCheckpointMixin, nn.Module):
    """Expanding path built from the encoder's channels, so the two cannot drift apart."""

    def __init__(
        self, encoder_channels: list[int], upsample: str, block_args: dict[str, Any], time_dim: int = 0
    ) -> None:
        """
        Args:
            encoder_channels: the encoder's `channels` (skips first, bottleneck last).
            upsample: `"transpose"` (2x2 up-convolution) or `"bilinear"` (then the up-stage outputs
                are halved except the last, so that `[skip, up]` concatenations match).
            block_args: keyword arguments of every `ConvBlock`.
            time_dim: width of the timestep embedding added after every block; `0` = none.
        """
        super().__init__()
        stages = []
        prev = encoder_channels[-1]
        for level in reversed(range(len(encoder_channels) - 1)):
            skip = encoder_channels[level]
            if upsample == "transpose":
                up: nn.Module = nn.ConvTranspose2d(prev, skip, kernel_size=2, stride=2)
                up_channels, out = skip, skip
            else:
                up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
                up_channels, out = prev, (skip // 2 if level > 0 else skip)
            block = ConvBlock(skip + up_channels, out, mid_channels=skip, **block_args)
            stages.append(DecoderStage(up, block, time_dim))
            prev = out
        self.stages = nn.ModuleList(stages)
        self.out_channels = prev

    def forward(self, features: list[torch.Tensor], emb: torch.Tensor | None = None) -> torch.Tensor:
        """`[(B, c_0, H, W), ..., (B, c_depth, h, w)]`, embedding `(B, E)` or None `-> (B, c_0, H', W')`."""
        x = features[-1]
        for stage, skip in zip(self.stages, reversed(features[:-1]), strict=True):
            x = self._run_stage(stage, x, skip, emb)
        return x


class UNet(GradCheckpointMixin, nn.Module):
    """U-Net with a configurable depth, width, padding, normalisation, up-sampling and DropBlock."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 2,
        base_channels: int = 64,
        depth: int = 4,
        padding: str = "same",
        norm: str = "batch",
        act: str = "relu",
        upsample: str = "transpose",
        conv_bias: bool | None = None,
        dropblock: bool = False,
        block_size: int = 7,
        keep_prob: float = 0.9,
        attention: bool = False,
        time_embedding: int = 0,
    ) -> None:
        """
        Args:
            in_channels: image channels.
            num_classes: output channels (logits; no sigmoid or softmax inside).
            base_channels: channels of the first level, doubled at every level down.
            depth: number of 2x down-samplings.
            padding: `"same"` (padded convs, any H x W) or `"valid"` (unpadded convs, copy-and-crop).
            norm: `"batch"`, `"instance"` or `"none"`.
            act: `"relu"`, `"silu"`, `"gelu"` or `"leaky_relu"`.
            upsample: `"transpose"` or `"bilinear"`.
            conv_bias: conv bias; default on only without a norm layer.
            dropblock: put `DropBlock2d(block_size, keep_prob)` after every 3x3 conv (SA-UNet).
            block_size: DropBlock block side.
            keep_prob: DropBlock keep probability.
            attention: spatial attention in the bottleneck (SA-UNet).
            time_embedding: width of the sinusoidal timestep embedding (widened to 4x by an MLP and
                added to every block's output, DDPM); `0` = none, `forward(x)` as before.
        """
        super().__init__()
        for arg, value in (
            ("in_channels", in_channels),
            ("num_classes", num_classes),
            ("base_channels", base_channels),
            ("depth", depth),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{arg}` must be an integer >= 1, got {value!r}")
        self.padding = look_up_option("padding", padding, PADDINGS)
        upsample = look_up_option("upsample", upsample, UPSAMPLES)
        block_args: dict[str, Any] = dict(
            padding=self.padding == "same",
            norm=norm,
            act=act,
            bias=conv_bias,
            dropblock=(block_size, keep_prob) if dropblock else None,
        )
        channels = [base_channels * 2**level for level in range(depth + 1)]
        if upsample == "bilinear":
            channels[-1] //= 2
        self.time_embed = TimestepEmbedding(time_embedding) if time_embedding else None
        time_dim = self.time_embed.out_dim if self.time_embed is not None else 0
        self.encoder = UNetEncoder(in_channels, channels, block_args, attention, time_dim)
        self.decoder = UNetDecoder(channels, upsample, block_args, time_dim)
        self.head = nn.Conv2d(self.decoder.out_channels, num_classes, kernel_size=1)
        self.in_channels = in_channels
        self.out_channels = num_classes
        self.depth = depth
        self.downsample_factor = 2**depth
        self._shrink = self.encoder.shrink

    def output_size(self, n: int) -> int | None:
        """Output side for an input side `n`, or `None` if `n` is not a legal input side."""
        if n < 1:
            return None
        if self.padding == "same":
            return n
        size = n
        for _ in range(self.depth):  # contracting path: convs trim, pools halve even sizes
            size -= self._shrink
            if size < 2 or size % 2:
                return None
            size //= 2
        size -= self._shrink
        for _ in range(self.depth):  # expanding path: up-convs double, convs trim
            if size < 1:
                return None
            size = 2 * size - self._shrink
        return size if size >= 1 else None

    def valid_input_size(self, n: int) -> int:
        """The smallest legal input side >= `n` (any `n >= 1` for padded models)."""
        size = max(int(n), 1)
        while self.output_size(size) is None:
            size += 1
        return size

    def context_margin(self) -> int:
        """Pixels of context lost on each side (0 for padded models): `(n - output_size(n)) / 2`."""
        n = self.valid_input_size(1)
        out = self.output_size(n)
        assert out is not None  # valid_input_size returns a legal size
        return (n - out) // 2

    def _check_size(self, height: int, width: int) -> None:
        for side, n in (("height", height), ("width", width)):
            if self.output_size(n) is None:
                above = self.valid_input_size(n)
                below = next((m for m in range(n - 1, 0, -1) if self.output_size(m) is not None), None)
                near = [m for m in (below, above) if m is not None]
                legal = " and ".join(f"{m} (output {self.output_size(m)})" for m in near)
                raise ValueError(
                    f"input {side} {n} is not legal for this unpadded U-Net (every pooled size must be "
                    f"even); nearest legal input sizes: {legal}"
                )

    def forward(self, x: torch.Tensor, t: torch.Tensor | float | None = None) -> torch.Tensor:
        """`(B, in_channels, H, W) -> (B, num_classes, H, W)` logits; `valid` padding gives
        `(B, num_classes, output_size(H), output_size(W))`. `t`: timesteps `(B,)` or a number, only
        for a model with a timestep embedding."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        emb = embed_timesteps(self.time_embed, t, x)
        pad = None
        if self.padding == "same":
            x, pad = pad_to_multiple(x, self.downsample_factor)
        else:
            self._check_size(x.shape[-2], x.shape[-1])
        features = self.encoder(x, emb)
        logits = self.head(self.decoder(features, emb))
        return unpad(logits, pad) if pad is not None else logits


@register_model(example_size=572)
def unet_classic(**kwargs: Any) -> UNet:
    """Ronneberger et al. 2015: unpadded convs, ReLU, copy-and-crop, 2x2 up-convs, 572->388."""
    args: dict[str, Any] = dict(in_channels=1, num_classes=2, padding="valid", norm="none")
    return build_model(UNet, args, **kwargs)  # type: ignore[return-value]


@register_model(example_size=512)
def unet(**kwargs: Any) -> UNet:
    """Padded U-Net with BatchNorm, transposed or bilinear up-sampling; any H x W."""
    args: dict[str, Any] = dict(in_channels=3, num_classes=2, padding="same", norm="batch")
    return build_model(UNet, args, **kwargs)  # type: ignore[return-value]


@register_model(example_size=592)
def sa_unet(**kwargs: Any) -> UNet:
    """SA-UNet (Guo et al. 2020): DropBlock + BN + ReLU blocks, spatial attention in the bottleneck."""
    args: dict[str, Any] = dict(
        in_channels=1,
        num_classes=1,
        base_channels=16,
        depth=3,
        padding="same",
        norm="batch",
        conv_bias=True,
        dropblock=True,
        block_size=7,
        keep_prob=0.9,
        attention=True,
    )
    return build_model(UNet, args, **kwargs)  # type: ignore[return-value]
