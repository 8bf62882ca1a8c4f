"""Input images for prediction, read region by region so that an image need not fit in memory.

- **TIFF** (tiled or striped, BigTIFF, OME-TIFF, compressed with any codec tifffile decodes): the segments
  (tiles or strips) a region needs are read from the file and decoded one by one; an uncompressed
  contiguous TIFF is read by file offset. Channels come from the samples of one page (chunky or planar) or
  from up to `MAX_CHANNELS` pages of one size (OME-TIFF's `CYX`). The first series and its full-resolution
  level are read. Regions of the previous call are kept decoded, so bands that overlap decode their
  shared segments once.
- **zarr** (a folder `NAME.zarr`, needs `pip install unetkit[zarr]`): a 2-D array `(H, W)`, `(H, W, C)` or
  `(C, H, W)`, read by chunks.
- **PNG, JPEG, BMP** cannot be read by region: they are decoded whole, up to `WHOLE_READ_PIXELS`; larger
  ones are refused with the advice to convert them to a tiled TIFF.

Every source gives `(C, h, w)` arrays in the file's own dtype; `scale` maps its integers to `[0, 1]` as
training does (`unetkit.data.folder.intensity_scale`). NaN and infinite values are refused region by
region.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unetkit._deps import MissingDependency
from unetkit.data.errors import DataError

__all__ = ["MAX_CHANNELS", "WHOLE_READ_PIXELS", "ImageSource", "open_source"]

MAX_CHANNELS = 16  # pages of one size read as channels, at most; more is a stack or a volume
ZARR_PIXEL_FACTOR = 16  # zarr stores, read by region: up to this many times the pixel limit (2^32 by default)
WHOLE_READ_PIXELS = int(os.environ.get("UNETKIT_WHOLE_READ_PIXELS", 64 * 2**20))  # formats decoded whole
ZARR_SUFFIXES = (".zarr",)


class ImageSource:
    """An image as `height x width` pixels of `channels` channels, read by region.

    Subclasses implement `_region(y0, y1, x0, x1) -> (C, y1 - y0, x1 - x0)` in the file's dtype.
    """

    path: Path
    height: int
    width: int
    channels: int
    dtype: np.dtype

    def _setup(self, path: Path, channels: int, height: int, width: int, dtype: Any, expected: int | None) -> None:
        from unetkit.data.folder import intensity_scale

        self.path, self.channels, self.height, self.width = path, channels, height, width
        self.dtype = np.dtype(dtype)
        if self.dtype.kind not in "biuf":
            raise DataError(f"{path}: pixel type {self.dtype} is not supported; expected integers or real numbers")
        if height == 0 or width == 0:
            raise DataError(f"{path}: empty image ({height}x{width})")
        self.drop_alpha = channels == 4 and expected == 3  # RGBA -> RGB, as in training
        if self.drop_alpha:
            self.channels = 3
        if expected is not None and self.channels != expected:
            raise DataError(f"{path}: image has {self.channels} channels, the model expects {expected}")
        self.scale = intensity_scale(self.dtype)

    def _region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        raise NotImplementedError

    def region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Pixels `[y0, y1) x [x0, x1)` as `(C, h, w)` in the file's dtype (bool as uint8)."""
        try:
            block = self._region(y0, y1, x0, x1)
        except (DataError, MemoryError):
            raise
        except Exception as err:  # decoders raise many types for corrupt data: report them as one
            raise DataError(f"{self.path}: cannot read image ({type(err).__name__}: {err})") from err
        if self.drop_alpha:
            block = block[:3]
        if block.dtype == bool:
            block = block.astype(np.uint8)
        if block.dtype.kind == "f" and not np.isfinite(block).all():
            raise DataError(f"{self.path}: contains NaN or infinite pixel values")
        return block

    def read(self, rows: np.ndarray, cols: np.ndarray) -> torch.Tensor:
        """The tiler's reader: pixels at (mirrored) indices as a `(C, len(rows), len(cols))` tensor."""
        y0, y1, x0, x1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
        block = self.region(y0, y1, x0, x1)
        if rows.size != y1 - y0 or not np.array_equal(rows, np.arange(y0, y1)):
            block = block[:, rows - y0]
        if cols.size != x1 - x0 or not np.array_equal(cols, np.arange(x0, x1)):
            block = block[:, :, cols - x0]
        block = np.ascontiguousarray(block)
        return torch.from_numpy(block if block.flags.writeable else block.copy())

    def close(self) -> None:
        """Release the file."""

    def __enter__(self) -> ImageSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ArraySource(ImageSource):
    """An image held in memory: `(H, W)`, `(H, W, C)` or, with `channels_first`, `(C, H, W)`."""

    def __init__(self, path: Path, array: np.ndarray, expected: int | None, channels_first: bool = False) -> None:
        if array.ndim == 2:
            array = array[None]
        elif array.ndim == 3 and not channels_first:
            array = np.moveaxis(array, -1, 0)
        elif array.ndim != 3:
            raise DataError(f"{path}: expected a 2-D image, got shape {array.shape}")
        self.array = array
        self._setup(path, array.shape[0], array.shape[1], array.shape[2], array.dtype, expected)

    def _region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return np.asarray(self.array[:, y0:y1, x0:x1])


