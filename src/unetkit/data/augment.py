"""Batch augmentation on the tensors' own device: the U-Net paper's elastic deformation, flips, 90-degree
rotations, a small affine and per-sample intensity changes (Ronneberger et al. 2015, arXiv:1505.04597, Sec. 3.1).

The geometric part is one sampling grid per batch (dihedral transform and affine folded into one matrix, plus
the elastic displacement field), applied with one `grid_sample` per tensor kind: bicubic for the image,
nearest for class targets and integer/bool extras, bilinear for float extras. When only flips and 90-degree
rotations are on, the pixels are permuted by index instead, which is exact for every dtype. Samples that are
not augmented (draw >= `p`) come back bit-for-bit unchanged. All randomness comes from the caller's generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["AugmentConfig", "augment_batch", "elastic_displacement"]

# integers above this lose precision in float32, so labels that large are resampled in float64
_FLOAT32_EXACT_INT = 2**24


@dataclass
class AugmentConfig:
    """What `augment_batch` does; every range is drawn uniformly and independently per sample.

    Attributes:
        elastic: the U-Net paper's elastic deformation (Sec. 3.1).
        elastic_sigma: standard deviation in pixels of the coarse-grid displacements (10 px in the paper).
        elastic_grid: the coarse grid is `elastic_grid x elastic_grid` (3 x 3 in the paper).
        flip: random horizontal and vertical flips.
        rot90: random multiples of 90 degrees (only 0/180 when H != W).
        affine: a small affine transform with the ranges below.
        rotate_deg: rotation uniform in `[-rotate_deg, rotate_deg]` degrees.
        scale: zoom uniform in `[1 - scale, 1 + scale]` (> 1 magnifies).
        shear: horizontal shear factor uniform in `[-shear, shear]`.
        brightness: additive offset uniform in `[-brightness, brightness]` times the sample's std.
        contrast: factor uniform in `[1 - contrast, 1 + contrast]` around the sample's mean.
        gamma: exponent uniform in `[1 - gamma, 1 + gamma]` on min-max normalised intensities.
        noise: Gaussian noise with std `noise` times the sample's std.
        p: probability that a sample is augmented at all.
    """

    elastic: bool = True
    elastic_sigma: float = 10.0
    elastic_grid: int = 3
    flip: bool = True
    rot90: bool = True
    affine: bool = True
    rotate_deg: float = 15.0
    scale: float = 0.1
    shear: float = 0.0
    brightness: float = 0.1
    contrast: float = 0.1
    gamma: float = 0.0
    noise: float = 0.0
    p: float = 1.0

    def __post_init__(self) -> None:
        _check_config(self)


def _check_config(config: AugmentConfig) -> None:
    for name in ("elastic", "flip", "rot90", "affine"):
        if not isinstance(getattr(config, name), bool):
            raise ValueError(f"`{name}` must be a bool, got {getattr(config, name)!r}")
    if isinstance(config.elastic_grid, bool) or not isinstance(config.elastic_grid, int) or config.elastic_grid < 2:
        raise ValueError(f"`elastic_grid` must be an int >= 2, got {config.elastic_grid!r}")
    bounds = {  # name: (low, high, high included)
        "elastic_sigma": (0.0, math.inf, False),
        "rotate_deg": (0.0, 180.0, True),
        "scale": (0.0, 1.0, False),
        "shear": (0.0, math.inf, False),
        "brightness": (0.0, math.inf, False),
        "contrast": (0.0, 1.0, True),
        "gamma": (0.0, 1.0, False),
        "noise": (0.0, math.inf, False),
        "p": (0.0, 1.0, True),
    }
    for name, (low, high, closed) in bounds.items():
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"`{name}` must be a finite number, got {value!r}")
        if value < low or value > high or (value == high and not closed):
            interval = f"[{low:g}, {high:g}{']' if closed else ')'}"
            raise ValueError(f"`{name}` must be in {interval}, got {value}")


def _geometric(config: AugmentConfig) -> tuple[bool, bool, bool]:
    """Which warps are active: (elastic, affine, dihedral)."""
    elastic = config.elastic and config.elastic_sigma > 0
    affine = config.affine and (config.rotate_deg > 0 or config.scale > 0 or config.shear > 0)
    return elastic, affine, config.flip or config.rot90


def _intensity(config: AugmentConfig) -> bool:
    return config.brightness > 0 or config.contrast > 0 or config.gamma > 0 or config.noise > 0


class _Draws:
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


def elastic_displacement(
    batch: int, height: int, width: int, sigma: float, grid: int, generator: torch.Generator, device: torch.device
) -> Tensor:
    """Random smooth displacement fields in pixels (U-Net paper, Sec. 3.1).

    Displacements on a coarse `grid x grid` lattice are drawn from N(0, sigma^2) per axis, and the
    per-pixel field is their bicubic interpolation; with `align_corners=True` the lattice spans the
    image corner to corner, so the corner pixels carry the drawn values exactly.

    Args:
        batch: number of fields B.
        height: field height H (>= 2).
        width: field width W (>= 2).
        sigma: standard deviation of the coarse displacements, in pixels.
        grid: coarse lattice size (>= 2).
        generator: source of randomness; draws are made on its device.
        device: where the field is returned.

    Returns:
        `(B, H, W, 2)` float32 displacements in pixels, last axis `(dx, dy)`.
    """
    if batch < 0:
        raise ValueError(f"`batch` must be >= 0, got {batch}")
    if height < 2 or width < 2:
        raise ValueError(f"`height` and `width` must be >= 2, got {height}x{width}")
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"`sigma` must be a finite number >= 0, got {sigma}")
    if grid < 2:
        raise ValueError(f"`grid` must be >= 2, got {grid}")
    return _elastic(_Draws(generator, device, slice(None), batch), height, width, sigma, grid)


def _elastic(draws: _Draws, height: int, width: int, sigma: float, grid: int) -> Tensor:
    coarse = draws.randn(2, grid, grid) * sigma  # (B, 2, g, g): 10 px std in the paper
    # per-pixel displacements by bicubic interpolation of the coarse grid (Sec. 3.1)
    fine = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)  # (B, 2, H, W)
    return fine.permute(0, 2, 3, 1).contiguous()  # (B, H, W, 2)


def _dihedral(batch: int, square: bool, config: AugmentConfig, draws: _Draws, device: torch.device) -> Tensor:
    """Random flips and quarter turns as integer `(B, 2, 2)` matrices acting on centred `(x, y)` coordinates."""
    eye = torch.eye(2, device=device).expand(batch, 2, 2)
    matrix = eye.clone()
    if config.flip:
        flips = draws.rand(2) < 0.5  # (B, 2): flip x, flip y
        signs = 1.0 - 2.0 * flips.float()
        matrix = torch.diag_embed(signs)  # (B, 2, 2)
    if config.rot90:
        turns = draws.randint(4)
        if not square:  # a quarter turn would change the shape: keep 0 or 180 degrees
            turns = turns - turns % 2
        cos = torch.tensor([1.0, 0.0, -1.0, 0.0], device=device)[turns]  # exact for multiples of 90 degrees
        sin = torch.tensor([0.0, 1.0, 0.0, -1.0], device=device)[turns]
        rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (B, 2, 2)
        matrix = rot @ matrix
    return matrix


def _affine(batch: int, height: int, width: int, config: AugmentConfig, draws: _Draws, device: torch.device) -> Tensor:
    """Random rotation, zoom and shear as `(B, 2, 2)` matrices in normalised grid coordinates."""
    uniform = 2.0 * draws.rand(3) - 1.0  # (B, 3) uniform in [-1, 1)
    angle = uniform[:, 0] * math.radians(config.rotate_deg)
    zoom = 1.0 + uniform[:, 1] * config.scale
    shear = uniform[:, 2] * config.shear
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (B, 2, 2)
    shear_m = torch.eye(2, device=device).repeat(batch, 1, 1)
    shear_m[:, 0, 1] = shear
    # maps output to input pixels, so magnifying by `zoom` samples the input at 1 / zoom
    pixel = rot @ shear_m / zoom[:, None, None]  # (B, 2, 2) in pixel units
    # normalised coordinates are pixel offsets divided by half the extent: M_n = D^-1 M_px D
    half = torch.tensor([(width - 1) / 2.0, (height - 1) / 2.0], device=device)
    return pixel * half[None, None, :] / half[None, :, None]


def _permute(x: Tensor, index: Tensor) -> Tensor:
    """Gather pixels: `x` `(B, ..., H, W)`, `index` `(B, H * W)` flat source pixels -> same shape as `x`."""
    flat = x.reshape(x.shape[0], -1, x.shape[-2] * x.shape[-1])  # (B, K, HW)
    out = flat.gather(2, index[:, None, :].expand(-1, flat.shape[1], -1))
    return out.reshape(x.shape)


def _dihedral_index(matrix: Tensor, height: int, width: int) -> Tensor:
    """Flat source pixel of every output pixel for integer matrices `(B, 2, 2)` -> `(B, H * W)`."""
    device = matrix.device
    m = matrix.round().long()
    # doubled centred coordinates are integers, so the mapping is exact
    ys = 2 * torch.arange(height, device=device) - (height - 1)
    xs = 2 * torch.arange(width, device=device) - (width - 1)
    v, u = torch.meshgrid(ys, xs, indexing="ij")  # (H, W) each
    u, v = u.reshape(1, -1), v.reshape(1, -1)  # (1, HW)
    us = m[:, 0, 0, None] * u + m[:, 0, 1, None] * v  # (B, HW)
    vs = m[:, 1, 0, None] * u + m[:, 1, 1, None] * v
    cols = (us + (width - 1)) // 2
    rows = (vs + (height - 1)) // 2
    return rows * width + cols


def _sample(x: Tensor, grid: Tensor, mode: str) -> Tensor:
    """`grid_sample` with reflection at the borders: `(B, K, H, W)` with grid `(B, H, W, 2)` -> `(B, K, H, W)`."""
    return F.grid_sample(x, grid.to(x.dtype), mode=mode, padding_mode="reflection", align_corners=True)


def _label_dtype(tensors: list[Tensor]) -> torch.dtype:
    """float32 unless some integer label is too large to be exact in it."""
    for t in tensors:
        if t.dtype != torch.bool and t.numel() and int(t.abs().max()) > _FLOAT32_EXACT_INT:
            return torch.float64
    return torch.float32


def _intensity_augment(image: Tensor, config: AugmentConfig, draws: _Draws) -> Tensor:
    """Per-sample contrast, brightness, gamma and noise: `(B, C, H, W)` -> `(B, C, H, W)`."""
    batch = image.shape[0]
    uniform = (2.0 * draws.rand(3) - 1.0).to(image.dtype).view(batch, 3, 1, 1, 1)
    mean = image.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    std = image.std(dim=(1, 2, 3), keepdim=True, correction=0)
    out = image
    if config.contrast > 0:
        out = (out - mean) * (1.0 + config.contrast * uniform[:, 1]) + mean
    if config.brightness > 0:
        out = out + config.brightness * uniform[:, 0] * std
    if config.gamma > 0:
        low = out.amin(dim=(1, 2, 3), keepdim=True)
        span = out.amax(dim=(1, 2, 3), keepdim=True) - low
        safe = torch.where(span > 0, span, torch.ones_like(span))
        unit = ((out - low) / safe).clamp(0.0, 1.0)  # min-max normalised
        out = torch.where(span > 0, unit.pow(1.0 + config.gamma * uniform[:, 2]) * span + low, out)
    if config.noise > 0:
        noise = draws.randn(*image.shape[1:])  # (B, C, H, W)
        out = out + noise.to(dtype=image.dtype) * (config.noise * std)
    return out


def _check_inputs(image: Tensor, target: Tensor, extras: dict[str, Tensor], generator: object) -> None:
    if not isinstance(image, Tensor) or image.ndim != 4 or not image.is_floating_point():
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        dtype = image.dtype if isinstance(image, Tensor) else None
        raise ValueError(f"`image` must be a float (B, C, H, W) tensor, got {shape} {dtype}")
    batch, _, height, width = image.shape
    if not isinstance(target, Tensor) or target.ndim != 3 or target.is_floating_point() or target.dtype == torch.bool:
        shape = tuple(target.shape) if isinstance(target, Tensor) else type(target).__name__
        raise ValueError(f"`target` must be an integer (B, H, W) tensor, got {shape}")
    for name, t in [("target", target), *((f"extras[{k!r}]", v) for k, v in extras.items())]:
        if not isinstance(t, Tensor) or tuple(t.shape) != (batch, height, width):
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"`{name}` must have shape (B, H, W) = {(batch, height, width)} like `image`, got {shape}")
        if t.device != image.device:
            raise ValueError(f"`{name}` must be on the image's device {image.device}, got {t.device}")
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"`generator` must be a torch.Generator, got {type(generator).__name__}")


def augment_batch(
    image: Tensor,
    target: Tensor,
    *,
    config: AugmentConfig,
    generator: torch.Generator,
    extras: dict[str, Tensor] | None = None,
    shard: tuple[int, int] | None = None,
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Augment a batch with one random transform per sample, the same for its image, target and extras.

    Args:
        image: float `(B, C, H, W)` image batch (any float dtype; the result keeps it).
        target: integer `(B, H, W)` class indices, resampled by nearest neighbour.
        config: what to do and how strongly.
        generator: the only source of randomness; the same seed gives the same batch.
        extras: optional `(B, H, W)` maps: bool/integer ones (field of view, instances) by nearest
            neighbour, float ones (weight maps) bilinearly.
        shard: `(offset, total)` when the batch is samples `offset .. offset + B - 1` of a whole batch of
            `total` split across processes (data-parallel training): the random parameters are drawn for
            all `total` samples and this shard's rows are used, so every sample gets the transform of its
            position in the whole batch whatever the number of processes, provided every process passes
            a generator in the same state. `None` = the batch is whole.

    Returns:
        New `(image, target, extras)` with the input shapes and dtypes; the inputs are not modified.
    """
    extras = dict(extras) if extras is not None else {}
    _check_inputs(image, target, extras, generator)
    _check_config(config)
    batch, _, height, width = image.shape
    offset, total = shard if shard is not None else (0, batch)
    if offset < 0 or offset + batch > total:
        raise ValueError(f"`shard` must be (offset, total) with 0 <= offset <= total - {batch}, got {shard}")
    device = image.device
    draws = _Draws(generator, device, slice(offset, offset + batch), total)
    use_elastic, use_affine, use_dihedral = _geometric(config)
    use_intensity = _intensity(config)
    if total == 0 or config.p == 0 or not (use_elastic or use_affine or use_dihedral or use_intensity):
        return image.clone(), target.clone(), {k: v.clone() for k, v in extras.items()}
    if (use_elastic or use_affine or use_dihedral) and (height < 2 or width < 2):
        raise ValueError(f"`image` must be at least 2x2 for geometric augmentation, got {height}x{width}")

    apply = draws.rand() < config.p  # (B,) sample is augmented
    keep = apply.view(batch, 1, 1)
    out_image = image.to(torch.float64 if image.dtype == torch.float64 else torch.float32)  # (B, C, H, W)
    out_target, out_extras = target, dict(extras)

    if use_elastic or use_affine or use_dihedral:
        eye = torch.eye(2, device=device)
        matrix = _dihedral(batch, height == width, config, draws, device) if use_dihedral else eye.repeat(batch, 1, 1)
        matrix = torch.where(apply.view(batch, 1, 1), matrix, eye)  # (B, 2, 2)
        if not (use_elastic or use_affine):
            # flips and quarter turns only: permute pixels by index, exact for every dtype
            index = _dihedral_index(matrix, height, width)  # (B, HW)
            out_image = _permute(out_image, index)
            out_target = _permute(target, index)
            out_extras = {k: _permute(v, index) for k, v in extras.items()}
        else:
            if use_affine:
                matrix = _affine(batch, height, width, config, draws, device) @ matrix
            theta = torch.cat([matrix, torch.zeros(batch, 2, 1, device=device)], dim=2)  # (B, 2, 3), no shift
            grid = F.affine_grid(theta, [batch, 1, height, width], align_corners=True)  # (B, H, W, 2) float32
            if use_elastic:
                shift = _elastic(draws, height, width, config.elastic_sigma, config.elastic_grid)  # (B, H, W, 2) px
                # pixels to normalised units with align_corners=True: 2 / (size - 1)
                grid = grid + shift * torch.tensor([2.0 / (width - 1), 2.0 / (height - 1)], device=device)
            low = out_image.amin(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
            high = out_image.amax(dim=(2, 3), keepdim=True)
            # bicubic overshoots at edges: clamp to the sample's own range
            out_image = torch.minimum(torch.maximum(_sample(out_image, grid, "bicubic"), low), high)
            nearest = [target, *(v for v in extras.values() if not v.is_floating_point())]
            label_dtype = _label_dtype(nearest)
            stack = torch.stack([t.to(label_dtype) for t in nearest], dim=1)  # (B, K, H, W)
            warped = _sample(stack, grid, "nearest").round()
            out_target = warped[:, 0].to(target.dtype)
            names = [k for k, v in extras.items() if not v.is_floating_point()]
            for i, name in enumerate(names, start=1):
                v = extras[name]
                out_extras[name] = warped[:, i] > 0.5 if v.dtype == torch.bool else warped[:, i].to(v.dtype)
            floats = [k for k, v in extras.items() if v.is_floating_point()]
            if floats:
                work = torch.float64 if any(extras[k].dtype == torch.float64 for k in floats) else torch.float32
                smooth = _sample(torch.stack([extras[k].to(work) for k in floats], dim=1), grid, "bilinear")
                out_extras.update({k: smooth[:, i].to(extras[k].dtype) for i, k in enumerate(floats)})
            out_target = torch.where(keep, out_target, target)
            out_extras = {k: torch.where(keep, v, extras[k]) for k, v in out_extras.items()}

    if use_intensity:
        out_image = _intensity_augment(out_image, config, draws)
    out_image = torch.where(apply.view(batch, 1, 1, 1), out_image.to(image.dtype), image)
    out_target = target.clone() if out_target is target else out_target
    return out_image, out_target, {k: v.clone() if v is extras[k] else v for k, v in out_extras.items()}
