"""The tiling engine over any number of spatial axes (2D images, 3D volumes), one slab of tiles at a time.

The same two strategies as `unetkit.infer.tiling`, axis by axis:

- **Overlap-tile** for unpadded models (Ronneberger et al. 2015, Fig. 2; Çiçek et al. 2016, Sec. 2 for 3D):
  output tiles of a legal size per axis abut, each input tile extends its output tile by that axis' context
  margin, and context missing at the border is mirrored; tile starts are multiples of the axis' pooling
  factor, so the stitched result equals one forward pass over the whole mirror-padded volume.
- **Overlapping tiles** for padded models: tiles overlap by a fraction per axis and each output voxel is the
  weighted mean of the tiles covering it (a separable gaussian, constant weights, or `center` ownership).

Memory stays bounded by streaming **slabs**: a slab is one start of the tiles along the first axis (the
engine's axis 0, which callers choose to be the file's slowest axis), and holds every tile at that start.
The reader is called once per slab for `tile_0 + 2 margin_0` rows of the input; the slab's weighted sums
(`(K + 1) x tile_0 x` the other axes, float32, finished rows divided in place) are the largest buffer, and
finished rows go to the sink as soon as no later slab covers them. Neither the whole input nor the whole
output is ever held.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "BLEND_MODES",
    "GridPlan",
    "grid_weights",
    "plan_grid",
    "plan_starts",
    "reflect_indices",
    "run_grid",
    "slab_bytes",
]

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


def _owned(starts: tuple[int, ...], tile: int, size: int) -> list[tuple[int, int]]:
    """For `center` blending: the `[lo, hi)` range each tile owns, split at the middle of each overlap."""
    bounds = [0]
    for a, b in itertools.pairwise(starts):
        bounds.append((b + a + tile) // 2)
    bounds.append(size)
    return [(bounds[i], bounds[i + 1]) for i in range(len(starts))]


GridReader = Callable[[tuple[np.ndarray, ...]], torch.Tensor]
"""`reader(indices)` returns the input at those (already mirrored) indices, one array per spatial axis, as
`(C, len(indices[0]), len(indices[1]), ...)` in any dtype."""
GridSink = Callable[[int, int, torch.Tensor], None]
"""`sink(r0, r1, values)` receives finished rows `r0 .. r1 - 1` of axis 0 as `(K, r1 - r0, *shape[1:])`; the
buffer is reused by the next slab: a sink that keeps it copies it."""


@dataclass(frozen=True)
class GridPlan:
    """Where the tiles go.

    Attributes:
        shape: the spatial size.
        tile: output tile size per axis (input tile = output + 2 margin).
        margins: context voxels on each side of an output tile, per axis (0 for padded models).
        starts: output tile starts per axis.
        blend: `gaussian`, `constant`, `center`, or `none` (overlap-tile: tiles do not overlap).
    """

    shape: tuple[int, ...]
    tile: tuple[int, ...]
    margins: tuple[int, ...]
    starts: tuple[tuple[int, ...], ...]
    blend: str

    @property
    def num_tiles(self) -> int:
        return math.prod(len(s) for s in self.starts)

    @property
    def num_slabs(self) -> int:
        return len(self.starts[0])


def plan_grid(
    shape: Sequence[int],
    *,
    tile: int | Sequence[int],
    overlap: float,
    margins: Sequence[int] | None = None,
    blend: str = "gaussian",
    legal_output: Callable[[int, int], int] | None = None,
    align: Sequence[int] | None = None,
) -> GridPlan:
    """Plan output tiles over a volume (or image) of spatial `shape`.

    Args:
        shape: spatial size, one entry per axis.
        tile: output tile side (unpadded models, raised to a legal size by `legal_output`) or tile side
            (padded ones), one for every axis or one per axis; shrunk to the volume where it is smaller.
        overlap: fraction of a tile shared with the next one, in `[0, 1)` (padded models only).
        margins: the model's context margin per axis; any `> 0` selects the overlap-tile strategy.
        blend: `gaussian`, `constant` or `center`.
        legal_output: for unpadded models, `(n, axis) ->` the smallest legal output side `>= n` on `axis`.
        align: for unpadded models, the down-sampling factor per axis (tile starts are multiples of it).
    """
    dims = len(shape)
    if dims < 1 or any(int(n) < 1 for n in shape):
        raise ValueError(f"`shape` must be positive sizes, got {tuple(shape)}")
    if not isinstance(overlap, (int, float)) or not 0.0 <= overlap < 1.0:
        raise ValueError(f"`overlap` must be in [0, 1), got {overlap!r}")
    if blend not in BLEND_MODES:
        raise ValueError(f"`blend` must be one of {', '.join(BLEND_MODES)}, got {blend!r}")
    tiles = (int(tile),) * dims if isinstance(tile, int) else tuple(int(t) for t in tile)
    margin = tuple(int(m) for m in margins) if margins is not None else (0,) * dims
    aligns = tuple(int(a) for a in align) if align is not None else (1,) * dims
    if len(tiles) != dims or len(margin) != dims or len(aligns) != dims:
        raise ValueError(f"`tile`, `margins` and `align` must give {dims} values, got {tiles}, {margin}, {aligns}")
    if any(t < 1 for t in tiles):
        raise ValueError(f"`tile` must be positive, got {tiles}")
    sizes = tuple(int(n) for n in shape)
    if any(margin):
        if legal_output is None:
            raise ValueError("an unpadded predictor (margins > 0) needs `legal_output`")
        out = tuple(legal_output(min(t, n), axis) for axis, (t, n) in enumerate(zip(tiles, sizes, strict=True)))
        starts = tuple(tuple(_aligned_starts(n, t, a)) for n, t, a in zip(sizes, out, aligns, strict=True))
        return GridPlan(sizes, out, margin, starts, "none")
    out = tuple(min(t, n) for t, n in zip(tiles, sizes, strict=True))
    steps = [max(1, round(t * (1.0 - overlap))) for t in out]
    starts = tuple(tuple(plan_starts(n, t, s)) for n, t, s in zip(sizes, out, steps, strict=True))
    return GridPlan(sizes, out, margin, starts, blend)


def grid_weights(plan: GridPlan) -> torch.Tensor:
    """The weights of one tile, `plan.tile` in shape: a separable gaussian (sigma 1/8 of the tile side per
    axis, as nnU-Net and MONAI), normalised to a maximum of 1 and floored at 1e-3, or ones."""
    if plan.blend != "gaussian":
        return torch.ones(plan.tile)
    w = torch.ones((), dtype=torch.float64)
    for n in plan.tile:
        centre, sigma = (n - 1) / 2.0, max(n * GAUSSIAN_SIGMA, 1e-6)
        axis = torch.exp(-((torch.arange(n, dtype=torch.float64) - centre) ** 2) / (2 * sigma * sigma))
        w = w[..., None] * axis  # outer product, one axis at a time
    return (w / w.max()).clamp_min(GAUSSIAN_FLOOR).float()


def slab_bytes(plan: GridPlan, channels: int, itemsize: int, classes: int) -> int:
    """What one slab holds besides the model and one batch of tiles: the input slab read, the one read ahead
    and a gathered copy (file dtype), and the weighted sums and their weights (`K + 1` float32 planes; finished
    rows are divided in place)."""
    rest = math.prod(n + 2 * m + t for n, m, t in zip(plan.shape[1:], plan.margins[1:], plan.tile[1:], strict=True))
    inputs = 3 * channels * itemsize * (plan.tile[0] + 2 * plan.margins[0]) * rest
    return inputs + 4 * (classes + 1) * plan.tile[0] * math.prod(plan.shape[1:])


def _slabs(plan: GridPlan) -> Iterator[tuple[int, int, int]]:
    """`(slab index, its start, end of the rows finished after it)` along axis 0."""
    starts = plan.starts[0]
    owned = _owned(starts, plan.tile[0], plan.shape[0]) if plan.blend == "center" else None
    for r, start in enumerate(starts):
        done_to = starts[r + 1] if r + 1 < len(starts) else plan.shape[0]
        if owned is not None:
            done_to = owned[r][1]
        yield r, start, done_to


def run_grid(
    predictor: Callable[[torch.Tensor], torch.Tensor],
    reader: GridReader,
    plan: GridPlan,
    sink: GridSink,
    *,
    batch_size: int = 4,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
    scale: float = 1.0,
    prefetch: bool = True,
) -> None:
    """Run `predictor` over the tiles of `plan`, slab by slab along axis 0, and hand finished rows to `sink`.

    Args:
        predictor: `(B, C, *(tile + 2 margin)) -> (B, K, *tile)` on `device`.
        reader: reads input voxels at mirrored indices (see `GridReader`), once per slab.
        plan: from `plan_grid`.
        sink: receives finished rows (see `GridSink`), on the CPU, in float32.
        batch_size: tiles per predictor call.
        device: where the tiles are sent.
        progress: called with the number of tiles done after each batch.
        scale: input tiles are multiplied by this after their conversion to float32.
        prefetch: read the next slab in a thread while the current one runs.
    """
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}")
    slabs = list(_slabs(plan))
    rest = [
        reflect_indices(-m, max(s) + t + m, n)
        for n, t, m, s in zip(plan.shape[1:], plan.tile[1:], plan.margins[1:], plan.starts[1:], strict=True)
    ]  # every index a tile reads on the other axes

    def read(r: int) -> torch.Tensor:
        start, m0 = slabs[r][1], plan.margins[0]
        return reader((reflect_indices(start - m0, start + plan.tile[0] + m0, plan.shape[0]), *rest))

    if not prefetch or len(slabs) == 1:
        _run(predictor, read, plan, slabs, sink, batch_size, torch.device(device), progress, scale, None)
        return
    with ThreadPoolExecutor(1, thread_name_prefix="unetkit-slab-reader") as pool:
        _run(predictor, read, plan, slabs, sink, batch_size, torch.device(device), progress, scale, pool)


@contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads set to `n` for the block, then set back; `None`: left alone (GPUs)."""
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _SlabSums:
    """The weighted sums of one slab, rolled along axis 0: tiles are added in raster order, and each slab is
    finished (divided by the weights' sum, handed to the sink, the rows it shares with the next slab moved to
    the top) before the next slab's first tile is added, so every voxel sees the same additions in the same
    order however the tiles were batched."""

    def __init__(self, plan: GridPlan, slabs: list[tuple[int, int, int]], sink: GridSink, device: torch.device):
        self.plan, self.slabs, self.sink, self.device = plan, slabs, sink, device
        self.weights = grid_weights(plan).to(device)
        self.owned = (
            [_owned(s, t, n) for s, t, n in zip(plan.starts, plan.tile, plan.shape, strict=True)]
            if plan.blend == "center"
            else []
        )
        self.acc: torch.Tensor | None = None  # (K, tile_0, *shape[1:]): the slab's weighted sums, rows `top ..`
        self.norm = torch.zeros(1, plan.tile[0], *plan.shape[1:], device=device)
        self.top = slabs[0][1]
        self.finished = 0  # slabs handed to the sink

    def add(self, r: int, g: tuple[int, ...], corner: tuple[int, ...], out: torch.Tensor) -> None:
        """Add the output `(K, *tile)` of the tile at `corner` (index `g` on the other axes) of slab `r`."""
        while self.finished < r:
            self.finish()
        plan, start = self.plan, self.slabs[r][1]
        tile, shape = plan.tile, plan.shape
        if self.acc is None:
            self.acc = torch.zeros(out.shape[0], tile[0], *shape[1:], device=self.device)
        acc, norm, top = self.acc, self.norm, self.top
        extent = [min(t, n - c) for t, n, c in zip(tile[1:], shape[1:], corner, strict=True)]
        if plan.blend == "center":  # each voxel from the tile whose centre region owns it
            lo0, hi0 = self.owned[0][r]
            ranges = [self.owned[a + 1][k] for a, k in enumerate(g)]
            src = (slice(None), slice(lo0 - start, hi0 - start),
                   *(slice(lo - c, hi - c) for (lo, hi), c in zip(ranges, corner, strict=True)))  # fmt: skip
            dst = (slice(None), slice(lo0 - top, hi0 - top), *(slice(lo, hi) for lo, hi in ranges))
            acc[dst] = out[src].float()
            norm[dst] = 1.0
            return
        rows, offset = min(tile[0], shape[0] - start), start - top
        part = out[(slice(None), slice(0, rows), *(slice(0, e) for e in extent))].float()
        w = self.weights[(slice(0, rows), *(slice(0, e) for e in extent))]
        dst = (
            slice(None),
            slice(offset, offset + rows),
            *(slice(c, c + e) for c, e in zip(corner, extent, strict=True)),
        )
        acc[dst].addcmul_(part, w)
        norm[dst] += w

    def finish(self) -> None:
        """Hand the rows no later slab reaches to the sink and roll the buffers up."""
        assert self.acc is not None
        acc, norm, done_to = self.acc, self.norm, self.slabs[self.finished][2]
        self.finished += 1
        finished = done_to - self.top
        if finished <= 0:
            return
        self.sink(self.top, done_to, acc[:, :finished].div_(norm[:, :finished]).cpu())  # divided in place
        left = self.plan.tile[0] - finished  # rows already summed for the next slab: moved to the top
        acc[:, :left] = acc[:, finished:].clone()
        norm[:, :left] = norm[:, finished:].clone()
        acc[:, left:] = 0
        norm[:, left:] = 0
        self.top = done_to


