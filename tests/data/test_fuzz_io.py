"""Fuzzing the image and mask readers with hypothesis: random bytes under every suffix, mutated valid PNG /
JPEG / BMP / TIFF files (byte flips, cuts, insertions, and PNG headers with valid checksums but random sizes
and pixel formats) and odd arrays (every dtype, 0 to 5 dimensions, empty sides) written as TIFF. Whatever
the file, `read_image` and the mask reader return a 2-D or 3-D array of real numbers with at least one
pixel, or raise `DataError` naming the file; nothing else escapes.

The default run tries a few hundred files in a few seconds; `pytest -m slow` tries tens of thousands.
"""

from __future__ import annotations

import io
import struct
import tempfile
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from unetkit.data import io as data_io
from unetkit.data.errors import DataError
from unetkit.data.io import IMAGE_SUFFIXES, read_image
from unetkit.data.masks import read_mask

# examples per test: the default run, and `-m slow`
RUNS = [pytest.param(60, id="quick"), pytest.param(4000, id="long", marks=pytest.mark.slow)]
FUZZ_PIXELS = 1 << 20  # the pixel limit while fuzzing: a mutated header may ask for any size
DTYPES = ["bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "float16", "float32", "float64"]


@pytest.fixture(autouse=True)
def _small_limit(monkeypatch):
    monkeypatch.setattr(data_io, "MAX_PIXELS", FUZZ_PIXELS)


def _check(path: Path) -> None:
    """The readers' contract on one file."""
    for reader in (read_image, read_mask):
        try:
            array = reader(path)
        except DataError as err:
            assert str(path) in str(err) and "\n" not in str(err)
            continue
        assert array.ndim in (2, 3) and array.shape[0] >= 1 and array.shape[1] >= 1
        assert array.dtype.kind in "biuf"
        assert array.shape[0] * array.shape[1] <= FUZZ_PIXELS
        if array.dtype.kind == "f":
            assert np.isfinite(array).all()


def _write(folder: str, name: str, data: bytes) -> Path:
    path = Path(folder) / name
    path.write_bytes(data)
    return path


def _encode(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    if fmt == "TIFF":
        tifffile.imwrite(buffer, array)
    else:
        Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


VALID = {  # a small valid file of each format, as the seed of mutations
    ".png": _encode(np.arange(48, dtype=np.uint8).reshape(6, 8), "PNG"),
    ".jpg": _encode(np.arange(48, dtype=np.uint8).reshape(6, 8), "JPEG"),
    ".bmp": _encode(np.zeros((6, 8, 3), np.uint8), "BMP"),
    ".tif": _encode(np.arange(48, dtype=np.uint16).reshape(6, 8), "TIFF"),
    ".tiff": _encode(np.zeros((2, 6, 8), np.float32), "TIFF"),
}


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid file with random bytes flipped, a random cut and random bytes inserted."""
    suffix = draw(st.sampled_from(sorted(VALID)))
    data = bytearray(VALID[suffix])
    for _ in range(draw(st.integers(0, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    if draw(st.booleans()):
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.binary(max_size=16))
    return suffix, bytes(data)


@st.composite
def png_headers(draw: st.DrawFn) -> bytes:
    """A PNG whose header chunk has random sizes, bit depth, colour type and flags, with valid checksums, so
    the decoder gets past the checks and into allocation and decoding."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    width = draw(st.one_of(st.integers(0, 64), st.integers(0, 2**31 - 1)))
    height = draw(st.one_of(st.integers(0, 64), st.integers(0, 2**31 - 1)))
    depth = draw(st.sampled_from([0, 1, 2, 4, 8, 16, 3, 32]))
    colour = draw(st.sampled_from([0, 2, 3, 4, 6, 1, 7]))
    flags = draw(st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 2)))
    header = struct.pack(">IIBBBBB", width, height, depth, colour, *flags)
    body = draw(st.binary(max_size=256))
    idat = zlib.compress(body) if draw(st.booleans()) else body
    extra = chunk(b"PLTE", draw(st.binary(max_size=30))) if colour == 3 and draw(st.booleans()) else b""
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + extra + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize("examples", RUNS)
def test_random_bytes_under_every_suffix(examples):
    with tempfile.TemporaryDirectory() as folder:

        @settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(
            data=st.binary(max_size=512),
            suffix=st.sampled_from([*IMAGE_SUFFIXES, ".PNG", ".gif", ""]),
            magic=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"BM"]),
        )
        def run(data: bytes, suffix: str, magic: bytes) -> None:
            _check(_write(folder, f"f{suffix}", magic + data))  # a signature gets past the format check

        run()


@pytest.mark.parametrize("examples", RUNS)
def test_mutated_valid_files(examples):
    with tempfile.TemporaryDirectory() as folder:

        @settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(case=mutated())
        def run(case: tuple[str, bytes]) -> None:
            suffix, data = case
            _check(_write(folder, f"m{suffix}", data))

        run()


@pytest.mark.parametrize("examples", RUNS)
def test_png_headers_with_valid_checksums(examples):
    with tempfile.TemporaryDirectory() as folder:

        @settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(data=png_headers())
        def run(data: bytes) -> None:
            _check(_write(folder, "h.png", data))

        run()


@pytest.mark.parametrize("examples", RUNS)
def test_odd_arrays_as_tiff(examples):
    with tempfile.TemporaryDirectory() as folder:

        @settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(
            array=hnp.arrays(
                dtype=st.sampled_from(DTYPES),
                shape=hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=5),
            ),
            special=st.sampled_from([None, np.nan, np.inf, -np.inf]),
        )
        def run(array: np.ndarray, special: float | None) -> None:
            if special is not None and array.dtype.kind == "f" and array.size:
                array = array.copy()
                array.flat[0] = special
            path = Path(folder) / "a.tif"
            try:
                with warnings.catch_warnings():  # tifffile's notes on zero-size and RGB-looking arrays
                    warnings.simplefilter("ignore")
                    tifffile.imwrite(path, array)
            except Exception:  # what tifffile cannot write is not a reader's problem
                return
            _check(path)

        run()


def test_odd_arrays_cover_the_refusals(tmp_path):
    """The cases the array fuzzing is meant to reach, each refused with its own message."""
    cases = {
        "empty": (np.zeros((0, 4), np.uint8), "expected at least 1x1"),
        "nan": (np.array([[0.0, np.nan]], np.float32), "NaN or infinite"),
        "4-d": (np.zeros((2, 2, 3, 4), np.uint8), "expected a 2-D image"),
        "1-d": (np.zeros(5, np.uint8), "expected a 2-D image"),
    }
    for name, (array, message) in cases.items():
        path = tmp_path / f"{name}.tif"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tifffile.imwrite(path, array)
        with pytest.raises(DataError, match=message):
            read_image(path)
