"""Prediction on volumes with a 3D model: an array `(C, D, H, W)` in, probabilities out, through the slab-wise
tiling engine (`unetkit.infer.grid`); `unetkit.infer.volume_files` streams files through the same plan.

The model sees tiles in its own axis order. The engine streams slabs along its first axis; `AxisOrder` lets a
caller stream along another axis of the model's (a NIfTI file's slowest axis is its last), by permuting each
tile before the model and each output tile after it: the model's result does not change, only the order in
which its tiles run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from unetkit.infer.grid import GridPlan, _index, _tile_bar, plan_grid, run_grid

if TYPE_CHECKING:  # predict() of a 3D model calls predict_volume: no import back at run time
    from unetkit.infer.predictor import Predictor

__all__ = ["DEFAULT_VOLUME_TILE", "AxisOrder", "plan_volume", "predict_volume"]

DEFAULT_VOLUME_TILE = 96  # tile side of padded 3D models: nnU-Net's patches are 128^3 on a GPU; 96^3 keeps CPUs busy
DEFAULT_CLASSIC_VOLUME_TILE = (44, 44, 28)  # the output tile of Çiçek et al. 2016 (132x132x116 input)


class AxisOrder:
    """The engine's axis `j` is the model's spatial axis `order[j]`.

    Args:
        predictor: the model's predictor (tiles in the model's order).
        order: a permutation of the spatial axes; `(0, 1, 2)` streams along the model's first axis.
    """

    def __init__(self, predictor: Predictor, order: Sequence[int]) -> None:
        order = tuple(int(a) for a in order)
        if sorted(order) != list(range(predictor.spatial_dims)):
            raise ValueError(f"`order` must be a permutation of the spatial axes, got {order}")
        self.predictor, self.order = predictor, order
        self.to_model = (0, 1, *(2 + order.index(i) for i in range(len(order))))
        self.to_engine = (0, 1, *(2 + a for a in order))

    def __call__(self, tiles: torch.Tensor) -> torch.Tensor:
        """`(B, C, *engine tile)` -> `(B, K, *engine output tile)`."""
        if self.order == tuple(range(len(self.order))):
            return self.predictor(tiles)
        return self.predictor(tiles.permute(self.to_model)).permute(self.to_engine)

    def engine(self, values: Sequence[int]) -> tuple[int, ...]:
        """Per-axis values in the model's order -> the engine's order."""
        return tuple(int(values[a]) for a in self.order)


def plan_volume(
    predictor: Predictor,
    shape: Sequence[int],
    tile: int | Sequence[int] | None,
    overlap: float,
    blend: str,
    order: Sequence[int] = (0, 1, 2),
) -> GridPlan:
    """The tile plan of a volume of spatial `shape` (model order), in the engine order `order`.

    `tile`: output tile per axis (unpadded models, default the paper's 44x44x28) or tile per axis (padded
    ones, default 96), one number for every axis or one per axis of the model.
    """
    dims = predictor.spatial_dims
    if tile is None:
        tile = DEFAULT_CLASSIC_VOLUME_TILE if any(predictor.margins) else DEFAULT_VOLUME_TILE
    tiles = (tile,) * dims if isinstance(tile, int) else tuple(tile)
    if len(tiles) != dims or any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in tiles):
        raise ValueError(f"`tile` must be a positive integer or {dims} of them, got {tile!r}")
    for axis, t in enumerate(tiles):
        unpadded = predictor.margins[axis] > 0
        smallest = predictor.legal_output_axis(1, axis) if unpadded else predictor.aligns[axis]
        if t < smallest:
            what = "output tile" if unpadded else "tile (its down-sampling factor)"
            raise ValueError(f"`tile` {t} on axis {axis} is smaller than the model's smallest {what}, {smallest}")
    axes = AxisOrder(predictor, order)

    def legal(n: int, engine_axis: int) -> int:
        return predictor.legal_output_axis(n, axes.order[engine_axis])

    return plan_grid(
        axes.engine(shape), tile=axes.engine(tiles), overlap=overlap, margins=axes.engine(predictor.margins),
        blend=blend, legal_output=legal, align=axes.engine(predictor.aligns),
    )  # fmt: skip


def _as_cdhw(volume: np.ndarray | torch.Tensor, channels: int | None, *, scale_dtype: bool) -> torch.Tensor:
    """`(D, H, W)` or `(C, D, H, W)` -> float32 `(C, D, H, W)` (integers divided by their dtype's maximum when
    `scale_dtype`, as 2D prediction does)."""
    from unetkit.data.folder import intensity_scale

    array = volume.numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4:
        raise ValueError(f"`image` must be a volume (D, H, W) or (C, D, H, W) for a 3D model, got shape {array.shape}")
    if channels is not None and array.shape[0] != channels:
        raise ValueError(f"`image` has {array.shape[0]} channels, the model expects {channels}")
    if 0 in array.shape:
        raise ValueError(f"`image` is empty: shape {array.shape}")
    if array.dtype.kind not in "biuf":
        raise ValueError(f"`image` must hold numbers, got dtype {array.dtype}")
    scale = intensity_scale(array.dtype) if scale_dtype else 1.0
    x = torch.from_numpy(np.array(array, dtype=np.float32, copy=True))
    if scale != 1.0:
        x.mul_(scale)
    if not torch.isfinite(x).all():
        raise ValueError("`image` holds NaN or infinite values")
    return x


def predict_volume(
    predictor: Predictor,
    volume: np.ndarray | torch.Tensor,
    *,
    tile: int | Sequence[int] | None = None,
    overlap: float = 0.25,
    blend: str = "gaussian",
    batch_size: int = 2,
    progress: bool | Callable[[int, int], None] = False,
) -> np.ndarray:
    """Probabilities `(K, D, H, W)` for a volume `(D, H, W)` or `(C, D, H, W)` of any size, tile by tile.

    Args:
        predictor: a `Predictor` of a 3D model (its normalisation, activation and TTA apply).
        volume: raw voxels; integers are scaled by their dtype's range unless the checkpoint names a
            normalisation scheme (as `unetkit.infer.predict`).
        tile, overlap, blend: see `plan_volume` and `unetkit.infer.grid.plan_grid`.
        batch_size: tiles per forward pass.
        progress: a progress bar over tiles, or `progress(done, total)`.
    """
    if predictor.spatial_dims != 3:
        raise ValueError(f"`predict_volume` needs a 3D model, got one with {predictor.spatial_dims} spatial axes")
    x = _as_cdhw(volume, predictor.in_channels, scale_dtype=not predictor.raw_units)
    shape = tuple(int(n) for n in x.shape[1:])
    plan = plan_volume(predictor, shape, tile, overlap, blend)
    out: np.ndarray | None = None

    def sink(r0: int, r1: int, values: torch.Tensor) -> None:
        nonlocal out
        if out is None:
            out = np.empty((values.shape[0], *shape), dtype=np.float32)
        out[:, r0:r1] = values.numpy()

    def reader(indices: tuple[np.ndarray, ...]) -> torch.Tensor:
        block = x
        for axis, idx in enumerate(indices):
            block = block[(slice(None),) * (axis + 1) + (_index(idx),)]
        return block

    with _tile_bar(plan, progress) as bar, predictor.for_image(x, strided=False):
        run_grid(predictor, reader, plan, sink, batch_size=batch_size, device=predictor.device, progress=bar)
    assert out is not None
    return out
