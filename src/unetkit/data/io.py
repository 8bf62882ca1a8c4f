"""Image reading and writing through well-kept readers: Pillow for PNG/JPEG/BMP, tifffile for TIFF.

Arrays come back as `(H, W)` or `(H, W, C)` in the file's own dtype (uint8, uint16, float32, ...).
Every error names the file. Writes are atomic: a temporary file in the same folder, fsync, rename.
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path

import numpy as np

from unetkit._fs import atomic_file
from unetkit.data.errors import DataError

__all__ = ["IMAGE_SUFFIXES", "MAX_PIXELS", "read_image", "sniff_format", "write_image"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
TIFF_SUFFIXES = (".tif", ".tiff")
# decompression-bomb guard: refuse images above this many pixels unless raised (env UNETKIT_MAX_PIXELS)
MAX_PIXELS = int(os.environ.get("UNETKIT_MAX_PIXELS", 2**30))
# a TIFF may hold channels or pages besides its pixels: at most this many values per pixel of the limit
MAX_VALUES_PER_PIXEL = 4
# the format each suffix promises, and the first bytes of each format (the file's content decides)
SUFFIX_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP"}
FORMAT_SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif", "BMP": ".bmp"}
MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),  # BigTIFF
    (b"MM\x00+", "TIFF"),
    (b"BM", "BMP"),
)
_PILLOW_LIMIT = threading.Lock()


def sniff_format(head: bytes) -> str | None:
    """The image format the first bytes of a file announce (`"PNG"`, `"JPEG"`, `"TIFF"`, `"BMP"`), or None."""
    for magic, name in MAGIC:
        if head.startswith(magic):
            return name
    return None


def _check_header(path: Path) -> str:
    """The file's format, checked against its suffix; an empty PNG (0x0 in its header) is refused here,
    because Pillow reports it as an unidentified file."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIX_FORMATS:
        raise DataError(
            f"{path}: unknown image format {suffix or '(no suffix)'!r}, expected one of {', '.join(IMAGE_SUFFIXES)}"
        )
    with open(path, "rb") as file:
        head = file.read(24)
    if not head:
        raise DataError(f"{path}: empty file (0 bytes)")
    expected, found = SUFFIX_FORMATS[suffix], sniff_format(head)
    if found is None:
        raise DataError(f"{path}: not a {expected} file (its first bytes match no supported image format)")
    if found != expected:
        raise DataError(
            f"{path}: holds {found} data but its name says {expected}; rename it to {path.stem}{FORMAT_SUFFIX[found]}"
        )
    if found == "PNG" and len(head) >= 24 and head[12:16] == b"IHDR":
        width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        if width == 0 or height == 0:
            raise DataError(f"{path}: image is {height}x{width} pixels (HxW), expected at least 1x1")
    return found


def _too_large(path: Path, size: str) -> DataError:
    return DataError(f"{path}: {size} is larger than the pixel limit {MAX_PIXELS} (raise it with UNETKIT_MAX_PIXELS)")


def _read_tiff(path: Path, page: int | None) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        shape, axes = tuple(series.shape), str(series.axes)
        pixels = math.prod(n for n, axis in zip(shape, axes, strict=False) if axis in "YX")
        if pixels > MAX_PIXELS or math.prod(shape) > MAX_PIXELS * MAX_VALUES_PER_PIXEL:
            raise _too_large(path, f"shape {shape} ({axes})")
        if page is not None and not 0 <= page < len(tif.pages):
            raise DataError(f"{path}: `page` {page} out of range, the file has {len(tif.pages)} page(s)")
        array = tif.pages[page].asarray() if page is not None else series.asarray()
    # multi-page grey stacks come as (pages, H, W): keep pages as channels, (H, W, pages)
    if array.ndim == 3 and array.shape[0] < array.shape[-1] and array.shape[0] <= 16 and array.shape[-1] > 4:
        array = np.moveaxis(array, 0, -1)
    return array


