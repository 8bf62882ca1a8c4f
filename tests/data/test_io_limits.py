"""`unetkit.data.io` decode limits: the pixel limit (lower for images decoded whole than for uncompressed
TIFF), the bound on what a file's bytes can expand to, and PNG pixel data counted before decoding. Real files
of every kind must still read; the refusals themselves are catalogue cases (tests/cli/test_bad_inputs_resources.py)."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image

from tests.cli.faults import png_made
from unetkit.data import io as data_io
from unetkit.data.errors import DataError
from unetkit.data.io import MAX_COMPRESSION_RATIO, check_decode_size, pixel_limit, read_image, write_image


def test_the_default_limits():
    assert data_io.MAX_PIXELS == 2**28  # 16384 x 16384 decoded whole
    assert pixel_limit(True) == 2**28 and pixel_limit(False) == 2**30  # uncompressed TIFF: 4x


def test_check_decode_size_at_its_bounds():
    check_decode_size("a.png", 1000, 1032, bits_per_pixel=8, file_bytes=1000)  # exactly 1032:1
    with pytest.raises(
        DataError, match=r"a\.png: its header claims 1033x1000 pixels \(1,033,000 bytes\), more than its 1,000"
    ):
        check_decode_size("a.png", 1000, 1033, bits_per_pixel=8, file_bytes=1000)
    check_decode_size("a.tif", 100, 100, bits_per_pixel=8, file_bytes=10_000, max_ratio=1, compressed=False)
    with pytest.raises(DataError, match=r"\(1:1 at most\)"):
        check_decode_size("a.tif", 100, 101, bits_per_pixel=8, file_bytes=10_000, max_ratio=1, compressed=False)
    check_decode_size("a.tif", 10**4, 10**4, bits_per_pixel=8, file_bytes=10, max_ratio=None)  # zstd: limit only
    with pytest.raises(DataError, match=r"b\.png: 16385x16384 is larger than the pixel limit 268435456 \(convert it\)"):
        check_decode_size("b.png", 16384, 16385, bits_per_pixel=8, file_bytes=2**40, advice="convert it")


@pytest.mark.parametrize("mode", ["L", "1", "RGB", "I;16", "P"])
def test_all_zero_pngs_the_most_compressible_files_still_read(tmp_path, mode):
    side = 2048
    path = tmp_path / "zeros.png"
    Image.new(mode, (side, side)).save(path, optimize=True)  # Pillow at its strongest compression
    bits = path.read_bytes()[24] * {"1": 1, "L": 1, "P": 1, "RGB": 3, "I;16": 1}[mode]  # IHDR bit depth x samples
    ratio = side * side * bits / 8 / path.stat().st_size
    assert ratio < MAX_COMPRESSION_RATIO  # deflate cannot go beyond it
    assert read_image(path).shape[:2] == (side, side)


def test_a_sparse_label_mask_reads(tmp_path):
    mask = np.zeros((4096, 4096), np.uint8)
    mask[100:140, 200:260] = 255
    write_image(tmp_path / "mask.png", mask)
    np.testing.assert_array_equal(read_image(tmp_path / "mask.png"), mask)


def test_a_complete_interlaced_png_reads_with_its_pixels(tmp_path):
    """Adam7 data of the full length (7 passes over an 8 x 8 grey image, filter 0, value = 10 * pass)."""
    passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
    raw, expected = b"", np.zeros((8, 8), np.uint8)
    for k, (x0, y0, dx, dy) in enumerate(passes):
        w, h = len(range(x0, 8, dx)), len(range(y0, 8, dy))
        raw += (b"\x00" + bytes([10 * (k + 1)]) * w) * h
        expected[y0::dy, x0::dx] = 10 * (k + 1)
    assert len(raw) == data_io._png_data_bytes(8, 8, 8, 0, True)
    (tmp_path / "i.png").write_bytes(png_made(8, 8, zlib.compress(raw), interlace=1))
    np.testing.assert_array_equal(read_image(tmp_path / "i.png"), expected)


def test_pngs_with_several_idat_chunks_and_16_bit_samples_read(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 65535, (300, 200), dtype=np.uint16)
    write_image(tmp_path / "a.png", image)
    data = (tmp_path / "a.png").read_bytes()
    assert data.count(b"IDAT") > 1  # Pillow splits large data into several chunks
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), image)


def test_uncompressed_tiff_has_the_larger_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(data_io, "MAX_PIXELS", 1000)
    image = np.arange(1600, dtype=np.uint16).reshape(40, 40)
    tifffile.imwrite(tmp_path / "plain.tif", image)
    tifffile.imwrite(tmp_path / "zlib.tif", image, compression="zlib")
    np.testing.assert_array_equal(read_image(tmp_path / "plain.tif"), image)  # 1600 <= 4 x 1000
    with pytest.raises(DataError, match=r"zlib\.tif: shape \(40, 40\) \(YX\) is larger than the pixel limit 1000"):
        read_image(tmp_path / "zlib.tif")
    buffer = io.BytesIO()
    Image.fromarray(image.astype(np.uint8)).save(buffer, "PNG")
    (tmp_path / "a.png").write_bytes(buffer.getvalue())
    with pytest.raises(DataError, match=r"a\.png: 40x40 is larger than the pixel limit 1000"):
        read_image(tmp_path / "a.png")
