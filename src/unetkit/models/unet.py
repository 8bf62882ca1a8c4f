"""The U-Net family in 2D and 3D (`spatial_dims`): the classic unpadded U-Nets, the padded U-Net with
BatchNorm, and SA-UNet.

- Ronneberger, Fischer, Brox 2015, "U-Net: Convolutional Networks for Biomedical Image Segmentation",
  arXiv:1505.04597: unpadded 3x3 convs + ReLU, 2x2 max-pool, 2x2 up-convolution, copy-and-crop,
  1x1 head; 23 conv layers; a 572x572 input gives a 388x388 output.
- Çiçek, Abdulkadir, Lienkamp, Brox, Ronneberger 2016, "3D U-Net: Learning Dense Volumetric Segmentation
  from Sparse Annotation", arXiv:1606.06650: the same in 3D with three poolings, BatchNorm before each ReLU,
  channels doubled before each max-pool (Sec. 2, "we avoid bottlenecks"), up-convolutions that keep their
  channels (Fig. 1); a 132x132x116 input gives 44x44x28. Its stated 19,069,955 parameters pin down what the
  text leaves open (`unet_classic_3d` below).
- The padded variant with BatchNorm and bilinear or transposed up-sampling popularised by the
  best-known PyTorch implementation (the bilinear variant halves the bottleneck and up-stage outputs
  so that concatenations match); it takes any size by padding to a multiple of its pooling factor.
- Guo et al. 2020, "SA-UNet: Spatial Attention U-Net for Retinal Vessel Segmentation",
  arXiv:2004.03696: conv -> DropBlock -> BN -> ReLU blocks, spatial attention in the bottleneck.

Kernels and pooling strides may differ per level and axis, as nnU-Net's plans set them for anisotropic
voxels (Isensee et al. 2021, Nat. Methods 18:203): `kernel_size=[(1, 3, 3), (3, 3, 3), ...]`,
`pool=[(1, 2, 2), (2, 2, 2), ...]`. An optional timestep embedding (`time_embedding > 0`, off by default)
adds a projection of a sinusoidal embedding of the diffusion timestep to the output of every encoder and
decoder block, as the DDPM U-Net does (Ho et al. 2020, arXiv:2006.11239).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
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
    check_spatial_dims,
    conv_nd,
    conv_transpose_nd,
    embed_timesteps,
    max_pool_nd,
    pad_to_multiple,
    per_level,
    unpad,
)
from unetkit.layers.dims import collapse
from unetkit.models._registry import build_model, register_model
from unetkit.models._sizes import AxisPlan, SizeRulesMixin

__all__ = ["UNet", "UNetDecoder", "UNetEncoder", "sa_unet", "unet", "unet_classic", "unet_classic_3d"]

MAX_DEPTH = 12  # down-samplings of the U-Net family
MAX_CHANNELS = 2**18  # channels of any layer: beyond it a model is a typo (1e12 overflowed torch's storage size)

PADDINGS = ("same", "valid")
UPSAMPLES = ("transpose", "bilinear")
DOUBLINGS = ("after_pool", "before_pool")
_LINEAR = {2: "bilinear", 3: "trilinear"}


class EncoderStage(nn.Module):
    """`[max-pool] -> conv block [+ timestep projection]`; the first stage has no pool."""

    def __init__(self, block: ConvBlock, pool: tuple[int, ...] | None, time_dim: int = 0) -> None:
        super().__init__()
        dims = block.spatial_dims
        self.pool = max_pool_nd(dims)(collapse(pool)) if pool is not None else nn.Identity()
        self.block = block
        self.time = TimeProjection(time_dim, block.out_channels, dims) if time_dim else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        """`(B, C, *S) -> (B, C', *S / pool)` (no pool in the first stage), less any unpadded trim."""
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
        *,
        mid_channels: Sequence[int | None] | None = None,
        kernels: Sequence[tuple[int, ...]] | None = None,
        pools: Sequence[tuple[int, ...]] | None = None,
    ) -> None:
        """
        Args:
            in_channels: image channels.
            channels: output channels per level; the last level is the bottleneck.
            block_args: keyword arguments of every `ConvBlock` (`spatial_dims` among them).
            attention: spatial attention inside the bottleneck block (SA-UNet).
            time_dim: width of the timestep embedding added after every block; `0` = none.
            mid_channels: per level, the channels between a block's convs (None: its output channels).
            kernels: per level, the conv kernel per axis (default: `block_args`' kernel everywhere).
            pools: per down-sampling (`len(channels) - 1`), the pooling stride per axis (default 2).
        """
        super().__init__()
        dims = block_args.get("spatial_dims", 2)
        self.channels = list(channels)
        levels = len(channels)
        mids = list(mid_channels) if mid_channels is not None else [None] * levels
        self.pools = list(pools) if pools is not None else [(2,) * dims] * (levels - 1)
        stages = []
        prev = in_channels
        for level, out in enumerate(channels):
            bottleneck = level == levels - 1
            args = dict(block_args) if kernels is None else {**block_args, "kernel_size": kernels[level]}
            block = ConvBlock(prev, out, mids[level], attention=attention and bottleneck, **args)
            stages.append(EncoderStage(block, self.pools[level - 1] if level > 0 else None, time_dim))
            prev = out
        self.stages = nn.ModuleList(stages)
        self.shrinks: list[tuple[int, ...]] = [stage.block.shrink for stage in stages]  # per level, per axis

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> list[torch.Tensor]:
        """`(B, C, *S)` [+ timestep embedding `(B, E)`] `-> [(B, c_0, *S), ..., (B, c_depth, *S / factor)]`."""
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
        self.time = TimeProjection(time_dim, block.out_channels, block.spatial_dims) if time_dim else None

    def forward(self, x: torch.Tensor, skip: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        """`(B, C, *s), (B, S, *S) -> (B, C', pool * s - trim)`."""
        x = self.up(x)
        dims = self.block.spatial_dims
        if skip.shape[-dims:] != x.shape[-dims:]:
            skip = center_crop(skip, like=x, spatial_dims=dims)  # copy-and-crop, Fig. 1 of Ronneberger et al.
        x = self.block(torch.cat([skip, x], dim=1))
        return x + self.time(emb) if self.time is not None and emb is not None else x


class UNetDecoder(GradCheckpointMixin, nn.Module):
    """Expanding path built from the encoder's channels, so the two cannot drift apart."""

    def __init__(
        self,
        encoder_channels: list[int],
        upsample: str,
        block_args: dict[str, Any],
        time_dim: int = 0,
        *,
        kernels: Sequence[tuple[int, ...]] | None = None,
        pools: Sequence[tuple[int, ...]] | None = None,
        keep_up_channels: bool = False,
        upconv_bias: bool = True,
    ) -> None:
        """
        Args:
            encoder_channels: the encoder's `channels` (skips first, bottleneck last).
            upsample: `"transpose"` (up-convolution) or `"bilinear"` (trilinear in 3D; then the up-stage
                outputs are halved except the last, so that `[skip, up]` concatenations match).
            block_args: keyword arguments of every `ConvBlock` (`spatial_dims` among them).
            time_dim: width of the timestep embedding added after every block; `0` = none.
            kernels: per level, the conv kernel per axis, as in the encoder.
            pools: per up-sampling (as the encoder's down-samplings), the stride per axis (default 2).
            keep_up_channels: up-convolutions keep their input channels (Çiçek et al. 2016, Fig. 1) instead
                of halving them to the skip's (Ronneberger et al. 2015).
            upconv_bias: bias in the up-convolutions.
        """
        super().__init__()
        dims = block_args.get("spatial_dims", 2)
        levels = len(encoder_channels)
        pools = list(pools) if pools is not None else [(2,) * dims] * (levels - 1)
        stages = []
        prev = encoder_channels[-1]
        for level in reversed(range(levels - 1)):
            skip, stride = encoder_channels[level], collapse(pools[level])
            if upsample == "transpose":
                up_channels = prev if keep_up_channels else skip
                up: nn.Module = conv_transpose_nd(dims)(
                    prev, up_channels, kernel_size=stride, stride=stride, bias=upconv_bias
                )
                out = skip
            else:
                factor = stride if isinstance(stride, int) else tuple(float(s) for s in stride)
                up = nn.Upsample(scale_factor=factor, mode=_LINEAR[dims], align_corners=True)
                up_channels, out = prev, (skip // 2 if level > 0 and not keep_up_channels else skip)
            args = dict(block_args) if kernels is None else {**block_args, "kernel_size": kernels[level]}
            block = ConvBlock(skip + up_channels, out, mid_channels=skip, **args)
            stages.append(DecoderStage(up, block, time_dim))
            prev = out
        self.stages = nn.ModuleList(stages)
        self.out_channels = prev

    def forward(self, features: list[torch.Tensor], emb: torch.Tensor | None = None) -> torch.Tensor:
        """`[(B, c_0, *S), ..., (B, c_depth, *s)]`, embedding `(B, E)` or None `-> (B, c_0, *S')`."""
        x = features[-1]
        for stage, skip in zip(self.stages, reversed(features[:-1]), strict=True):
            x = self._run_stage(stage, x, skip, emb)
        return x


class UNet(SizeRulesMixin, GradCheckpointMixin, nn.Module):
    """U-Net in 2D or 3D with a configurable depth, width, padding, normalisation, up-sampling, DropBlock,
    and per-level, per-axis kernels and pooling."""

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
        block_size: int | Sequence[int] = 7,
        keep_prob: float = 0.9,
        attention: bool = False,
        time_embedding: int = 0,
        spatial_dims: int = 2,
        kernel_size: int | Sequence[int] | Sequence[int | Sequence[int]] = 3,
        pool: int | Sequence[int] | Sequence[int | Sequence[int]] = 2,
        double_channels: str = "after_pool",
        norm_affine: bool = True,
        upconv_bias: bool = True,
    ) -> None:
        """
        Args:
            in_channels: image channels.
            num_classes: output channels (logits; no sigmoid or softmax inside).
            base_channels: channels of the first conv, doubled at every level down.
            depth: number of down-samplings.
            padding: `"same"` (padded convs, any size) or `"valid"` (unpadded convs, copy-and-crop).
            norm: `"batch"`, `"instance"` or `"none"`.
            act: `"relu"`, `"silu"`, `"gelu"` or `"leaky_relu"`.
            upsample: `"transpose"` or `"bilinear"` (trilinear in 3D).
            conv_bias: conv bias; default on only without a norm layer.
            dropblock: put a DropBlock(block_size, keep_prob) after every conv of the blocks (SA-UNet).
            block_size: DropBlock block side, or one per spatial axis.
            keep_prob: DropBlock keep probability.
            attention: spatial attention in the bottleneck (SA-UNet).
            time_embedding: width of the sinusoidal timestep embedding (widened to 4x by an MLP and
                added to every block's output, DDPM); `0` = none, `forward(x)` as before.
            spatial_dims: 2 (images `(B, C, H, W)`) or 3 (volumes `(B, C, D, H, W)`).
            kernel_size: odd conv kernel: one int, one per axis (`(1, 3, 3)`), or one entry per level
                (`depth + 1` entries, each an int or one per axis), as nnU-Net's `conv_kernel_sizes`.
            pool: pooling stride (= kernel; up-sampling mirrors it): one int, one per axis (`(1, 2, 2)`), or
                one entry per down-sampling (`depth` entries), as nnU-Net's `pool_op_kernel_sizes`.
            double_channels: `"after_pool"` (the first conv after a pool doubles the channels, Ronneberger
                et al.) or `"before_pool"` (the second conv before it does, and up-convolutions keep their
                channels: Çiçek et al. 2016).
            norm_affine: learnable scale and shift in the norm layers.
            upconv_bias: bias in the up-convolutions.
        """
        super().__init__()
        for arg, value in (
            ("in_channels", in_channels),
            ("num_classes", num_classes),
            ("base_channels", base_channels),
            ("depth", depth),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{arg}` must be an integer >= 1, got {value!r}")
        if depth > MAX_DEPTH:  # each down-sampling halves the image: 2^12 = 4096 px for one deepest pixel
            raise ValueError(f"`depth` must be at most {MAX_DEPTH}, got {depth}")
        widest = base_channels * 2 ** (depth + 1)
        if max(base_channels, in_channels, num_classes, widest) > MAX_CHANNELS:
            raise ValueError(
                f"`base_channels` {base_channels} with `depth` {depth} gives {widest} channels at the deepest level, "
                f"more than {MAX_CHANNELS}; or `in_channels` / `num_classes` above it"
            )
        dims = check_spatial_dims(spatial_dims)
        self.padding = look_up_option("padding", padding, PADDINGS)
        upsample = look_up_option("upsample", upsample, UPSAMPLES)
        before = look_up_option("double_channels", double_channels, DOUBLINGS) == "before_pool"
        kernels = per_level(kernel_size, depth + 1, dims, "kernel_size")
        pools = per_level(pool, depth, dims, "pool")
        block_args: dict[str, Any] = dict(
            padding=self.padding == "same",
            norm=norm,
            act=act,
            bias=conv_bias,
            dropblock=(block_size, keep_prob) if dropblock else None,
            spatial_dims=dims,
            norm_affine=norm_affine,
        )
        if before:  # Çiçek et al.: level l convs give base * 2**l, then base * 2**(l + 1)
            channels = [base_channels * 2 ** (level + 1) for level in range(depth + 1)]
            mids: list[int | None] = [c // 2 for c in channels]
        else:
            channels = [base_channels * 2**level for level in range(depth + 1)]
            mids = [None] * (depth + 1)
            if upsample == "bilinear":
                channels[-1] //= 2
        self.time_embed = TimestepEmbedding(time_embedding) if time_embedding else None
        time_dim = self.time_embed.out_dim if self.time_embed is not None else 0
        self.encoder = UNetEncoder(
            in_channels, channels, block_args, attention, time_dim, mid_channels=mids, kernels=kernels, pools=pools
        )
        self.decoder = UNetDecoder(
            channels,
            upsample,
            block_args,
            time_dim,
            kernels=kernels,
            pools=pools,
            keep_up_channels=before,
            upconv_bias=upconv_bias,
        )
        self.head = conv_nd(dims)(self.decoder.out_channels, num_classes, kernel_size=1)
        self.in_channels = in_channels
        self.out_channels = num_classes
        self.depth = depth
        self.spatial_dims = dims
        shrinks = self.encoder.shrinks
        self.axis_plans = tuple(
            AxisPlan(
                shrinks=tuple(s[axis] for s in shrinks),
                pools=tuple(p[axis] for p in pools),
                padded=self.padding == "same",
            )
            for axis in range(dims)
        )
        self.downsample_factors = tuple(plan.factor for plan in self.axis_plans)
        # one multiple every axis accepts (the factors are products of strides: take their lcm)
        self.downsample_factor = math.lcm(*self.downsample_factors)

    def forward(self, x: torch.Tensor, t: torch.Tensor | float | None = None) -> torch.Tensor:
        """`(B, in_channels, *S) -> (B, num_classes, *S)` logits, `S` = `(H, W)` or `(D, H, W)`; `valid`
        padding gives `(B, num_classes, *output_shape(S))`. `t`: timesteps `(B,)` or a number, only for a model
        with a timestep embedding."""
        dims = self.spatial_dims
        if x.ndim != dims + 2 or x.shape[1] != self.in_channels:
            axes = "H, W" if dims == 2 else "D, H, W"
            raise ValueError(f"expected input of shape (B, {self.in_channels}, {axes}), got {tuple(x.shape)}")
        emb = embed_timesteps(self.time_embed, t, x)
        pad = None
        if self.padding == "same":
            multiple = self.downsample_factors if len(set(self.downsample_factors)) > 1 else self.downsample_factor
            x, pad = pad_to_multiple(x, multiple, spatial_dims=dims)
        else:
            self._check_size(x.shape[2:])
        features = self.encoder(x, emb)
        logits = self.head(self.decoder(features, emb))
        return unpad(logits, pad) if pad is not None else logits


@register_model(example_size=572)
def unet_classic(**kwargs: Any) -> UNet:
    """Ronneberger et al. 2015: unpadded convs, ReLU, copy-and-crop, 2x2 up-convs, 572->388."""
    args: dict[str, Any] = dict(in_channels=1, num_classes=2, padding="valid", norm="none")
    return build_model(UNet, args, **kwargs)  # type: ignore[return-value]


@register_model(example_size=(132, 132, 116))
def unet_classic_3d(**kwargs: Any) -> UNet:
    """Çiçek et al. 2016: 3D U-Net, unpadded 3x3x3 convs, BN before ReLU, 132x132x116->44x44x28."""
    # 19,069,955 parameters (the paper's count) with a bias in every 3x3x3 conv and the 1x1x1 head, BatchNorm
    # without learnable scale / shift (Caffe's BatchNorm layer), and up-convolutions without bias
    args: dict[str, Any] = dict(
        spatial_dims=3, in_channels=3, num_classes=3, base_channels=32, depth=3, padding="valid"
    )
    args.update(norm="batch", norm_affine=False, conv_bias=True, upconv_bias=False, double_channels="before_pool")
    return build_model(UNet, args, **kwargs)  # type: ignore[return-value]


@register_model(example_size=512)
def unet(**kwargs: Any) -> UNet:
    """Padded U-Net with BatchNorm, transposed or bilinear up-sampling; any size, 2D or 3D."""
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
