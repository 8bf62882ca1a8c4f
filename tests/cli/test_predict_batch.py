"""Batch runs of `unetkit predict`: `--skip-errors` passes over a bad file and fails at the end with the
list, `--skip-existing` resumes a folder run, a summary line counts both; `evaluate --instances` reads
the `_instances.tif` files `predict --instances` writes; `.pt2` exports take images below their traced
minimum side."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

from unetkit import create_model, save_model
from unetkit.cli.main import main
from unetkit.data import write_image


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("unet", in_channels=1, base_channels=4, depth=2, num_classes=1)
    path = tmp_path_factory.mktemp("ckpt") / "ckpt"
    save_model(model, path, extra={"mask": {"label_values": [0, 255]}})
    return path


def _folder(tmp_path, n=3):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(n):
        write_image(folder / f"img{i}.png", np.random.default_rng(i).integers(0, 255, (40, 50), dtype=np.uint8))
    return folder


def test_skip_errors_goes_on_and_fails_at_the_end_with_the_list(tmp_path, checkpoint, capsys):
    folder = _folder(tmp_path)
    (folder / "img1.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30)  # truncated
    out = tmp_path / "out"
    code = main(["predict", str(checkpoint), str(folder), "--out", str(out), "--engine", "torch", "--skip-errors"])
    captured = capsys.readouterr()
    assert code == 2
    assert sorted(p.name for p in out.iterdir()) == ["img0.png", "img2.png"]
    assert "2 done, 0 skipped (outputs existed), 1 failed" in captured.out
    assert f"unetkit predict: error: 1 of 3 input(s) failed: {folder / 'img1.png'} (" in captured.err
    assert main(["predict", str(checkpoint), str(folder), "--out", str(tmp_path / "o2"), "--engine", "torch"]) == 2
    assert sorted(p.name for p in (tmp_path / "o2").iterdir()) == ["img0.png"]  # without the flag: stops there


def test_skip_existing_resumes_a_folder_run(tmp_path, checkpoint, capsys):
    folder = _folder(tmp_path)
    out = tmp_path / "out"
    args = ["predict", str(checkpoint), str(folder), "--out", str(out), "--engine", "torch", "--probs"]
    assert main(["predict", str(checkpoint), str(folder / "img0.png"), *args[3:]]) == 0  # a run cut after img0
    (out / "img1.png").write_bytes(b"a mask without its probabilities")
    before = (out / "img0.png").stat().st_mtime_ns
    capsys.readouterr()
    assert main([*args, "--skip-existing"]) == 0
    assert "2 done, 1 skipped (outputs existed), 0 failed" in capsys.readouterr().out
    assert (out / "img0.png").stat().st_mtime_ns == before  # not predicted again
    assert tifffile.imread(out / "img1_probs.tif").shape == (2, 40, 50)  # img1 lacked its probabilities


def test_evaluate_instances_reads_what_predict_instances_writes(tmp_path, checkpoint, capsys):
    import json

    from tests.infer.test_instances_tiled import _cells
    from unetkit.infer.instances import instances_from_probs

    folder = _folder(tmp_path, n=1)
    out = tmp_path / "pred"
    assert main(["predict", str(checkpoint), str(folder), "--out", str(out), "--instances", "--engine", "torch"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["img0.png", "img0_instances.tif"]
    truth = tmp_path / "truth"
    truth.mkdir()
    tifffile.imwrite(truth / "img0.tif", tifffile.imread(out / "img0_instances.tif"))
    assert main(["evaluate", str(out), str(truth), "--instances"]) == 0  # paired by name, no renaming
    # the object labels are scored, not the connected components of the mask beside them
    fg = _cells((96, 120), count=14)
    objects = instances_from_probs(fg, "watershed")
    assert objects.max() > instances_from_probs(fg, "components").max()  # touching cells: the mask merges them
    pred, truth = tmp_path / "p2", tmp_path / "t2"
    pred.mkdir()
    truth.mkdir()
    tifffile.imwrite(pred / "a_instances.tif", objects.astype(np.uint16))
    write_image(pred / "a.png", (fg > 0.5).astype(np.uint8) * 255)
    tifffile.imwrite(truth / "a.tif", objects.astype(np.uint16))
    assert main(["evaluate", str(pred), str(truth), "--instances", "--json", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["images"][0]["instance_f1"] == 1.0


def test_pt2_export_takes_images_below_its_traced_minimum(tmp_path, checkpoint):
    from unetkit.export import export_torch, load_exported
    from unetkit.infer.exported import InputSides

    path = tmp_path / "m.pt2"
    export_torch(checkpoint, path)
    exported = load_exported(path)
    exported.sides = InputSides(32, exported.sides.step)  # as torch.export may raise the smallest side
    x = torch.rand(1, 1, 9, 13)
    out = exported(x)
    assert out.shape == (1, 1, 9, 13) and torch.isfinite(out).all()


@pytest.fixture(scope="module")
def checkpoint3d(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("unet", in_channels=1, base_channels=4, depth=1, num_classes=2, spatial_dims=3)
    path = tmp_path_factory.mktemp("ckpt3d") / "ckpt"
    save_model(model, path, extra={"mask": {"label_values": [0, 1]}})
    return path


def _stacks(tmp_path, n=2, suffix=".tif"):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(n):
        stack = np.random.default_rng(i).integers(0, 255, (6, 10, 9), dtype=np.uint8)
        if suffix == ".tif":
            tifffile.imwrite(folder / f"s{i}.tif", stack, imagej=True, metadata={"axes": "ZYX", "spacing": 2.0})
        else:
            nibabel = pytest.importorskip("nibabel")
            nibabel.save(nibabel.Nifti1Image(stack, np.diag([1.0, 1.0, 2.0, 1.0])), folder / f"s{i}{suffix}")
    return folder


@pytest.mark.parametrize("suffix", [".tif", ".nii.gz"])
def test_skip_existing_resumes_a_run_of_volumes_by_their_output_names(tmp_path, checkpoint3d, capsys, suffix):
    folder = _stacks(tmp_path, suffix=suffix)
    out = tmp_path / "out"
    args = ["predict", str(checkpoint3d), str(folder), "--out", str(out), "--tile", "8", "--probs", "--overlay"]
    assert main([*args[:2], str(folder / f"s0{suffix}"), *args[3:]]) == 0  # a run cut after s0
    assert sorted(p.name for p in out.iterdir()) == sorted([f"s0{suffix}", "s0_overlay.png", f"s0_probs{suffix}"])
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    capsys.readouterr()
    assert main([*args, "--skip-existing"]) == 0
    assert "1 done, 1 skipped (outputs existed), 0 failed" in capsys.readouterr().out
    assert all(p.stat().st_mtime_ns == before[p.name] for p in out.iterdir() if p.name.startswith("s0"))
    assert {f"s1{suffix}", f"s1_probs{suffix}", "s1_overlay.png"} <= {p.name for p in out.iterdir()}
    (out / "s1_overlay.png").unlink()  # an output asked for is missing: predicted again
    assert main([*args, "--skip-existing"]) == 0
    assert "1 done, 1 skipped" in capsys.readouterr().out and (out / "s1_overlay.png").is_file()


def test_mask_format_stays_refused_for_volumes(tmp_path, checkpoint3d, capsys):
    folder = _stacks(tmp_path, n=1)
    args = ["predict", str(checkpoint3d), str(folder / "s0.tif"), "--out", str(tmp_path / "out"), "--tile", "8"]
    assert main([*args, "--probs", "--instances", "--mask-format", "png"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--mask-format: not available for volumes" in err[0] and "s0.tif" in err[0], err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("suffix", [".tif", ".nii.gz"])
def test_skip_existing_counts_the_instances_of_volumes(tmp_path, checkpoint3d, capsys, suffix):
    folder = _stacks(tmp_path, n=1, suffix=suffix)
    out = tmp_path / "out"
    args = ["predict", str(checkpoint3d), str(folder), "--out", str(out), "--tile", "8"]
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"s0{suffix}"]
    capsys.readouterr()
    assert main([*args, "--instances", "components", "--skip-existing"]) == 0  # the instances are missing
    assert "1 done, 0 skipped" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted([f"s0{suffix}", f"s0_instances{suffix}"])
    assert main([*args, "--instances", "--skip-existing"]) == 0
    assert "0 done, 1 skipped" in capsys.readouterr().out
