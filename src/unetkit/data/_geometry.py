"""The random geometry of `unetkit.data.augment`, in 2D and 3D: draws per sample of a whole batch, elastic
displacement fields, flips and quarter turns as integer matrices (and the exact index permutation they give),
small affines, and `grid_sample` with reflection at the borders.

Matrices act on centred grid coordinates in `affine_grid`'s order: `(x, y)` = (W, H) in 2D, `(x, y, z)` =
(W, H, D) in 3D. In 3D, quarter turns and the main rotation stay in the (H, W) plane, the plane of the slices,
so thick-slice volumes are never turned on their side; rotations out of that plane have their own range.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Draws", "affine", "dihedral", "dihedral_index", "elastic", "permute", "sample", "to_normalised"]


class Draws:
    """Random draws for every sample of the whole batch, made on the generator's device and returned for
    this shard's `rows` on `device`: a sample's draws depend only on its position in the whole batch,
    so a batch split across processes (each drawing the whole batch with the same generator) is
    augmented exactly as the unsplit batch."""

    def __init__(self, generator: torch.Generator, device: torch.device, rows: slice, total: int) -> None:
        self.generator, self.device, self.rows, self.total = generator, device, rows, total

    def rand(self, *shape: int) -> Tensor:
        """Uniform [0, 1) float32 `(B, *shape)`."""
        g = self.generator
        return torch.rand((self.total, *shape), generator=g, device=g.device)[self.rows].to(self.device)

    def randn(self, *shape: int) -> Tensor:
        """Standard normal float32 `(B, *shape)`."""
        g = self.generator
        return torch.randn((self.total, *shape), generator=g, device=g.device)[self.rows].to(self.device)

    def randint(self, high: int) -> Tensor:
        """Integers in `[0, high)`, `(B,)`."""
        g = self.generator
        return torch.randint(0, high, (self.total,), generator=g, device=g.device)[self.rows].to(self.device)


def elastic(draws: Draws, sizes: Sequence[int], sigma: float, grid: int) -> Tensor:
    """Smooth displacements in pixels: a coarse `grid^d` lattice of N(0, sigma^2) draws per axis, interpolated
    to `sizes` (bicubic in 2D as in the U-Net paper, Sec. 3.1; trilinear in 3D, where `interpolate` has no
    cubic mode) corner to corner -> `(B, *sizes, d)`, last axis `(dx, dy[, dz])`."""
    dims = len(sizes)
    coarse = draws.randn(dims, *([grid] * dims)) * sigma  # (B, d, g, ...): 10 px std in the paper
    mode = "bicubic" if dims == 2 else "trilinear"
    fine = F.interpolate(coarse, size=tuple(sizes), mode=mode, align_corners=True)  # (B, d, *sizes)
    return fine.permute(0, *range(2, dims + 2), 1).contiguous()  # (B, *sizes, d)


def _rotation(cos: Tensor, sin: Tensor) -> Tensor:
    """`(B,)` cosines and sines -> `(B, 2, 2)` rotations."""
    return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)


def _embed(block: Tensor, dims: int, axes: tuple[int, int]) -> Tensor:
    """A `(B, 2, 2)` block acting on coordinates `axes` of a `(B, dims, dims)` identity."""
    out = torch.eye(dims, device=block.device, dtype=block.dtype).repeat(block.shape[0], 1, 1)
    (i, j) = axes
    out[:, i, i], out[:, i, j], out[:, j, i], out[:, j, j] = (
        block[:, 0, 0],
        block[:, 0, 1],
        block[:, 1, 0],
        block[:, 1, 1],
    )
    return out


def dihedral(batch: int, dims: int, square: bool, config: Any, draws: Draws, device: torch.device) -> Tensor:
    """Random flips (one draw per axis) and quarter turns in the (x, y) plane as integer `(B, d, d)` matrices;
    only 0 / 180 degrees when the plane is not square (a quarter turn would change the shape)."""
    eye = torch.eye(dims, device=device).expand(batch, dims, dims)
    matrix = eye.clone()
    if config.flip:
        flips = draws.rand(dims) < 0.5  # (B, d): flip x, flip y[, flip z]
        signs = 1.0 - 2.0 * flips.float()
        matrix = torch.diag_embed(signs)  # (B, d, d)
    if config.rot90:
        turns = draws.randint(4)
        if not square:
            turns = turns - turns % 2
        cos = torch.tensor([1.0, 0.0, -1.0, 0.0], device=device)[turns]  # exact for multiples of 90 degrees
        sin = torch.tensor([0.0, 1.0, 0.0, -1.0], device=device)[turns]
        rot = _rotation(cos, sin)  # (B, 2, 2)
        matrix = (rot if dims == 2 else _embed(rot, dims, (0, 1))) @ matrix
    return matrix


def to_normalised(pixel: Tensor, sizes: Sequence[int], device: torch.device) -> Tensor:
    """Pixel-unit matrices `(B, d, d)` as `affine_grid` matrices: offsets divided by half the extent,
    M_n = D^-1 M_px D, for spatial `sizes` `(H, W)` or `(D, H, W)`."""
    half = torch.tensor([(n - 1) / 2.0 for n in reversed(sizes)], device=device)  # x first
    return pixel * half[None, None, :] / half[None, :, None]


def affine(
    batch: int, sizes: Sequence[int], config: Any, draws: Draws, device: torch.device, spacing: Sequence[float] | None
) -> Tensor:
    """Random rotation, zoom and shear as `(B, d, d)` matrices in normalised grid coordinates.

    2D draws (per sample): angle, zoom, shear. 3D adds the rotations about the x and y axes (out of the slice plane,
    `config.rotate_out_of_plane_deg`). With `spacing`, the rotation and shear act in physical units (M_px =
    S^-1 M S), so anisotropic voxels are rotated as the anatomy, not as the voxel grid.
    """
    dims = len(sizes)
    uniform = 2.0 * draws.rand(3 if dims == 2 else 5) - 1.0  # (B, 3 | 5) uniform in [-1, 1)
    angle = uniform[:, 0] * math.radians(config.rotate_deg)
    zoom = 1.0 + uniform[:, 1] * config.scale
    shear = uniform[:, 2] * config.shear
    rot = _rotation(torch.cos(angle), torch.sin(angle))  # (B, 2, 2) in the (x, y) plane
    if dims == 3:
        out_of_plane = uniform[:, 3:] * math.radians(config.rotate_out_of_plane_deg)
        about_x = _embed(_rotation(torch.cos(out_of_plane[:, 0]), torch.sin(out_of_plane[:, 0])), 3, (1, 2))
        about_y = _embed(_rotation(torch.cos(out_of_plane[:, 1]), torch.sin(out_of_plane[:, 1])), 3, (0, 2))
        rot = _embed(rot, 3, (0, 1)) @ about_y @ about_x
    shear_m = torch.eye(dims, device=device).repeat(batch, 1, 1)
    shear_m[:, 0, 1] = shear
    # maps output to input pixels, so magnifying by `zoom` samples the input at 1 / zoom
    pixel = rot @ shear_m / zoom[:, None, None]  # (B, d, d) in pixel units
    if spacing is not None:
        step = torch.tensor([float(s) for s in reversed(spacing)], device=device)  # x first
        pixel = pixel * step[None, None, :] / step[None, :, None]  # S^-1 M S
    return to_normalised(pixel, sizes, device)


def permute(x: Tensor, index: Tensor, dims: int) -> Tensor:
    """Gather pixels: `x` `(B, ..., *S)` with `dims` spatial axes, `index` `(B, prod(S))` flat source pixels."""
    spatial = math.prod(x.shape[-dims:])
    flat = x.reshape(x.shape[0], -1, spatial)  # (B, K, prod(S))
    out = flat.gather(2, index[:, None, :].expand(-1, flat.shape[1], -1))
    return out.reshape(x.shape)


def dihedral_index(matrix: Tensor, sizes: Sequence[int]) -> Tensor:
    """Flat source pixel of every output pixel for integer matrices `(B, d, d)` -> `(B, prod(sizes))`."""
    device = matrix.device
    m = matrix.round().long()
    # doubled centred coordinates are integers, so the mapping is exact
    axes = [2 * torch.arange(n, device=device) - (n - 1) for n in sizes]  # (D,) H, W order
    mesh = torch.meshgrid(*axes, indexing="ij")
    coords = [c.reshape(1, -1) for c in reversed(mesh)]  # x (W) first, each (1, prod(S))
    index = torch.zeros_like(coords[0])
    for out_axis, n in zip(reversed(range(len(sizes))), sizes, strict=True):  # slowest-varying axis first
        moved = sum(m[:, out_axis, k, None] * coords[k] for k in range(len(sizes)))  # (B, prod(S))
        index = index * n + (moved + (n - 1)) // 2
    return index


def sample(x: Tensor, grid: Tensor, mode: str) -> Tensor:
    """`grid_sample` with reflection at the borders: `(B, K, *S)` with grid `(B, *S, d)` -> `(B, K, *S)`."""
    return F.grid_sample(x, grid.to(x.dtype), mode=mode, padding_mode="reflection", align_corners=True)
