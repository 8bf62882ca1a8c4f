"""`unetkit sample`: a grid from a diffusion checkpoint, the same for the same seed; one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from unetkit import TrainConfig, train
from unetkit.cli.main import main


@pytest.fixture(scope="module")
def diffusion_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample") / "run"
    config = TrainConfig(
        task="diffusion",
        data="synthetic:digits",
        model="basic_unet",
        model_options={"channels": [4, 8]},
        epochs=1,
        batch_size=4,
        patch_size=0,
        steps_per_epoch=1,
        synthetic_train=4,
        synthetic_val=2,
        samples=0,
        diffusion_steps=20,
        sample_steps=2,
        time_embedding=8,
        threads=1,
        out=str(out),
    )
    return train(config).run_dir


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_sample_writes_the_same_grid_for_the_same_seed(diffusion_run, tmp_path, sampler, capsys):
    paths = [tmp_path / f"{i}.png" for i in range(3)]
    for path, seed in zip(paths, (1, 1, 2), strict=True):
        argv = ["sample", str(diffusion_run), "-n", "6", "--out", str(path), "--sampler", sampler]
        assert main([*argv, "--steps", "5", "--seed", str(seed), "--columns", "3"]) == 0
    assert "6 samples" in capsys.readouterr().out
    a, b, c = (np.asarray(Image.open(p)) for p in paths)
    assert a.shape == (2 * 30 + 2, 3 * 30 + 2, 3)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_sample_writes_the_refinement_steps(diffusion_run, tmp_path):
    argv = ["sample", str(diffusion_run / "best"), "-n", "2", "--out", str(tmp_path / "g.png"), "--zoom", "2"]
    assert main([*argv, "--trajectory", str(tmp_path / "t.png"), "--frames", "4", "--sampler", "ddpm"]) == 0
    steps = np.asarray(Image.open(tmp_path / "t.png"))
    assert steps.shape == (2 * (2 * 30 + 2), 2 * (5 * 30 + 2), 3)  # 2 samples x (4 frames + the sample)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--steps", "50"], "--steps must be in [1, 20]"),
        (["-n", "0"], "-n must be >= 1"),
        (["--out", "grid.jpg"], "--out must name a .png file"),
    ],
)
def test_sample_bad_arguments(diffusion_run, tmp_path, extra, expected, capsys):
    argv = ["sample", str(diffusion_run), "--out", str(tmp_path / "g.png"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1


def test_sample_refuses_a_segmentation_checkpoint(tmp_path, capsys):
    config = TrainConfig(
        data="synthetic:cells",
        model="unet",
        model_options={"base_channels": 4, "depth": 2},
        epochs=1,
        batch_size=2,
        patch_size=32,
        steps_per_epoch=1,
        synthetic_train=2,
        synthetic_val=1,
        synthetic_size=48,
        samples=0,
        threads=1,
        out=str(tmp_path / "seg"),
    )
    train(config)
    assert main(["sample", str(tmp_path / "seg"), "--out", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert "a segmentation checkpoint; sampling needs a diffusion checkpoint" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "g.png").exists()
    assert main(["sample", str(tmp_path / "nothing"), "--out", str(tmp_path / "g.png")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err


def test_predict_refuses_a_diffusion_checkpoint(diffusion_run, tmp_path, capsys):
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(image)
    assert main(["predict", str(diffusion_run), str(image), "--out", str(tmp_path / "pred")]) == 2
    err = capsys.readouterr().err
    assert "a diffusion checkpoint; `unetkit predict` needs a segmentation, denoise or superres checkpoint" in err
