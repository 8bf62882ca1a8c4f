"""Timestep embedding for diffusion U-Nets, as in the DDPM U-Net (Ho et al. 2020, arXiv:2006.11239,
after the Transformer's position encoding of Vaswani et al. 2017): sinusoidal features of the
timestep, an MLP, and per block a projection of the embedding to the block's channels that is added
to its feature maps.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["TimeProjection", "TimestepEmbedding", "as_timesteps", "embed_timesteps", "sinusoidal_embedding"]


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """`(B,)` timesteps -> `(B, dim)` features `[sin(t w_i), cos(t w_i)]`, `w_i = max_period^(-i / half)`."""
    if dim < 2:
        raise ValueError(f"`dim` must be >= 2, got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)  # (B, 2 * half)
    if dim % 2:
        emb = nn.functional.pad(emb, (0, 1))
    return emb


def as_timesteps(t: torch.Tensor | float | None, batch: int, device: torch.device) -> torch.Tensor:
    """A number, a 0-d or a `(B,)` tensor -> a `(B,)` float tensor on `device`."""
    if t is None:
        raise ValueError("this model has a timestep embedding: call it as model(x, t)")
    t = torch.as_tensor(t, device=device, dtype=torch.float32)
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"`t` must be a number or a tensor of shape ({batch},), got shape {tuple(t.shape)}")
    return t


class TimestepEmbedding(nn.Module):
    """`(B,)` timesteps -> `(B, 4 * dim)`: sinusoidal features of width `dim`, then Linear-SiLU-Linear."""

    def __init__(self, dim: int) -> None:
        """
        Args:
            dim: width of the sinusoidal features; the MLP widens them to `4 * dim` (DDPM).
        """
        super().__init__()
        if not isinstance(dim, int) or dim < 2:
            raise ValueError(f"`time_embedding` must be an integer >= 2 (or 0 for none), got {dim!r}")
        self.dim = dim
        self.out_dim = 4 * dim
        self.mlp = nn.Sequential(nn.Linear(dim, self.out_dim), nn.SiLU(), nn.Linear(self.out_dim, self.out_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """`(B,) -> (B, 4 * dim)`."""
        return self.mlp(sinusoidal_embedding(t, self.dim))


class TimeProjection(nn.Sequential):
    """`(B, E) -> (B, C, 1, 1)` (`(B, C, 1, 1, 1)` in 3D): SiLU then Linear, the per-block `temb_proj` of the
    DDPM U-Net."""

    def __init__(self, embed_dim: int, channels: int, spatial_dims: int = 2) -> None:
        super().__init__(nn.SiLU(), nn.Linear(embed_dim, channels))
        self.spatial_dims = spatial_dims

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        """`(B, E) -> (B, C, 1, 1)`, ready to add to `(B, C, H, W)` feature maps (one more axis in 3D)."""
        out = super().forward(emb)
        return out.view(*out.shape, *([1] * self.spatial_dims))


def embed_timesteps(
    embedding: TimestepEmbedding | None, t: torch.Tensor | float | None, x: torch.Tensor
) -> torch.Tensor | None:
    """A model's `(B, E)` embedding of `t` for the batch `x`, or None for a model without one; `t` is
    required exactly when the model has an embedding."""
    if embedding is not None:
        return embedding(as_timesteps(t, x.shape[0], x.device))  # (B, 4 * time_embedding)
    if t is not None:
        raise ValueError("this model has no timestep embedding (create it with time_embedding > 0)")
    return None
