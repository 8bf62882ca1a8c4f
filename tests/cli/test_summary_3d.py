"""`unetkit models` and `unetkit summary` for 3D models (volumes `BxCxDxHxW`)."""

from unetkit.cli import main


def test_models_lists_the_3d_unet_with_the_papers_count_and_a_volume_input(capsys):
    assert main(["models", "*_3d"]) == 0
    line = next(row for row in capsys.readouterr().out.splitlines() if row.startswith("unet_classic_3d"))
    assert line.split()[1:3] == ["19,069,955", "3x132x132x116"]


def test_summary_of_a_3d_model_lists_conv3d_and_the_output_volume(capsys):
    args = ["summary", "unet_classic_3d", "--input", "1x3x92x100x92", "-o", "base_channels=2", "--eval"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "input [1, 3, 92, 100, 92]" in out and "Output shape: [1, 3, 4, 12, 4]" in out
    assert out.count("(Conv3d)") == 15 and out.count("(ConvTranspose3d)") == 3
    assert main(["summary", "sa_unet", "--input", "1x1x8x16x16", "-o", "spatial_dims=3"]) == 0
    train = capsys.readouterr().out
    assert train.count("(DropBlock3d)") == 14 and "Output shape: [1, 1, 8, 16, 16]" in train


def test_summary_refuses_a_shape_of_the_wrong_rank(capsys):
    assert main(["summary", "unet", "--input", "1x1x8"]) == 2
    assert "expected BxCxHxW (or BxCxDxHxW for volumes)" in capsys.readouterr().err
