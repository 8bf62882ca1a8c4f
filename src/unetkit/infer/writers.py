"""Outputs written row band by row band, so that no output is ever held whole in memory.

Every writer takes bands of rows from the top down as `(S, h, W)` arrays (S samples: 1 for masks and
instance labels, K for probabilities, 3 for overlays) and keeps at most one band (a TIFF tile row for
tiled TIFF, a zarr chunk row for zarr):

- `PngWriter`: a PNG (grey or RGB, 8 or 16 bits) deflated as the rows come (PNG's filter 0 per row);
- `TiffWriter`: an uncompressed TIFF, `(H, W)` or planar `(S, H, W)`, each band written at its offset;
- `TiledTiffWriter`: a tiled, zlib-compressed BigTIFF, chunky `(H, W)` / `(H, W, S)`, for outputs above
  `LARGE_PIXELS`; tifffile encodes it in a thread of its own, fed tile row by tile row;
- `ZarrWriter`: a chunked, compressed zarr array `(H, W)` / `(S, H, W)` (needs `unetkit[zarr]`).

`BackgroundSink` runs a band consumer in a writer thread, so that encoding and writing overlap the
forward passes.
"""

from __future__ import annotations

import contextlib
import queue
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from unetkit._fs import preallocate

__all__ = [
    "LARGE_PIXELS",
    "TIFF_TILE",
    "BackgroundSink",
    "PngWriter",
    "TiffWriter",
    "TiledTiffWriter",
    "ZarrWriter",
    "open_writer",
]

LARGE_PIXELS = 64 * 1024 * 1024  # above this, TIFF outputs are tiled, compressed BigTIFF
TIFF_TILE = 256  # tile side of tiled TIFF and zarr outputs
PNG_LEVEL = 1  # zlib level of PNG outputs: fastest; masks compress well at any level
TIFF_LEVEL = 6  # zlib level of tiled TIFF outputs
QUEUE_BANDS = 1  # bands waiting for a writer thread (besides the one it writes and the one being made)


