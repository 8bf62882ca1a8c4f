"""The image-to-image tasks on tiny runs: denoise, superres and diffusion on digits and on folders of the
user's own images (grey and RGB, 8 and 16 bit, odd sizes), the checkpoint entries prediction reads, `unetkit
predict` restoring images of any size with the tiler, and the data errors of image folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unetkit import TrainConfig, load_model, train
from unetkit.cli.main import main
from unetkit.data import read_image, write_image
from unetkit.data.corrupt import reduce_resolution
from unetkit.data.image_folder import load_image_folder
from unetkit.infer.restore import evaluate_denoiser, evaluate_superres, held_out_digits, load_restoration_model
from unetkit.models.inference import forward_whole

TINY = {
    "data": "synthetic:digits",
    "model": "basic_unet",
    "model_options": {"channels": [4, 8]},
    "epochs": 2,
    "batch_size": 8,
    "patch_size": 0,
    "steps_per_epoch": 3,
    "synthetic_train": 16,
    "synthetic_val": 4,
    "samples": 2,
    "deterministic": True,
    "threads": 1,
}
DIFFUSION = {"diffusion_steps": 20, "sample_steps": 3, "time_embedding": 8}


def _config(out: Path, task: str, **changes: object) -> TrainConfig:
    extra = DIFFUSION if task == "diffusion" else {}
    return TrainConfig(**{**TINY, **extra, "task": task, "out": str(out), **changes})  # type: ignore[arg-type]


def photos(root: Path, *, rgb: bool = True, sizes=((37, 53), (64, 48), (50, 50), (41, 70)), dtype=np.uint8) -> Path:
    """A folder of smooth random pictures of odd sizes, as a user's own photos come."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    top = np.iinfo(dtype).max
    for i, (h, w) in enumerate(sizes):
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        channels = 3 if rgb else 1
        phase = rng.uniform(0, 6, size=(channels, 2))
        image = np.stack([0.5 + 0.4 * np.sin(6 * yy + p[0]) * np.cos(5 * xx + p[1]) for p in phase], axis=-1)
        pixels = np.round(image * top).astype(dtype)
        suffix = ".png" if dtype == np.uint8 else ".tif"
        write_image(root / f"photo{i}{suffix}", pixels if rgb else pixels[..., 0])
    return root


@pytest.mark.parametrize("task", ["denoise", "superres", "diffusion"])
def test_each_task_trains_on_digits_and_writes_its_run(tmp_path, task):
    result = train(_config(tmp_path / task, task))
    run = result.run_dir
    for name in ("config.yaml", "metrics.csv", "curves.png", "best/model.safetensors", "last/state.pt"):
        assert (run / name).is_file(), name
    assert (run / "samples" / "epoch_002.png").is_file()
    row = result.history[-1]
    assert row["val_loss"] < result.history[0]["train_loss"] * 2
    config = json.loads((run / "best" / "config.json").read_text())
    assert config["task"] == task and config["image"] == {"channels": 1, "size": 28, "data": "synthetic:digits"}
    assert config["output"] == ("identity" if task == "diffusion" else "residual")
    model = load_model(run)
    if task == "diffusion":
        assert config["diffusion"] == {"beta_schedule": "linear", "steps": 20, "prediction": "eps"}
        assert model.model_config["time_embedding"] == 8
        assert result.monitor == "loss"
    else:
        assert {"psnr", "ssim", "psnr_input"} <= set(row)
        assert model.model_config["time_embedding"] == 0
        assert result.monitor == "psnr"
    saved = (run / "config.yaml").read_text()
    assert "weight_map" not in saved and "mask_mode" not in saved  # the task's fields only


def test_denoiser_and_superres_evaluation_on_held_out_digits(tmp_path):
    run = train(_config(tmp_path / "d", "denoise", residual=False)).run_dir  # the model gives the image itself
    model = load_restoration_model(run)
    assert model.checkpoint_config["output"] == "identity"
    images = held_out_digits(model, n=6)
    assert images.shape == (6, 1, 28, 28)
    rows, figure = evaluate_denoiser(model, images, amounts=(0.2, 0.6))
    assert [r["amount"] for r in rows] == [0.2, 0.6]
    assert rows[0]["psnr_input"] > rows[1]["psnr_input"]  # more noise, lower PSNR of the input
    assert figure.shape == (5 * 30 + 2, 6 * 30 + 2, 3)  # clean + (noisy, denoised) x 2 rows of 28-px tiles
    scores, _ = evaluate_superres(model, images, 4)
    assert set(scores) >= {"psnr_input", "psnr_output", "psnr_gain"}
    with pytest.raises(ValueError, match="a diffusion checkpoint; expected one of"):
        load_restoration_model(train(_config(tmp_path / "x", "diffusion", epochs=1)).run_dir)


