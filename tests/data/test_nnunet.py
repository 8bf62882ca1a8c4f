"""nnU-Net's raw layout (v2 `dataset.json`, `_0000` channel files) and the v1 / Medical Segmentation Decathlon
variant (4-D images listed in `dataset.json`)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from unetkit.data import DataError
from unetkit.data.nnunet import load_nnunet_raw, scan_nnunet_raw
from unetkit.data.volume_folder import volume_layout

LABELS = {"background": 0, "peripheral zone": 1, "transition zone": 2}


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.diag([0.6, 0.6, 3.6, 1.0])), str(path))


def _labels(i: int) -> np.ndarray:
    labels = np.zeros((8, 7, 5), np.uint8)
    labels[2:5, 2:5, 1:4] = 1
    labels[5:, :, i % 5] = 2
    return labels


def _v2(root: Path, cases: int = 5, *, test_labels: bool = False) -> Path:
    """A prostate-like data set: two channels (T2, ADC), three labels, two test cases."""
    meta = {"channel_names": {"0": "T2", "1": "ADC"}, "labels": LABELS, "numTraining": cases, "file_ending": ".nii.gz"}
    root.mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps(meta))
    for i in range(cases):
        for c in range(2):
            _save(root / "imagesTr" / f"prostate_{i:02d}_{c:04d}.nii.gz", np.full((8, 7, 5), 10.0 * c + i, np.float32))
        _save(root / "labelsTr" / f"prostate_{i:02d}.nii.gz", _labels(i))
    for i in range(2):
        for c in range(2):
            _save(root / "imagesTs" / f"prostate_9{i}_{c:04d}.nii.gz", np.zeros((8, 7, 5), np.float32))
        if test_labels:
            _save(root / "labelsTs" / f"prostate_9{i}.nii.gz", _labels(i))
    return root


def test_v2_layout_groups_channel_files_and_takes_classes_from_dataset_json(tmp_path):
    root = _v2(tmp_path / "Dataset005_Prostate")
    assert volume_layout(root) == "nnunet"
    dataset = scan_nnunet_raw(root)
    assert dataset.channel_names == {0: "T2", 1: "ADC"} and dataset.labels == LABELS
    assert [c.name for c in dataset.training] == [f"prostate_{i:02d}" for i in range(5)]
    assert [p.name for p in dataset.training[0].images] == ["prostate_00_0000.nii.gz", "prostate_00_0001.nii.gz"]
    assert [c.name for c in dataset.test] == ["prostate_90", "prostate_91"] and dataset.test[0].mask is None
    splits, info = load_nnunet_raw(root, val_fraction=0.2, seed=0)
    assert info.mode == "classes" and info.label_values == [0, 1, 2] and info.num_classes == 3
    assert len(splits["train"]) == 4 and len(splits["val"]) == 1 and len(splits["test"]) == 0
    i = int(splits["train"].names[0].split("_")[1])
    image = splits["train"].images[0]
    assert image.shape == (2, 8, 7, 5) and image[0].max() == i and image[1].min() == 10 + i  # channels in order
    np.testing.assert_array_equal(splits["train"].targets[0], _labels(i))
    assert splits["train"].spacing[0] == pytest.approx((0.6, 0.6, 3.6))
    assert len(splits["train"].sources[0]) == 2
    labelled = load_nnunet_raw(_v2(tmp_path / "with_ts", test_labels=True))[0]
    assert labelled["test"].names == ["prostate_90", "prostate_91"]


def test_v1_decathlon_layout_with_4d_images_listed_in_dataset_json(tmp_path):
    root = tmp_path / "Task05_Prostate"
    meta = {
        "modality": {"0": "T2", "1": "ADC"},
        "labels": {"0": "background", "1": "PZ", "2": "TZ"},
        "numTraining": 2,
        "training": [{"image": f"./imagesTr/p{i}.nii.gz", "label": f"./labelsTr/p{i}.nii.gz"} for i in range(2)],
        "test": ["./imagesTs/p9.nii.gz"],
    }
    root.mkdir()
    (root / "dataset.json").write_text(json.dumps(meta))
    for i in range(2):
        _save(root / "imagesTr" / f"p{i}.nii.gz", np.ones((8, 7, 5, 2), np.float32))
        _save(root / "labelsTr" / f"p{i}.nii.gz", _labels(i))
    _save(root / "imagesTs" / "p9.nii.gz", np.ones((8, 7, 5, 2), np.float32))
    (root / "imagesTr" / "._p0.nii.gz").write_bytes(b"macOS resource fork")  # shipped inside the MSD tarballs
    dataset = scan_nnunet_raw(root)
    assert dataset.labels == {"background": 0, "PZ": 1, "TZ": 2} and [c.name for c in dataset.test] == ["p9"]
    splits, _ = load_nnunet_raw(root, val_fraction=0.0)
    assert splits["train"].names == ["p0", "p1"] and splits["train"].images[0].shape == (2, 8, 7, 5)


def test_bad_raw_data_sets_name_the_file(tmp_path):
    with pytest.raises(DataError, match=r"dataset\.json: no such file"):
        scan_nnunet_raw(tmp_path)
    root = _v2(tmp_path / "missing_channel")
    (root / "imagesTr" / "prostate_03_0001.nii.gz").unlink()
    with pytest.raises(DataError, match=r"imagesTr: case 'prostate_03' has channel files 0000; dataset\.json names 2"):
        scan_nnunet_raw(root)
    root = _v2(tmp_path / "no_label")
    (root / "labelsTr" / "prostate_01.nii.gz").unlink()
    with pytest.raises(DataError, match=r"imagesTr: 1 volume\(s\) have no label of the same name .*prostate_01"):
        scan_nnunet_raw(root)
    root = _v2(tmp_path / "undeclared")
    _save(root / "labelsTr" / "prostate_02.nii.gz", _labels(2) * 2)  # values 0, 2, 4
    with pytest.raises(DataError, match=r"prostate_02\.nii\.gz: holds label value\(s\) 4 that dataset\.json does not"):
        load_nnunet_raw(root)
    root = _v2(tmp_path / "stray")
    _save(root / "imagesTr" / "prostate_00.nii.gz", np.zeros((8, 7, 5), np.float32))
    with pytest.raises(DataError, match=r"prostate_00\.nii\.gz: expected CASE_XXXX\.nii\.gz"):
        scan_nnunet_raw(root)
    for meta, message in [
        ({"channel_names": {"0": "CT"}, "labels": {"background": 0, "kidney": [1, 2]}}, "is a region"),
        ({"channel_names": {"0": "CT"}, "labels": {"liver": 1}}, "must give the background the value 0"),
        ({"channel_names": {"0": "CT"}, "labels": {"background": 0, "ignore": 3}}, "'ignore' label"),
        ({"channel_names": "CT", "labels": LABELS}, "'channel_names' must map channel indices"),
        ({"channel_names": {"0": "CT"}, "labels": LABELS, "file_ending": ".png"}, "not a volume format"),
    ]:
        (tmp_path / "meta").mkdir(exist_ok=True)
        (tmp_path / "meta" / "dataset.json").write_text(json.dumps(meta))
        with pytest.raises(DataError, match=message):
            scan_nnunet_raw(tmp_path / "meta")
    (tmp_path / "meta" / "dataset.json").write_text("{not json")
    with pytest.raises(DataError, match=r"dataset\.json: not a readable JSON file"):
        scan_nnunet_raw(tmp_path / "meta")
    (tmp_path / "meta" / "dataset.json").write_text(
        json.dumps({"modality": {"0": "CT"}, "labels": LABELS, "training": [{"image": "../../etc/x.nii.gz"}]})
    )
    (tmp_path / "meta" / "imagesTr").mkdir()
    (tmp_path / "meta" / "labelsTr").mkdir()
    with pytest.raises(DataError, match="outside the data set folder"):
        scan_nnunet_raw(tmp_path / "meta")