class _TiffPage:
    """Region reads of one TIFF page (2-D, any samples, chunky or planar), segment by segment."""

    def __init__(self, page: Any, byteorder: str) -> None:
        key = page.keyframe or page  # a TiffFrame shares the tags of its key page, not its data
        shaped = tuple(page.shaped)  # (planar samples, depth, length, width, contiguous samples)
        if shaped[1] != 1:
            raise ValueError("volume pages (image depth > 1)")
        self.page, self.key = page, key
        self.planes, self.height, self.width, self.contig = shaped[0], shaped[2], shaped[3], shaped[4]
        self.samples = self.planes * self.contig
        self.dtype = np.dtype(key.dtype).newbyteorder(byteorder)
        self.cache: dict[int, np.ndarray] = {}
        self.direct = key.compression == 1 and bool(page.is_contiguous) and key.bitspersample in (8, 16, 32, 64)
        if key.is_tiled:
            self.seg_h, self.seg_w = int(key.tilelength), int(key.tilewidth)
        else:
            self.seg_h, self.seg_w = min(int(key.rowsperstrip or self.height), self.height), self.width
        self.down, self.across = math.ceil(self.height / self.seg_h), math.ceil(self.width / self.seg_w)

    def _direct(self, fh: Any, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Rows read by offset from uncompressed contiguous data; `(planes * contig, h, w)`."""
        row = self.width * self.contig * self.dtype.itemsize
        base = int(self.page.dataoffsets[0])
        planes = []
        for s in range(self.planes):
            fh.seek(base + (s * self.height + y0) * row)
            data = fh.read((y1 - y0) * row)
            block = np.frombuffer(data, dtype=self.dtype).reshape(y1 - y0, self.width, self.contig)
            planes.append(np.moveaxis(block[:, x0:x1], -1, 0))
        return np.concatenate(planes).astype(self.dtype.newbyteorder("="), copy=False)

    def region(self, fh: Any, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        if self.direct:
            return self._direct(fh, y0, y1, x0, x1)
        out = np.empty((self.samples, y1 - y0, x1 - x0), dtype=self.dtype.newbyteorder("="))
        rows = range(y0 // self.seg_h, (y1 - 1) // self.seg_h + 1)
        cols = range(x0 // self.seg_w, (x1 - 1) // self.seg_w + 1)
        used: dict[int, np.ndarray] = {}
        per_plane = self.down * self.across
        for s in range(self.planes):
            for r in rows:
                for c in cols:
                    index = s * per_plane + r * self.across + c
                    segment = self.cache.get(index)
                    if segment is None:
                        segment = self._decode(fh, index)
                    used[index] = segment
                    sy, sx = r * self.seg_h, c * self.seg_w
                    ya, yb = max(y0, sy), min(y1, sy + self.seg_h, self.height)
                    xa, xb = max(x0, sx), min(x1, sx + self.seg_w, self.width)
                    part = segment[ya - sy : yb - sy, xa - sx : xb - sx]  # (h, w, contig)
                    out[s * self.contig : (s + 1) * self.contig, ya - y0 : yb - y0, xa - x0 : xb - x0] = np.moveaxis(
                        part, -1, 0
                    )
        self.cache = used  # the next band overlaps this one: keep what it decoded, drop the rest
        return out

    def _decode(self, fh: Any, index: int) -> np.ndarray:
        page, key = self.page, self.key
        fh.seek(int(page.dataoffsets[index]))
        data = fh.read(int(page.databytecounts[index]))
        segment, _, _ = key.decode(data, index, jpegtables=key.jpegtables)
        if segment is None:  # an empty (sparse) segment
            return np.zeros((self.seg_h, self.seg_w, self.contig), dtype=self.dtype.newbyteorder("="))
        return np.asarray(segment).reshape(segment.shape[-3], segment.shape[-2], segment.shape[-1])


class TiffSource(ImageSource):
    """A TIFF read region by region (see the module docstring); fails with `ValueError` on layouts it does
    not read by region (the caller then decodes the file whole)."""

    def __init__(self, path: Path, expected: int | None) -> None:
        import tifffile

        self.tif = tifffile.TiffFile(path)
        try:
            series = self.tif.series[0]
            pages = [p for p in series.pages if p is not None]
            if not pages:
                raise ValueError("a series without pages")
            if any(getattr(p, "bitspersample", 8) == 1 for p in pages):  # bit-packed: 8 pixels a byte
                raise ValueError("1-bit pages, decoded whole")
            self.pages = [_TiffPage(p, self.tif.byteorder) for p in pages]
            first = self.pages[0]
            if len(self.pages) > 1 and (
                len(self.pages) > MAX_CHANNELS
                or any((p.height, p.width, p.dtype) != (first.height, first.width, first.dtype) for p in self.pages)
            ):
                raise ValueError(f"{len(self.pages)} pages that are not channels of one image")
            channels = sum(p.samples for p in self.pages)
            from unetkit.data.io import _TIFF_RATIO, check_decode_size

            check_decode_size(  # a header that claims more than the file holds: refused before any read
                path, first.height, first.width, bits_per_pixel=8 * channels * first.dtype.itemsize,
                file_bytes=path.stat().st_size, max_ratio=_TIFF_RATIO.get(int(first.key.compression)), whole=False,
            )  # fmt: skip
            self._setup(path, channels, first.height, first.width, first.dtype.newbyteorder("="), expected)
        except BaseException:
            self.tif.close()
            raise

    def _region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        fh = self.tif.filehandle
        blocks = [p.region(fh, y0, y1, x0, x1) for p in self.pages]
        return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)

    def close(self) -> None:
        self.tif.close()


class ZarrSource(ImageSource):
    """A 2-D zarr array `(H, W)`, `(H, W, C)` or `(C, H, W)` (at most `MAX_CHANNELS` channels)."""

    def __init__(self, path: Path, expected: int | None) -> None:
        zarr = require_zarr()
        try:
            self.array = zarr.open_array(str(path), mode="r")
        except Exception as err:  # zarr raises its own types for a folder that is not a store
            raise DataError(f"{path}: not a readable zarr array ({type(err).__name__}: {err})") from err
        shape = tuple(self.array.shape)
        if len(shape) == 2:
            self.layout, channels, height, width = "yx", 1, *shape
        elif len(shape) == 3 and shape[-1] <= MAX_CHANNELS:
            self.layout, (height, width, channels) = "yxc", shape
        elif len(shape) == 3 and shape[0] <= MAX_CHANNELS:
            self.layout, (channels, height, width) = "cyx", shape
        else:
            raise DataError(f"{path}: expected a 2-D zarr array (H, W), (H, W, C) or (C, H, W), got shape {shape}")
        from unetkit.data import io as data_io  # the limit read now: UNETKIT_MAX_PIXELS, or a test's

        limit = data_io.MAX_PIXELS * ZARR_PIXEL_FACTOR  # read by region: larger than decoded whole, not unbounded
        if height * width > limit:  # a store's missing chunks cost no disk: its shape alone could ask for days
            raise DataError(
                f"{path}: {width}x{height} is larger than the pixel limit {limit} for zarr stores (raise it with "
                "UNETKIT_MAX_PIXELS)"
            )
        self._setup(path, channels, height, width, self.array.dtype, expected)

    def _region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        if self.layout == "yx":
            return np.asarray(self.array[y0:y1, x0:x1])[None]
        if self.layout == "yxc":
            return np.moveaxis(np.asarray(self.array[y0:y1, x0:x1]), -1, 0)
        return np.asarray(self.array[:, y0:y1, x0:x1])


def require_zarr() -> Any:
    """The zarr module, or an ImportError saying how to install it."""
    try:
        import zarr
    except ImportError as err:
        raise MissingDependency("zarr stores need the zarr package: pip install unetkit[zarr]") from err
    return zarr


def _whole(path: Path, expected: int | None) -> ArraySource:
    """A file decoded whole (PNG / JPEG / BMP, or a TIFF whose layout is not read by region)."""
    from unetkit.data.io import _check_header, read_image

    try:
        fmt = _check_header(path) if path.is_file() else None
    except OSError:
        fmt = None
    if fmt in ("PNG", "JPEG", "BMP"):
        from PIL import Image

        try:
            with Image.open(path, formats=[fmt]) as img:
                width, height = img.size
        except Exception:  # let read_image name what is wrong with the file
            width = height = 0
        if width * height > WHOLE_READ_PIXELS:
            raise DataError(
                f"{path}: a {height}x{width} (HxW) {fmt} is decoded whole and is larger than "
                f"{WHOLE_READ_PIXELS} pixels; convert it to a tiled TIFF (e.g. tifffile.imwrite(name, image, "
                "tile=(256, 256), compression='zlib'), or vips tiffsave --tile), which is read region by region"
            )
    return ArraySource(path, read_image(path), expected)


def open_source(path: str | Path, expected: int | None = None) -> ImageSource:
    """The reader for an input file or zarr folder; `expected` is the model's input channels (None: any).

    Raises:
        DataError: a file that cannot be read, or holds the wrong number of channels, or a PNG / JPEG
            too large to decode whole; the message names the file.
    """
    path = Path(path)
    if path.suffix.lower() in ZARR_SUFFIXES:
        if not path.is_dir():
            raise DataError(f"{path}: no such zarr folder")
        return ZarrSource(path, expected)
    if path.suffix.lower() in (".tif", ".tiff") and path.is_file():
        try:
            return TiffSource(path, expected)
        except DataError:
            raise
        except Exception:  # a layout or a file the region reader cannot take: read_image reports or reads it
            pass
    return _whole(path, expected)
