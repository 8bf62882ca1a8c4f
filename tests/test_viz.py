"""`unetkit.viz.class_overlay`: the image in grey at the given contrast, each class > 0 blended in its colour."""

from __future__ import annotations

import numpy as np

from unetkit.viz import TP, class_colours, class_overlay


def test_class_overlay_blends_each_class_colour_over_grey():
    image = np.array([[0.0, 10.0], [20.0, 30.0], [-5.0, 99.0]])
    classes = np.array([[0, 1], [2, 0], [0, 0]])
    picture = class_overlay(image, classes, 3, (0.0, 30.0))
    assert picture.shape == (3, 2, 3) and picture.dtype == np.uint8
    grey = [0, 85, 170, 255, 0, 255]  # (value - 0) / 30, clipped, times 255
    for (y, x), value in zip(np.ndindex(3, 2), grey, strict=True):
        if classes[y, x] == 0:
            assert tuple(picture[y, x]) == (value, value, value)
    assert tuple(picture[0, 1]) == (46, 136, 46)  # 0.55 * 85 + 0.45 * TP (0, 200, 0), truncated
    assert tuple(TP) == tuple(class_colours(3)[1])
    expected = (0.55 * 170 + 0.45 * class_colours(3)[2].astype(np.float64)).astype(np.uint8)
    np.testing.assert_array_equal(picture[1, 0], expected)
