"""Instance labels of an image too large for memory: `instances_from_probs` block by block, with an overlap
margin, and the labels stitched across block borders (block-wise, as whole-slide cell segmentation does it).

`instances_from_probs` decides each connected component of the foreground from that component alone (its
distance transform, h-maxima, watershed and small-object merging never look past the background around
it; see that module). So a block that sees a component whole, with `halo` pixels of context around it,
finds exactly the objects the whole image gives. Each block computes on its core extended by `margin`
pixels on every side; a component is written by one block only, the one whose core holds the top-left
corner of its bounding box, and only if that block sees it whole: every component smaller than `margin`
(less the halo) in both directions comes out exactly as in one pass over the whole image, whole and once,
wherever the block borders fall.

Components larger than that (clumps wider than the margin) are cut by every block's extended region; each
block then writes the objects it finds in its own core, and pieces on either side of a block border are
merged when each is the other's longest contact along that border. Such objects are whole and once in the
usual case, but their inner splits may differ from one pass over the whole image.

Labels go to a temporary raw file (int32, positional reads and writes), the foreground probability comes
from one (float32); a last pass numbers the objects 1..N in the raster order of their first pixel, as
`instances_from_probs` does, and hands the labels on row band by row band.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.infer.instances import instances_from_probs

__all__ = ["DEFAULT_BLOCK", "DEFAULT_MARGIN", "RawPlane", "tiled_instances"]

DEFAULT_BLOCK = 1024  # core side of a block
DEFAULT_MARGIN = 128  # context on every side: components up to this size come out exactly
STRIP_ROWS = 256  # rows per band of the final numbering pass
EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity: h_maxima's footprint couples diagonal neighbours


class RawPlane:
    """A `(height, width)` array in a raw row-major file, read and written by region (no memory map, so
    nothing of it stays resident)."""

    def __init__(self, path: Path, height: int, width: int, dtype: Any) -> None:
        self.path, self.height, self.width, self.dtype = Path(path), height, width, np.dtype(dtype)
        self.handle = open(self.path, "w+b")  # noqa: SIM115 (closed by close())
        self.handle.truncate(height * width * self.dtype.itemsize)  # sparse: unwritten pixels read as 0
        self.appended = 0

    def append(self, rows: np.ndarray) -> None:
        """Write the next rows from the top, `(h, width)`."""
        self.write(self.appended, 0, rows)
        self.appended += rows.shape[0]

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        out = np.empty((y1 - y0, x1 - x0), dtype=self.dtype)
        size = self.dtype.itemsize
        if x0 == 0 and x1 == self.width:
            self.handle.seek(y0 * self.width * size)
            self.handle.readinto(out.data.cast("B"))
            return out
        for i, y in enumerate(range(y0, y1)):
            self.handle.seek((y * self.width + x0) * size)
            self.handle.readinto(out[i].data.cast("B"))
        return out

    def write(self, y0: int, x0: int, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        size = self.dtype.itemsize
        if x0 == 0 and block.shape[1] == self.width:
            self.handle.seek(y0 * self.width * size)
            self.handle.write(block.tobytes())
            return
        for i in range(block.shape[0]):
            self.handle.seek(((y0 + i) * self.width + x0) * size)
            self.handle.write(block[i].tobytes())

    def close(self) -> None:
        self.handle.close()


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
    """Merge pieces across one block border: `inside` and `outside` are the label rows on either side;
    a pair merges when each piece is the other's longest contact along the border."""
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


def _region(start: int, stop: int, size: int, margin: int) -> tuple[int, int]:
    return max(0, start - margin), min(size, stop + margin)