def _run(
    predictor: Callable[[torch.Tensor], torch.Tensor],
    read: Callable[[int], torch.Tensor],
    plan: GridPlan,
    slabs: list[tuple[int, int, int]],
    sink: GridSink,
    batch_size: int,
    device: torch.device,
    progress: Callable[[int], None] | None,
    scale: float,
    pool: ThreadPoolExecutor | None,
) -> None:
    """Batches of `batch_size` tiles in raster order, across slab boundaries (a row of tiles that the batch
    size does not divide costs no extra, smaller forward pass; the sums see the same additions in the same
    order for every batch size). On the CPU the engine's own tensor operations (stacking, scaling, blending)
    run with one torch thread and only the predictor gets the caller's intra-op threads: on a busy machine
    each multi-threaded small operation can wait a scheduler slice for its second thread (measured on 2
    shared cores: benchmarks/results/predict-throughput.md). On a GPU the thread count is left alone."""
    tile, margins = plan.tile, plan.margins
    sums = _SlabSums(plan, slabs, sink, device)
    threads = torch.get_num_threads() if device.type == "cpu" else None
    others = list(itertools.product(*(range(len(s)) for s in plan.starts[1:])))  # tiles of one slab, as indices
    done = 0

    def forward(batch: list[tuple[int, tuple[int, ...], tuple[int, ...], torch.Tensor]]) -> None:
        nonlocal done
        tiles = torch.stack([t for *_, t in batch])  # (B, C, *(tile + 2 margin))
        if scale != 1.0 and not tiles.is_floating_point():
            tiles = tiles * scale
        else:
            tiles = tiles.float() if scale == 1.0 else tiles.float().mul_(scale)
        with _torch_threads(threads):
            out = predictor(tiles)  # (B, K, *tile)
        if tuple(out.shape[2:]) != tile:
            raise ValueError(f"predictor returned tiles of {tuple(out.shape[2:])}, expected {tile}")
        for b, (r, g, corner, _) in enumerate(batch):
            sums.add(r, g, corner, out[b])
        done += len(batch)
        if progress is not None:
            progress(done)

    batch: list[tuple[int, tuple[int, ...], tuple[int, ...], torch.Tensor]] = []  # waiting for a forward pass
    pending: Future[torch.Tensor] | None = pool.submit(read, 0) if pool is not None else None
    with _torch_threads(1 if threads is not None else None):
        for r, _, _ in slabs:
            if pool is not None:
                assert pending is not None
                raw = pending.result()
                pending = pool.submit(read, r + 1) if r + 1 < len(slabs) else None
            else:
                raw = read(r)
            slab = raw.to(device=device)  # (C, tile_0 + 2 m_0, *columns) in the file's dtype
            for g in others:
                corner = tuple(plan.starts[a + 1][k] for a, k in enumerate(g))
                spans = zip(corner, tile[1:], margins[1:], strict=True)
                window = (slice(None), slice(None), *(slice(c, c + t + 2 * m) for c, t, m in spans))
                batch.append((r, g, corner, slab[window]))
                if len(batch) == batch_size:
                    forward(batch)
                    batch = []
            batch = [(r, g, c, t.clone()) for r, g, c, t in batch]  # carried over: this slab's input can go
            del raw, slab
        if batch:
            forward(batch)
        while sums.finished < len(slabs):
            sums.finish()


def _index(idx: np.ndarray) -> slice | torch.Tensor:
    """A slice where `idx` is a run of consecutive indices (a view, no copy), else the indices (a gather)."""
    if idx.size and int(idx[-1]) - int(idx[0]) == idx.size - 1 and bool((np.diff(idx) == 1).all()):
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return torch.from_numpy(idx)


class _tile_bar:
    """A tqdm bar over tiles (only when asked and the image has several tiles), or, where `progress` is a
    callable, `progress(done, total)` after each batch of tiles (e.g. the page's progress bar)."""

    def __init__(self, plan: GridPlan | Any, progress: bool | Callable[[int, int], None]) -> None:
        self.total = plan.num_tiles
        self.bar = None
        self.callback = progress if callable(progress) else None
        if progress is True and self.total > 1:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, desc="tiles", leave=False, dynamic_ncols=True)

    def __enter__(self) -> Callable[[int], None] | None:
        if self.callback is not None:
            callback, total = self.callback, self.total
            return lambda done: callback(done, total)
        if self.bar is None:
            return None
        bar = self.bar

        def update(done: int) -> None:
            bar.update(done - bar.n)

        return update

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
