"""The image-to-image tasks end to end on tiny runs: denoise, superres and diffusion train and write
their run directories; resume is exact; config validation of `task` and its fields."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from unetkit import TrainConfig, load_model, train
from unetkit.cli.main import main
from unetkit.infer.restore import evaluate_denoiser, evaluate_superres, held_out_digits, load_restoration_model
from unetkit.train.config import config_from_dict
from unetkit.train.image2image import ImageTrainer

TINY = {
    "data": "synthetic:digits",
    "model": "basic_unet",
    "model_options": {"channels": [4, 8]},
    "epochs": 2,
    "batch_size": 8,
    "steps_per_epoch": 3,
    "synthetic_train": 16,
    "synthetic_val": 4,
    "samples": 2,
    "deterministic": True,
    "threads": 1,
    "diffusion_steps": 20,
    "sample_steps": 3,
    "time_embedding": 8,
}


def _config(out: Path, task: str, **changes: object) -> TrainConfig:
    return TrainConfig(**{**TINY, "task": task, "out": str(out), **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize("task", ["denoise", "superres", "diffusion"])
def test_each_task_trains_and_writes_its_run(tmp_path, task):
    result = train(_config(tmp_path / task, task))
    run = result.run_dir
    for name in ("config.yaml", "metrics.csv", "curves.png", "best/model.safetensors", "last/state.pt"):
        assert (run / name).is_file(), name
    assert (run / "samples" / "epoch_002.png").is_file()
    row = result.history[-1]
    assert row["val_loss"] < result.history[0]["train_loss"] * 2
    config = json.loads((run / "best" / "config.json").read_text())
    assert config["task"] == task and config["image"] == {"channels": 1, "size": 28, "data": "synthetic:digits"}
    model = load_model(run)
    if task == "diffusion":
        assert config["diffusion"] == {"beta_schedule": "linear", "steps": 20, "prediction": "eps"}
        assert model.model_config["time_embedding"] == 8
        assert result.best_epoch in (1, 2)
    else:
        assert {"psnr", "ssim", "psnr_input"} <= set(row)
        assert model.model_config["time_embedding"] == 0


def test_denoiser_and_superres_evaluation_on_held_out_digits(tmp_path):
    run = train(_config(tmp_path / "d", "denoise")).run_dir
    model = load_restoration_model(run)
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


def test_diffusion_resume_ends_with_the_same_weights_bitwise(tmp_path, monkeypatch):
    full = train(_config(tmp_path / "full", "diffusion", epochs=3)).run_dir
    real = ImageTrainer.train_epoch

    def interrupted(self, epoch):  # Ctrl-C in the middle of the last epoch
        if epoch == 2:
            raise KeyboardInterrupt
        return real(self, epoch)

    monkeypatch.setattr(ImageTrainer, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(_config(tmp_path / "cut", "diffusion", epochs=3))
    monkeypatch.setattr(ImageTrainer, "train_epoch", real)
    resumed = train(TrainConfig(epochs=3), resume=tmp_path / "cut")
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    a, b = load_file(str(full / "last/model.safetensors")), load_file(str(tmp_path / "cut/last/model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"task": "denoising"}, "`task` must be one of .* did you mean 'denoise'"),
        ({"task": "denoise", "data": "synthetic:shapes"}, "`data` must be one of 'synthetic:digits', 'mnist'"),
        ({"task": "denoise", "digits_size": 30}, "`digits_size` must be one of"),
        ({"task": "denoise", "loss": "bce"}, "`loss` must be one of 'auto', 'mse', 'l1'"),
        ({"task": "denoise", "noise_amount": 0}, r"`noise_amount` must be in \(0, 1\]"),
        ({"task": "superres", "scale_factor": 3}, "`scale_factor` must divide `digits_size` 28"),
        ({"task": "diffusion", "beta_schedule": "cosin"}, "did you mean 'cosine'"),
        ({"task": "diffusion", "monitor": "psnr"}, "`monitor` must be 'loss' for task 'diffusion'"),
        ({"task": "diffusion", "sample_steps": 2000}, "`sample_steps` must be <="),
        ({"loss": "mse"}, "are for the image-to-image tasks"),
        ({"timesteps": 10}, "unknown key 'timesteps'; did you mean 'diffusion_steps'"),
    ],
)
def test_task_config_validation(changes, message):
    with pytest.raises(ValueError, match=message):
        config_from_dict(changes)


def test_image_task_monitor_defaults():
    assert config_from_dict({"task": "denoise"}).monitor == "psnr"
    assert config_from_dict({"task": "denoise"}).data == "synthetic:digits"
    assert config_from_dict({"task": "diffusion"}).monitor == "loss"
    assert config_from_dict({}).task == "segmentation"


def test_cli_train_task_flag_and_diffusion_without_embedding(tmp_path, capsys):
    argv = ["train", "--task", "denoise", "--data", "synthetic:digits", "--model", "basic_unet", "--epochs", "1"]
    argv += ["--out", str(tmp_path / "run"), "-m", "channels=[4,8]", "--set", "synthetic_train=8"]
    argv += ["--set", "synthetic_val=2", "--set", "steps_per_epoch=1"]
    assert main(argv) == 0
    assert "psnr" in capsys.readouterr().out
    bad = ["train", "--task", "diffusion", "--data", "synthetic:digits", "--out", str(tmp_path / "bad")]
    assert main([*bad, "-m", "time_embedding=0", "--set", "synthetic_train=8"]) == 2
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
