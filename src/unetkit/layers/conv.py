"""Convolution blocks shared by the U-Net family: (conv -> [DropBlock] -> [norm] -> act) x N, in 2D or 3D.

Padded or unpadded convs (Ronneberger et al. 2015 and Çiçek et al. 2016 use unpadded ones), optional
BatchNorm or InstanceNorm, optional DropBlock in the order of SA-UNet (conv -> DropBlock -> BN -> ReLU),
and an optional spatial-attention gate after the first conv (SA-UNet's bottleneck). Kernels may differ per
axis (`(1, 3, 3)` for thick slices, as in nnU-Net's plans for anisotropic voxels).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from unetkit._options import look_up_option
from unetkit.layers.attention import SpatialAttention
from unetkit.layers.dims import check_spatial_dims, collapse, conv_nd, per_axis
from unetkit.layers.dropblock import make_dropblock

__all__ = ["ACTIVATIONS", "NORMS", "ConvBlock", "make_norm", "make_act"]

NORMS = ("batch", "instance", "none")
ACTIVATIONS = ("relu", "silu", "gelu", "leaky_relu")

_BATCH: dict[int, type[nn.Module]] = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_INSTANCE: dict[int, type[nn.Module]] = {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}


def make_norm(norm: str, channels: int, spatial_dims: int = 2, *, affine: bool = True) -> nn.Module | None:
    """A normalisation layer for `channels` in 2D or 3D, or `None` for `norm="none"`.

    Args:
        norm: `"batch"`, `"instance"` or `"none"`.
        channels: feature channels.
        spatial_dims: 2 or 3.
        affine: learnable per-channel scale and shift (`False`: normalisation only, as Caffe's BatchNorm
            layer without a Scale layer).
    """
    norm = look_up_option("norm", norm, NORMS)
    dims = check_spatial_dims(spatial_dims)
    if norm == "batch":
        return _BATCH[dims](channels, affine=affine)
    if norm == "instance":
        return _INSTANCE[dims](channels, affine=affine)
    return None


def make_act(act: str) -> nn.Module:
    """An activation module by name."""
    act = look_up_option("act", act, ACTIVATIONS)
    if act == "relu":
        return nn.ReLU(inplace=True)
    if act == "silu":
        return nn.SiLU(inplace=True)
    if act == "gelu":
        return nn.GELU()
    return nn.LeakyReLU(0.01, inplace=True)


class ConvBlock(nn.Sequential):
    """`num_convs` x (conv -> [DropBlock] -> [norm] -> act), flat so that summaries list each layer."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        mid_channels: int | None = None,
        *,
        kernel_size: int | Sequence[int] = 3,
        padding: bool = True,
        norm: str = "batch",
        act: str = "relu",
        bias: bool | None = None,
        num_convs: int = 2,
        dropblock: tuple[int | Sequence[int], float] | None = None,
        attention: bool = False,
        spatial_dims: int = 2,
        norm_affine: bool = True,
    ) -> None:
        """
        Args:
            in_channels: input channels.
            out_channels: output channels.
            mid_channels: channels between the convs (default `out_channels`).
            kernel_size: odd conv kernel side, or one per spatial axis.
            padding: `True` keeps the size ("same"); `False` shrinks each side by `kernel_size // 2` per conv.
            norm: `"batch"`, `"instance"` or `"none"`.
            act: `"relu"`, `"silu"`, `"gelu"` or `"leaky_relu"`.
            bias: conv bias; default on only without a norm layer.
            num_convs: number of conv units.
            dropblock: `(block_size, keep_prob)` to put a DropBlock after each conv.
            attention: put a `SpatialAttention` gate after the first unit.
            spatial_dims: 2 (`Conv2d`, ...) or 3 (`Conv3d`, ...).
            norm_affine: learnable scale and shift in the norm layers.
        """
        if num_convs < 1:
            raise ValueError(f"`num_convs` must be >= 1, got {num_convs}")
        dims = check_spatial_dims(spatial_dims)
        kernel = per_axis(kernel_size, dims, "kernel_size")
        if any(k % 2 == 0 for k in kernel):
            raise ValueError(f"`kernel_size` must be odd on every axis, got {kernel_size!r}")
        norm = look_up_option("norm", norm, NORMS)
        use_bias = norm == "none" if bias is None else bias
        mid = out_channels if mid_channels is None else mid_channels
        conv = conv_nd(dims)
        layers: list[nn.Module] = []
        channels = in_channels
        for i in range(num_convs):
            out = out_channels if i == num_convs - 1 else mid
            same = collapse(tuple(k // 2 for k in kernel)) if padding else 0
            layers.append(conv(channels, out, collapse(kernel), padding=same, bias=use_bias))
            if dropblock is not None:
                layers.append(make_dropblock(*dropblock, spatial_dims=dims))
            norm_layer = make_norm(norm, out, dims, affine=norm_affine)
            if norm_layer is not None:
                layers.append(norm_layer)
            layers.append(make_act(act))
            if attention and i == 0:
                layers.append(SpatialAttention(spatial_dims=dims))
            channels = out
        super().__init__(*layers)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.spatial_dims = dims
        # per axis, each unpadded conv trims kernel // 2 from both sides
        self.shrink: tuple[int, ...] = tuple(0 if padding else num_convs * (k // 2) * 2 for k in kernel)
