"""Batch augmentation on the tensors' own device, for images `(B, C, H, W)` and volumes `(B, C, D, H, W)` (the
number of spatial axes is the tensor's rank): the U-Net paper's elastic deformation, flips, 90-degree rotations, a
small affine and per-sample intensity changes (Ronneberger et al. 2015, arXiv:1505.04597, Sec. 3.1; in 3D as the
3D U-Net of Çiçek et al. 2016, arXiv:1606.06650, Sec. 2.1, and nnU-Net's spatial transforms).

The geometric part is one sampling grid per batch (dihedral transform and affine folded into one matrix, plus
the elastic displacement field), applied with one `grid_sample` per tensor kind: bicubic for 2-D images
(trilinear for volumes, where `grid_sample` has no cubic mode), nearest for class targets and integer/bool extras,
(bi/tri)linear for float extras. When only flips and 90-degree rotations are on, the pixels are permuted by index
instead, which is exact for every dtype. In 3D, quarter turns and the main rotation stay in the (H, W) plane of
the slices; `rotate_out_of_plane_deg` tilts it, and `spacing` makes rotations and the elastic field act in
physical units on anisotropic voxels. Samples that are not augmented (draw >= `p`) come back bit-for-bit
unchanged. All randomness comes from the caller's generator; 2-D batches draw exactly what they always drew.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from unetkit.data._geometry import Draws, affine, dihedral, dihedral_index, elastic, permute, sample

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
        flip: random flips along every axis.
        rot90: random multiples of 90 degrees in the (H, W) plane (only 0/180 when H != W).
        affine: a small affine transform with the ranges below.
        rotate_deg: rotation uniform in `[-rotate_deg, rotate_deg]` degrees (in the (H, W) plane).
        rotate_out_of_plane_deg: volumes only: rotations about the two in-plane axes, each uniform in
            `[-rotate_out_of_plane_deg, rotate_out_of_plane_deg]` degrees; 0 (the default) keeps the slices' plane,
            right for thick slices; nnU-Net rotates isotropic volumes by up to 30 degrees about every axis.
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
    rotate_out_of_plane_deg: float = 0.0
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
        "rotate_out_of_plane_deg": (0.0, 180.0, True),
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
    turn = config.rotate_deg > 0 or config.rotate_out_of_plane_deg > 0
    affine = config.affine and (turn or config.scale > 0 or config.shear > 0)
    return elastic, affine, config.flip or config.rot90


def _intensity(config: AugmentConfig) -> bool:
    return config.brightness > 0 or config.contrast > 0 or config.gamma > 0 or config.noise > 0


def elastic_displacement(
    batch: int,
    height: int,
    width: int,
    sigma: float,
    grid: int,
    generator: torch.Generator,
    device: torch.device,
    *,
    depth: int | None = None,
) -> Tensor:
    """Random smooth displacement fields in pixels (U-Net paper, Sec. 3.1).

    Displacements on a coarse `grid x grid` (x `grid` in 3D) lattice are drawn from N(0, sigma^2) per axis, and
    the per-pixel field is their bicubic (3D: trilinear) interpolation; with `align_corners=True` the lattice
    spans the image corner to corner, so the corner pixels carry the drawn values exactly.

    Args:
        batch: number of fields B.
        height: field height H (>= 2).
        width: field width W (>= 2).
        sigma: standard deviation of the coarse displacements, in pixels.
        grid: coarse lattice size (>= 2).
        generator: source of randomness; draws are made on its device.
        device: where the field is returned.
        depth: field depth D (>= 2) for a volume's field; None for an image's.

    Returns:
        `(B, H, W, 2)` float32 displacements in pixels, last axis `(dx, dy)`; with `depth`, `(B, D, H, W, 3)`
        with last axis `(dx, dy, dz)`.
    """
    if batch < 0:
        raise ValueError(f"`batch` must be >= 0, got {batch}")
    sizes = (height, width) if depth is None else (depth, height, width)
    if min(sizes) < 2:
        raise ValueError(f"the field's sides must be >= 2, got {'x'.join(map(str, sizes))}")
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"`sigma` must be a finite number >= 0, got {sigma}")
    if grid < 2:
        raise ValueError(f"`grid` must be >= 2, got {grid}")
    return elastic(Draws(generator, device, slice(None), batch), sizes, sigma, grid)


def _label_dtype(tensors: list[Tensor]) -> torch.dtype:
    """float32 unless some integer label is too large to be exact in it."""
    for t in tensors:
        if t.dtype != torch.bool and t.numel() and int(t.abs().max()) > _FLOAT32_EXACT_INT:
            return torch.float64
    return torch.float32


def _intensity_augment(image: Tensor, config: AugmentConfig, draws: Draws) -> Tensor:
    """Per-sample contrast, brightness, gamma and noise: `(B, C, *S)` -> `(B, C, *S)`."""
    batch = image.shape[0]
    per_sample = tuple(range(1, image.ndim))  # (C, *S)
    uniform = (2.0 * draws.rand(3) - 1.0).to(image.dtype).view(batch, 3, *([1] * (image.ndim - 1)))
    mean = image.mean(dim=per_sample, keepdim=True)  # (B, 1, 1, 1)
    std = image.std(dim=per_sample, keepdim=True, correction=0)
    out = image
    if config.contrast > 0:
        out = (out - mean) * (1.0 + config.contrast * uniform[:, 1]) + mean
    if config.brightness > 0:
        out = out + config.brightness * uniform[:, 0] * std
    if config.gamma > 0:
        low = out.amin(dim=per_sample, keepdim=True)
        span = out.amax(dim=per_sample, keepdim=True) - low
        safe = torch.where(span > 0, span, torch.ones_like(span))
        unit = ((out - low) / safe).clamp(0.0, 1.0)  # min-max normalised
        out = torch.where(span > 0, unit.pow(1.0 + config.gamma * uniform[:, 2]) * span + low, out)
    if config.noise > 0:
        noise = draws.randn(*image.shape[1:])  # (B, C, *S)
        out = out + noise.to(dtype=image.dtype) * (config.noise * std)
    return out


def _check_inputs(image: Tensor, target: Tensor, extras: dict[str, Tensor], generator: object) -> None:
    if not isinstance(image, Tensor) or image.ndim not in (4, 5) or not image.is_floating_point():
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        dtype = image.dtype if isinstance(image, Tensor) else None
        raise ValueError(f"`image` must be a float (B, C, H, W) or (B, C, D, H, W) tensor, got {shape} {dtype}")
    spatial = tuple(image.shape[2:])
    axes = "(B, H, W)" if image.ndim == 4 else "(B, D, H, W)"
    if (
        not isinstance(target, Tensor)
        or target.ndim != image.ndim - 1
        or target.is_floating_point()
        or target.dtype == torch.bool
    ):
        shape = tuple(target.shape) if isinstance(target, Tensor) else type(target).__name__
        raise ValueError(f"`target` must be an integer {axes} tensor, got {shape}")
    expected = (image.shape[0], *spatial)
    for name, t in [("target", target), *((f"extras[{k!r}]", v) for k, v in extras.items())]:
        if not isinstance(t, Tensor) or tuple(t.shape) != expected:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"`{name}` must have shape {axes} = {expected} like `image`, got {shape}")
        if t.device != image.device:
            raise ValueError(f"`{name}` must be on the image's device {image.device}, got {t.device}")
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"`generator` must be a torch.Generator, got {type(generator).__name__}")


def _check_spacing(spacing: Sequence[float] | None, dims: int) -> tuple[float, ...] | None:
    if spacing is None:
        return None
    step = tuple(float(s) for s in spacing)
    if len(step) != dims or not all(math.isfinite(s) and s > 0 for s in step):
        raise ValueError(f"`spacing` must give {dims} positive numbers (one per spatial axis), got {tuple(spacing)}")
    return step


def augment_batch(
    image: Tensor,
    target: Tensor,
    *,
    config: AugmentConfig,
    generator: torch.Generator,
    extras: dict[str, Tensor] | None = None,
    shard: tuple[int, int] | None = None,
    spacing: Sequence[float] | None = None,
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Augment a batch with one random transform per sample, the same for its image, target and extras.

    Args:
        image: float `(B, C, H, W)` image batch or `(B, C, D, H, W)` volume batch (any float dtype; the result
            keeps it).
        target: integer `(B, H, W)` (volumes: `(B, D, H, W)`) class indices, resampled by nearest neighbour.
        config: what to do and how strongly.
        generator: the only source of randomness; the same seed gives the same batch.
        extras: optional maps shaped like `target`: bool/integer ones (field of view, instances) by nearest
            neighbour, float ones (weight maps) (bi/tri)linearly.
        shard: `(offset, total)` when the batch is samples `offset .. offset + B - 1` of a whole batch of
            `total` split across processes (data-parallel training): the random parameters are drawn for
            all `total` samples and this shard's rows are used, so every sample gets the transform of its
            position in the whole batch whatever the number of processes, provided every process passes
            a generator in the same state. `None` = the batch is whole.
        spacing: voxel size per spatial axis (`(D, H, W)` order for volumes): rotations and shear then act in
            physical units and the elastic field's `sigma` is in units of the smallest voxel side on every axis.
            None: voxels are cubes (and 2-D pixels squares).

    Returns:
        New `(image, target, extras)` with the input shapes and dtypes; the inputs are not modified.
    """
    extras = dict(extras) if extras is not None else {}
    _check_inputs(image, target, extras, generator)
    _check_config(config)
    batch, sizes = image.shape[0], tuple(image.shape[2:])  # (H, W) or (D, H, W)
    dims = len(sizes)
    step = _check_spacing(spacing, dims)
    offset, total = shard if shard is not None else (0, batch)
    if offset < 0 or offset + batch > total:
        raise ValueError(f"`shard` must be (offset, total) with 0 <= offset <= total - {batch}, got {shard}")
    device = image.device
    draws = Draws(generator, device, slice(offset, offset + batch), total)
    use_elastic, use_affine, use_dihedral = _geometric(config)
    use_intensity = _intensity(config)
    if total == 0 or config.p == 0 or not (use_elastic or use_affine or use_dihedral or use_intensity):
        return image.clone(), target.clone(), {k: v.clone() for k, v in extras.items()}
    if (use_elastic or use_affine or use_dihedral) and min(sizes) < 2:
        least, got = "x".join(["2"] * dims), "x".join(map(str, sizes))
        raise ValueError(f"`image` must be at least {least} for geometric augmentation, got {got}")

    apply = draws.rand() < config.p  # (B,) sample is augmented
    keep = apply.view(batch, *([1] * dims))
    out_image = image.to(torch.float64 if image.dtype == torch.float64 else torch.float32)  # (B, C, *S)
    out_target, out_extras = target, dict(extras)

    if use_elastic or use_affine or use_dihedral:
        eye = torch.eye(dims, device=device)
        square = sizes[-1] == sizes[-2]  # the (H, W) plane of quarter turns
        matrix = dihedral(batch, dims, square, config, draws, device) if use_dihedral else eye.repeat(batch, 1, 1)
        matrix = torch.where(apply.view(batch, 1, 1), matrix, eye)  # (B, d, d)
        if not (use_elastic or use_affine):
            # flips and quarter turns only: permute pixels by index, exact for every dtype
            index = dihedral_index(matrix, sizes)  # (B, prod(S))
            out_image = permute(out_image, index, dims)
            out_target = permute(target, index, dims)
            out_extras = {k: permute(v, index, dims) for k, v in extras.items()}
        else:
            if use_affine:
                matrix = affine(batch, sizes, config, draws, device, step) @ matrix
            theta = torch.cat([matrix, torch.zeros(batch, dims, 1, device=device)], dim=2)  # (B, d, d + 1), no shift
            grid = F.affine_grid(theta, [batch, 1, *sizes], align_corners=True)  # (B, *S, d) float32
            if use_elastic:
                shift = elastic(draws, sizes, config.elastic_sigma, config.elastic_grid)  # (B, *S, d) px
                if step is not None:  # sigma in units of the finest voxel side, on every axis
                    shift = shift * torch.tensor([min(step) / s for s in reversed(step)], device=device)
                # pixels to normalised units with align_corners=True: 2 / (size - 1)
                grid = grid + shift * torch.tensor([2.0 / (n - 1) for n in reversed(sizes)], device=device)
            spatial = tuple(range(2, 2 + dims))
            low = out_image.amin(dim=spatial, keepdim=True)  # (B, C, 1, ...)
            high = out_image.amax(dim=spatial, keepdim=True)
            # bicubic overshoots at edges: clamp to the sample's own range
            smooth_mode = "bicubic" if dims == 2 else "bilinear"  # 5-D grid_sample: bilinear is trilinear
            out_image = torch.minimum(torch.maximum(sample(out_image, grid, smooth_mode), low), high)
            nearest = [target, *(v for v in extras.values() if not v.is_floating_point())]
            label_dtype = _label_dtype(nearest)
            stack = torch.stack([t.to(label_dtype) for t in nearest], dim=1)  # (B, K, *S)
            warped = sample(stack, grid, "nearest").round()
            out_target = warped[:, 0].to(target.dtype)
            names = [k for k, v in extras.items() if not v.is_floating_point()]
            for i, name in enumerate(names, start=1):
                v = extras[name]
                out_extras[name] = warped[:, i] > 0.5 if v.dtype == torch.bool else warped[:, i].to(v.dtype)
            floats = [k for k, v in extras.items() if v.is_floating_point()]
            if floats:
                work = torch.float64 if any(extras[k].dtype == torch.float64 for k in floats) else torch.float32
                smooth = sample(torch.stack([extras[k].to(work) for k in floats], dim=1), grid, "bilinear")
                out_extras.update({k: smooth[:, i].to(extras[k].dtype) for i, k in enumerate(floats)})
            out_target = torch.where(keep, out_target, target)
            out_extras = {k: torch.where(keep, v, extras[k]) for k, v in out_extras.items()}

    if use_intensity:
        out_image = _intensity_augment(out_image, config, draws)
    out_image = torch.where(apply.view(batch, *([1] * (dims + 1))), out_image.to(image.dtype), image)
    out_target = target.clone() if out_target is target else out_target
    return out_image, out_target, {k: v.clone() if v is extras[k] else v for k, v in out_extras.items()}