def tiled_instances(
    foreground: RawPlane,
    labels: RawPlane,
    *,
    method: str = "watershed",
    block: int = DEFAULT_BLOCK,
    margin: int = DEFAULT_MARGIN,
    distance: RawPlane | None = None,
    **options: Any,
) -> tuple[int, Iterator[np.ndarray]]:
    """Instance labels of the foreground probability in `foreground`, block by block (module docstring).

    Args:
        foreground: `(H, W)` float32 foreground probabilities.
        labels: an int32 scratch plane of the same size (zeros).
        method, options: as `instances_from_probs` (`threshold`, `min_size`, `h`, `smoothing`, `sharpen`, `seed`).
        distance: `(H, W)` float32 object distances, for method `distance`.
        block: core side of a block.
        margin: context pixels on each side of a core.

    Returns:
        N, the number of objects, and the final labels as `(h, W)` int64 bands from the top, numbered 1..N
        (read from `labels`, which must stay open until they are consumed).
    """
    from scipy import ndimage

    if block < 1 or margin < 0:
        raise ValueError(f"`block` must be >= 1 and `margin` >= 0, got {block}, {margin}")
    height, width = foreground.height, foreground.width
    threshold = float(options.get("threshold", 0.5))
    halo = 1 + math.ceil(4.0 * float(options.get("smoothing", 0.0)))  # gaussian_filter's reach (truncate 4)
    ids = _Ids()
    for by0 in range(0, height, block):
        by1 = min(height, by0 + block)
        ey0, ey1 = _region(by0, by1, height, margin)
        for bx0 in range(0, width, block):
            bx1 = min(width, bx0 + block)
            ex0, ex1 = _region(bx0, bx1, width, margin)
            fg = foreground.read(ey0, ey1, ex0, ex1)
            level = None if distance is None else distance.read(ey0, ey1, ex0, ex1)
            local = instances_from_probs(fg, method, distance=level, **options)
            if not local.any():
                continue
            comps, _ = ndimage.label(fg > threshold, structure=EIGHT)  # h_maxima joins diagonal neighbours
            boxes = ndimage.find_objects(comps)
            y0 = np.array([b[0].start for b in boxes]) + ey0  # bounding boxes in image coordinates
            y1 = np.array([b[0].stop for b in boxes]) + ey0
            x0 = np.array([b[1].start for b in boxes]) + ex0
            x1 = np.array([b[1].stop for b in boxes]) + ex0

            def whole_in(
                ry0: Any,
                ry1: Any,
                rx0: Any,
                rx1: Any,
                y0: np.ndarray = y0,
                y1: np.ndarray = y1,
                x0: np.ndarray = x0,
                x1: np.ndarray = x1,
            ) -> np.ndarray:
                """Whether each component, with its halo, lies inside the region (image borders excepted)."""
                return (
                    ((y0 - halo >= ry0) | (ry0 == 0))
                    & ((y1 + halo <= ry1) | (ry1 == height))
                    & ((x0 - halo >= rx0) | (rx0 == 0))
                    & ((x1 + halo <= rx1) | (rx1 == width))
                )

            seen_whole = whole_in(ey0, ey1, ex0, ex1)
            oy0, ox0 = (y0 // block) * block, (x0 // block) * block  # the owner's core: holds the box's corner
            owner_sees = whole_in(
                np.maximum(0, oy0 - margin),
                np.minimum(height, oy0 + block + margin),
                np.maximum(0, ox0 - margin),
                np.minimum(width, ox0 + block + margin),
            )
            mine = (oy0 == by0) & (ox0 == bx0)
            exact = np.concatenate([[False], seen_whole & mine])  # indexed by component label
            piece = np.concatenate([[False], ~owner_sees])
            # exact components: all their objects, wherever in the extended region
            select = exact[comps]
            if select.any():
                objects = np.unique(local[select])
                lut = np.zeros(int(local.max()) + 1, dtype=np.int64)
                lut[objects] = ids.new(objects.size, piece=False) + np.arange(objects.size)
                current = labels.read(ey0, ey1, ex0, ex1)
                current[select] = lut[local[select]]
                labels.write(ey0, ex0, current)
            # pieces of components too large for any block: what this block finds in its own core
            core = (slice(by0 - ey0, by1 - ey0), slice(bx0 - ex0, bx1 - ex0))
            select = piece[comps[core]]
            if select.any():
                current = labels.read(by0, by1, bx0, bx1)
                select &= current == 0
                objects = np.unique(local[core][select])
                lut = np.zeros(int(local.max()) + 1, dtype=np.int64)
                lut[objects] = ids.new(objects.size, piece=True) + np.arange(objects.size)
                current[select] = lut[local[core][select]]
                labels.write(by0, bx0, current)
                if by0 > 0:
                    _stitch(ids, current[0], labels.read(by0 - 1, by0, bx0, bx1)[0])
                if bx0 > 0:
                    _stitch(ids, current[:, 0], labels.read(by0, by1, bx0 - 1, bx0)[:, 0])
    return _number(labels, ids)


def _number(labels: RawPlane, ids: _Ids) -> tuple[int, Iterator[np.ndarray]]:
    """Number objects 1..N in the raster order of their first pixel (two passes over the label file)."""
    roots = ids.roots()
    final = np.zeros(ids.count, dtype=np.int64)
    total = 0
    for y in range(0, labels.height, STRIP_ROWS):
        strip = roots[labels.read(y, min(labels.height, y + STRIP_ROWS), 0, labels.width)]
        found, first = np.unique(strip, return_index=True)
        new = found[(found > 0) & (final[found] == 0)]
        order = new[np.argsort(first[np.searchsorted(found, new)])]
        final[order] = total + 1 + np.arange(order.size)
        total += order.size

    def bands() -> Iterator[np.ndarray]:
        for y in range(0, labels.height, STRIP_ROWS):
            yield final[roots[labels.read(y, min(labels.height, y + STRIP_ROWS), 0, labels.width)]]

    return total, bands()
