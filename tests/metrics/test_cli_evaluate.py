"""`unetkit evaluate PRED GT`: a folder pair scored and written as JSON / CSV; usage errors exit 2."""

import csv
import json

import numpy as np
import pytest
import tifffile

from unetkit.cli.main import main
from unetkit.data.io import write_image
from unetkit.metrics import evaluate_dataset

# 3 x 5 masks stored as 0 / 255, as `unetkit predict` writes binary ones
GT_A = np.array([[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 0, 1, 1]])
PRED_A = np.array([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 1, 1]])
GT_B = np.zeros((3, 5), int)
PRED_B = np.zeros((3, 5), int)
PRED_B[0, 0] = 1


@pytest.fixture
def folders(tmp_path):
    pred, gt, fov, probs = (tmp_path / d for d in ("pred", "gt", "fov", "probs"))
    for d in (pred, gt, fov, probs):
        d.mkdir()
    for name, p, g in (("a", PRED_A, GT_A), ("b", PRED_B, GT_B)):
        write_image(pred / f"{name}.png", (p * 255).astype(np.uint8))
        write_image(gt / f"{name}.png", (g * 255).astype(np.uint8))
        f = np.full((3, 5), 255, np.uint8)
        f[:, 4] = 0
        write_image(fov / f"{name}.png", f)
        fg = np.where(p > 0, 0.8, 0.3).astype(np.float32)
        tifffile.imwrite(probs / f"{name}_probs.tif", np.stack([1 - fg, fg]))  # (K, H, W) as predict writes
    write_image(pred / "a_overlay.png", np.zeros((3, 5, 3), np.uint8))  # predict's side outputs: skipped
    tifffile.imwrite(pred / "a_probs.tif", np.zeros((2, 3, 5), np.float32))
    return tmp_path


def test_folder_pair_writes_json_and_csv(folders, capsys):
    out_json, out_csv = folders / "out" / "m.json", folders / "out" / "m.csv"
    args = ["evaluate", str(folders / "pred"), str(folders / "gt"), "--fov", str(folders / "fov")]
    args += ["--probs", str(folders / "probs"), "--instances", "--json", str(out_json), "--csv", str(out_csv)]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "micro" in table and "macro" in table and "Dice/F1" in table and "AUC" in table
    result = json.loads(out_json.read_text())
    fov = np.ones((3, 5), bool)
    fov[:, 4] = False
    probs = [np.where(p > 0, 0.8, 0.3) for p in (PRED_A, PRED_B)]
    expected = evaluate_dataset(
        [PRED_A, PRED_B], [GT_A, GT_B], fovs=[fov, fov], probs=probs, names=["a", "b"], instances=True
    )
    assert [r["name"] for r in result["images"]] == ["a", "b"]
    for key in ("dice", "mcc", "auc", "rand_error", "instance_f1", "mean_ap"):
        for got, want in zip(result["images"], expected["images"], strict=True):
            assert got[key] == pytest.approx(want[key]), key
        assert result["micro"][key] == pytest.approx(expected["micro"][key]), key
    # by hand, image a inside the FOV (columns 0-3): tp 4, fp (0, 2), fn (1, 1) -> Dice 8 / 10
    assert result["images"][0]["dice"] == pytest.approx(8 / 10)
    rows = list(csv.DictReader(out_csv.open()))
    assert [(r["kind"], r["name"]) for r in rows] == [("image", "a"), ("image", "b"), ("micro", ""), ("macro", "")]
    assert float(rows[0]["dice"]) == pytest.approx(8 / 10)
    assert rows[1]["sensitivity"] == ""  # None: empty target with a false positive
    assert not [p for p in out_json.parent.iterdir() if p.name.endswith(".tmp")]


def test_single_files_pair_whatever_their_names(folders, capsys):
    assert main(["evaluate", str(folders / "pred" / "a.png"), str(folders / "gt" / "b.png")]) == 0
    assert "micro" in capsys.readouterr().out


