"""Convolution blocks shared by the U-Net family: (conv -> [DropBlock] -> [norm] -> act) x N.

Padded or unpadded 3x3 convs (Ronneberger et al. 2015 use unpadded ones), optional BatchNorm or
InstanceNorm, optional DropBlock in the order of SA-UNet (conv -> DropBlock -> BN -> ReLU), and an
optional spatial-attention gate after the first conv (SA-UNet's bottleneck).
"""

from __future__ import annotations

from torch import nn

from unetkit._options import look_up_option
from unetkit.layers.attention import SpatialAttention
from unetkit.layers.dropblock import DropBlock2d

__all__ = ["ACTIVATIONS", "NORMS", "ConvBlock", "make_norm", "make_act"]

NORMS = ("batch", "instance", "none")
ACTIVATIONS = ("relu", "silu", "gelu", "leaky_relu")


def make_norm(norm: str, channels: int) -> nn.Module | None:
    """A 2-D normalisation layer for `channels`, or `None` for `norm="none"`."""
    norm = look_up_option("norm", norm, NORMS)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
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
        kernel_size: int = 3,
        padding: bool = True,
        norm: str = "batch",
        act: str = "relu",
        bias: bool | None = None,
        num_convs: int = 2,
        dropblock: tuple[int, float] | None = None,
        attention: bool = False,
    ) -> None:
        """
        Args:
            in_channels: input channels.
            out_channels: output channels.
            mid_channels: channels between the convs (default `out_channels`).
            kernel_size: odd conv kernel side.
            padding: `True` keeps the size ("same"); `False` shrinks each side by `kernel_size // 2`.
            norm: `"batch"`, `"instance"` or `"none"`.
            act: `"relu"`, `"silu"`, `"gelu"` or `"leaky_relu"`.
            bias: conv bias; default on only without a norm layer.
            num_convs: number of conv units.
            dropblock: `(block_size, keep_prob)` to put a `DropBlock2d` after each conv.
            attention: put a `SpatialAttention` gate after the first unit.
        """
        if num_convs < 1:
            raise ValueError(f"`num_convs` must be >= 1, got {num_convs}")
        norm = look_up_option("norm", norm, NORMS)
        use_bias = norm == "none" if bias is None else bias
        mid = out_channels if mid_channels is None else mid_channels
        layers: list[nn.Module] = []
        channels = in_channels
        for i in range(num_convs):
            out = out_channels if i == num_convs - 1 else mid
            layers.append(
                nn.Conv2d(
                    channels,
                    out,
                    kernel_size,
                    padding=kernel_size // 2 if padding else 0,
                    bias=use_bias,
                )
            )
            if dropblock is not None:
                layers.append(DropBlock2d(*dropblock))
            norm_layer = make_norm(norm, out)
            if norm_layer is not None:
                layers.append(norm_layer)
            layers.append(make_act(act))
            if attention and i == 0:
                layers.append(SpatialAttention())
            channels = out
        super().__init__(*layers)
        self.in_channels = in_channels
        self.out_channels = out_channels
        # each unpadded conv trims kernel_size // 2 from every side
        self.shrink = 0 if padding else num_convs * (kernel_size // 2) * 2
