"""Region readers: every TIFF layout users ship (tiled, striped, planar, BigTIFF, OME-TIFF pages as
channels, compressed, big-endian, float) and zarr give the pixels the whole-file readers give; PNGs too
large to decode whole are refused with the advice to convert them."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from unetkit.data import DataError
from unetkit.infer.readers import ArraySource, TiffSource, ZarrSource, open_source

RNG = np.random.default_rng(0)
GREY16 = RNG.integers(0, 65535, (301, 457)).astype(np.uint16)
RGB = RNG.integers(0, 255, (301, 457, 3)).astype(np.uint8)
LAYOUTS = {
    "tiled-zlib-bigtiff": (GREY16, dict(tile=(64, 128), compression="zlib", bigtiff=True)),
    "tiled-predictor": (GREY16, dict(tile=(64, 64), compression="zlib", predictor=True)),
    "striped-rgb-zlib": (RGB, dict(rowsperstrip=37, compression="zlib")),
    "uncompressed-contiguous": (GREY16, {}),
    "uncompressed-big-endian": (GREY16, dict(byteorder=">")),
    "uncompressed-strips-rgb": (RGB, dict(rowsperstrip=10)),
    "planar-rgb-tiled": (np.moveaxis(RGB, -1, 0), dict(tile=(64, 64), compression="zlib", photometric="rgb")),
    "float-lzma": (GREY16.astype(np.float32) / 7, dict(tile=(32, 32), compression="lzma")),
}
REGIONS = [(0, 301, 0, 457), (17, 250, 63, 400), (300, 301, 456, 457), (64, 128, 64, 192)]


def _chw(array):
    return array[None] if array.ndim == 2 else (array if array.shape[0] == 3 else np.moveaxis(array, -1, 0))


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_tiff_regions_equal_the_whole_file(tmp_path, layout):
    array, options = LAYOUTS[layout]
    path = tmp_path / "img.tif"
    tifffile.imwrite(path, array, **options)
    with open_source(path) as source:
        assert isinstance(source, TiffSource)
        expected = _chw(tifffile.imread(path))
        assert (source.channels, source.height, source.width) == (expected.shape[0], 301, 457)
        for y0, y1, x0, x1 in REGIONS * 2:  # twice: the second pass comes from the segment cache
            np.testing.assert_array_equal(source.region(y0, y1, x0, x1), expected[:, y0:y1, x0:x1])


def test_ome_tiff_pages_are_channels(tmp_path):
    stack = np.stack([GREY16, GREY16 // 3])
    path = tmp_path / "img.ome.tif"
    tifffile.imwrite(path, stack, tile=(64, 64), compression="zlib", metadata={"axes": "CYX"})
    with open_source(path, expected=2) as source:
        assert isinstance(source, TiffSource) and source.channels == 2
        np.testing.assert_array_equal(source.region(5, 200, 100, 300), stack[:, 5:200, 100:300])


def test_reader_mirrors_indices_and_scales_by_dtype(tmp_path):
    path = tmp_path / "img.tif"
    tifffile.imwrite(path, GREY16, tile=(64, 64), compression="zlib")
    with open_source(path) as source:
        rows, cols = np.array([1, 0, 1, 2]), np.array([3, 2, 1, 0, 1])
        np.testing.assert_array_equal(source.read(rows, cols).numpy()[0], GREY16[np.ix_(rows, cols)])
        assert source.scale == pytest.approx(1 / 65535)


def test_zarr_store(tmp_path):
    zarr = pytest.importorskip("zarr")
    path = tmp_path / "img.zarr"
    store = zarr.create_array(str(path), shape=RGB.shape, chunks=(64, 64, 3), dtype="uint8")
    store[:] = RGB
    with open_source(path, expected=3) as source:
        assert isinstance(source, ZarrSource)
        np.testing.assert_array_equal(source.region(10, 20, 30, 400), np.moveaxis(RGB, -1, 0)[:, 10:20, 30:400])


def test_png_over_the_whole_read_limit_is_refused_with_advice(tmp_path, monkeypatch):
    from unetkit.infer import readers

    path = tmp_path / "big.png"
    Image.fromarray(RGB).save(path)
    monkeypatch.setattr(readers, "WHOLE_READ_PIXELS", 1000)
    expected = r"big\.png: a 301x457 \(HxW\) PNG is decoded whole .* convert it to a tiled TIFF"
    with pytest.raises(DataError, match=expected):
        open_source(path)
    monkeypatch.setattr(readers, "WHOLE_READ_PIXELS", 10**9)
    with open_source(path) as source:
        assert isinstance(source, ArraySource)
        np.testing.assert_array_equal(source.region(0, 301, 0, 457), np.moveaxis(RGB, -1, 0))


def test_nan_in_a_region_and_a_corrupt_tile_name_the_file(tmp_path):
    array = np.zeros((128, 128), np.float32)
    array[100, 5] = np.nan
    path = tmp_path / "nan.tif"
    tifffile.imwrite(path, array, tile=(64, 64), compression="zlib")
    with open_source(path) as source:
        source.region(0, 64, 0, 128)  # the NaN is in the next tile row
        with pytest.raises(DataError, match=r"nan\.tif: contains NaN"):
            source.region(64, 128, 0, 128)
    broken = tmp_path / "broken.tif"
    tifffile.imwrite(broken, GREY16, tile=(64, 64), compression="zlib")
    with tifffile.TiffFile(broken) as tif:
        offset = int(tif.pages[0].dataoffsets[3])
    data = bytearray(broken.read_bytes())
    data[offset : offset + 40] = b"\xff" * 40
    broken.write_bytes(bytes(data))
    with open_source(broken) as source, pytest.raises(DataError, match=r"broken\.tif: cannot read image"):
        source.region(0, 64, 0, 457)


def test_a_1_bit_tiff_is_read_not_refused_as_damaged(tmp_path):
    """A bilevel TIFF stores 8 pixels a byte: its header's size is not 8 times what the file holds."""
    import tifffile

    from unetkit.data.io import read_image
    from unetkit.infer.readers import open_source

    picture = np.zeros((40, 50), bool)
    picture[5:20, 5:30] = True
    tifffile.imwrite(tmp_path / "bit.tif", picture)
    np.testing.assert_array_equal(read_image(tmp_path / "bit.tif"), picture)
    with open_source(tmp_path / "bit.tif", 1) as source:
        np.testing.assert_array_equal(source.region(0, 40, 0, 50)[0], picture)