class _RowWriter:
    """Common checks: bands arrive top to bottom and fill exactly `height` rows."""

    def __init__(self, path: Path, height: int, width: int, samples: int, dtype: Any) -> None:
        self.path, self.height, self.width, self.samples = Path(path), height, width, samples
        self.dtype = np.dtype(dtype)
        self.rows = 0

    def write(self, band: np.ndarray) -> None:
        """Append rows: `(S, h, W)` (or `(h, W)` for one sample)."""
        band = band[None] if band.ndim == 2 else band
        if band.shape[0] != self.samples or band.shape[2] != self.width or self.rows + band.shape[1] > self.height:
            raise ValueError(f"{self.path}: band of shape {band.shape} does not continue row {self.rows}")
        self._write(np.asarray(band, dtype=self.dtype))
        self.rows += band.shape[1]

    def _write(self, band: np.ndarray) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Finish the file; every row must have been written."""
        if self.rows != self.height:
            raise ValueError(f"{self.path}: {self.rows} of {self.height} rows written")
        self._close()

    def _close(self) -> None:
        pass

    def abort(self) -> None:
        """Stop without finishing (the caller removes the file)."""


def _hand_over(handoff: queue.Queue, item: Any, failed: Callable[[], BaseException | None]) -> None:
    """Put `item` on a consumer thread's queue, waiting while it is full; raise the consumer's error if it
    failed (and so stopped taking items)."""
    while True:
        error = failed()
        if error is not None:
            raise error
        try:
            handoff.put(item, timeout=0.5)
            return
        except queue.Full:
            continue


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


class PngWriter(_RowWriter):
    """A PNG written as rows come: grey (`S = 1`) or RGB (`S = 3`), uint8 or uint16."""

    def __init__(self, path: Path, height: int, width: int, samples: int, dtype: Any) -> None:
        super().__init__(path, height, width, samples, dtype)
        if samples not in (1, 3) or self.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"PNG holds 1 or 3 samples of uint8 / uint16, got {samples} x {self.dtype}")
        self.handle = open(self.path, "wb")  # noqa: SIM115 (closed by close() or abort())
        colour = 0 if samples == 1 else 2
        header = struct.pack(">IIBBBBB", width, height, 8 * self.dtype.itemsize, colour, 0, 0, 0)
        self.handle.write(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header))
        self.deflate = zlib.compressobj(PNG_LEVEL)

    def _write(self, band: np.ndarray) -> None:
        rows = np.moveaxis(band, 0, -1).reshape(band.shape[1], -1)  # (h, W * S), samples interleaved
        if self.dtype.itemsize > 1:
            rows = rows.astype(">u2")
        raw = np.empty((rows.shape[0], rows.shape[1] * self.dtype.itemsize + 1), dtype=np.uint8)
        raw[:, 0] = 0  # filter type 0 (none) for every row
        raw[:, 1:] = rows.view(np.uint8).reshape(rows.shape[0], -1)
        data = self.deflate.compress(raw.tobytes())
        if data:
            self.handle.write(_png_chunk(b"IDAT", data))

    def _close(self) -> None:
        self.handle.write(_png_chunk(b"IDAT", self.deflate.flush()) + _png_chunk(b"IEND", b""))
        self.handle.close()

    def abort(self) -> None:
        self.handle.close()


class TiffWriter(_RowWriter):
    """An uncompressed TIFF, `(H, W)` or planar `(S, H, W)`, its space reserved up front (a full disk fails
    before the first band) and each band written at its offset (no memory map: nothing stays resident)."""

    def __init__(self, path: Path, height: int, width: int, samples: int, dtype: Any) -> None:
        import tifffile

        super().__init__(path, height, width, samples, dtype)
        shape = (height, width) if samples == 1 else (samples, height, width)
        # three or four planes are written as tifffile has always stored them (one RGB page, separate planes); said
        # explicitly, as its default for them is to change
        rgb = samples in (3, 4)
        # other planes are one grey page each; without tifffile's shape description, which drops axes of length 1
        # (a 2x5x1 stack was written as one 2x5 page, so the probabilities of a 1-pixel-wide image were misread)
        layout: dict[str, Any] = (
            {"photometric": "rgb", "planarconfig": "separate"} if rgb else {"photometric": "minisblack"}
        )
        if samples > 1 and not rgb:
            layout["metadata"] = None
        created = tifffile.memmap(self.path, shape=shape, dtype=self.dtype, **layout)  # header and data layout only
        self.offset = int(created.offset)
        del created  # unmapped untouched: no page of it was read or written
        preallocate(self.path, self.path.stat().st_size)
        self.handle = open(self.path, "r+b")  # noqa: SIM115 (closed by close() or abort())

    def _write(self, band: np.ndarray) -> None:
        row = self.width * self.dtype.itemsize
        for s in range(self.samples):
            self.handle.seek(self.offset + (s * self.height + self.rows) * row)
            self.handle.write(np.ascontiguousarray(band[s]).tobytes())

    def _close(self) -> None:
        self.handle.close()

    def abort(self) -> None:
        self.handle.close()


class TiledTiffWriter(_RowWriter):
    """A tiled, zlib-compressed BigTIFF, `(H, W)` or chunky `(H, W, S)` (RGB photometric for 3 uint8
    samples); tifffile writes it in its own thread from the tile rows handed over."""

    def __init__(self, path: Path, height: int, width: int, samples: int, dtype: Any, tile: int = TIFF_TILE) -> None:
        super().__init__(path, height, width, samples, dtype)
        self.tile = tile
        self.buffer = np.zeros((tile, width, samples), dtype=self.dtype)  # one tile row, chunky
        self.filled = 0
        self.tile_rows: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=QUEUE_BANDS)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._encode, name="unetkit-tiff-writer", daemon=True)
        self.thread.start()

    def _tiles(self) -> Iterator[np.ndarray]:
        while True:
            rows = self.tile_rows.get()
            if rows is None:
                return
            for x in range(0, self.width, self.tile):
                tile = rows[:, x : x + self.tile]
                if tile.shape[1] < self.tile:  # the last column of tiles, padded to the tile size
                    tile = np.pad(tile, ((0, 0), (0, self.tile - tile.shape[1]), (0, 0)))
                yield tile

    def _encode(self) -> None:
        import tifffile

        try:
            shape = (self.height, self.width) if self.samples == 1 else (self.height, self.width, self.samples)
            rgb = self.samples == 3 and self.dtype == np.uint8
            tifffile.imwrite(
                self.path,
                data=self._tiles(),
                shape=shape,
                dtype=self.dtype,
                tile=(self.tile, self.tile),
                compression="zlib",
                compressionargs={"level": TIFF_LEVEL},
                photometric="rgb" if rgb else "minisblack",
                planarconfig="contig",
                bigtiff=True,
            )
        except BaseException as err:  # handed to the thread that writes the bands (its next put raises it)
            self.error = err

    def _put(self, rows: np.ndarray | None) -> None:
        _hand_over(self.tile_rows, rows, lambda: self.error)

    def _write(self, band: np.ndarray) -> None:
        chunky = np.moveaxis(band, 0, -1)  # (h, W, S)
        done = 0
        while done < chunky.shape[0]:
            take = min(self.tile - self.filled, chunky.shape[0] - done)
            self.buffer[self.filled : self.filled + take] = chunky[done : done + take]
            self.filled += take
            done += take
            if self.filled == self.tile:
                self._put(self.buffer.copy())
                self.filled = 0

    def _close(self) -> None:
        if self.filled:
            self.buffer[self.filled :] = 0
            self._put(self.buffer.copy())
        self._put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        if self.thread.is_alive():
            with contextlib.suppress(BaseException):  # the encoder failed already: nothing left to stop
                self._put(None)
            self.thread.join()


class ZarrWriter(_RowWriter):
    """A chunked zarr array (a folder), `(H, W)` or `(S, H, W)`, chunks of `TIFF_TILE` rows and columns."""

    def __init__(self, path: Path, height: int, width: int, samples: int, dtype: Any, tile: int = TIFF_TILE) -> None:
        from unetkit.infer.readers import require_zarr

        super().__init__(path, height, width, samples, dtype)
        zarr = require_zarr()
        shape = (height, width) if samples == 1 else (samples, height, width)
        chunks = (tile, tile) if samples == 1 else (samples, tile, tile)
        self.array = zarr.create_array(str(self.path), shape=shape, chunks=chunks, dtype=self.dtype)
        self.tile = tile
        self.buffer = np.zeros((samples, tile, width), dtype=self.dtype)
        self.filled = 0
        self.top = 0

    def _flush(self) -> None:
        rows = self.buffer[:, : self.filled]
        if self.samples == 1:
            self.array[self.top : self.top + self.filled] = rows[0]
        else:
            self.array[:, self.top : self.top + self.filled] = rows
        self.top += self.filled
        self.filled = 0

    def _write(self, band: np.ndarray) -> None:
        done = 0
        while done < band.shape[1]:
            take = min(self.tile - self.filled, band.shape[1] - done)
            self.buffer[:, self.filled : self.filled + take] = band[:, done : done + take]
            self.filled += take
            done += take
            if self.filled == self.tile:
                self._flush()

    def _close(self) -> None:
        if self.filled:
            self._flush()


def open_writer(path: Path, fmt: str, height: int, width: int, samples: int, dtype: Any) -> _RowWriter:
    """The writer for `fmt` (`png`, `tif`, `zarr`); `tif` above `LARGE_PIXELS` is tiled and compressed."""
    if fmt == "png":
        return PngWriter(path, height, width, samples, dtype)
    if fmt == "zarr":
        return ZarrWriter(path, height, width, samples, dtype)
    if fmt != "tif":
        raise ValueError(f"`fmt` must be png, tif or zarr, got {fmt!r}")
    if height * width > LARGE_PIXELS:
        return TiledTiffWriter(path, height, width, samples, dtype)
    return TiffWriter(path, height, width, samples, dtype)


class BackgroundSink:
    """Runs `consume(*item)` in a writer thread; `__call__(*item)` queues a band's item (blocking while
    `QUEUE_BANDS` wait), `close()` waits for the last one. An error in the thread is raised by the
    next `__call__` or by `close()`."""

    def __init__(self, consume: Callable[..., None]) -> None:
        self.consume = consume
        self.bands: queue.Queue[tuple[Any, ...] | None] = queue.Queue(maxsize=QUEUE_BANDS)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="unetkit-band-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            item = self.bands.get()
            if item is None:
                return
            if self.error is None:
                try:
                    self.consume(*item)
                except BaseException as err:  # handed to the device loop's thread
                    self.error = err

    def __call__(self, *item: Any) -> None:
        _hand_over(self.bands, item, lambda: self.error)

    def close(self) -> None:
        """Wait for the queued bands; raise the thread's error, if any."""
        _hand_over(self.bands, None, lambda: None)  # a failed thread still drains its queue until this
        self.thread.join()
        if self.error is not None:
            raise self.error
