"""Tiles of each layer, pixel by pixel on hand-made maps: class colours, the demo's error colours, the
probability scale, and instance outlines that do not appear where a tile cuts an object."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from unetkit.serve.paths import Refused
from unetkit.serve.render import OUTLINE, class_colours, render_tile, tile_box
from unetkit.serve.view import View
from unetkit.viz import FN, FP, TP


def _view(tmp_path, layers: dict[str, np.ndarray], num_classes: int = 2, tile: int = 256) -> View:
    for name, array in layers.items():
        np.save(tmp_path / f"{name}-0.npy", array)
    height, width = next(iter(layers.values())).shape[:2]
    return View(tmp_path, height, width, 1, num_classes, layers=list(layers), tile=tile)


def _decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def test_class_colours():
    assert tuple(class_colours(2)[1]) == TP  # the overlays' foreground green
    colours = class_colours(6)
    assert len({tuple(c) for c in colours[1:]}) == 5


def test_mask_errors_and_probability_tiles(tmp_path):
    classes = np.array([[0, 1, 2], [2, 0, 1]], np.uint8)
    truth = np.array([[0, 1, 0], [1, 1, 0]], np.uint16)
    probs = np.array([[[0], [255], [128]], [[1], [2], [3]]], np.uint8)
    view = _view(tmp_path, {"classes": classes, "truth": truth, "probs": probs}, num_classes=3)
    mask = _decode(render_tile(view, "mask", 0, 0, 0))
    colours = class_colours(3)
    assert mask.shape == (2, 3, 4)
    assert list(mask[0, 0]) == [0, 0, 0, 0] and list(mask[0, 1]) == [*colours[1], 255]
    assert list(mask[1, 0]) == [*colours[2], 255]
    errors = _decode(render_tile(view, "errors", 0, 0, 0))
    # pred fg: (0,1) (0,2) (1,0) (1,2); truth fg: (0,1) (1,0) (1,1)
    assert list(errors[0, 1]) == [*TP, 255] and list(errors[1, 0]) == [*TP, 255]
    assert list(errors[0, 2]) == [*FP, 255] and list(errors[1, 2]) == [*FP, 255]
    assert list(errors[1, 1]) == [*FN, 255]
    assert errors[0, 0, 3] == 0
    shown = _decode(render_tile(view, "probs", 0, 0, 0, channel=1))
    from matplotlib import colormaps

    viridis = colormaps["viridis"]
    assert list(shown[0, 0]) == [round(v * 255) for v in viridis(0.0)[:3]]
    assert list(shown[0, 1]) == [round(v * 255) for v in viridis(1.0)[:3]]
    with pytest.raises(Refused):
        render_tile(view, "probs", 0, 0, 0, channel=3)
    for args in (("outlines", 0, 0, 0), ("image", 0, 0, 0), ("mask", 1, 0, 0), ("mask", 0, 1, 0), ("mask", 0, 0, -1)):
        with pytest.raises(Refused):
            render_tile(view, *args)


def test_outlines_are_object_borders_not_tile_cuts(tmp_path):
    labels = np.zeros((6, 8), np.int32)
    labels[1:5, 1:7] = 3  # one object, 4 x 6, across the two 4-pixel-wide tiles
    view = _view(tmp_path, {"instances": labels}, tile=4)
    left, right = (_decode(render_tile(view, "outlines", 0, 0, tx))[..., 3] > 0 for tx in (0, 1))
    edge = np.concatenate([left, right], axis=1)[:4]
    ring = np.zeros((6, 8), bool)
    ring[1:5, 1:7] = True
    ring[2:4, 2:6] = False
    np.testing.assert_array_equal(edge, ring[:4])
    assert tuple(_decode(render_tile(view, "outlines", 0, 0, 0))[1, 1, :3]) == OUTLINE
    bottom = _decode(render_tile(view, "outlines", 0, 1, 0))[..., 3] > 0
    np.testing.assert_array_equal(bottom, ring[4:6, :4])
    assert tile_box(view, 0, 1, 1) == (4, 6, 4, 8)
