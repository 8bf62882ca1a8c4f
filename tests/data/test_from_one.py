"""Tests for making a data set from one annotated picture: files, dtypes, labels, alignment, seeds, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from unetkit.data.errors import DataError
from unetkit.data.from_one import make_dataset_from_one
from unetkit.data.io import read_image, write_image

SIZE = 96


def _disc_mask() -> np.ndarray:
    """`(96, 96)` uint8 {0, 1}: a disc and a bar, an asymmetric 'logo'."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    mask = ((yy - 40) ** 2 + (xx - 50) ** 2 < 22**2).astype(np.uint8)
    mask[70:84, 10:60] = 1
    return mask


def _pair(tmp_path: Path, mask: np.ndarray | None = None, rgb: bool = False) -> tuple[Path, Path]:
    mask = _disc_mask() if mask is None else mask
    image = (mask > 0).astype(np.uint8) * 200 + 20  # bright where the mask is set
    if rgb:
        image = np.stack([image, image // 2, image], axis=-1)
    return write_image(tmp_path / "image.png", image), write_image(tmp_path / "mask.png", mask)


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_writes_aligned_pairs(tmp_path: Path) -> None:
    image_path, mask_path = _pair(tmp_path)
    out = make_dataset_from_one(image_path, mask_path, tmp_path / "set", n=12, seed=3)
    assert out == tmp_path / "set"
    names = [f"{i:04d}.png" for i in range(12)]
    assert _files(out / "images") == names and _files(out / "masks") == names
    assert _files(out) == ["images", "masks"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".set.tmp")]
    for name in names:
        image, mask = read_image(out / "images" / name), read_image(out / "masks" / name)
        assert image.dtype == np.uint8 and image.shape == (SIZE, SIZE)
        assert mask.dtype == np.uint8 and mask.shape == (SIZE, SIZE)
        assert set(np.unique(mask).tolist()) <= {0, 1}
        # brightness/contrast move the levels a little, the midpoint still separates them
        agree = ((image > 120) == (mask == 1)).mean()
        assert agree >= 0.97
    assert not np.array_equal(read_image(out / "masks" / names[0]), _disc_mask())


def test_same_seed_same_files(tmp_path: Path) -> None:
    image_path, mask_path = _pair(tmp_path)
    a = make_dataset_from_one(image_path, mask_path, tmp_path / "a", n=4, seed=1)
    b = make_dataset_from_one(image_path, mask_path, tmp_path / "b", n=4, seed=1)
    c = make_dataset_from_one(image_path, mask_path, tmp_path / "c", n=4, seed=2)
    for name in _files(a / "images"):
        assert np.array_equal(read_image(a / "images" / name), read_image(b / "images" / name))
        assert np.array_equal(read_image(a / "masks" / name), read_image(b / "masks" / name))
    assert not np.array_equal(read_image(a / "images" / "0000.png"), read_image(c / "images" / "0000.png"))


def test_rgb_255_mask_and_crop(tmp_path: Path) -> None:
    image_path, mask_path = _pair(tmp_path, mask=_disc_mask() * 255, rgb=True)
    out = make_dataset_from_one(image_path, mask_path, tmp_path / "set", n=3, size=64)
    image, mask = read_image(out / "images" / "0001.png"), read_image(out / "masks" / "0001.png")
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert mask.shape == (64, 64) and set(np.unique(mask).tolist()) <= {0, 255}


def test_uint16_and_class_indices(tmp_path: Path) -> None:
    mask = _disc_mask()
    mask[5:20, 5:30] = 2
    image = (mask.astype(np.uint16) * 20000 + 1000).astype(np.uint16)
    image_path = write_image(tmp_path / "image.png", image)
    mask_path = write_image(tmp_path / "mask.png", np.stack([mask] * 3, axis=-1))  # colour mask, equal channels
    out = make_dataset_from_one(image_path, mask_path, tmp_path / "set", n=2)
    assert read_image(out / "images" / "0000.png").dtype == np.uint16
    assert set(np.unique(read_image(out / "masks" / "0000.png")).tolist()) <= {0, 1, 2}


def test_errors(tmp_path: Path) -> None:
    image_path, mask_path = _pair(tmp_path)
    with pytest.raises(DataError, match=r"missing\.png"):
        make_dataset_from_one(tmp_path / "missing.png", mask_path, tmp_path / "x", n=2)
    small = write_image(tmp_path / "small.png", np.zeros((SIZE, SIZE - 8), dtype=np.uint8))
    with pytest.raises(DataError, match=r"image\.png.*small\.png"):
        make_dataset_from_one(image_path, small, tmp_path / "x", n=2)
    grey = write_image(tmp_path / "grey.png", np.arange(SIZE * SIZE, dtype=np.uint16).reshape(SIZE, SIZE))
    with pytest.raises(DataError, match=r"grey\.png"):
        make_dataset_from_one(image_path, grey, tmp_path / "x", n=2)
    with pytest.raises(DataError, match="smaller"):
        make_dataset_from_one(image_path, mask_path, tmp_path / "x", n=2, size=128)
    with pytest.raises(ValueError, match="`n`"):
        make_dataset_from_one(image_path, mask_path, tmp_path / "x", n=0)
    full = tmp_path / "full"
    (full / "images").mkdir(parents=True)
    (full / "images" / "old.png").write_bytes(b"x")
    with pytest.raises(DataError, match="exists and is not empty; choose another --out"):
        make_dataset_from_one(image_path, mask_path, full, n=2)
    assert _files(full / "images") == ["old.png"]
    assert not (tmp_path / "x").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _files(make_dataset_from_one(image_path, mask_path, empty, n=1) / "masks") == ["0000.png"]
