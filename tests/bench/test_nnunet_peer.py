"""The nnU-Net peer harness's own parts, without nnU-Net: the raw-format conversion and the scoring."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from unetkit.data.io import read_image, write_image

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def peer():
    spec = importlib.util.spec_from_file_location("nnunet_peer", ROOT / "benchmarks" / "nnunet_peer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _folder(root: Path, images: dict[str, np.ndarray], masks: dict[str, np.ndarray], suffix: str = ".tif") -> Path:
    for name, image in images.items():
        write_image(root / "images" / f"{name}{suffix}", image)
        write_image(root / "masks" / f"{name}{suffix}", masks[name])
    return root


def _instances(rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros((9, 11), np.uint16)
    mask[1:4, 1:4], mask[5:8, 6:10] = 7, 300  # ids need not be 1..N
    return mask[:, rng.permutation(11)]


def test_write_raw_2d_layout_and_binary_labels(peer, tmp_path):
    rng = np.random.default_rng(0)
    images = {n: rng.integers(0, 4000, (9, 11)).astype(np.uint16) for n in ("a", "b")}
    masks = {n: _instances(rng) for n in images}
    data = _folder(tmp_path / "data", images, masks)
    test = _folder(tmp_path / "test", {"c": images["a"][::-1]}, {"c": masks["a"][::-1]}, suffix=".png")
    info = peer.write_raw(data, test, tmp_path / "raw", 7)

    folder = tmp_path / "raw" / "Dataset007_unetkit"
    assert info["folder"] == str(folder) and info["dims"] == 2 and info["channels"] == 1
    assert info["train"] == ["a", "b"] and info["test"] == ["c"]
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "foreground": 1} and meta["numTraining"] == 2
    assert meta["file_ending"] == ".png" and meta["overwrite_image_reader_writer"] == "NaturalImage2DIO"
    assert meta["channel_names"] == {"0": "image"}
    for name in ("a", "b"):
        np.testing.assert_array_equal(read_image(folder / "imagesTr" / f"{name}_0000.png"), images[name])
        labels = read_image(folder / "labelsTr" / f"{name}.png")
        np.testing.assert_array_equal(labels, (masks[name] > 0).astype(np.uint8))
    np.testing.assert_array_equal(read_image(folder / "imagesTs" / "c_0000.png"), images["a"][::-1])
    assert not (folder / "labelsTr" / "c.png").exists()


def test_write_raw_2d_float_images_as_tiff(peer, tmp_path):
    rng = np.random.default_rng(1)
    image = rng.normal(0, 1, (9, 11)).astype(np.float32)
    data = _folder(tmp_path / "data", {"a": image}, {"a": _instances(rng)})
    info = peer.write_raw(data, data, tmp_path / "raw", 1)
    assert info["file_ending"] == ".tif"
    np.testing.assert_array_equal(read_image(Path(info["folder"]) / "imagesTr" / "a_0000.tif"), image)


def test_write_raw_refuses_unpaired_files(peer, tmp_path):
    rng = np.random.default_rng(2)
    data = _folder(tmp_path / "data", {"a": rng.integers(0, 255, (9, 11)).astype(np.uint8)}, {"a": _instances(rng)})
    write_image(data / "images" / "b.tif", np.zeros((9, 11), np.uint8))
    with pytest.raises(ValueError, match="unpaired: b"):
        peer.write_raw(data, data, tmp_path / "raw", 1)


def test_write_raw_3d_keeps_spacing(peer, tmp_path):
    pytest.importorskip("nibabel")
    from unetkit.data.volume import read_volume, write_volume

    rng = np.random.default_rng(3)
    image = rng.integers(0, 1000, (5, 6, 7)).astype(np.int16)
    labels = np.zeros((5, 6, 7), np.uint16)
    labels[1:3, 1:4, 2:5] = 12
    for sub, array in (("images", image), ("masks", labels)):
        write_volume(tmp_path / "data" / sub / "v.nii.gz", array, spacing=(2.5, 0.5, 0.75))
    info = peer.write_raw(tmp_path / "data", tmp_path / "data", tmp_path / "raw", 2)
    folder = Path(info["folder"])
    assert info["dims"] == 3 and info["file_ending"] == ".nii.gz" and info["reader"] == "SimpleITKIO"
    written = read_volume(folder / "imagesTr" / "v_0000.nii.gz")
    np.testing.assert_array_equal(written.array, image)
    np.testing.assert_allclose(written.spacing, (2.5, 0.5, 0.75))
    np.testing.assert_array_equal(read_volume(folder / "labelsTr" / "v.nii.gz").array, (labels > 0).astype(np.uint8))


def test_score_by_hand(peer, tmp_path):
    truth = np.zeros((8, 8), np.uint16)
    truth[0:2, 0:2], truth[5:7, 5:7] = 4, 9  # two objects of 4 pixels
    pred = np.zeros((8, 8), np.uint8)
    pred[0:2, 0:2] = 1  # the first found exactly, the second missed
    test = _folder(tmp_path / "test", {"x": np.zeros((8, 8), np.uint8)}, {"x": truth})
    write_image(tmp_path / "pred" / "x.png", pred)
    scores = peer.score(tmp_path / "pred", test, ".png", 2)
    # Dice = 2 * 4 / (4 + 8); one TP, no FP, one FN: F1 = 2 / (2 + 0 + 1)
    assert scores["dice_pooled"] == pytest.approx(2 / 3) and scores["dice_mean"] == pytest.approx(2 / 3)
    assert scores["instance_f1_050"] == pytest.approx(2 / 3)
    assert scores["objects_true"] == 2 and scores["objects_predicted"] == 1
    assert scores["instance_f1_050_true_mask_components"] == 1.0  # the two objects do not touch