def test_validation_psnr_is_that_of_the_whole_images(tmp_path):
    """The logged PSNR of a superres run equals PSNR recomputed by hand (numpy) on its validation images."""
    data = photos(tmp_path / "photos", rgb=False, sizes=((40, 44), (36, 52), (48, 48)))
    config = _config(tmp_path / "run", "superres", data=str(data), patch_size=16, val_fraction=0.34, epochs=1)
    config.model_options = {"channels": [4, 8]}
    result = train(config)
    model = load_model(tmp_path / "run" / "best")
    held_out = load_image_folder(data, val_fraction=0.34, seed=0).names["val"]
    assert len(held_out) == 1
    x = torch.from_numpy(read_image(data / f"{held_out[0]}.png").astype(np.float32) / 255)[None, None]
    h, w = (x.shape[-2] // 4) * 4, (x.shape[-1] // 4) * 4  # cropped to multiples of the factor, centred
    top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    x = x[..., top : top + h, left : left + w]
    with torch.no_grad():
        low = reduce_resolution(x, 4)
        out = (low + forward_whole(model, low)).clamp(0, 1)  # residual: the correction added to the input
    mse = float(((out.double() - x.double()) ** 2).mean())
    assert result.history[0]["psnr"] == pytest.approx(10 * np.log10(1 / mse), abs=1e-3)


@pytest.mark.parametrize(("task", "rgb", "dtype"), [("denoise", True, np.uint8), ("superres", False, np.uint16)])
def test_a_folder_of_own_images_trains_and_predict_restores_any_size(tmp_path, task, rgb, dtype, capsys):
    data = photos(tmp_path / "photos", rgb=rgb, dtype=dtype)
    run = tmp_path / "run"
    argv = ["train", "--task", task, "--data", str(data), "--model", "unet", "--patch-size", "32", "--epochs", "1"]
    argv += ["-m", "base_channels=4", "-m", "depth=2", "--batch-size", "4", "--set", "steps_per_epoch=2"]
    argv += ["--set", "noise_type=gaussian", "--set", "noise_amount=0.1"] if task == "denoise" else []
    assert main([*argv, "--out", str(run), "--deterministic"]) == 0
    config = json.loads((run / "best" / "config.json").read_text())
    assert config["image"]["channels"] == (3 if rgb else 1)
    assert config["image"]["size"] == 32
    if task == "denoise":  # validation noise: sigma = noise_amount / 2 = 0.05, PSNR 10 log10(1 / 0.05^2) = 26.02 dB
        assert config["metrics"]["psnr_input"] == pytest.approx(26.02, abs=0.15)
    # a new picture of another size, predicted tile by tile (tiles smaller than the image)
    other = photos(tmp_path / "new", rgb=rgb, sizes=((45, 71),), dtype=dtype) / f"photo0{'.png' if rgb else '.tif'}"
    capsys.readouterr()
    for name, tile in (("tiled", "32"), ("whole", "512")):  # 512: one tile holds even the x4 output
        assert main(["predict", str(run), str(other), "--out", str(tmp_path / name), "--tile", tile]) == 0
    assert "->" in capsys.readouterr().out
    written = sorted((tmp_path / "tiled").iterdir())
    assert [p.name for p in written] == [other.stem + other.suffix]
    tiled, whole = read_image(written[0]), read_image(tmp_path / "whole" / written[0].name)
    factor = 4 if task == "superres" else 1
    assert tiled.dtype == dtype and tiled.shape[:2] == (45 * factor, 71 * factor)
    # one tile covering the image is the model's whole-image forward, to the last bit of the file's depth
    model = load_model(run)
    x = torch.from_numpy(read_image(other).astype(np.float32) / np.iinfo(dtype).max)
    x = (x.permute(2, 0, 1) if rgb else x[None])[None]
    if task == "superres":
        x = torch.nn.functional.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)
    assert model.checkpoint_config["output"] == "residual"  # the default: output = input + correction
    with torch.no_grad():
        expected = (x + forward_whole(model, x)).clamp(0, 1)[0].numpy()
    expected = np.round((np.moveaxis(expected, 0, -1) if rgb else expected[0]) * np.iinfo(dtype).max)
    assert np.abs(whole.astype(np.float64) - expected).max() <= 1
    close = np.abs(tiled.astype(np.float64) - whole.astype(np.float64)).mean() / np.iinfo(dtype).max
    assert close < 0.05  # blended tiles stay close to the whole-image output


