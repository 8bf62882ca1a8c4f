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

Tile starts are planned so that the last tile ends on the image edge. Memory stays bounded: the image
is read and the output handed to a sink one band of tile rows at a time, so neither the input nor the
full output needs to be in memory; the device holds one band of input in the file's own dtype (C x
(tile + 2 margin) rows x W), one batch of tiles in float32 and the band's weighted sums ((K + 1) x tile
rows x W), and only finished rows come back to the host. The next band is read in a reader thread while
the current one runs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["BLEND_MODES", "TilePlan", "blend_weights", "plan_starts", "plan_tiles", "reflect_indices", "run_tiled"]

BLEND_MODES = ("gaussian", "constant", "center")
GAUSSIAN_SIGMA = 0.125  # of the tile side, as nnU-Net and MONAI's `sigma_scale`
GAUSSIAN_FLOOR = 1e-3  # weights kept above zero so that every covered pixel has a defined mean


def plan_starts(size: int, tile: int, step: int) -> list[int]:
    """Tile starts along one axis: `0, step, 2 step, ...`, the last one moved to end on the edge.

    With `tile >= size` there is one tile at 0 (the caller pads or shrinks it).
    """
    if size < 1 or tile < 1 or step < 1:
        raise ValueError(f"size, tile and step must be >= 1, got {size}, {tile}, {step}")
    if tile >= size:
        return [0]
    count = math.ceil((size - tile) / step) + 1
    starts = [min(i * step, size - tile) for i in range(count)]
    return sorted(set(starts))


