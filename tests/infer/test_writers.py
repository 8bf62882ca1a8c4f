"""Band writers: what they write, band by band in uneven bands, reads back exactly through Pillow,
tifffile and zarr; tiled TIFF is tiled, compressed BigTIFF; errors of the encoder thread reach the caller."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from unetkit.infer import writers
from unetkit.infer.writers import BackgroundSink, PngWriter, TiffWriter, TiledTiffWriter, ZarrWriter

HEIGHT, WIDTH = 300, 517
BANDS = (7, 100, 1, 150, 42)


def _write(writer, array):
    y = 0
    for h in BANDS:
        writer.write(array[:, y : y + h])
        y += h
    writer.close()


def _array(samples, dtype):
    return (np.random.default_rng(samples).random((samples, HEIGHT, WIDTH)) * 250).astype(dtype)


@pytest.mark.parametrize(("samples", "dtype"), [(1, np.uint8), (3, np.uint8), (1, np.uint16)])
def test_png_rows_read_back_through_pillow(tmp_path, samples, dtype):
    array = _array(samples, dtype)
    _write(PngWriter(tmp_path / "a.png", HEIGHT, WIDTH, samples, dtype), array)
    got = np.asarray(Image.open(tmp_path / "a.png"))
    np.testing.assert_array_equal(got, array[0] if samples == 1 else np.moveaxis(array, 0, -1))


@pytest.mark.parametrize(("samples", "dtype"), [(1, np.uint8), (2, np.float32)])
def test_uncompressed_tiff_is_planar(tmp_path, samples, dtype):
    array = _array(samples, dtype)
    _write(TiffWriter(tmp_path / "a.tif", HEIGHT, WIDTH, samples, dtype), array)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "a.tif"), array[0] if samples == 1 else array)


@pytest.mark.parametrize(("samples", "dtype"), [(1, np.uint16), (3, np.uint8), (2, np.float32)])
def test_tiled_tiff_is_compressed_bigtiff(tmp_path, samples, dtype):
    array = _array(samples, dtype)
    _write(TiledTiffWriter(tmp_path / "a.tif", HEIGHT, WIDTH, samples, dtype, tile=64), array)
    with tifffile.TiffFile(tmp_path / "a.tif") as tif:
        page = tif.pages[0]
        assert tif.is_bigtiff and page.is_tiled and page.compression == 8 and page.tilewidth == 64
        got = tif.asarray()
    np.testing.assert_array_equal(got, array[0] if samples == 1 else np.moveaxis(array, 0, -1))


def test_zarr_rows(tmp_path):
    zarr = pytest.importorskip("zarr")
    array = _array(2, np.float32)
    _write(ZarrWriter(tmp_path / "a.zarr", HEIGHT, WIDTH, 2, np.float32, tile=64), array)
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "a.zarr"))[:], array)


def test_open_writer_tiles_large_tiffs(tmp_path, monkeypatch):
    monkeypatch.setattr(writers, "LARGE_PIXELS", HEIGHT * WIDTH - 1)
    writer = writers.open_writer(tmp_path / "a.tif", "tif", HEIGHT, WIDTH, 1, np.uint8)
    assert isinstance(writer, TiledTiffWriter)
    writer.abort()
    monkeypatch.setattr(writers, "LARGE_PIXELS", HEIGHT * WIDTH)
    writer = writers.open_writer(tmp_path / "b.tif", "tif", HEIGHT, WIDTH, 1, np.uint8)
    assert isinstance(writer, TiffWriter)
    writer.abort()


def test_bands_must_continue_and_complete(tmp_path):
    writer = PngWriter(tmp_path / "a.png", 10, 4, 1, np.uint8)
    with pytest.raises(ValueError, match="does not continue row 0"):
        writer.write(np.zeros((1, 3, 5), np.uint8))
    writer.write(np.zeros((1, 3, 4), np.uint8))
    with pytest.raises(ValueError, match="3 of 10 rows written"):
        writer.close()
    writer.abort()


def test_an_error_in_the_writer_thread_reaches_the_caller():
    seen = []

    def consume(y0, y1, values):
        if y0 >= 2:
            raise OSError(28, "No space left on device")
        seen.append(y0)

    sink = BackgroundSink(consume)
    with pytest.raises(OSError, match="No space left"):
        for y in range(100):
            sink(y, y + 1, None)
        sink.close()
    assert seen == [0, 1]
