"""Masks as users ship them: palette PNGs, ignore values, instance label images and the `auto` decision."""

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unetkit.data.errors import DataError
from unetkit.data.folder import load_folder
from unetkit.data.io import write_image
from unetkit.data.masks import class_targets, mask_evidence, read_mask, resolve_mask_mode
from unetkit.data.realistic import voc_palette
from unetkit.data.types import MaskInfo


def _palette_png(path, indices):
    picture = Image.fromarray(indices.astype(np.uint8), mode="P")
    picture.putpalette(voc_palette().ravel().tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)


def _labels(n_objects: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """Non-touching square objects with ids 1..n."""
    labels = np.zeros((size, size), np.uint16)
    rng = np.random.default_rng(seed)
    placed = 0
    while placed < n_objects:
        y, x = rng.integers(0, size - 4, 2)
        if labels[max(y - 1, 0) : y + 5, max(x - 1, 0) : x + 5].any():
            continue
        placed += 1
        labels[y : y + 4, x : x + 4] = placed
    return labels


def test_palette_png_is_read_as_indices_not_colours(tmp_path):
    indices = np.array([[0, 1, 8], [15, 255, 0]])
    _palette_png(tmp_path / "m.png", indices)
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), indices)
    # VOC's colour for class 1 is (128, 0, 0): read as colours it would be refused as a colour mask
    assert tuple(voc_palette()[1]) == (128, 0, 0) and tuple(voc_palette()[15]) == (192, 128, 128)


def test_ignore_index_pixels_are_invalid_and_no_class(tmp_path):
    for name in ("a", "b"):
        write_image(tmp_path / "images" / f"{name}.png", np.zeros((4, 4), np.uint8))
    _palette_png(tmp_path / "masks" / "a.png", np.array([[0, 0, 1, 1], [0, 255, 255, 1], [8, 8, 0, 0], [0] * 4]))
    _palette_png(tmp_path / "masks" / "b.png", np.array([[0] * 4, [0, 15, 15, 0], [0, 255, 0, 0], [0] * 4]))
    splits, info = load_folder(tmp_path, val_fraction=0, ignore_index=255)
    assert (info.mode, info.label_values, info.ignore_index) == ("classes", [0, 1, 8, 15], 255)
    a = splits["train"].targets[0]
    np.testing.assert_array_equal(a[0], [0, 0, 1, 1])
    np.testing.assert_array_equal(a[1], [0, 0, 0, 1])  # ignored pixels: class 0 ...
    assert splits["train"].fov is not None
    np.testing.assert_array_equal(splits["train"].fov[0][1], [True, False, False, True])  # ... and invalid
    assert splits["train"].fov[1].sum() == 15
    _, info = load_folder(tmp_path, val_fraction=0)
    assert (info.label_values, info.ignore_index) == ([0, 1, 8, 15], 255)  # auto: VOC's void border, ignored
    assert "PASCAL VOC's void border" in info.reason
    _, info = load_folder(tmp_path, val_fraction=0, mask_mode="classes")
    assert info.label_values == [0, 1, 8, 15, 255]  # asked for classes: the border is a class of its own


def test_auto_recognises_instance_label_images_and_says_why(tmp_path, caplog):
    for i in range(3):
        write_image(tmp_path / "images" / f"n{i}.tif", np.zeros((64, 64), np.uint16))
        write_image(tmp_path / "masks" / f"n{i}.tif", _labels(30 + i, seed=i))  # 30-32 ids: once "31 classes"
    with caplog.at_level(logging.INFO, logger="unetkit.data.masks"):
        splits, info = load_folder(tmp_path, val_fraction=0)
    assert (info.mode, info.num_classes) == ("instances", 2)
    line = next(r.getMessage() for r in caplog.records if "masks read as" in r.getMessage())
    assert "instance labels" in line and "30-32 ids" in line and "100% of ids one connected blob" in line
    assert "--mask-mode" in line and "'classes'" in line  # the flag that overrides it
    np.testing.assert_array_equal(splits["train"].instances[0], _labels(30, seed=0))
    np.testing.assert_array_equal(splits["train"].targets[0], _labels(30, seed=0) > 0)


def test_ambiguous_mask_warns_naming_the_file_and_both_readings(tmp_path, caplog):
    write_image(tmp_path / "images" / "a.png", np.zeros((64, 64), np.uint8))
    write_image(tmp_path / "masks" / "a.png", _labels(3).astype(np.uint8))  # 3 ids, each one blob, 8-bit
    with caplog.at_level(logging.INFO, logger="unetkit.data.masks"):
        _, info = load_folder(tmp_path, val_fraction=0)
    assert info.mode == "classes"
    warning = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "masks/a.png" in warning and "classes (4 values)" in warning and "instance labels" in warning
    assert "'instances'" in warning


def test_grey_class_values_that_repeat_are_classes():
    mask = np.zeros((20, 20), np.int64)
    mask[:5, :5] = 128
    mask[10:15, 10:15] = 128  # one class in two blobs: not an instance id
    mask[:5, 10:15] = 255
    evidence = [mask_evidence(mask, Path("m.png"), dtype="uint8")]
    assert evidence[0].blobs.tolist() == [2, 1]
    info = resolve_mask_mode(evidence, "auto", Path("root"))
    assert (info.mode, info.label_values) == ("classes", [0, 128, 255])


def test_class_targets_names_the_file_for_an_unknown_value():
    info = MaskInfo("classes", 3, [0, 128, 255], ignore_index=7)
    target, valid = class_targets(np.array([[0, 128], [255, 7]]), info, "p.png")
    np.testing.assert_array_equal(target, [[0, 1], [2, 0]])
    np.testing.assert_array_equal(valid, [[True, True], [True, False]])
    with pytest.raises(DataError, match=r"p.png: mask values \{3\} are not among the label values"):
        class_targets(np.array([[0, 3]]), info, "p.png")
