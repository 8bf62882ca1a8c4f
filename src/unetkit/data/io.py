"""Image reading and writing through well-kept readers: Pillow for PNG/JPEG/BMP, tifffile for TIFF.

Arrays come back as `(H, W)` or `(H, W, C)` in the file's own dtype (uint8, uint16, float32, ...).
Every error names the file. Writes are atomic: a temporary file in the same folder, fsync, rename.

Before any pixel is decoded, `check_decode_size` (the one rule, also for readers of large images) refuses
an image whose header claims more pixels than the limit, or more pixel bytes than its file could hold at
the format's largest possible compression (a truncated or forged file). A PNG's pixel data is also
inflated and counted before Pillow decodes it: Pillow takes a zlib stream that ends early as complete
and fills the missing rows with zeros.
"""

from __future__ import annotations

import math
import os
import struct
import threading
import zlib
from pathlib import Path

import numpy as np

from unetkit._fs import atomic_file
from unetkit.data.errors import DataError

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_PIXELS",
    "check_decode_size",
    "pixel_limit",
    "read_image",
    "sniff_format",
    "write_image",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
TIFF_SUFFIXES = (".tif", ".tiff")
# decompression-bomb guard: images decoded whole into memory (PNG, JPEG, BMP, compressed TIFF) may have at
# most this many pixels (2**28: 16384 x 16384) unless raised with the environment variable UNETKIT_MAX_PIXELS
MAX_PIXELS = int(os.environ.get("UNETKIT_MAX_PIXELS", 2**28))
# an uncompressed TIFF holds every pixel in the file (its size is its memory) and predict maps it from disk:
# this many times the limit
UNCOMPRESSED_FACTOR = 4
# the most a file's bytes can expand into pixel bytes: deflate codes a 258-byte match in 2 bits at best
# (1032:1); PNG, JPEG and BMP (RLE) are held to it, TIFF to its compression's own bound
MAX_COMPRESSION_RATIO = 1032
_TIFF_RATIO = {1: 1, 8: MAX_COMPRESSION_RATIO, 32946: MAX_COMPRESSION_RATIO, 32773: 64}  # none, deflate, PackBits
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
_PILLOW_BITS = {"1": 1, "L": 8, "P": 8, "LA": 16, "RGB": 24, "RGBA": 32, "CMYK": 32, "YCbCr": 24, "I;16": 16}
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


def pixel_limit(compressed: bool = True) -> int:
    """The most pixels an image may have: `MAX_PIXELS` when decoded whole, more for uncompressed TIFF."""
    return MAX_PIXELS if compressed else MAX_PIXELS * UNCOMPRESSED_FACTOR


def check_decode_size(
    path: str | Path,
    height: int,
    width: int,
    *,
    bits_per_pixel: int,
    file_bytes: int,
    max_ratio: int | None = MAX_COMPRESSION_RATIO,
    compressed: bool = True,
    advice: str = "raise it with UNETKIT_MAX_PIXELS",
    whole: bool = True,
) -> None:
    """Refuse, from its header and before decoding, an image that is too large or claims more than its file holds.

    Args:
        path: the file (named in the error).
        height, width: the size its header claims.
        bits_per_pixel: bits of one pixel as the format stores it (all channels).
        file_bytes: the file's size.
        max_ratio: the most its bytes can expand (`MAX_COMPRESSION_RATIO`, 1 for uncompressed data, None
            for a compression without a bound).
        compressed: decoded whole into memory (`MAX_PIXELS`), or uncompressed (`pixel_limit(False)`).
        advice: what the error suggests for an image over the limit.
        whole: the image is to be decoded whole; False (read region by region) checks only what the file
            can hold, not the pixel limit.

    Raises:
        DataError: over `pixel_limit(compressed)`, or more pixel bytes than `max_ratio * file_bytes`.
    """
    limit = pixel_limit(compressed)
    if whole and height * width > limit:
        raise DataError(f"{path}: {width}x{height} is larger than the pixel limit {limit} ({advice})")
    claimed = height * width * bits_per_pixel / 8
    if max_ratio is not None and claimed > max_ratio * file_bytes:
        raise DataError(
            f"{path}: its header claims {width}x{height} pixels ({claimed:,.0f} bytes), more than its "
            f"{file_bytes:,} bytes can hold ({max_ratio}:1 at most); the file is truncated or damaged"
        )


def _too_large(path: Path, size: str, limit: int) -> DataError:
    return DataError(f"{path}: {size} is larger than the pixel limit {limit} (raise it with UNETKIT_MAX_PIXELS)")


