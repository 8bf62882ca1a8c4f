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
