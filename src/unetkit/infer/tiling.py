"""The tiling engine: plan tiles, run them in batches, blend and stitch, one band of tile rows at a time.

Two strategies, chosen by the predictor's context margin:

- **Overlap-tile** for unpadded models (Ronneberger et al. 2015, Fig. 2): output tiles of a legal size
  cover the image without gaps, each input tile extends its output tile by the context margin, and
  context missing at the image border is filled by mirroring. Output tiles do not overlap, so the
  stitched result equals one forward pass over the whole mirror-padded image, seams free, with no
  blending.
- **Overlapping tiles with a halo** for padded models (as in nnU-Net and MONAI's sliding window):
  tiles overlap by a fraction, and each output pixel is the weighted mean of the tiles that cover it,
  with gaussian weights (centre-heavy, kept above zero), constant weights, or `center`: each pixel
  taken from the tile whose centre region owns it.

The tiles run through the engine of `unetkit.infer.grid` (any number of axes), which `run_tiled` calls
with a plan of two. Tile starts are planned so that the last tile ends on the image edge. Memory stays
bounded: the image is read and the output handed to a sink one band of tile rows at a time, so neither the input nor the
full output needs to be in memory; the device holds one band of input in the file's own dtype (C x
(tile + 2 margin) rows x W), one batch of tiles in float32 and the band's weighted sums ((K + 1) x tile
rows x W), and only finished rows come back to the host. The next band is read in a reader thread while
the current one runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from unetkit.infer.grid import (  # the one engine, for any number of axes; its planning helpers
    BLEND_MODES,
    GAUSSIAN_FLOOR,
    GAUSSIAN_SIGMA,
    GridPlan,
    _aligned_starts,
    plan_starts,
    reflect_indices,
    run_grid,
)

__all__ = ["BLEND_MODES", "TilePlan", "blend_weights", "plan_starts", "plan_tiles", "reflect_indices", "run_tiled"]


@dataclass(frozen=True)
class TilePlan:
    """Where the tiles go.

    Attributes:
        height, width: image size.
        tile_h, tile_w: output tile size (input tile = output + 2 margin).
        margin: context pixels on each side of an output tile (0 for padded models).
        ys, xs: output tile starts along each axis.
        blend: `gaussian`, `constant` or `center` (`none` for overlap-tile, whose tiles do not overlap).
    """

    height: int
    width: int
    tile_h: int
    tile_w: int
    margin: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]
    blend: str

    @property
    def num_tiles(self) -> int:
        return len(self.ys) * len(self.xs)


def plan_tiles(
    height: int,
    width: int,
    *,
    tile: int,
    overlap: float,
    margin: int = 0,
    blend: str = "gaussian",
    legal_output: Callable[[int], int] | None = None,
    align: int = 1,
) -> TilePlan:
    """Plan output tiles over an `height x width` image.

    Args:
        height, width: image size.
        tile: output tile side for unpadded models (raised to a legal size by `legal_output`), input =
            output tile side for padded ones; shrunk to the image where the image is smaller.
        overlap: fraction of the tile shared with the next one, in `[0, 1)`; ignored for unpadded
            models (their output tiles abut).
        margin: the predictor's context margin; `> 0` selects the overlap-tile strategy.
        blend: `gaussian`, `constant` or `center`.
        legal_output: for unpadded models, the smallest legal output side `>= n`.
        align: for unpadded models, the total down-sampling factor: tile starts are multiples of it,
            so that every tile sees the pooling grid where the whole image puts it (an unpadded U-Net
            is shift-equivariant only for such shifts). Neighbouring tiles then overlap by
            `tile mod align` pixels of identical values, and the last tile may run past the image edge
            into mirrored context (its output there is dropped).
    """
    if not isinstance(overlap, (int, float)) or not 0.0 <= overlap < 1.0:
        raise ValueError(f"`overlap` must be in [0, 1), got {overlap!r}")
    if blend not in BLEND_MODES:
        raise ValueError(f"`blend` must be one of {', '.join(BLEND_MODES)}, got {blend!r}")
    if margin > 0:
        if legal_output is None:
            raise ValueError("an unpadded predictor (margin > 0) needs `legal_output`")
        tile_h = legal_output(min(tile, height))
        tile_w = legal_output(min(tile, width))
        ys = _aligned_starts(height, tile_h, align)
        xs = _aligned_starts(width, tile_w, align)
        return TilePlan(height, width, tile_h, tile_w, margin, tuple(ys), tuple(xs), "none")
    tile_h, tile_w = min(tile, height), min(tile, width)
    step_h = max(1, round(tile_h * (1.0 - overlap)))
    step_w = max(1, round(tile_w * (1.0 - overlap)))
    ys, xs = plan_starts(height, tile_h, step_h), plan_starts(width, tile_w, step_w)
    return TilePlan(height, width, tile_h, tile_w, 0, tuple(ys), tuple(xs), blend)


def blend_weights(plan: TilePlan) -> torch.Tensor:
    """`(tile_h, tile_w)` weights of one tile: a gaussian of sigma = 1/8 tile floored at 1e-3, or ones."""
    if plan.blend != "gaussian":
        return torch.ones(plan.tile_h, plan.tile_w)

    def axis(n: int) -> torch.Tensor:
        centre, sigma = (n - 1) / 2.0, max(n * GAUSSIAN_SIGMA, 1e-6)
        return torch.exp(-((torch.arange(n, dtype=torch.float64) - centre) ** 2) / (2 * sigma * sigma))

    w = torch.outer(axis(plan.tile_h), axis(plan.tile_w))
    return (w / w.max()).clamp_min(GAUSSIAN_FLOOR).float()


Reader = Callable[[np.ndarray, np.ndarray], torch.Tensor]
"""`reader(rows, cols)` returns the image at those (already mirrored) indices as `(C, len(rows), len(cols))`,
in any dtype (tiles are converted to float32 and multiplied by `scale` batch by batch)."""
Sink = Callable[[int, int, torch.Tensor], None]
"""`sink(y0, y1, values)` receives finished output rows `y0 .. y1 - 1` as `(K, y1 - y0, W)`; on the CPU
`values` is a buffer the next band reuses: a sink that keeps it beyond its return copies it."""


def run_tiled(
    predictor: Callable[[torch.Tensor], torch.Tensor],
    reader: Reader,
    plan: TilePlan,
    sink: Sink,
    *,
    batch_size: int = 4,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
    scale: float = 1.0,
    prefetch: bool = True,
) -> None:
    """Run `predictor` over the tiles of `plan` and hand finished rows to `sink`, top to bottom.

    Args:
        predictor: `(B, C, h + 2m, w + 2m) -> (B, K, h, w)` on `device` (activation included, if any).
        reader: reads input pixels at mirrored indices (see `Reader`); called once per band of tiles.
        plan: from `plan_tiles`.
        sink: receives finished rows (see `Sink`), on the CPU, in float32.
        batch_size: tiles per predictor call.
        device: where the tiles are sent.
        progress: called with the number of tiles done after each batch.
        scale: input tiles are multiplied by this after their conversion to float32 (e.g. 1/255 for
            uint8 pixels read as they are stored).
        prefetch: read the next band in a thread while the current one runs.
    """
    grid = GridPlan(
        (plan.height, plan.width),
        (plan.tile_h, plan.tile_w),
        (plan.margin, plan.margin),
        (plan.ys, plan.xs),
        plan.blend,
    )

    def read(indices: tuple[np.ndarray, ...]) -> torch.Tensor:
        return reader(indices[0], indices[1])

    run_grid(
        predictor, read, grid, sink, batch_size=batch_size, device=device, progress=progress, scale=scale,
        prefetch=prefetch,
    )  # fmt: skip
