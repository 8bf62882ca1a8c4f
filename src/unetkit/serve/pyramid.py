"""Pictures of any size for the page, kept on disk as pyramids and cut into tiles on request.

A layer (the display image, the class map, probabilities, instance labels, the ground truth) is written
once, band of rows by band of rows, as level 0 (full size) and levels 1, 2, ... (each half the side of the
one before: 2 x 2 means for pictures, every second pixel for labels) down to the first level whose longer
side fits `PREVIEW`, the downscaled view the page opens with. Each level is a `.npy` file; a tile is read
from it through a short-lived memory map, so the server never holds a whole large image, nor sends one to
the browser (the tiling scheme of deep-zoom viewers such as OpenSeadragon).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = ["PREVIEW", "TILE", "LayerWriter", "level_count", "level_shape", "read_window", "row_bands"]

TILE = 256  # tile side, in pixels of its level
PREVIEW = 1024  # the top level's longer side is at most this
BAND_VALUES = 1 << 22  # values per band of rows read or written at once (~16 MB of float32)


def level_count(height: int, width: int) -> int:
    """Levels from full size down to the first whose longer side is at most `PREVIEW`."""
    return 1 + max(0, math.ceil(math.log2(max(height, width) / PREVIEW)))


def level_shape(height: int, width: int, level: int) -> tuple[int, int]:
    """`(h, w)` of `level` (sides rounded up, as 2 x 2 reduction with a lone last row or column)."""
    step = 1 << level
    return -(-height // step), -(-width // step)


def row_bands(height: int, width: int, channels: int = 1) -> Iterator[tuple[int, int]]:
    """`(y0, y1)` bands of rows holding about `BAND_VALUES` values each (an even number of rows)."""
    rows = max(2, BAND_VALUES // max(1, width * channels)) // 2 * 2
    for y0 in range(0, height, rows):
        yield y0, min(height, y0 + rows)


class _LevelFile:
    """One level as an `.npy` file, written row band by row band (plain writes: no mapped dirty pages)."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path, self.shape, self.dtype, self.rows = path, shape, dtype, 0
        self.handle = open(path, "wb")  # noqa: SIM115 - closed by `close`
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(self.handle, header)

    def write(self, rows: np.ndarray) -> None:
        self.handle.write(np.ascontiguousarray(rows, dtype=self.dtype).data)
        self.rows += rows.shape[0]

    def close(self) -> None:
        self.handle.close()
        if self.rows != self.shape[0]:
            raise RuntimeError(f"{self.path}: {self.rows} rows written, expected {self.shape[0]}")


class LayerWriter:
    """Writes one layer's pyramid from level-0 row bands given top to bottom.

    Args:
        folder: where `NAME-0.npy`, `NAME-1.npy`, ... go.
        name: the layer's name.
        height, width: level-0 size.
        levels: number of levels (`level_count`).
        dtype: the stored type.
        channels: values per pixel (0: a plain `(H, W)` layer).
        reduce: `mean` (2 x 2 means, for pictures and probabilities) or `nearest` (the top-left pixel of each
            2 x 2 block, for labels, which must not be averaged).
    """

    def __init__(
        self,
        folder: Path,
        name: str,
        height: int,
        width: int,
        levels: int,
        dtype: np.dtype | type,
        channels: int = 0,
        reduce: str = "mean",
    ) -> None:
        if reduce not in ("mean", "nearest"):
            raise ValueError(f"`reduce` must be mean or nearest, got {reduce!r}")
        self.reduce, self.dtype = reduce, np.dtype(dtype)
        extra = (channels,) if channels else ()
        self.files = [
            _LevelFile(folder / f"{name}-{k}.npy", (*level_shape(height, width, k), *extra), self.dtype)
            for k in range(levels)
        ]
        self.carry: list[np.ndarray | None] = [None] * levels

    def write(self, band: np.ndarray) -> None:
        """The next rows of level 0: `(rows, W)` or `(rows, W, channels)`."""
        self._push(0, band)

    def _push(self, level: int, rows: np.ndarray) -> None:
        self.files[level].write(rows)
        if level + 1 == len(self.files):
            return
        held = self.carry[level]
        if held is not None:
            rows = np.concatenate([held, rows])
        even = rows.shape[0] // 2 * 2
        self.carry[level] = rows[even:].copy() if rows.shape[0] > even else None
        if even:
            self._push(level + 1, self._halve(rows[:even]))

    def _halve(self, rows: np.ndarray) -> np.ndarray:
        """`(2r, W, ...)` (or one lone last row) -> `(r, ceil(W / 2), ...)`."""
        if self.reduce == "nearest":
            return rows[::2, ::2]
        if rows.shape[0] % 2:  # the lone last row of an odd height pairs with itself
            rows = np.concatenate([rows, rows[-1:]])
        if rows.shape[1] % 2:
            rows = np.concatenate([rows, rows[:, -1:]], axis=1)
        r, w = rows.shape[0] // 2, rows.shape[1] // 2
        blocks = rows.reshape(r, 2, w, 2, *rows.shape[2:]).astype(np.float32)
        means = blocks.mean(axis=(1, 3))
        return np.rint(means).astype(self.dtype) if self.dtype.kind in "iu" else means.astype(self.dtype)

    def close(self) -> None:
        """Flush the lone last rows down the levels and check every level is complete."""
        for level in range(len(self.files) - 1):
            held = self.carry[level]
            if held is not None:
                self.carry[level] = None
                self._push(level + 1, self._halve(held))
        for file in self.files:
            file.close()


def read_window(path: Path, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Rows `y0:y1`, columns `x0:x1` of a level file, copied out of a memory map that is closed again."""
    mapped = np.load(path, mmap_mode="r")
    try:
        return np.array(mapped[y0:y1, x0:x1])
    finally:
        del mapped
