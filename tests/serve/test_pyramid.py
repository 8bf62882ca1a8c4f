"""The pyramids behind the page's zoom: every level as a hand-written reduction of the one above it, whatever
the bands the rows come in, for odd sizes too."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from unetkit.serve.pyramid import PREVIEW, LayerWriter, level_count, level_shape, read_window, row_bands


def _halve_by_hand(level: np.ndarray, reduce: str) -> np.ndarray:
    """Pixel by pixel: the mean of the 2 x 2 block (a lone last row or column pairs with itself), rounded; or its
    top-left pixel."""
    h, w = level.shape[:2]
    out = np.zeros(((h + 1) // 2, (w + 1) // 2, *level.shape[2:]), dtype=level.dtype)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            if reduce == "nearest":
                out[i, j] = level[2 * i, 2 * j]
                continue
            block = [
                level[min(2 * i + a, h - 1), min(2 * j + b, w - 1)].astype(np.float64) for a in (0, 1) for b in (0, 1)
            ]
            out[i, j] = np.rint(np.mean(block, axis=0))
    return out


@pytest.mark.parametrize("shape", [(7, 5), (1, 1), (2, 3), (9, 16), (12, 11, 3)])
@pytest.mark.parametrize("band", [1, 2, 3, 100])
@pytest.mark.parametrize("reduce", ["mean", "nearest"])
def test_levels_are_the_reductions_of_the_level_above(tmp_path, shape, band, reduce):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, size=shape).astype(np.uint8)
    levels = 4
    channels = shape[2] if len(shape) > 2 else 0
    writer = LayerWriter(tmp_path, "x", shape[0], shape[1], levels, np.uint8, channels=channels, reduce=reduce)
    for y0 in range(0, shape[0], band):
        writer.write(array[y0 : y0 + band])
    writer.close()
    expected = array
    for k in range(levels):
        got = np.load(tmp_path / f"x-{k}.npy")
        assert got.shape[:2] == level_shape(shape[0], shape[1], k)
        np.testing.assert_array_equal(got, expected)
        expected = _halve_by_hand(expected, reduce)


def test_levels_stop_at_the_preview_size():
    assert level_count(PREVIEW, PREVIEW) == 1
    assert level_count(PREVIEW + 1, 10) == 2
    assert level_count(8000, 8000) == 4  # 8000, 4000, 2000, 1000 (<= 1024)
    assert level_shape(8000, 7999, 3) == (1000, 1000)
    assert level_shape(5, 3, 2) == (2, 1)


def test_bands_cover_the_rows_once_in_even_steps():
    bands = list(row_bands(1001, 8000, 3))
    assert bands[0] == (0, 174) and bands[-1][1] == 1001  # 2**22 // 24000 = 174 rows per band
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bands))
    assert list(row_bands(3, 10**9)) == [(0, 2), (2, 3)]  # at least 2 rows per band


def test_incomplete_layers_and_windows(tmp_path):
    writer = LayerWriter(tmp_path, "y", 4, 4, 2, np.uint8)
    writer.write(np.zeros((3, 4), np.uint8))
    with pytest.raises(RuntimeError, match="3 rows written, expected 4"):
        writer.close()
    with pytest.raises(ValueError, match="`reduce` must be mean or nearest"):
        LayerWriter(tmp_path, "z", 4, 4, 1, np.uint8, reduce="max")
    array = np.arange(60, dtype=np.int32).reshape(6, 10)
    np.save(tmp_path / "w.npy", array)
    np.testing.assert_array_equal(read_window(tmp_path / "w.npy", 1, 4, 7, 12), array[1:4, 7:10])
