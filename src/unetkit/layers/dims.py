"""Layers by number of spatial dimensions, after MONAI's `spatial_dims` (`monai.networks.layers.factories`):
one implementation per block, and `Conv2d` or `Conv3d` (pooling, normalisation, ...) chosen by
`spatial_dims`. Per-axis arguments (kernel sizes, pooling strides for anisotropic voxels, as nnU-Net's
plans give them) are normalised here.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

__all__ = [
    "SPATIAL_DIMS",
    "check_spatial_dims",
    "collapse",
    "conv_nd",
    "conv_transpose_nd",
    "max_pool_nd",
    "per_axis",
    "per_level",
]

SPATIAL_DIMS = (2, 3)

_CONV: dict[int, type[nn.Module]] = {2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T: dict[int, type[nn.Module]] = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_MAX_POOL: dict[int, type[nn.Module]] = {2: nn.MaxPool2d, 3: nn.MaxPool3d}


def check_spatial_dims(spatial_dims: object) -> int:
    """`spatial_dims` if it is 2 or 3, else `ValueError` naming it."""
    if isinstance(spatial_dims, bool) or spatial_dims not in SPATIAL_DIMS:
        raise ValueError(f"`spatial_dims` must be 2 or 3, got {spatial_dims!r}")
    return int(spatial_dims)


def conv_nd(spatial_dims: int) -> type[nn.Module]:
    """`nn.Conv2d` or `nn.Conv3d`."""
    return _CONV[check_spatial_dims(spatial_dims)]


def conv_transpose_nd(spatial_dims: int) -> type[nn.Module]:
    """`nn.ConvTranspose2d` or `nn.ConvTranspose3d`."""
    return _CONV_T[check_spatial_dims(spatial_dims)]


def max_pool_nd(spatial_dims: int) -> type[nn.Module]:
    """`nn.MaxPool2d` or `nn.MaxPool3d`."""
    return _MAX_POOL[check_spatial_dims(spatial_dims)]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def per_axis(value: int | Sequence[int], spatial_dims: int, name: str, *, minimum: int = 1) -> tuple[int, ...]:
    """An int (the same on every axis) or one int per spatial axis -> a tuple of `spatial_dims` ints.

    Raises:
        ValueError: naming `name`, for a wrong length or a value below `minimum`.
    """
    raw: tuple[object, ...] = (value,) * spatial_dims if _is_int(value) else tuple(value)  # type: ignore[arg-type]
    values = tuple(v for v in raw if isinstance(v, int) and not isinstance(v, bool) and v >= minimum)
    if len(raw) != spatial_dims or len(values) != spatial_dims:
        raise ValueError(
            f"`{name}` must be an integer >= {minimum} or {spatial_dims} of them (one per spatial axis), got {value!r}"
        )
    return values


def per_level(
    value: int | Sequence[int] | Sequence[int | Sequence[int]],
    levels: int,
    spatial_dims: int,
    name: str,
    *,
    minimum: int = 1,
) -> list[tuple[int, ...]]:
    """Per-level, per-axis integers as nnU-Net's plans list kernel sizes and pooling strides.

    `3` -> the same on every level and axis; `(1, 3, 3)` (flat, one per axis) -> the same on every level;
    `[(1, 3, 3), (3, 3, 3), ...]` (a list with a nested entry) -> one entry per level, each an int or
    one per axis.

    Returns:
        `levels` tuples of `spatial_dims` ints.
    """
    if _is_int(value) or (isinstance(value, Sequence) and all(_is_int(v) for v in value)):
        return [per_axis(value, spatial_dims, name, minimum=minimum)] * levels  # type: ignore[arg-type]
    entries = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else None
    if entries is None or len(entries) != levels:
        raise ValueError(
            f"`{name}` must be an integer, one per spatial axis, or one entry per level ({levels} levels), "
            f"got {value!r}"
        )
    return [per_axis(v, spatial_dims, f"{name}[{i}]", minimum=minimum) for i, v in enumerate(entries)]


def collapse(values: tuple[int, ...]) -> int | tuple[int, ...]:
    """`(2, 2)` -> `2`: layers keep their 2-D repr (and summaries their text) when an argument is isotropic."""
    return values[0] if len(set(values)) == 1 else values
