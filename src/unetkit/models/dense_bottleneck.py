"""A compact U-Net from a diffusion course whose bottleneck is flattened through an MLP.

Two conv down-blocks (BatchNorm, ReLU, max-pool), a dense bottleneck (flatten -> MLP -> unflatten),
two transposed-conv up-blocks fed with `[up, skip]`. Fixes of the tutorial's faults: `BatchNorm2d`
where it used `BatchNorm1d` on 4-D tensors, and the MLP bottleneck is on the forward path (the
tutorial defines it and then skips it). Because of the MLP, the input size is fixed (`image_size`).
With `time_embedding > 0` (off by default) a projection of a sinusoidal timestep embedding is added
after the stem, every down-block, the bottleneck and every up-block, as in the DDPM U-Net
(Ho et al. 2020, arXiv:2006.11239).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from unetkit.layers import ConvBlock, GradCheckpointMixin, TimeProjection, TimestepEmbedding, embed_timesteps
from unetkit.models._registry import build_model, register_model

__all__ = ["DenseBottleneckUNet", "unet_dense_bottleneck"]


class DownBlock(nn.Sequential):
    """`(conv 3x3 -> BN -> ReLU) x 2 -> max-pool 2x2`."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(ConvBlock(in_channels, out_channels, bias=True), nn.MaxPool2d(2))


class UpBlock(nn.Module):
    """`concat [x, skip] -> transposed conv 3x3 stride 2 -> BN -> ReLU -> conv 3x3 -> BN -> ReLU`."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.Sequential(
            nn.ConvTranspose2d(2 * in_channels, out_channels, 3, stride=2, padding=1, output_padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )
        self.conv = ConvBlock(out_channels, out_channels, num_convs=1, bias=True)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """`(B, C, h, w), (B, C, h, w) -> (B, C', 2h, 2w)`."""
        return self.conv(self.up(torch.cat([x, skip], dim=1)))


class DenseBottleneckUNet(GradCheckpointMixin, nn.Module):
    """U-Net with an MLP bottleneck: `channels=(16, 32, 64)` at 16x16 gives 234,977 parameters."""

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        image_size: int = 16,
        channels: tuple[int, ...] = (16, 32, 64),
        hidden: int | None = None,
        time_embedding: int = 0,
    ) -> None:
        """
        Args:
            in_channels: image channels.
            out_channels: output channels.
            image_size: side of the square input; must be divisible by `2 ** (len(channels) - 1)`.
            channels: channels of the stem and of each down-block.
            hidden: width of the MLP's hidden layers (default `channels[1]`, as in the course).
            time_embedding: width of the sinusoidal timestep embedding (widened to 4x by an MLP and
                added after every block); `0` = none, `forward(x)` as before.
        """
        super().__init__()
        channels = tuple(channels)
        if len(channels) < 2 or any(not isinstance(c, int) or c < 1 for c in channels):
            raise ValueError(f"`channels` must list at least two positive integers, got {channels!r}")
        factor = 2 ** (len(channels) - 1)
        if image_size < factor or image_size % factor:
            raise ValueError(f"`image_size` must be a positive multiple of {factor}, got {image_size}")
        latent = image_size // factor
        width = channels[1] if hidden is None else hidden
        flat = channels[-1] * latent * latent
        # the course's stem is one conv; its conv bias stays, as in its parameter count
        self.stem = ConvBlock(in_channels, channels[0], num_convs=1, bias=True)
        self.downs = nn.ModuleList([DownBlock(channels[i], channels[i + 1]) for i in range(len(channels) - 1)])
        self.bottleneck = nn.Sequential(
            nn.Flatten(),
            nn.ReLU(),
            nn.Linear(flat, width),
            nn.ReLU(),
            nn.Linear(width, width),
            nn.ReLU(),
            nn.Linear(width, flat),
            nn.ReLU(),
            nn.Unflatten(1, (channels[-1], latent, latent)),
            ConvBlock(channels[-1], channels[-1], num_convs=1, bias=True),
        )
        self.ups = nn.ModuleList([UpBlock(channels[i], channels[i - 1]) for i in reversed(range(1, len(channels)))])
        self.head = nn.Sequential(
            ConvBlock(channels[0], channels[0], num_convs=1, bias=True),
            nn.Conv2d(channels[0], out_channels, 3, padding=1),
        )
        self.time_embed = TimestepEmbedding(time_embedding) if time_embedding else None
        if self.time_embed is not None:
            width = self.time_embed.out_dim
            # after the stem, each down-block, the bottleneck, each up-block
            widths = [channels[0], *channels[1:], channels[-1], *reversed(channels[:-1])]
            self.time_proj = nn.ModuleList([TimeProjection(width, c) for c in widths])
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.image_size = image_size
        self.downsample_factor = factor
        self.spatial_dims = 2  # 2D only

    def output_size(self, n: int) -> int | None:
        """`n` if `n == image_size`, else `None`: the MLP fixes the input size."""
        return n if n == self.image_size else None

    def valid_input_size(self, n: int) -> int:
        """The only legal input side, `image_size`, if `n` fits in it."""
        if n > self.image_size:
            raise ValueError(f"this model takes only {self.image_size}x{self.image_size} inputs, got side {n}")
        return self.image_size

    def forward(self, x: torch.Tensor, t: torch.Tensor | float | None = None) -> torch.Tensor:
        """`(B, in_channels, S, S) -> (B, out_channels, S, S)` with `S = image_size`; `t`: timesteps
        `(B,)` or a number, only for a model with a timestep embedding."""
        expected = (self.in_channels, self.image_size, self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"expected input of shape (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}")
        projections: list[nn.Module] = []
        emb = embed_timesteps(self.time_embed, t, x)
        if emb is not None:
            projections = list(self.time_proj)

        def add_time(x: torch.Tensor) -> torch.Tensor:
            return x + projections.pop(0)(emb) if emb is not None else x

        x = add_time(self._run_stage(self.stem, x))
        skips = []
        for down in self.downs:
            x = add_time(self._run_stage(down, x))
            skips.append(x)
        x = add_time(self._run_stage(self.bottleneck, x))  # the MLP is on the path, unlike the tutorial
        for up in self.ups:
            x = add_time(self._run_stage(up, x, skips.pop()))
        return self._run_stage(self.head, x)


@register_model(example_size=16)
def unet_dense_bottleneck(**kwargs: Any) -> DenseBottleneckUNet:
    """2-down U-Net whose bottleneck is flattened through an MLP (diffusion tutorial), 16x16 input."""
    args: dict[str, Any] = dict(in_channels=1, out_channels=1, image_size=16)
    return build_model(DenseBottleneckUNet, args, **kwargs)  # type: ignore[return-value]
