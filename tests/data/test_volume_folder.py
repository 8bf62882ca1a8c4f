"""Folders of volumes read exactly like folders of images: the same layout, splits, field of view, mask modes and
seeded hold-out, with spacing and the source files kept per case."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest
import tifffile

from unetkit.data import DataError, write_image
from unetkit.data.folder import load_folder
from unetkit.data.volume_folder import VolumeCase, load_volume_folder, read_case, scan_volume_folder, volume_layout


def _save(path: Path, array: np.ndarray, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.diag([*spacing, 1.0])), str(path))


def _ball(shape: tuple[int, int, int], centre: tuple[float, float, float], radius: float) -> np.ndarray:
    grid = np.indices(shape).astype(np.float64)
    return sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius**2


def _make_folder(root: Path, names: list[str], mask_scale: int = 255) -> None:
    """MRI-like float32 images of odd sizes, binary 0/255 masks, one case in NRRD, anisotropic spacing."""
    rng = np.random.default_rng(0)
    for i, name in enumerate(names):
        shape = (9 + i, 8, 7)
        mask = _ball(shape, (4, 4, 3), 2.5).astype(np.uint8) * mask_scale
        image = (rng.normal(100, 10, shape) + mask).astype(np.float32)
        if i == 1:  # a case shipped as NRRD beside NIfTI ones
            (root / "images").mkdir(parents=True, exist_ok=True)
            nrrd.write(str(root / "images" / f"{name}.nrrd"), image, {"spacings": [0.5, 0.5, 2.0]})
        else:
            _save(root / "images" / f"{name}.nii.gz", image, (0.5, 0.5, 2.0))
        _save(root / "masks" / f"{name}.nii.gz", mask)


def test_a_folder_of_volumes_reads_like_a_folder_of_images(tmp_path):
    names = [f"case{i}" for i in range(6)]
    _make_folder(tmp_path / "vol", names)
    splits, info = load_volume_folder(tmp_path / "vol", val_fraction=0.34, seed=3)
    assert info.mode == "binary" and info.label_values == [0, 255]
    # the same names with PNG images: the same cases are held out for validation
    for name in names:
        write_image(tmp_path / "img" / "images" / f"{name}.png", np.zeros((4, 4), np.uint8))
        write_image(tmp_path / "img" / "masks" / f"{name}.png", np.zeros((4, 4), np.uint8))
    images, _ = load_folder(tmp_path / "img", val_fraction=0.34, seed=3)
    assert splits["val"].names == images["val"].names and splits["train"].names == images["train"].names
    assert len(splits["test"]) == 0
    first = names.index(splits["train"].names[0])
    image, target = splits["train"].images[0], splits["train"].targets[0]
    assert image.dtype == np.float32 and image.shape == (1, 9 + first, 8, 7)
    assert target.dtype == np.int64 and target.shape == (9 + first, 8, 7)
    np.testing.assert_array_equal(target, _ball((9 + first, 8, 7), (4, 4, 3), 2.5))
    assert 90 < float(image[0][target == 0].mean()) < 110  # intensities as stored: no scaling by dtype
    assert splits["train"].spacing[0] == (0.5, 0.5, 2.0)
    assert all(
        len(files) == 1 and files[0].name.startswith(n)
        for n, files in zip(splits["train"].names, splits["train"].sources, strict=True)
    )
    sub = splits["train"].subset([1, 0])
    assert sub.names == splits["train"].names[1::-1] and sub.spacing == splits["train"].spacing[1::-1]
    assert sub.sources == splits["train"].sources[1::-1]
    assert volume_layout(tmp_path / "vol") == "folder" and volume_layout(tmp_path / "img") is None


def test_splits_fov_classes_and_instances(tmp_path):
    root = tmp_path / "ds"
    for split, count in (("train", 2), ("val", 1), ("test", 1)):
        for i in range(count):
            labels = np.zeros((6, 5, 4), np.uint16)
            labels[1:3, 1:3, 1:3] = 3
            labels[4:, 3:, :] = 7
            _save(root / split / "images" / f"{split}{i}.nii.gz", np.ones((6, 5, 4, 2), np.float32))  # 2 channels
            _save(root / split / "masks" / f"{split}{i}.nii.gz", labels)
            fov = np.ones((6, 5, 4), np.uint8)
            fov[0] = 0
            _save(root / split / "fov" / f"{split}{i}.nii.gz", fov)
    splits, info = load_volume_folder(root)
    assert info.mode == "classes" and info.label_values == [0, 3, 7]
    assert [len(splits[s]) for s in ("train", "val", "test")] == [2, 1, 1]
    target = splits["val"].targets[0]
    assert set(np.unique(target).tolist()) == {0, 1, 2} and target[1, 1, 1] == 1 and target[5, 4, 0] == 2
    assert splits["train"].images[0].shape == (2, 6, 5, 4)
    assert splits["test"].fov is not None and not splits["test"].fov[0][0].any() and splits["test"].fov[0][1:].all()
    # uint16 instance labels with more ids than classes allow: instances, target = id > 0
    inst = tmp_path / "inst"
    ids = np.arange(6 * 7 * 8, dtype=np.uint16).reshape(6, 7, 8)  # 336 ids
    for sub in ("images", "masks"):
        (inst / sub).mkdir(parents=True)
    tifffile.imwrite(inst / "images" / "a.tif", np.zeros((6, 7, 8), np.uint8), metadata={"axes": "ZYX"})
    tifffile.imwrite(inst / "masks" / "a.tif", ids, metadata={"axes": "ZYX"})
    splits, info = load_volume_folder(inst, val_fraction=0.0)
    assert info.mode == "instances"
    np.testing.assert_array_equal(splits["train"].instances[0], ids.astype(np.int32))
    np.testing.assert_array_equal(splits["train"].targets[0], (ids > 0).astype(np.int64))


def test_bad_volume_folders_name_the_file(tmp_path):
    _make_folder(tmp_path / "a", ["x", "y"])
    (tmp_path / "a" / "masks" / "y.nii.gz").unlink()
    with pytest.raises(DataError, match=r"images: 1 volume\(s\) have no mask of the same name in .*masks: y"):
        scan_volume_folder(tmp_path / "a")
    _make_folder(tmp_path / "b", ["x"])
    _save(tmp_path / "b" / "masks" / "x.nii.gz", np.zeros((9, 8, 6), np.uint8))
    with pytest.raises(DataError, match=r"masks/x\.nii\.gz: is \(9, 8, 6\) voxels but its image is \(9, 8, 7\)"):
        load_volume_folder(tmp_path / "b", val_fraction=0.0)
    _make_folder(tmp_path / "c", ["x"])
    _save(tmp_path / "c" / "masks" / "x.nii.gz", np.full((9, 8, 7), 0.5, np.float32))
    with pytest.raises(DataError, match=r"x\.nii\.gz: labels hold non-integer values"):
        load_volume_folder(tmp_path / "c", val_fraction=0.0)
    _make_folder(tmp_path / "d", ["x"])
    _save(tmp_path / "d" / "masks" / "x.nii.gz", np.full((9, 8, 7), -1, np.int16))
    with pytest.raises(
        DataError, match=r"x\.nii\.gz: labels must be integers in \[0, 2147483647\], got values from -1"
    ):
        load_volume_folder(tmp_path / "d", val_fraction=0.0)
    _make_folder(tmp_path / "e", ["x", "y"])
    _save(tmp_path / "e" / "images" / "y.nii.gz", np.zeros((10, 8, 7, 3), np.float32))
    with pytest.raises(DataError, match=r"e/images: two files with the name 'y': y\.nii\.gz, y\.nrrd"):
        load_volume_folder(tmp_path / "e", val_fraction=0.0)
    (tmp_path / "e" / "images" / "y.nrrd").unlink()
    with pytest.raises(DataError, match=r"y\.nii\.gz: has 3 channel\(s\) but .*x\.nii\.gz has 1"):
        load_volume_folder(tmp_path / "e", val_fraction=0.0)
    _make_folder(tmp_path / "f", ["x"], mask_scale=3)
    with pytest.raises(DataError, match="binary mask must hold values within"):
        load_volume_folder(tmp_path / "f", mask_mode="binary", val_fraction=0.0)
    with pytest.raises(DataError, match="no such folder"):
        load_volume_folder(tmp_path / "nowhere")


def test_read_case_stacks_channel_files_and_checks_their_shapes(tmp_path):
    _save(tmp_path / "c_0000.nii.gz", np.full((4, 5, 6), 1.0, np.float32))
    _save(tmp_path / "c_0001.nii.gz", np.full((4, 5, 6), 2.0, np.float32))
    _save(tmp_path / "c.nii.gz", np.ones((4, 5, 6), np.uint8))
    case = VolumeCase("c", (tmp_path / "c_0000.nii.gz", tmp_path / "c_0001.nii.gz"), tmp_path / "c.nii.gz")
    image, labels, fov, reference = read_case(case)
    assert image.shape == (2, 4, 5, 6) and image[1].min() == 2.0 and labels is not None and fov is None
    assert reference.path == tmp_path / "c_0000.nii.gz" and reference.shape == (4, 5, 6)
    _save(tmp_path / "c_0001.nii.gz", np.zeros((4, 5, 7), np.float32))
    with pytest.raises(DataError, match=r"c_0001\.nii\.gz: is \(4, 5, 7\) voxels but .*c_0000\.nii\.gz is \(4, 5, 6\)"):
        read_case(case)


def test_a_folder_of_imagej_hyperstacks_reads_as_volumes_with_their_spacing(tmp_path):
    from tests.train.volumes import HYPERSTACK, HYPERSTACK_SPACING, make_hyperstack_folder
    from unetkit.data.any_folder import load_any_folder
    from unetkit.data.volume_folder import VolumeSet

    root = make_hyperstack_folder(tmp_path / "stacks")
    assert volume_layout(root) == "folder"
    splits, info = load_any_folder(root, val_fraction=0.25)
    assert isinstance(splits["train"], VolumeSet) and info.mode == "binary"
    assert [len(splits[s]) for s in ("train", "val")] == [3, 1]
    assert splits["train"].images[0].shape == (1, *HYPERSTACK) and splits["train"].targets[0].shape == HYPERSTACK
    assert all(s == pytest.approx(HYPERSTACK_SPACING) for s in splits["train"].spacing)
    # the same with train/ and val/ splits
    for split, names in (("train", ["stack0", "stack1"]), ("val", ["stack2"])):
        for name in names:
            for sub in ("images", "masks"):
                (tmp_path / "split" / split / sub).mkdir(parents=True, exist_ok=True)
                (root / sub / f"{name}.tif").rename(tmp_path / "split" / split / sub / f"{name}.tif")
    assert volume_layout(tmp_path / "split") == "folder"


def _tiff_pair(root: Path, name: str, image: np.ndarray, mask: np.ndarray, **options: object) -> None:
    for sub, array in (("images", image), ("masks", mask)):
        (root / sub).mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(root / sub / f"{name}.tif", array, **options)  # type: ignore[arg-type]


def test_2d_tiffs_stay_images(tmp_path):
    from unetkit.data.any_folder import load_any_folder
    from unetkit.data.volume_folder import VolumeSet

    rng = np.random.default_rng(0)
    rgb = tmp_path / "rgb"  # RGB images, single-page masks
    for k in range(3):
        _tiff_pair(rgb, f"a{k}", rng.integers(0, 255, (20, 24, 3), dtype=np.uint8), np.eye(20, 24, dtype=np.uint8))
    channels = tmp_path / "channels"  # two channels by their metadata (C axis), no Z
    for k in range(3):
        image = rng.integers(0, 255, (2, 20, 24), dtype=np.uint8)
        _tiff_pair(channels, f"c{k}", image, np.eye(20, 24, dtype=np.uint8), photometric="minisblack",
                   metadata={"axes": "CYX"})  # fmt: skip
    two = tmp_path / "two"  # (H, W, 2) images as write_image stores them: 20 pages of 24x2
    for k in range(3):
        write_image(two / "images" / f"t{k}.tif", rng.integers(0, 255, (20, 24, 2), dtype=np.uint8))
        write_image(two / "masks" / f"t{k}.png", np.eye(20, 24, dtype=np.uint8))
    for root, channel_count in ((rgb, 3), (channels, 2), (two, 2)):
        assert volume_layout(root) is None
        splits, _ = load_any_folder(root, val_fraction=0.0)
        assert not isinstance(splits["train"], VolumeSet) and splits["train"].images[0].shape == (channel_count, 20, 24)
    pyramid = tmp_path / "pyramid"  # a full page and its thumbnail: a 2-D image
    (pyramid / "images").mkdir(parents=True)
    with tifffile.TiffWriter(pyramid / "images" / "p.tif") as tif:
        tif.write(np.zeros((20, 24), np.uint8), metadata=None)
        tif.write(np.zeros((20, 24), np.uint8), metadata=None)
        tif.write(np.zeros((5, 6), np.uint8), metadata=None)
    write_image(pyramid / "masks" / "p.png", np.zeros((20, 24), np.uint8))
    assert volume_layout(pyramid) is None


def test_a_stack_with_a_2d_mask_or_a_mixed_folder_is_one_line_naming_both(tmp_path):
    stack, flat = np.zeros((5, 8, 9), np.uint8), np.zeros((8, 9), np.uint8)
    _tiff_pair(tmp_path / "a", "x", stack, flat)
    message = r"masks/x\.tif: is a 2-D image \(a single page.*\) but its image .*images/x\.tif is a volume \(5 grey"
    with pytest.raises(DataError, match=message):
        volume_layout(tmp_path / "a")
    _tiff_pair(tmp_path / "b", "x", flat, stack)
    with pytest.raises(DataError, match=r"masks/x\.tif: is a volume .* but its image .*x\.tif is a 2-D image"):
        volume_layout(tmp_path / "b")
    write_image(tmp_path / "c" / "images" / "x.png", flat)  # a PNG image with a stack mask
    (tmp_path / "c" / "masks").mkdir()
    tifffile.imwrite(tmp_path / "c" / "masks" / "x.tif", stack)
    with pytest.raises(DataError, match=r"x\.tif: is a volume .* but its image .*x\.png is a 2-D image"):
        volume_layout(tmp_path / "c")
    _save(tmp_path / "d" / "images" / "x.nii.gz", stack)  # a NIfTI image with a 2-D mask
    write_image(tmp_path / "d" / "masks" / "x.png", flat)
    with pytest.raises(DataError, match=r"x\.png: is a 2-D image .* but its image .*x\.nii\.gz is a volume"):
        volume_layout(tmp_path / "d")
    _tiff_pair(tmp_path / "e", "x", stack, stack)
    _tiff_pair(tmp_path / "e", "y", flat, flat)
    with pytest.raises(DataError, match=r"e: mixes TIFF volumes and 2-D TIFF images \(x\.tif: 5 grey pages of 8x9; "
                                        r"y\.tif: a single page"):  # fmt: skip
        volume_layout(tmp_path / "e")
