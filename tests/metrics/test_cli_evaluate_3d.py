"""`unetkit evaluate` on volumes: NIfTI / TIFF-stack pairs scored in 3D with surface distances in mm through the
ground truth's spacing, fields of view as volumes, and the mismatches refused with one line naming the files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from unetkit.cli.main import main
from unetkit.data.io import write_image
from unetkit.metrics import evaluate_dataset

nib = pytest.importorskip("nibabel")

SPACING = (1.0, 1.0, 2.0)  # (X, Y, Z) mm, as NIfTI stores them


def _ball(shape=(24, 26, 20), centre=(12, 13, 10), radius=6):
    grid = np.indices(shape)
    return (sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius**2).astype(np.uint8)


def _save(path, array, spacing=SPACING):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.diag([*spacing, 1.0])), path)


@pytest.fixture
def volumes(tmp_path):
    """Two cases of three classes: a ball (1) with a slab of class 2; case `a` predicted one slice too far
    along z (2 mm), case `b` exactly."""
    gts, preds = [], []
    for name, shift in (("a", 1), ("b", 0)):
        gt = _ball()
        gt[2:6, 2:8, 4:16] = 2
        pred = np.zeros_like(gt)
        pred[:, :, shift:] = gt[:, :, : gt.shape[2] - shift]  # no wrap-around: the border slices stay background
        _save(tmp_path / "gt" / f"{name}.nii.gz", gt)
        _save(tmp_path / "pred" / f"{name}.nii.gz", pred)
        gts.append(gt.astype(np.int64))
        preds.append(pred.astype(np.int64))
    return tmp_path, preds, gts


def test_volumes_are_scored_in_3d_with_surface_distances_in_mm(volumes, capsys):
    root, preds, gts = volumes
    assert main(["evaluate", str(root / "pred"), str(root / "gt"), "--json", str(root / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "HD95" in out and "in mm" in out
    result = json.loads((root / "r.json").read_text())
    expected = evaluate_dataset(
        preds, gts, names=["a", "b"], num_classes=3, surface=True, spacings=[SPACING, SPACING]
    )  # fmt: skip
    for got, want in zip(result["images"], expected["images"], strict=True):
        for key in ("dice", "iou", "hd95", "asd", "nsd"):
            assert got[key] == pytest.approx(want[key]), key
    shifted, exact = result["images"]
    # one slice along z is 2 mm: every border voxel of the ball's top and bottom moves 2 mm, so HD95 = 2 mm
    assert shifted["per_class"]["1"]["hd95"] == pytest.approx(2.0)
    assert shifted["per_class"]["1"]["nsd"] < 1.0  # the 1 mm tolerance does not cover a 2 mm shift
    assert exact["hd95"] == 0.0 and exact["nsd"] == 1.0 and exact["dice"] == 1.0
    assert result["micro"]["hd95"] is None  # distances are means over volumes, not pooled
    assert result["macro"]["hd95"] == pytest.approx((shifted["hd95"] + exact["hd95"]) / 2)


def test_a_wider_tolerance_in_mm_covers_the_shift(volumes, capsys):
    root, _, _ = volumes
    args = ["evaluate", str(root / "pred" / "a.nii.gz"), str(root / "gt" / "a.nii.gz"), "--tolerance", "2"]
    assert main([*args, "--json", str(root / "t.json")]) == 0
    assert json.loads((root / "t.json").read_text())["images"][0]["per_class"]["1"]["nsd"] == 1.0


def test_tiff_stacks_pair_with_nifti_stems_and_fov_volumes(tmp_path, capsys):
    gt = _ball()
    pred = gt.copy()
    pred[0:3] = 1  # false positives, outside the field of view below
    for side in ("gt", "pred"):
        (tmp_path / side).mkdir()
    tifffile.imwrite(tmp_path / "gt" / "case_01.tif", gt)
    tifffile.imwrite(tmp_path / "pred" / "case_01.tif", pred)
    fov = np.ones_like(gt)
    fov[0:3] = 0
    _save(tmp_path / "fov" / "case_01.nii.gz", fov)
    args = ["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "--json", str(tmp_path / "r.json")]
    assert main(args) == 0
    with_fp = json.loads((tmp_path / "r.json").read_text())["images"][0]
    assert with_fp["name"] == "case_01" and with_fp["precision"] < 1.0
    assert main([*args, "--fov", str(tmp_path / "fov")]) == 0
    inside = json.loads((tmp_path / "r.json").read_text())["images"][0]
    assert inside["dice"] == 1.0 and inside["hd95"] == 0.0 and inside["pixels"] == int(fov.sum())


def test_instances_are_matched_in_3d(tmp_path, capsys):
    labels = np.zeros((20, 20, 20), np.uint16)
    labels[2:6, 2:6, 2:6] = 1
    labels[10:16, 10:16, 10:16] = 2
    pred = labels.copy()
    pred[10:16, 10:16, 10:16] = 0  # one object missed
    _save(tmp_path / "gt" / "v.nii.gz", labels)
    _save(tmp_path / "pred" / "v_instances.nii.gz", pred)  # predict --instances' name
    _save(tmp_path / "pred" / "v.nii.gz", (pred > 0).astype(np.uint8))
    args = ["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "--instances", "--json", str(tmp_path / "r.json")]
    assert main(args) == 0
    row = json.loads((tmp_path / "r.json").read_text())["images"][0]
    assert row["instance_precision"] == 1.0 and row["instance_recall"] == 0.5


def test_images_get_distances_in_pixels_with_surface(tmp_path, capsys):
    gt = np.zeros((40, 40), np.uint8)
    gt[10:30, 10:30] = 255
    pred = np.roll(gt, 3, axis=1)
    for side, mask in (("gt", gt), ("pred", pred)):
        (tmp_path / side).mkdir()
        write_image(tmp_path / side / "x.png", mask)
    args = ["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "--json", str(tmp_path / "r.json")]
    assert main(args) == 0
    assert "hd95" not in json.loads((tmp_path / "r.json").read_text())["images"][0]
    assert main([*args, "--surface"]) == 0
    assert "in pixels" in capsys.readouterr().out
    assert json.loads((tmp_path / "r.json").read_text())["images"][0]["hd95"] == pytest.approx(3.0)


def test_mismatches_exit_2_naming_the_files(volumes, tmp_path, capsys):
    root, _, _ = volumes
    other = tmp_path / "other"
    _save(other / "a.nii.gz", _ball(), spacing=(1.0, 1.0, 1.0))
    assert main(["evaluate", str(root / "pred" / "a.nii.gz"), str(other / "a.nii.gz")]) == 2
    err = capsys.readouterr().err
    assert "voxel spacing" in err and "(1.0, 1.0, 2.0)" in err and str(other / "a.nii.gz") in err
    write_image(tmp_path / "a.png", np.zeros((24, 26), np.uint8))
    assert main(["evaluate", str(root / "pred" / "a.nii.gz"), str(tmp_path / "a.png")]) == 2
    assert "is a volume but" in capsys.readouterr().err
    assert main(["evaluate", str(root / "pred"), str(root / "gt"), "--probs", str(root / "pred")]) == 2
    assert "2-D masks only" in capsys.readouterr().err
    assert main(["evaluate", str(root / "pred"), str(root / "gt"), "--tolerance", "0"]) == 2
    assert "--tolerance" in capsys.readouterr().err