def _aligned_starts(size: int, tile: int, align: int) -> list[int]:
    """Starts `0, step, 2 step, ...` with `step` the largest multiple of `align` <= `tile`, until the
    image is covered."""
    step = max(align, (tile // align) * align)
    count = 1 if tile >= size else math.ceil((size - tile) / step) + 1
    return [i * step for i in range(count)]


def reflect_indices(start: int, stop: int, size: int) -> np.ndarray:
    """Indices `start .. stop - 1` folded into `[0, size)` by mirroring without repeating the edge
    (numpy's `reflect`, repeated for any distance: `-1 -> 1`, `size -> size - 2`)."""
    idx = np.arange(start, stop)
    if size == 1:
        return np.zeros_like(idx)
    period = 2 * (size - 1)
    idx = np.mod(idx, period)
    return np.where(idx >= size, period - idx, idx)


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


def _owned(starts: tuple[int, ...], tile: int, size: int) -> list[tuple[int, int]]:
    """For `center` blending: the `[lo, hi)` range each tile owns, split at the middle of each overlap."""
    bounds = [0]
    for a, b in itertools.pairwise(starts):
        bounds.append((b + a + tile) // 2)
    bounds.append(size)
    return [(bounds[i], bounds[i + 1]) for i in range(len(starts))]


Reader = Callable[[np.ndarray, np.ndarray], torch.Tensor]
"""`reader(rows, cols)` returns the image at those (already mirrored) indices as `(C, len(rows), len(cols))`,
in any dtype (tiles are converted to float32 and multiplied by `scale` batch by batch)."""
Sink = Callable[[int, int, torch.Tensor], None]
"""`sink(y0, y1, values)` receives finished output rows `y0 .. y1 - 1` as `(K, y1 - y0, W)`; on the CPU
`values` is a buffer the next band reuses: a sink that keeps it beyond its return copies it."""


def _bands(plan: TilePlan) -> Iterator[tuple[int, int, int]]:
    """`(row index, first finished row, end of finished rows)` for each band of tiles."""
    ys = plan.ys
    for r, y in enumerate(ys):
        done_to = ys[r + 1] if r + 1 < len(ys) else plan.height
        if plan.blend == "center":
            done_to = _owned(ys, plan.tile_h, plan.height)[r][1]
        yield r, y, done_to


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
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}")
    bands = list(_bands(plan))
    m = plan.margin
    cols = reflect_indices(-m, max(plan.xs) + plan.tile_w + m, plan.width)  # every column a tile reads

    def read(r: int) -> torch.Tensor:
        y = bands[r][1]
        return reader(reflect_indices(y - m, y + plan.tile_h + m, plan.height), cols)

    if not prefetch or len(bands) == 1:
        _run_bands(predictor, read, plan, bands, sink, batch_size, device, progress, scale, None)
        return
    with ThreadPoolExecutor(1, thread_name_prefix="unetkit-band-reader") as pool:
        _run_bands(predictor, read, plan, bands, sink, batch_size, device, progress, scale, pool)


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to `n` (in this thread) for the block, then set back."""
    before = torch.get_num_threads()
    if n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _Sums:
    """The weighted sums of one band of tile rows, rolled down the image: tiles are added in raster
    order, and each band is finished (divided by the weights' sum, handed to the sink, the rows it shares
    with the next band moved to the top) before the next band's first tile is added, so every pixel sees
    the same additions in the same order however the tiles were batched."""

    def __init__(self, plan: TilePlan, bands: list[tuple[int, int, int]], sink: Sink, device: torch.device) -> None:
        self.plan, self.bands, self.sink, self.device = plan, bands, sink, device
        self.weights = blend_weights(plan).to(device)
        self.col_owned = _owned(plan.xs, plan.tile_w, plan.width) if plan.blend == "center" else None
        self.row_owned = _owned(plan.ys, plan.tile_h, plan.height) if plan.blend == "center" else None
        # rolling buffers on `device`, one band (tile_h rows) high: rows `top ..` of the image
        self.acc: torch.Tensor | None = None  # (K, th, W)
        self.rows_out: torch.Tensor | None = None  # (K, th, W): finished rows, handed to the sink
        self.norm = torch.zeros(1, plan.tile_h, plan.width, device=device)
        self.top = bands[0][1]
        self.finished = 0  # bands handed to the sink

    def add(self, r: int, j: int, out: torch.Tensor) -> None:
        """Add the output `(K, th, tw)` of tile `j` of band `r`, finishing the bands above it first."""
        while self.finished < r:
            self.finish()
        plan, y, x = self.plan, self.bands[r][1], self.plan.xs[j]
        if self.acc is None:
            self.acc = torch.zeros(out.shape[0], plan.tile_h, plan.width, device=self.device)
        acc, norm, top = self.acc, self.norm, y - self.top
        band_h = min(plan.tile_h, plan.height - y)
        tile = out[:, :band_h, : min(plan.tile_w, plan.width - x)].float()
        if self.col_owned is not None and self.row_owned is not None:  # `center`: each pixel from one tile
            (x0, x1), (y0, y1) = self.col_owned[j], self.row_owned[r]
            acc[:, y0 - self.top : y1 - self.top, x0:x1] = tile[:, y0 - y : y1 - y, x0 - x : x1 - x]
            norm[:, y0 - self.top : y1 - self.top, x0:x1] = 1.0
        else:
            w = self.weights[:band_h, : tile.shape[-1]]
            acc[:, top : top + band_h, x : x + tile.shape[-1]].addcmul_(tile, w)
            norm[:, top : top + band_h, x : x + tile.shape[-1]] += w

    def finish(self) -> None:
        """Hand the rows the next band does not reach to the sink and roll the buffers up."""
        assert self.acc is not None
        acc, norm, done_to = self.acc, self.norm, self.bands[self.finished][2]
        self.finished += 1
        finished = done_to - self.top
        if finished <= 0:
            return
        if self.rows_out is None:
            self.rows_out = torch.empty_like(acc)  # one buffer for every band's finished rows
        values = torch.div(acc[:, :finished], norm[:, :finished], out=self.rows_out[:, :finished])
        self.sink(self.top, done_to, values.cpu())
        left = self.plan.tile_h - finished  # rows already summed for the next band: move them to the top
        acc[:, :left] = acc[:, finished:].clone()
        norm[:, :left] = norm[:, finished:].clone()
        acc[:, left:] = 0
        norm[:, left:] = 0
        self.top = done_to


def _run_bands(
    predictor: Callable[[torch.Tensor], torch.Tensor],
    read: Callable[[int], torch.Tensor],
    plan: TilePlan,
    bands: list[tuple[int, int, int]],
    sink: Sink,
    batch_size: int,
    device: torch.device | str,
    progress: Callable[[int], None] | None,
    scale: float,
    pool: ThreadPoolExecutor | None,
) -> None:
    """Batches of `batch_size` tiles in raster order, across band boundaries (so a row of tiles that the
    batch size does not divide costs no extra, smaller forward pass; a tile's output may differ in the last
    bits from a pass in another batch where the backend picks its kernels by batch size, as with any
    `batch_size`: 1e-6 for 128² tiles, none seen for 512²). On the CPU, the tiler's own tensor
    operations (stacking, scaling, blending) run in this thread alone and only the predictor gets torch's
    intra-op threads: on a busy machine, each multi-threaded operation can wait a scheduler slice for its
    second thread, and the tiler's operations are small and many."""
    device = torch.device(device)
    m, tw = plan.margin, plan.tile_w
    sums = _Sums(plan, bands, sink, device)
    threads = torch.get_num_threads()  # the predictor's; the tiler's own operations take one on the CPU
    done = 0

    def forward(batch: list[tuple[int, int, torch.Tensor]]) -> None:
        nonlocal done
        tiles = torch.stack([tile for _, _, tile in batch])  # (B, C, th + 2m, tw + 2m)
        if scale != 1.0 and not tiles.is_floating_point():
            tiles = tiles * scale  # integers to float32, scaled, in one pass
        else:
            tiles = tiles.float() if scale == 1.0 else tiles.float().mul_(scale)
        with _torch_threads(threads):
            out = predictor(tiles)  # (B, K, th, tw)
        if out.shape[-2:] != (plan.tile_h, tw):
            raise ValueError(f"predictor returned tiles of {tuple(out.shape[-2:])}, expected {(plan.tile_h, tw)}")
        for k, (r, j, _) in enumerate(batch):
            sums.add(r, j, out[k])
        done += len(batch)
        if progress is not None:
            progress(done)

    batch: list[tuple[int, int, torch.Tensor]] = []  # (band, tile, input tile) waiting for a forward pass
    pending: Future[torch.Tensor] | None = pool.submit(read, 0) if pool is not None else None
    with _torch_threads(1 if device.type == "cpu" else threads):  # on a GPU, nothing to change
        for r, _, _ in bands:
            if pool is not None:
                assert pending is not None
                raw = pending.result()
                pending = pool.submit(read, r + 1) if r + 1 < len(bands) else None
            else:
                raw = read(r)
            band = raw.to(device=device)  # (C, th + 2m, columns) in the file's dtype
            for j, x in enumerate(plan.xs):
                batch.append((r, j, band[:, :, x : x + tw + 2 * m]))
                if len(batch) == batch_size:
                    forward(batch)
                    batch = []
            batch = [(r, j, tile.clone()) for r, j, tile in batch]  # carried over: this band's input can go
            del raw, band
        if batch:
            forward(batch)
        while sums.finished < len(bands):
            sums.finish()
