"""Folder data sets: layouts, splits, mask modes and every one-line data error."""

from pathlib import Path

import numpy as np
import pytest

from unetkit.data.errors import DataError
from unetkit.data.folder import channel_stats, load_folder, to_chw_float
from unetkit.data.io import write_image

H, W = 8, 10


def _image(seed: int = 0, channels: int = 0, dtype: type = np.uint8) -> np.ndarray:
    shape = (H, W, channels) if channels else (H, W)
    return np.random.default_rng(seed).integers(0, 200, shape).astype(dtype)


def _mask(values: tuple[int, ...] = (0, 255), dtype: type = np.uint8) -> np.ndarray:
    """A mask holding each of `values` in horizontal bands."""
    mask = np.zeros((H, W), dtype=dtype)
    for i, value in enumerate(values):
        mask[i * H // len(values) :] = value
    return mask


def _make(folder: Path, names: list[str], *, masks: dict | None = None, fov: bool = False) -> Path:
    """Write `folder/images/NAME.png` and `folder/masks/NAME.png` (0/255 unless given in `masks`)."""
    for i, name in enumerate(names):
        write_image(folder / "images" / f"{name}.png", _image(i))
        mask = (masks or {}).get(name, _mask())
        write_image(folder / "masks" / f"{name}.{'tif' if mask.dtype.kind in 'fi' else 'png'}", mask)
        if fov:
            write_image(folder / "fov" / f"{name}.png", (np.arange(W)[None].repeat(H, 0) > 2).astype(np.uint8))
    return folder


# errors ---------------------------------------------------------------------------------------------------


def test_root_missing_or_a_file(tmp_path):
    with pytest.raises(DataError, match="nope: no such folder"):
        load_folder(tmp_path / "nope")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DataError, match=r"file\.txt: is a file"):
        load_folder(tmp_path / "file.txt")


@pytest.mark.parametrize("sub", ["images", "masks"])
def test_missing_sub_folder(tmp_path, sub):
    _make(tmp_path, ["a"])
    for path in (tmp_path / sub).iterdir():
        path.unlink()
    (tmp_path / sub).rmdir()
    with pytest.raises(DataError, match=f"no {sub}/ sub-folder"):
        load_folder(tmp_path)


def test_val_folder_without_train(tmp_path):
    _make(tmp_path / "val", ["a"])
    with pytest.raises(DataError, match="val/ but no train/"):
        load_folder(tmp_path)


def test_empty_images_folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"images: no image files"):
        load_folder(tmp_path)


def test_images_without_masks_are_listed(tmp_path):
    names = [f"n{i}" for i in range(7)]
    _make(tmp_path, names)
    for name in names:
        (tmp_path / "masks" / f"{name}.png").unlink()
    _make(tmp_path, ["z"])  # one complete pair
    with pytest.raises(DataError, match=r"7 image\(s\) have no mask .*: n0, n1, n2, n3, n4 and 2 more$"):
        load_folder(tmp_path)


def test_masks_without_images(tmp_path):
    _make(tmp_path, ["a", "b"])
    (tmp_path / "images" / "b.png").unlink()
    with pytest.raises(DataError, match=r"masks: 1 mask\(s\) have no image .*: b$"):
        load_folder(tmp_path)


@pytest.mark.parametrize("sub", ["images", "masks"])
def test_two_files_with_one_stem(tmp_path, sub):
    _make(tmp_path, ["a"])
    write_image(tmp_path / sub / "a.tif", _mask())
    with pytest.raises(DataError, match=rf"{sub}: two files with the stem 'a': a.png, a.tif"):
        load_folder(tmp_path)


def test_jpeg_mask_refused(tmp_path):
    _make(tmp_path, ["a"])
    write_image(tmp_path / "masks" / "b.jpg", _mask())
    with pytest.raises(DataError, match=r"b.jpg: JPEG masks are not supported"):
        load_folder(tmp_path)


def test_size_mismatch_names_both_files_and_sizes(tmp_path):
    _make(tmp_path, ["a"])
    write_image(tmp_path / "masks" / "a.png", np.zeros((H, W + 1), np.uint8))
    with pytest.raises(DataError) as err:
        load_folder(tmp_path)
    message = str(err.value)
    assert "masks/a.png" in message and "images/a.png" in message
    assert f"{H}x{W + 1}" in message and f"{H}x{W}" in message


