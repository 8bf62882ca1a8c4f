"""The pyramids of a prediction, level 0 checked against the files `unetkit predict` wrote and against the
package's own display stretch (`display_image`, the overlays' contrast), on a 16-bit TIFF of odd size."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from unetkit.infer.files import predict_file
from unetkit.infer.predictor import Predictor
from unetkit.metrics.masks import read_mask
from unetkit.models.checkpoint import load_model
from unetkit.serve._infer import open_source
from unetkit.serve.view import build_view, class_map
from unetkit.viz import display_image


def test_level_zero_is_the_predicted_files(runs_root, tmp_path):
    rng = np.random.default_rng(1)
    image = tmp_path / "scan.tif"
    pixels = (rng.random((157, 301)) * 30000 + np.linspace(0, 20000, 301)).astype(np.uint16)
    tifffile.imwrite(image, pixels)
    model = load_model(runs_root / "narrow")
    written = predict_file(Predictor(model), image, tmp_path / "out", probs=True, instances="components")
    truth = (pixels > 30000).astype(np.int64)
    calls: list[tuple[int, int]] = []
    view = build_view(
        image, written, tmp_path / "view", num_classes=2, label_values=[0, 1], truth=truth,
        progress=lambda done, total: calls.append((done, total)),
    )  # fmt: skip
    assert (view.height, view.width, view.levels) == (157, 301, 1)
    assert view.layers == ["image", "classes", "probs", "instances", "truth"]
    assert calls[-1][0] == calls[-1][1] == len(calls)
    level = {name: np.load(tmp_path / "view" / f"{name}-0.npy") for name in view.layers}
    with open_source(image, None) as source:  # the predictor's reader: the file's own values, (1, H, W)
        raw = source.region(0, 157, 0, 301)
    np.testing.assert_array_equal(raw[0], pixels)
    np.testing.assert_array_equal(level["image"], display_image(raw))
    np.testing.assert_array_equal(level["classes"], read_mask(written["mask"]))
    probs = tifffile.imread(written["probs"])
    np.testing.assert_array_equal(level["probs"][..., 0], np.rint(probs[1] * 255).astype(np.uint8))
    np.testing.assert_array_equal(level["instances"], tifffile.imread(written["instances"]))
    np.testing.assert_array_equal(level["truth"], truth)


def test_label_values_map_to_classes():
    table = class_map([0, 128, 255], 3)
    assert table is not None and list(table[[0, 128, 255]]) == [0, 1, 2]
    assert class_map(None, 2) is None
    with pytest.raises(ValueError, match=r"outside 0\.\.65535"):
        class_map([0, 70000], 2)