def _png_data_bytes(width: int, height: int, bit_depth: int, colour_type: int, interlaced: bool) -> int:
    """Bytes of filtered scanlines a PNG's IDAT stream must inflate to (PNG spec, sections 7.2 and 8.2)."""
    bits = bit_depth * _PNG_CHANNELS.get(colour_type, 4)
    if not interlaced:
        return height * (1 + (width * bits + 7) // 8)
    total = 0
    for x0, y0, dx, dy in (
        (0, 0, 8, 8),
        (4, 0, 8, 8),
        (0, 4, 4, 8),
        (2, 0, 4, 4),
        (0, 2, 2, 4),
        (1, 0, 2, 2),
        (0, 1, 1, 2),
    ):
        w, h = (width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy  # Adam7 pass sizes
        total += h * (1 + (w * bits + 7) // 8) if w and h else 0
    return total


def _check_png_data(path: Path) -> None:
    """Inflate the IDAT chunks (in bounded steps, up to the size the header promises) and count: a stream
    that ends before that size, or data that stops before it, is refused as truncated."""
    with open(path, "rb") as file:
        file.seek(8)
        length, kind = struct.unpack(">I4s", file.read(8))
        header = file.read(length)
        if kind != b"IHDR" or len(header) < 13:
            return  # Pillow reports the malformed header
        width, height, bit_depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", header[:13])
        expected = _png_data_bytes(width, height, bit_depth, colour_type, interlace == 1)
        file.seek(4, os.SEEK_CUR)  # CRC
        inflate, got = zlib.decompressobj(), 0
        while got < expected:
            head = file.read(8)
            if len(head) < 8:
                break
            length, kind = struct.unpack(">I4s", head)
            if kind == b"IEND":
                break
            if kind != b"IDAT":
                file.seek(length + 4, os.SEEK_CUR)
                continue
            chunk = file.read(length)
            file.seek(4, os.SEEK_CUR)
            try:
                for start in range(0, len(chunk), 1 << 16):  # 64 KiB in, at most 1 MiB out at a time
                    data = chunk[start : start + (1 << 16)]
                    while data and not inflate.eof and got < expected:
                        got += len(inflate.decompress(data, 1 << 20))
                        data = inflate.unconsumed_tail
            except zlib.error as err:
                raise DataError(f"{path}: cannot read image (damaged pixel data: {err})") from err
    if got < expected:
        raise DataError(
            f"{path}: cannot read image (truncated pixel data: {got:,} of the {expected:,} bytes its {width}x{height} "
            "header promises)"
        )


def _read_tiff(path: Path, page: int | None) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        shape, axes = tuple(series.shape), str(series.axes)
        pixels = math.prod(n for n, axis in zip(shape, axes, strict=False) if axis in "YX")
        compression = int(tif.pages[0].compression)
        limit = pixel_limit(compression != 1)
        if pixels > limit or math.prod(shape) > limit * MAX_VALUES_PER_PIXEL:
            raise _too_large(path, f"shape {shape} ({axes})", limit)
        sides = dict(zip(axes, shape, strict=False))
        bits = int(getattr(tif.pages[0], "bitspersample", 8) or 8)  # as stored: 1 for a bilevel (bool) image
        stored = bits if bits < 8 else np.dtype(series.dtype).itemsize * 8
        check_decode_size(  # the limit is checked above (with the shape); here what the file can hold
            path,
            int(sides.get("Y", 1)),
            int(sides.get("X", 1)),
            bits_per_pixel=math.prod(shape) * stored // max(pixels, 1),
            file_bytes=path.stat().st_size,
            max_ratio=_TIFF_RATIO.get(compression),
            compressed=compression != 1,
        )
        if page is not None and not 0 <= page < len(tif.pages):
            raise DataError(f"{path}: `page` {page} out of range, the file has {len(tif.pages)} page(s)")
        array = tif.pages[page].asarray() if page is not None else series.asarray()
    # multi-page grey stacks come as (pages, H, W): keep pages as channels, (H, W, pages)
    if array.ndim == 3 and array.shape[0] < array.shape[-1] and array.shape[0] <= 16 and array.shape[-1] > 4:
        array = np.moveaxis(array, 0, -1)
    return array


def _pillow_bits(img: object, path: Path) -> int:
    """Bits per pixel as the file stores them: a PNG's from its header, others' from Pillow's mode."""
    if getattr(img, "format", None) == "PNG":
        with open(path, "rb") as file:
            header = file.read(26)
        bit_depth, colour_type = header[24], header[25]
        return bit_depth * _PNG_CHANNELS.get(colour_type, 4)
    mode = str(getattr(img, "mode", "RGBA"))
    return _PILLOW_BITS.get(mode, 32)


def _read_pillow(path: Path, fmt: str, keep_palette: bool = False) -> np.ndarray:
    from PIL import Image

    size = path.stat().st_size
    with _PILLOW_LIMIT:  # our limit replaces Pillow's (89 MP warning, 179 MP error)
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            opened = Image.open(path, formats=[fmt])  # only the format the file announces: no other plugin runs
        finally:
            Image.MAX_IMAGE_PIXELS = limit
    with opened:
        img: Image.Image = opened
        check_decode_size(path, img.height, img.width, bits_per_pixel=_pillow_bits(img, path), file_bytes=size)
        if fmt == "PNG":
            _check_png_data(path)
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