def test_fov_errors(tmp_path):
    _make(tmp_path, ["a", "b"], fov=True)
    write_image(tmp_path / "fov" / "b.png", np.ones((H + 2, W), np.uint8))
    with pytest.raises(DataError, match=rf"fov/b.png: field of view is {H + 2}x{W} .*images/b.png is {H}x{W}"):
        load_folder(tmp_path)
    (tmp_path / "fov" / "b.png").unlink()
    with pytest.raises(DataError, match=r"fov: 1 image\(s\) have no field-of-view file.*: b$"):
        load_folder(tmp_path)


@pytest.mark.parametrize("sub", ["images", "masks"])
def test_unreadable_file(tmp_path, sub):
    _make(tmp_path, ["a", "b"])
    (tmp_path / sub / "b.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=rf"{sub}/b.png: not a PNG file"):
        load_folder(tmp_path)


def test_inconsistent_channel_counts(tmp_path):
    _make(tmp_path, ["a", "b"])
    write_image(tmp_path / "images" / "b.png", _image(1, channels=3))
    with pytest.raises(DataError, match=r"images/b.png: has 3 channel\(s\) but .*images/a.png has 1"):
        load_folder(tmp_path)


def test_colour_mask_refused_grey_rgb_mask_accepted(tmp_path):
    grey = np.repeat(_mask()[..., None], 3, axis=-1)
    _make(tmp_path, ["a"], masks={"a": grey})
    splits, info = load_folder(tmp_path, val_fraction=0)
    assert info.label_values == [0, 255]
    np.testing.assert_array_equal(splits["train"].targets[0], _mask() > 0)
    colour = grey.copy()
    colour[0, 0] = (255, 0, 0)
    write_image(tmp_path / "masks" / "a.png", colour)
    with pytest.raises(DataError, match=r"masks/a.png: colour masks are not supported: expected a single-channel mask"):
        load_folder(tmp_path)


def test_non_integer_and_negative_masks(tmp_path):
    _make(tmp_path, ["a"], masks={"a": _mask((0, 1)).astype(np.float32) * 0.5})
    with pytest.raises(DataError, match=r"masks/a.tif: mask holds non-integer values"):
        load_folder(tmp_path)
    write_image(tmp_path / "masks" / "a.tif", _mask((0, -2), dtype=np.int16))
    with pytest.raises(DataError, match=r"masks/a.tif: mask holds negative values \(min -2\)"):
        load_folder(tmp_path)


def test_binary_mode_refuses_other_values(tmp_path):
    _make(tmp_path, ["a", "b"], masks={"b": _mask((0, 3))})
    with pytest.raises(DataError, match=r"masks/b.png: binary mask must hold .*got \{0, 3\}"):
        load_folder(tmp_path, mask_mode="binary")


def test_classes_mode_refuses_too_many_values(tmp_path):
    many = np.arange(H * W * 4, dtype=np.uint16).reshape(H * 2, W * 2)
    write_image(tmp_path / "images" / "a.png", np.zeros((H * 2, W * 2), np.uint8))
    write_image(tmp_path / "masks" / "a.png", many)
    with pytest.raises(DataError, match=r"320 distinct values.*use mask_mode 'instances'"):
        load_folder(tmp_path, mask_mode="classes")


def test_argument_validation(tmp_path):
    _make(tmp_path, ["a", "b"])
    with pytest.raises(ValueError, match=r"`mask_mode` must be one of 'auto', 'binary'.*got 'instance'"):
        load_folder(tmp_path, mask_mode="instance")
    for bad in (1.0, -0.1, float("nan"), "0.2"):
        with pytest.raises(ValueError, match="`val_fraction`"):
            load_folder(tmp_path, val_fraction=bad)
    with pytest.raises(ValueError, match="`seed`"):
        load_folder(tmp_path, seed=-1)
    with pytest.raises(DataError, match=r"`val_fraction` 0.9 holds out 2 of 2 images, leaving none"):
        load_folder(tmp_path, val_fraction=0.9)


# mask modes -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("values", "label_values"), [((0, 255), [0, 255]), ((0, 1), [0, 1]), ((0,), [0, 1])])
def test_binary_masks(tmp_path, values, label_values):
    _make(tmp_path, ["a", "b"], masks={"a": _mask(values), "b": _mask((0,))})
    splits, info = load_folder(tmp_path, val_fraction=0)
    assert (info.mode, info.num_classes, info.label_values) == ("binary", 2, label_values)
    target = splits["train"].targets[0]
    assert target.dtype == np.int64 and target.shape == (H, W)
    np.testing.assert_array_equal(target, _mask(values) > 0)
    assert splits["train"].instances is None and splits["train"].fov is None


def test_classes_are_the_sorted_union_over_all_splits(tmp_path):
    _make(tmp_path / "train", ["a"], masks={"a": _mask((0, 7))})
    _make(tmp_path / "val", ["b"], masks={"b": _mask((3, 0))})
    splits, info = load_folder(tmp_path, mask_mode="classes")
    assert (info.mode, info.num_classes, info.label_values) == ("classes", 3, [0, 3, 7])
    np.testing.assert_array_equal(splits["train"].targets[0], np.where(_mask((0, 7)) == 7, 2, 0))
    np.testing.assert_array_equal(splits["val"].targets[0], np.where(_mask((3, 0)) == 3, 1, 0))
    assert splits["val"].targets[0].dtype == np.int64


def test_instances_mode(tmp_path):
    labels = _mask((0, 1, 2, 5), dtype=np.uint16)
    _make(tmp_path, ["a"], masks={"a": labels})
    splits, info = load_folder(tmp_path, mask_mode="instances", val_fraction=0)
    assert (info.mode, info.num_classes, info.label_values) == ("instances", 2, [0, 1])
    train = splits["train"]
    assert train.instances is not None and train.instances[0].dtype == np.int32
    np.testing.assert_array_equal(train.instances[0], labels)
    np.testing.assert_array_equal(train.targets[0], labels > 0)
    assert train.targets[0].dtype == np.int64


def test_auto_picks_each_mode(tmp_path):
    _make(tmp_path / "bin", ["a", "b"], masks={"a": _mask((0, 255)), "b": _mask((0,))})
    assert load_folder(tmp_path / "bin")[1].mode == "binary"
    _make(tmp_path / "cls", ["a", "b"], masks={"a": _mask((0, 255)), "b": _mask((0, 3))})
    assert load_folder(tmp_path / "cls")[1].label_values == [0, 3, 255]
    many = np.arange(H * W * 4, dtype=np.uint16).reshape(H * 2, W * 2)
    write_image(tmp_path / "ins" / "images" / "a.png", np.zeros((H * 2, W * 2), np.uint8))
    write_image(tmp_path / "ins" / "masks" / "a.png", many)
    splits, info = load_folder(tmp_path / "ins")
    assert info.mode == "instances"
    np.testing.assert_array_equal(splits["train"].instances[0], many)


# images ---------------------------------------------------------------------------------------------------


def test_16_bit_tiff_image_with_png_mask(tmp_path):
    image = (np.arange(H * W, dtype=np.uint16).reshape(H, W) * 700).astype(np.uint16)
    write_image(tmp_path / "images" / "a.tif", image)
    write_image(tmp_path / "masks" / "a.png", _mask((0, 1)))
    splits, _ = load_folder(tmp_path, val_fraction=0)
    loaded = splits["train"].images[0]
    assert loaded.dtype == np.float32 and loaded.shape == (1, H, W)
    np.testing.assert_array_equal(loaded[0], image.astype(np.float32))  # the file's units: normalised later
    assert splits["train"].extra["dtypes"] == ["uint16"]


def test_rgb_and_rgba_images(tmp_path):
    rgb = _image(3, channels=3)
    write_image(tmp_path / "images" / "a.png", rgb)
    write_image(tmp_path / "images" / "b.png", np.concatenate([rgb, np.full((H, W, 1), 255, np.uint8)], -1))
    for name in "ab":
        write_image(tmp_path / "masks" / f"{name}.png", _mask())
    splits, _ = load_folder(tmp_path, val_fraction=0)
    a, b = splits["train"].images
    assert a.shape == b.shape == (3, H, W)
    np.testing.assert_array_equal(a, np.moveaxis(rgb, -1, 0).astype(np.float32))
    np.testing.assert_array_equal(a, b)


def test_fov_loading(tmp_path):
    _make(tmp_path, ["a", "b"], fov=True)
    splits, _ = load_folder(tmp_path, val_fraction=0.5)
    for split in ("train", "val"):
        fov = splits[split].fov
        assert fov is not None and len(fov) == 1
        assert fov[0].dtype == bool and fov[0].shape == (H, W)
        np.testing.assert_array_equal(fov[0], np.arange(W)[None].repeat(H, 0) > 2)


def test_hidden_and_foreign_files_are_skipped(tmp_path):
    _make(tmp_path, ["a"])
    (tmp_path / "images" / ".a.tmp.png").write_bytes(b"")
    (tmp_path / "masks" / "README.txt").write_text("labels: 255 = vessel")
    splits, _ = load_folder(tmp_path, val_fraction=0)
    assert splits["train"].names == ["a"]


# splits ---------------------------------------------------------------------------------------------------


def test_split_folders(tmp_path):
    _make(tmp_path / "train", ["t2", "t1"])
    _make(tmp_path / "val", ["v1"])
    _make(tmp_path / "test", ["x1", "x2", "x3"])
    splits, _ = load_folder(tmp_path, val_fraction=0.5)  # ignored: val/ exists
    assert {k: v.names for k, v in splits.items()} == {"train": ["t1", "t2"], "val": ["v1"], "test": ["x1", "x2", "x3"]}


def test_split_folders_without_val_or_test(tmp_path):
    _make(tmp_path / "train", [f"t{i}" for i in range(5)])
    splits, _ = load_folder(tmp_path, val_fraction=0.4)
    assert (len(splits["train"]), len(splits["val"]), len(splits["test"])) == (3, 2, 0)
    splits, _ = load_folder(tmp_path, val_fraction=0)
    assert (len(splits["train"]), len(splits["val"]), len(splits["test"])) == (5, 0, 0)
    assert splits["test"].images == [] and splits["test"].fov is None


def test_val_fraction_split_is_seeded_disjoint_and_sorted(tmp_path):
    names = [f"n{i:02d}" for i in range(12)]
    _make(tmp_path, names)
    first, _ = load_folder(tmp_path, val_fraction=0.25, seed=3)
    again, _ = load_folder(tmp_path, val_fraction=0.25, seed=3)
    other, _ = load_folder(tmp_path, val_fraction=0.25, seed=4)
    train, val = first["train"].names, first["val"].names
    assert len(val) == 3 and not set(train) & set(val) and sorted(train + val) == names
    assert train == sorted(train) and val == sorted(val)
    assert (again["train"].names, again["val"].names) == (train, val)
    assert other["val"].names != val
    index = names.index(val[0])  # each image stays with its own mask
    np.testing.assert_array_equal(first["val"].images[0][0], _image(index).astype(np.float32))


def test_small_fraction_holds_out_at_least_one(tmp_path):
    _make(tmp_path, ["a", "b", "c"])
    splits, _ = load_folder(tmp_path, val_fraction=0.1)
    assert (len(splits["train"]), len(splits["val"])) == (2, 1)


# helpers --------------------------------------------------------------------------------------------------


def test_to_chw_float():
    assert to_chw_float(np.zeros((H, W), np.uint16)).shape == (1, H, W)
    rgba = np.random.default_rng(0).integers(0, 255, (H, W, 4)).astype(np.uint8)
    out = to_chw_float(rgba)
    assert out.dtype == np.float32 and out.shape == (3, H, W)
    np.testing.assert_allclose(out[1], rgba[..., 1] / 255, rtol=1e-6)
    np.testing.assert_array_equal(to_chw_float(np.full((2, 2), 0.25, np.float32)), 0.25)  # floats unscaled
    with pytest.raises(ValueError, match=r"`array` must be \(H, W\) or \(H, W, C\), got shape \(4,\)"):
        to_chw_float(np.zeros(4))


def test_channel_stats_against_numpy():
    rng = np.random.default_rng(0)
    images = [
        (rng.normal(1000.0, 5.0, (2, 6, 7))).astype(np.float32),
        (rng.normal(1000.0, 5.0, (2, 3, 11))).astype(np.float32),
    ]
    images[0][1] = 4.0
    images[1][1] = 4.0  # a constant channel: std floored, not 0
    mean, std = channel_stats(images)
    pixels = np.concatenate([x.reshape(2, -1) for x in images], axis=1).astype(np.float64)
    np.testing.assert_allclose(mean, pixels.mean(axis=1), rtol=1e-12)
    assert std[0] == pytest.approx(pixels[0].std(), rel=1e-9)
    assert std[1] == 1e-6
    assert all(isinstance(v, float) for v in mean + std)
    with pytest.raises(ValueError, match="`images` must hold at least one image"):
        channel_stats([])
    with pytest.raises(ValueError, match=r"`images\[1\]` has 3 channels, expected 2"):
        channel_stats([images[0], np.zeros((3, 2, 2), np.float32)])
