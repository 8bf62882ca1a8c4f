"""Instance labels of an image or volume too large for memory: `instances_from_probs` block by block, with an
overlap margin, and the labels stitched across block faces (block-wise, as whole-slide cell segmentation does
it), in 2-D and 3-D alike.

`instances_from_probs` decides each connected component of the foreground from that component alone (its
distance transform, h-maxima, watershed and small-object merging never look past the background around
it; see that module). So a block that sees a component whole, with `halo` pixels of context around it,
finds exactly the objects the whole image gives. Each block computes on its core extended by `margin`
pixels on every side of every axis; a component is written by one block only, the one whose core holds the
lower corner of its bounding box (the top-left one in 2-D), and only if that block sees it whole: every
component smaller than `margin` (less the halo) along every axis comes out exactly as in one pass over the
whole image, whole and once, wherever the block borders fall.

Components larger than that (clumps wider than the margin) are cut by every block's extended region; each
block then writes the objects it finds in its own core, where no block has written before, and pieces on
either side of a block face are merged when each is the other's largest contact across that face. Such
objects are whole and once in the usual case, but their inner splits may differ from one pass over the whole
image.

The arrays live in temporary raw files (`RawArray`: positional reads and writes by region, no memory map):
the foreground probability (float32), the labels (int32). Pixels of a component that its block decided are
background (objects below `min_size`) are marked `CLAIMED` so that no later block labels them. A last pass
numbers the objects 1..N in the raster order of their first pixel, as `instances_from_probs` does (the first
pixel of each object is found block by block, so any decomposition gives the same numbers), and hands the
labels on band by band along any axis.

Memory: one block, `(block + 2 margin)` pixels a side, at `WATERSHED_BYTES_PER_PIXEL` bytes a pixel in 2-D (1.64 M
pixels for the default 1024 + 2 x 128: 197 MB) and `WATERSHED_BYTES_PER_VOXEL` a voxel in 3-D (1.73 M voxels for
the default 80 + 2 x 20: 259 MB, 247 MiB), plus a few arrays of one entry per object id, plus one band of the
final pass (2-D: `STRIP_ROWS` rows; 3-D: at most one block's voxels, or one slice). Measured in 3-D (the
watershed on generated nuclei, default blocks, a fresh process): the labelling of 32 M and 64 M voxels (22,928
and 45,831 objects) added 213 and 216 MiB to the process, 131 bytes per block voxel: `instances_from_probs`
itself takes about 89 (the distance transform, the h-maxima reconstruction, the watershed's queue and labels),
the block's own arrays the rest (foreground, components, local labels, the label file's region).
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.infer.instances import instances_from_probs

__all__ = [
    "CLAIMED",
    "DEFAULT_BLOCK",
    "DEFAULT_BLOCK_3D",
    "DEFAULT_MARGIN",
    "DEFAULT_MARGIN_3D",
    "STRIP_ROWS",
    "WATERSHED_BYTES_PER_PIXEL",
    "WATERSHED_BYTES_PER_VOXEL",
    "RawArray",
    "RawPlane",
    "block_defaults",
    "tiled_instances",
]

DEFAULT_BLOCK = 1024  # core side of a 2-D block
DEFAULT_MARGIN = 128  # context on every side: components up to this size come out exactly
DEFAULT_BLOCK_3D = 80  # core side of a 3-D block
DEFAULT_MARGIN_3D = 20  # (80 + 2 x 20)^3 = 1.73 M voxels, about the 2-D block's 1.64 M pixels
STRIP_ROWS = 256  # rows per band of the final pass (2-D)
WATERSHED_BYTES_PER_PIXEL = 120  # distance, h-maxima reconstruction, watershed queue and labels, per block pixel
WATERSHED_BYTES_PER_VOXEL = 150  # the same in 3-D with the block's own arrays (measured 131: module docstring)
CLAIMED = -1  # in the label file: background decided by the block that owns the component


def block_defaults(ndim: int) -> tuple[int, int]:
    """The default `(block, margin)` for 2-D images or 3-D volumes."""
    return (DEFAULT_BLOCK, DEFAULT_MARGIN) if ndim == 2 else (DEFAULT_BLOCK_3D, DEFAULT_MARGIN_3D)


class RawArray:
    """An N-D array in a raw file, read and written by region (no memory map, so nothing of it stays resident).

    Regions are given in the array's (logical) axis order; the file holds the array in C order of its axes
    permuted by `layout` (stored axis `i` is the array's axis `layout[i]`), so that a NIfTI volume `(X, Y, Z)`
    can be stored in the file's own order, `Z, Y, X` slowest to fastest, with `layout=(2, 1, 0)`.

    Args:
        path: the file (created, or truncated); unwritten elements read as 0.
        shape: the array's shape.
        dtype: its element type.
        layout: a permutation of the axes; default the identity (C order).
    """

    def __init__(self, path: Path, shape: Sequence[int], dtype: Any, layout: Sequence[int] | None = None) -> None:
        self.path, self.shape, self.dtype = Path(path), tuple(int(n) for n in shape), np.dtype(dtype)
        self.ndim = len(self.shape)
        self.layout = tuple(range(self.ndim)) if layout is None else tuple(int(a) for a in layout)
        if sorted(self.layout) != list(range(self.ndim)):
            raise ValueError(f"`layout` must be a permutation of {self.ndim} axes, got {layout}")
        self.to_array = tuple(int(a) for a in np.argsort(self.layout))  # stored block -> the array's order
        self.stored = tuple(self.shape[a] for a in self.layout)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.ftruncate(self.fd, math.prod(self.shape) * self.dtype.itemsize)  # sparse: unwritten elements read as 0
        self.appended = 0

    def _runs(self, lo: Sequence[int], hi: Sequence[int]) -> tuple[np.ndarray, int]:
        """Byte offsets of the contiguous runs of the stored box `[lo, hi)` (stored order), and a run's length in
        elements: the runs span the last partial axis and every full axis after it."""
        n = self.ndim
        j = n - 1
        while j > 0 and lo[j] == 0 and hi[j] == self.stored[j]:
            j -= 1
        strides = [math.prod(self.stored[k + 1 :]) for k in range(n)]
        run = (hi[j] - lo[j]) * strides[j]
        offsets = np.array([lo[j] * strides[j]], dtype=np.int64)
        for k in range(j - 1, -1, -1):  # the partial axes before `j`, fastest first
            offsets = (np.arange(lo[k], hi[k], dtype=np.int64) * strides[k])[:, None] + offsets[None, :]
            offsets = offsets.ravel()
        return offsets * self.dtype.itemsize, run

    def _stored(self, lo: Sequence[int], hi: Sequence[int]) -> tuple[list[int], list[int]]:
        if len(lo) != self.ndim or len(hi) != self.ndim:
            raise ValueError(f"a region of {self.path} needs {self.ndim} bounds, got {lo}, {hi}")
        return [int(lo[a]) for a in self.layout], [int(hi[a]) for a in self.layout]

    def read_region(self, lo: Sequence[int], hi: Sequence[int]) -> np.ndarray:
        """The box `[lo, hi)` (per axis, the array's order), in the array's axis order."""
        slo, shi = self._stored(lo, hi)
        out = np.empty([b - a for a, b in zip(slo, shi, strict=True)], dtype=self.dtype)
        if out.size:
            offsets, run = self._runs(slo, shi)
            rows = out.reshape(offsets.size, run)
            for offset, row in zip(offsets.tolist(), rows, strict=True):
                if os.preadv(self.fd, [row.data], offset) != row.nbytes:
                    raise OSError(f"{self.path}: short read at byte {offset}")
        return out.transpose(self.to_array)

    def write_region(self, lo: Sequence[int], block: np.ndarray) -> None:
        """Write `block` (the array's axis order) at the box starting at `lo`."""
        slo, _ = self._stored(lo, lo)
        data = np.ascontiguousarray(np.asarray(block).transpose(self.layout), dtype=self.dtype)
        if not data.size:
            return
        offsets, run = self._runs(slo, [a + n for a, n in zip(slo, data.shape, strict=True)])
        for offset, row in zip(offsets.tolist(), data.reshape(offsets.size, run), strict=True):
            if os.pwritev(self.fd, [row.data], offset) != row.nbytes:
                raise OSError(f"{self.path}: short write at byte {offset} (is the disk full?)")

    def append(self, block: np.ndarray) -> None:
        """Write the next slab along the slowest stored axis (`layout[0]`), `block` in the array's order."""
        axis = self.layout[0]
        lo = [0] * self.ndim
        lo[axis] = self.appended
        self.write_region(lo, block)
        self.appended += block.shape[axis]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class RawPlane(RawArray):
    """A `(height, width)` array in a raw row-major file, read and written by region."""

    def __init__(self, path: Path, height: int, width: int, dtype: Any) -> None:
        super().__init__(path, (height, width), dtype)
        self.height, self.width = height, width

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return self.read_region((y0, x0), (y1, x1))

    def write(self, y0: int, x0: int, block: np.ndarray) -> None:
        self.write_region((y0, x0), block)


class _Ids:
    """Object ids handed out by the blocks: which are pieces of cut components, and their union-find."""

    def __init__(self) -> None:
        self.parent = np.zeros(1024, dtype=np.int64)
        self.piece = np.zeros(1024, dtype=bool)
        self.count = 1  # id 0 is the background

    def new(self, n: int, piece: bool) -> int:
        while self.count + n > self.parent.size:
            self.parent = np.concatenate([self.parent, np.zeros_like(self.parent)])
            self.piece = np.concatenate([self.piece, np.zeros_like(self.piece)])
        start = self.count
        self.parent[start : start + n] = np.arange(start, start + n)
        self.piece[start : start + n] = piece
        self.count += n
        return start

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = int(self.parent[root])
        while self.parent[i] != root:
            self.parent[i], i = root, int(self.parent[i])
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def roots(self) -> np.ndarray:
        return np.array([self.find(i) for i in range(self.count)], dtype=np.int64)


def _stitch(ids: _Ids, inside: np.ndarray, outside: np.ndarray) -> None:
    """Merge pieces across one block face: `inside` and `outside` are the labels on either side of it; a pair
    merges when each piece is the other's largest contact across the face."""
    inside, outside = np.maximum(inside.ravel(), 0), np.maximum(outside.ravel(), 0)  # CLAIMED is no piece
    both = ids.piece[inside] & ids.piece[outside] & (inside > 0) & (outside > 0)
    if not both.any():
        return
    pairs, counts = np.unique(np.stack([inside[both], outside[both]], axis=1), axis=0, return_counts=True)
    best_in: dict[int, tuple[int, int]] = {}
    best_out: dict[int, tuple[int, int]] = {}
    for (a, b), n in zip(pairs.tolist(), counts.tolist(), strict=True):
        if n > best_in.get(a, (0, 0))[0]:
            best_in[a] = (n, b)
        if n > best_out.get(b, (0, 0))[0]:
            best_out[b] = (n, a)
    for a, (_, b) in best_in.items():
        if best_out[b][1] == a:
            ids.union(a, b)


def _whole_in(lo: np.ndarray, hi: np.ndarray, rlo: Any, rhi: Any, shape: Sequence[int], halo: int) -> np.ndarray:
    """Whether each component's box `[lo, hi)` (`(n, ndim)`), with its halo, lies inside the region `[rlo, rhi)`
    (per axis, or per component and axis), image borders excepted."""
    size = np.asarray(shape)
    inside = ((lo - halo >= rlo) | (rlo == 0)) & ((hi + halo <= rhi) | (rhi == size))
    return np.asarray(inside.all(axis=1))


def tiled_instances(
    foreground: RawArray,
    labels: RawArray,
    *,
    method: str = "watershed",
    block: int | None = None,
    margin: int | None = None,
    distance: RawArray | None = None,
    band_axis: int = 0,
    band_rows: int | None = None,
    **options: Any,
) -> tuple[int, Iterator[np.ndarray]]:
    """Instance labels of the foreground probability in `foreground`, block by block (module docstring).

    Args:
        foreground: float32 foreground probabilities, `(H, W)` or `(D, H, W)`.
        labels: an int32 scratch array of the same shape (zeros).
        method, options: as `instances_from_probs` (`threshold`, `min_size`, `h`, `smoothing`, `sharpen`, `seed`,
            `spacing`).
        distance: float32 object distances of the same shape, for method `distance`.
        block: core side of a block (default `block_defaults`).
        margin: context pixels on each side of a core, on every axis (default `block_defaults`).
        band_axis: the axis the final labels are handed on along.
        band_rows: the bands' thickness along `band_axis`; default `STRIP_ROWS` in 2-D, in 3-D as many
            slices as hold at most one block's voxels.

    Returns:
        N, the number of objects, and the final labels as int64 bands along `band_axis` from its start, numbered
        1..N in the raster order of their first pixel (read from `labels`, which must stay open until they are
        consumed).
    """
    from scipy import ndimage

    shape, ndim = foreground.shape, foreground.ndim
    if ndim not in (2, 3):
        raise ValueError(f"`foreground` must be 2-D or 3-D, got shape {shape}")
    if labels.shape != shape or (distance is not None and distance.shape != shape):
        given = (labels.shape, None if distance is None else distance.shape)
        raise ValueError(f"`labels` (and `distance`) must have the foreground's shape {shape}, got {given}")
    default_block, default_margin = block_defaults(ndim)
    block = default_block if block is None else block
    margin = default_margin if margin is None else margin
    if block < 1 or margin < 0:
        raise ValueError(f"`block` must be >= 1 and `margin` >= 0, got {block}, {margin}")
    if not 0 <= band_axis < ndim:
        raise ValueError(f"`band_axis` must be an axis of the {ndim}-D array, got {band_axis}")
    threshold = float(options.get("threshold", 0.5))
    halo = 1 + math.ceil(4.0 * float(options.get("smoothing", 0.0)))  # gaussian_filter's reach (truncate 4)
    full = np.ones((3,) * ndim, dtype=bool)  # h_maxima's footprint couples diagonal neighbours
    size = np.asarray(shape)
    ids = _Ids()
    for core_lo in itertools.product(*(range(0, n, block) for n in shape)):
        core_hi = tuple(min(n, c + block) for n, c in zip(shape, core_lo, strict=True))
        ext_lo = tuple(max(0, c - margin) for c in core_lo)
        ext_hi = tuple(min(n, c + margin) for n, c in zip(shape, core_hi, strict=True))
        fg = foreground.read_region(ext_lo, ext_hi)
        level = None if distance is None else distance.read_region(ext_lo, ext_hi)
        local = instances_from_probs(fg, method, distance=level, spatial_dims=ndim, **options)
        comps, count = ndimage.label(fg > threshold, structure=full)
        if not count:
            continue
        boxes = ndimage.find_objects(comps)
        lo = np.array([[s.start for s in box] for box in boxes]) + np.asarray(ext_lo)  # image coordinates
        hi = np.array([[s.stop for s in box] for box in boxes]) + np.asarray(ext_lo)
        seen_whole = _whole_in(lo, hi, np.asarray(ext_lo), np.asarray(ext_hi), shape, halo)
        owner = (lo // block) * block  # the owner's core holds the box's lower corner
        owner_sees = _whole_in(lo, hi, np.maximum(0, owner - margin), np.minimum(size, owner + block + margin),
                               shape, halo)  # fmt: skip
        mine = (owner == np.asarray(core_lo)).all(axis=1)
        exact = np.concatenate([[False], seen_whole & mine])  # indexed by component label
        # pieces: components their owner cannot see whole, and those this block cannot see whole, which are
        # either such pieces or components their owner (an earlier block) has claimed already
        piece = np.concatenate([[False], ~(seen_whole & owner_sees)])
        top = int(local.max())
        select = exact[comps]
        if select.any():  # exact components: all their objects, wherever in the extended region
            objects = np.unique(local[select])
            objects = objects[objects > 0]
            lut = np.full(top + 1, CLAIMED, dtype=np.int64)  # background inside: decided here, for good
            lut[objects] = ids.new(objects.size, piece=False) + np.arange(objects.size)
            current = labels.read_region(ext_lo, ext_hi)
            current[select] = lut[local[select]]
            labels.write_region(ext_lo, current)
        core = tuple(slice(c0 - e0, c1 - e0) for c0, c1, e0 in zip(core_lo, core_hi, ext_lo, strict=True))
        select = piece[comps[core]]
        if select.any():  # pieces: what this block finds in its own core, where nothing was written
            current = labels.read_region(core_lo, core_hi)
            select &= current == 0
            found = local[core][select]
            objects = np.unique(found)
            objects = objects[objects > 0]
            lut = np.zeros(top + 1, dtype=np.int64)
            lut[objects] = ids.new(objects.size, piece=True) + np.arange(objects.size)
            current[select] = lut[found]
            labels.write_region(core_lo, current)
            for axis in range(ndim):  # the faces shared with the blocks before this one
                if core_lo[axis] == 0:
                    continue
                face_lo, face_hi = list(core_lo), list(core_hi)
                face_lo[axis], face_hi[axis] = core_lo[axis] - 1, core_lo[axis]
                before = labels.read_region(face_lo, face_hi)
                _stitch(ids, np.take(current, 0, axis=axis), np.take(before, 0, axis=axis))
    if band_rows is None:
        rest = math.prod(n for a, n in enumerate(shape) if a != band_axis)
        band_rows = STRIP_ROWS if ndim == 2 else max(1, (block + 2 * margin) ** ndim // max(rest, 1))
    return _number(labels, ids, block, band_axis, band_rows)


def _number(
    labels: RawArray, ids: _Ids, block: int, band_axis: int, band_rows: int
) -> tuple[int, Iterator[np.ndarray]]:
    """Number objects 1..N in the raster order of their first pixel: each object's first pixel is found block by
    block, then the labels are read again band by band, renumbered."""
    roots = ids.roots()
    shape = labels.shape
    first = np.full(ids.count, np.iinfo(np.int64).max, dtype=np.int64)  # raster index of each root's first pixel
    for lo in itertools.product(*(range(0, n, block) for n in shape)):
        hi = tuple(min(n, a + block) for n, a in zip(shape, lo, strict=True))
        region = roots[np.maximum(labels.read_region(lo, hi), 0)]
        found, where = np.unique(region, return_index=True)  # the first in the box's raster order is the first
        keep = found > 0  # of the image's among the box's pixels
        local = np.unravel_index(where[keep], region.shape)
        index = np.ravel_multi_index(tuple(c + a for c, a in zip(local, lo, strict=True)), shape)
        first[found[keep]] = np.minimum(first[found[keep]], index)
    present = np.flatnonzero(first < np.iinfo(np.int64).max)
    final = np.zeros(ids.count, dtype=np.int64)
    final[present[np.argsort(first[present])]] = np.arange(1, present.size + 1)
    lut = final[roots]  # every id -> its object's number

    def bands() -> Iterator[np.ndarray]:
        for start in range(0, shape[band_axis], band_rows):
            lo, hi = [0] * len(shape), list(shape)
            lo[band_axis], hi[band_axis] = start, min(shape[band_axis], start + band_rows)
            yield lut[np.maximum(labels.read_region(lo, hi), 0)]

    return int(present.size), bands()
