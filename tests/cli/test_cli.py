"""The console script: models table, summary in train and eval mode, one-line errors with status 2."""

import json
import subprocess
import sys

import pytest

from unetkit.cli import main
from unetkit.cli.demo import run_demo


def test_models_lists_every_model_with_its_parameter_count(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name, params in [
        ("unet_classic", "31,030,658"),
        ("unet", "31,037,698"),
        ("sa_unet", "483,252"),
        ("basic_unet", "309,057"),
        ("unet_dense_bottleneck", "234,977"),
    ]:
        line = next(row for row in out.splitlines() if row.split()[0] == name)
        assert params in line
    assert main(["models", "sa_*"]) == 0
    assert "unet_classic" not in capsys.readouterr().out


def test_summary_shows_dropblock_in_train_mode_only(capsys):
    assert main(["summary", "sa_unet", "--input", "1x1x64x64"]) == 0
    train = capsys.readouterr().out
    assert train.count("(DropBlock2d)") == 14
    assert "Total params: 483,252" in train and "SpatialAttention" in train
    assert main(["summary", "sa_unet", "--input", "1x1x64x64", "--eval"]) == 0
    evaluation = capsys.readouterr().out
    assert "(DropBlock2d)" not in evaluation and "14 DropBlock2d" in evaluation
    assert "Total params: 483,252" in evaluation


def test_summary_of_unet_classic_reports_388(capsys):
    assert main(["summary", "unet_classic", "--input", "1x1x572x572", "-o", "base_channels=4"]) == 0
    out = capsys.readouterr().out
    assert "Output shape: [1, 2, 388, 388]" in out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["summary", "unet_clasic"], "unknown model 'unet_clasic'; did you mean 'unet_classic'"),
        (["summary", "unet", "-o", "upsampel=bilinear"], "unknown option 'upsampel'"),
        (["summary", "unet", "-o", "upsample=bilinaer"], "did you mean 'bilinear'"),
        (["summary", "unet_classic", "--input", "1x1x570x572", "-o", "base_channels=4"], "nearest legal"),
        (["summary", "unet", "--input", "1x3x12"], "expected BxCxHxW"),
        (["summary", "sa_unet", "--input", "1x3x64x64"], "expected input of shape (B, 1, H, W)"),
    ],
)
def test_bad_input_gives_one_line_and_status_2(argv, expected, capsys):
    with pytest.raises(SystemExit) as exc:
        sys.exit(main(argv))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert expected in err
    assert "Traceback" not in err


def test_console_script_exit_status_and_debug_traceback():
    cmd = [sys.executable, "-m", "unetkit", "summary", "nope"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "unetkit summary: error: unknown model 'nope'; did you mean 'unet'? (available: "
        "basic_unet, ddpm_unet, sa_unet, unet, unet_classic, unet_classic_3d, unet_dense_bottleneck)"
    ]
    debug = subprocess.run(
        [sys.executable, "-m", "unetkit", "--debug", "summary", "nope"], capture_output=True, text=True, timeout=120
    )
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_demo_zoo_writes_the_zoo_table(tmp_path, capsys):
    assert main(["demo", "--zoo", "--out", str(tmp_path)]) == 0
    table = (tmp_path / "zoo.md").read_text()
    assert "| `sa_unet` | 483,252 |" in table
    assert "| `unet_classic` | 31,030,658 | 1x572x572 | 2x388x388 |" in table
    assert "DropBlock2d" in (tmp_path / "sa_unet_summary_train.txt").read_text()


def test_quick_demo_writes_every_output_and_runs_twice(tmp_path, capsys):
    for _ in range(2):  # a second run replaces the first one's run directory
        assert main(["demo", "--quick", "--no-progress", "--out", str(tmp_path)]) == 0
    for name in ("README.md", "held_out_overlays.png", "curves.png", "progress.gif", "metrics.json"):
        assert (tmp_path / name).is_file(), name
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0.0 <= metrics["pooled"]["dice"] <= 1.0
    assert len(metrics["per_image"]) == 2
    out = capsys.readouterr().out
    assert "held-out metrics" in out and "dice" in out


def test_demo_refuses_to_replace_a_folder_it_did_not_write(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "precious.txt").write_text("keep me")
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 2
    assert "not a previous demo run" in capsys.readouterr().err
    assert (tmp_path / "run" / "precious.txt").read_text() == "keep me"


def test_the_full_demo_reaches_dice_090_on_held_out_images(tmp_path):
    """The README's main job at its real settings (about 30 s of training on 2 CPU cores)."""
    metrics = run_demo(tmp_path, progress=False)
    assert metrics["pooled"]["dice"] >= 0.90
    assert min(row["dice"] for row in metrics["per_image"]) >= 0.80


def test_data_synthetic_writes_a_folder_that_trains_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "cells"
    assert main(["data", "synthetic", "cells", "--out", str(out), "-n", "3", "--size", "48", "--instances"]) == 0
    assert sorted(p.name for p in (out / "images").iterdir()) == ["cells_0000.png", "cells_0001.png", "cells_0002.png"]
    from unetkit.data.folder import load_folder
    from unetkit.data.synthetic import make_synthetic

    splits, info = load_folder(out, mask_mode="instances", val_fraction=0.0, seed=0)
    reference, _ = make_synthetic("cells", 3, 48, seed=0)
    assert info.mode == "instances"
    assert all(
        (a > 0).astype(int).tolist() == b.tolist()
        for a, b in zip(splits["train"].targets, reference.targets, strict=True)
    )
    assert main(["data", "synthetic", "cells", "--out", str(out), "-n", "1"]) == 2
    assert "already exists" in capsys.readouterr().err
    vessels = tmp_path / "vessels"
    assert main(["data", "synthetic", "vessels", "--out", str(vessels), "-n", "2", "--start", "5", "--size", "48"]) == 0
    assert sorted(p.name for p in (vessels / "fov").iterdir()) == ["vessels_0005.png", "vessels_0006.png"]