def test_mismatched_size_exits_2_naming_both_files(folders, capsys):
    write_image(folders / "gt" / "b.png", np.zeros((4, 5), np.uint8))
    assert main(["evaluate", str(folders / "pred"), str(folders / "gt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert str(folders / "pred" / "b.png") in err and str(folders / "gt" / "b.png") in err


def test_missing_counterparts_exit_2_listing_all(folders, capsys):
    write_image(folders / "gt" / "c.png", np.zeros((3, 5), np.uint8))
    write_image(folders / "pred" / "d.png", np.zeros((3, 5), np.uint8))
    assert main(["evaluate", str(folders / "pred"), str(folders / "gt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "2 file(s)" in err
    assert str(folders / "gt" / "c.png") in err and str(folders / "pred" / "d.png") in err


def test_missing_fov_and_probs_exit_2(folders, capsys):
    (folders / "fov" / "b.png").unlink()
    assert main(["evaluate", str(folders / "pred"), str(folders / "gt"), "--fov", str(folders / "fov")]) == 2
    err = capsys.readouterr().err
    assert str(folders / "fov" / "b") in err and err.count("\n") == 1
    (folders / "probs" / "a_probs.tif").unlink()
    assert main(["evaluate", str(folders / "pred"), str(folders / "gt"), "--probs", str(folders / "probs")]) == 2
    assert str(folders / "probs" / "a_probs") in capsys.readouterr().err


def test_grey_class_masks_are_three_classes_not_256(tmp_path, capsys):
    """The issue's case: 0/128/255 masks (as predict writes a 3-class run's) were read as class indices, 256
    classes with 253 absent ones at 1.0. Read as train reads a folder, they are 3 classes."""
    gt = np.array([[0, 128, 128, 255], [0, 0, 255, 255]], np.uint8)
    pred = np.array([[0, 128, 255, 255], [0, 128, 255, 0]], np.uint8)
    for folder, mask in (("p", pred), ("g", gt)):
        write_image(tmp_path / folder / "a.png", mask)
    out = tmp_path / "m.json"
    assert main(["evaluate", str(tmp_path / "p"), str(tmp_path / "g"), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "masks read as classes {0, 128, 255}" in text
    result = json.loads(out.read_text())
    assert result["num_classes"] == 3
    # class 128: tp 1, fp 1, fn 1 -> 1/2; class 255: tp 2, fp 1, fn 1 -> 2/3; mean 7/12
    assert result["micro"]["dice"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert main(["evaluate", str(tmp_path / "p"), str(tmp_path / "g"), "--label-values", "0,128,255,64",
                 "--json", str(out)]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "absent from prediction and ground truth" in text and "class(es) 1" in text  # value 64: index 1
    assert json.loads(out.read_text())["micro"]["dice"] == pytest.approx((1 / 2 + 2 / 3) / 2)  # not inflated


def test_checkpoint_label_values_and_ignore_index(tmp_path, capsys):
    from unetkit.data.realistic import voc_palette
    from unetkit.models import create_model
    from unetkit.models.checkpoint import save_model

    extra = {"mask": {"mode": "classes", "num_classes": 3, "label_values": [0, 1, 15], "ignore_index": 255}}
    save_model(
        create_model("unet", in_channels=3, num_classes=3, base_channels=4, depth=1), tmp_path / "ck", extra=extra
    )
    from PIL import Image

    gt = np.array([[0, 1, 255, 15], [0, 1, 1, 15]], np.uint8)
    picture = Image.fromarray(gt, mode="P")
    picture.putpalette(voc_palette().ravel().tolist())
    (tmp_path / "g").mkdir()
    picture.save(tmp_path / "g" / "a.png")  # a VOC palette mask with its 255 border
    write_image(tmp_path / "p" / "a.png", np.array([[0, 1, 0, 15], [0, 15, 1, 15]], np.uint8))
    out = tmp_path / "m.json"
    args = ["evaluate", str(tmp_path / "p"), str(tmp_path / "g"), "--checkpoint", str(tmp_path / "ck")]
    assert main([*args, "--json", str(out)]) == 0
    assert "value 255 ignored" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["micro"]["pixels"] == 7  # the border pixel is in no count
    # class 1: tp 2, fp 0, fn 1 -> 4/5; class 15 (index 2): tp 2, fp 1, fn 0 -> 4/5
    assert result["micro"]["dice"] == pytest.approx(0.8)
    write_image(tmp_path / "p" / "a.png", np.array([[0, 1, 0, 7], [0, 15, 1, 15]], np.uint8))
    assert main(args) == 2
    assert "p/a.png: mask values {7} are not among the label values {0, 1, 15}" in capsys.readouterr().err