def test_predict_flags_of_segmentation_are_refused_for_restoration(tmp_path, capsys):
    run = train(_config(tmp_path / "run", "denoise", epochs=1)).run_dir
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(image)
    assert main(["predict", str(run), str(image), "--out", str(tmp_path / "p"), "--probs"]) == 2
    assert "--probs: for segmentation checkpoints" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_image_folder_errors_name_the_file(tmp_path, capsys):
    mixed = photos(tmp_path / "mixed", rgb=True, sizes=((30, 30),))
    write_image(mixed / "grey.png", np.zeros((30, 30), np.uint8))
    base = ["train", "--task", "denoise", "--epochs", "1", "--patch-size", "16", "--out", str(tmp_path / "r")]
    assert main([*base, "--data", str(mixed)]) == 2
    assert "photo0.png: image has 3 channel(s), but" in capsys.readouterr().err
    hot = tmp_path / "hot"
    hot.mkdir()
    write_image(hot / "a.tif", np.full((20, 20), 2.0, np.float32))
    assert main([*base, "--data", str(hot)]) == 2
    assert "a.tif: float pixel values must lie in [0, 1]" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([*base, "--data", str(tmp_path / "empty")]) == 2
    assert "empty: no image files" in capsys.readouterr().err
    assert main([*base, "--data", str(tmp_path / "nowhere")]) == 2
    assert "nowhere: no such folder" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_diffusion_patches_must_fit_the_images_and_superres_the_factor(tmp_path, capsys):
    data = photos(tmp_path / "p", rgb=False, sizes=((30, 40), (20, 50)))
    base = ["train", "--data", str(data), "--epochs", "1", "--out", str(tmp_path / "r"), "-m", "channels=[4,8]"]
    assert main([*base, "--task", "diffusion", "--model", "basic_unet", "--patch-size", "24"]) == 2
    assert "is 20x50, smaller than the 24x24 patches diffusion samples" in capsys.readouterr().err
    assert main([*base, "--task", "superres", "--model", "basic_unet", "--patch-size", "18"]) == 2
    assert "`scale_factor` 4 must divide the training patch 18x18" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_sample_draws_from_a_diffusion_run_on_a_folder_of_rgb_images(tmp_path):
    data = photos(tmp_path / "p", rgb=True, sizes=((20, 24), (22, 20), (24, 24)))
    config = _config(tmp_path / "run", "diffusion", data=str(data), patch_size=16, epochs=1, samples=1)
    train(config)
    assert json.loads((tmp_path / "run" / "best" / "config.json").read_text())["image"]["channels"] == 3
    assert main(["sample", str(tmp_path / "run"), "-n", "4", "--steps", "2", "--out", str(tmp_path / "g.png")]) == 0
    grid = read_image(tmp_path / "g.png")
    assert grid.shape == (2 + 16 + 2, 4 * (16 + 2) + 2, 3)  # one row of four 16-px RGB samples with 2-px gaps


def test_cli_train_task_flag_and_diffusion_without_embedding(tmp_path, capsys):
    argv = ["train", "--task", "denoise", "--data", "synthetic:digits", "--model", "basic_unet", "--epochs", "1"]
    argv += ["--out", str(tmp_path / "run"), "-m", "channels=[4,8]", "--set", "synthetic_train=8", "--patch-size", "0"]
    argv += ["--set", "synthetic_val=2", "--set", "steps_per_epoch=1"]
    assert main(argv) == 0
    assert "psnr" in capsys.readouterr().out
    bad = ["train", "--task", "diffusion", "--data", "synthetic:digits", "--out", str(tmp_path / "bad")]
    assert main([*bad, "-m", "time_embedding=0", "--set", "synthetic_train=8", "--patch-size", "0"]) == 2
    assert "needs a model with a timestep embedding" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize(
    ("model", "options"),
    [
        ("unet", {"base_channels": 4, "depth": 2}),
        ("unet_dense_bottleneck", {"channels": [4, 8, 8]}),
        ("ddpm_unet", {"channels": [4, 8, 8]}),
    ],
)
def test_every_u_net_with_a_time_embedding_trains_diffusion_at_32(tmp_path, model, options):
    config = _config(tmp_path / model, "diffusion", model=model, model_options=options, digits_size=32, epochs=1)
    run = train(config).run_dir
    loaded = load_model(run)
    assert loaded.model_config["time_embedding"] == 8 and loaded.in_channels == 1
    assert json.loads((run / "best" / "config.json").read_text())["image"]["size"] == 32