def _read_pillow(path: Path, fmt: str, keep_palette: bool = False) -> np.ndarray:
    from PIL import Image

    with _PILLOW_LIMIT:  # our limit replaces Pillow's (89 MP warning, 179 MP error)
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            opened = Image.open(path, formats=[fmt])  # only the format the file announces: no other plugin runs
        finally:
            Image.MAX_IMAGE_PIXELS = limit
    with opened:
        img: Image.Image = opened
        if img.width * img.height > MAX_PIXELS:
            raise _too_large(path, f"{img.width}x{img.height}")
        if img.mode == "P" and keep_palette:
            pass  # the palette indices themselves (class masks)
        elif img.mode == "P":
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        elif img.mode in ("1", "LA", "CMYK", "YCbCr"):
            img = img.convert({"1": "L", "LA": "L", "CMYK": "RGB", "YCbCr": "RGB"}[img.mode])
        img.load()
        return np.asarray(img)


def read_image(path: str | Path, *, page: int | None = None, keep_palette: bool = False) -> np.ndarray:
    """Read an image file as `(H, W)` or `(H, W, C)` in its own dtype.

    Args:
        path: a PNG, JPEG, BMP or TIFF file (8- or 16-bit, grey or RGB(A); multi-page TIFF gives
            pages as channels); its content must be of the format its suffix names.
        page: one page of a multi-page TIFF.
        keep_palette: a palette PNG gives its palette indices `(H, W)` (masks) instead of its colours.

    Raises:
        DataError: a missing, unreadable, empty, truncated, mislabelled (content of another format than
            the suffix says), empty (0 pixels) or oversized (`MAX_PIXELS`) file, or one holding NaN /
            infinite values or no real numbers; the message names the file. Nothing else escapes.
    """
    path = Path(path)
    try:
        if not path.exists():
            raise DataError(f"{path}: no such file")
        if path.is_dir():
            raise DataError(f"{path}: is a folder, expected an image file")
        if not path.is_file():
            raise DataError(f"{path}: not a regular file, expected an image file")
        if path.stat().st_size == 0:
            raise DataError(f"{path}: empty file (0 bytes)")
        fmt = _check_header(path)
    except OSError as err:  # permission denied, I/O error, a name too long, ...
        raise DataError(f"{path}: cannot read ({err.strerror or err})") from err
    try:
        array = _read_tiff(path, page) if fmt == "TIFF" else _read_pillow(path, fmt, keep_palette)
    except DataError:
        raise
    except Exception as err:  # readers raise many types for corrupt data: report them as one
        raise DataError(f"{path}: cannot read image ({type(err).__name__}: {err})") from err
    if array.ndim not in (2, 3):
        raise DataError(f"{path}: expected a 2-D image (H, W) or (H, W, C), got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0 or array.size == 0:
        raise DataError(f"{path}: image is {array.shape[0]}x{array.shape[1]} pixels (HxW), expected at least 1x1")
    if array.dtype.kind not in "biuf":
        raise DataError(f"{path}: pixel type {array.dtype} is not supported; expected integers or real numbers")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise DataError(f"{path}: contains NaN or infinite pixel values")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    return array


def write_image(path: str | Path, array: np.ndarray) -> Path:
    """Write `(H, W)` or `(H, W, C)` atomically: PNG/JPEG for 8-bit (PNG also 16-bit grey), TIFF for any.

    Raises:
        DataError: a dtype the format cannot hold, or a folder that cannot be written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    array = np.asarray(array)
    if suffix not in IMAGE_SUFFIXES:
        raise DataError(f"{path}: unknown image format {suffix!r}, expected one of {', '.join(IMAGE_SUFFIXES)}")
    if suffix in (".jpg", ".jpeg", ".bmp") and array.dtype != np.uint8:
        raise DataError(f"{path}: {suffix} holds only 8-bit images, got {array.dtype}")
    if suffix == ".png" and array.dtype not in (np.uint8, np.uint16):
        raise DataError(f"{path}: PNG holds 8- or 16-bit images, got {array.dtype}; use .tif")
    with atomic_file(path) as tmp:
        if suffix in TIFF_SUFFIXES:
            import tifffile

            tifffile.imwrite(tmp, array)
        else:
            from PIL import Image

            fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP"}[suffix]
            Image.fromarray(array).save(tmp, format=fmt)
    return path
