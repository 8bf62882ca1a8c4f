"""Image reading and writing through well-kept readers: Pillow for PNG/JPEG/BMP, tifffile for TIFF.

Arrays come back as `(H, W)` or `(H, W, C)` in the file's own dtype (uint8, uint16, float32, ...).
Every error names the file. Writes are atomic: a temporary file in the same folder, fsync, rename.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from unetkit._fs import atomic_file
from unetkit.data.errors import DataError

__all__ = ["IMAGE_SUFFIXES", "MAX_PIXELS", "read_image", "write_image"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
TIFF_SUFFIXES = (".tif", ".tiff")
# decompression-bomb guard: refuse images above this many pixels unless raised (env UNETKIT_MAX_PIXELS)
MAX_PIXELS = int(os.environ.get("UNETKIT_MAX_PIXELS", 2**30))


def _read_tiff(path: Path, page: int | None) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        shape = series.shape
        if int(np.prod(shape)) > MAX_PIXELS * 4:
            raise DataError(f"{path}: {shape} is larger than the pixel limit {MAX_PIXELS} (UNETKIT_MAX_PIXELS)")
        array = tif.pages[page].asarray() if page is not None else series.asarray()
    # multi-page grey stacks come as (pages, H, W): keep pages as channels, (H, W, pages)
    if array.ndim == 3 and array.shape[0] < array.shape[-1] and array.shape[0] <= 16 and array.shape[-1] > 4:
        array = np.moveaxis(array, 0, -1)
    return array


def read_image(path: str | Path, *, page: int | None = None) -> np.ndarray:
    """Read an image file as `(H, W)` or `(H, W, C)` in its own dtype.

    Args:
        path: a PNG, JPEG, BMP or TIFF file (8- or 16-bit, grey or RGB(A); multi-page TIFF gives
            pages as channels).
        page: one page of a multi-page TIFF.

    Raises:
        DataError: missing, empty, truncated, unreadable or oversized file; the message names it.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected an image file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    suffix = path.suffix.lower()
    try:
        if suffix in TIFF_SUFFIXES:
            array = _read_tiff(path, page)
        else:
            from PIL import Image

            with Image.open(path) as opened:
                img: Image.Image = opened
                if img.width * img.height > MAX_PIXELS:
                    raise DataError(
                        f"{path}: {img.width}x{img.height} is larger than the pixel limit {MAX_PIXELS} "
                        "(UNETKIT_MAX_PIXELS)"
                    )
                if img.mode == "P":
                    img = img.convert("RGBA" if "transparency" in img.info else "RGB")
                elif img.mode in ("1", "LA", "CMYK", "YCbCr"):
                    img = img.convert({"1": "L", "LA": "L", "CMYK": "RGB", "YCbCr": "RGB"}[img.mode])
                img.load()
                array = np.asarray(img)
    except DataError:
        raise
    except Exception as err:  # readers raise many types for corrupt data: report them as one
        raise DataError(f"{path}: cannot read image ({type(err).__name__}: {err})") from err
    if array.ndim not in (2, 3) or array.shape[0] == 0 or array.shape[1] == 0:
        raise DataError(f"{path}: expected a 2-D image (H, W) or (H, W, C), got shape {array.shape}")
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
