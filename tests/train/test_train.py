"""The training loop end to end on tiny synthetic runs: exact resume, config round trip, the run
directory's files, checkpoints, NaN handling and bad input through the CLI.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from unetkit import TrainConfig, load_model, train
from unetkit.cli.main import main
from unetkit.data import write_image
from unetkit.models.checkpoint import FORMAT_VERSION
from unetkit.train.engine import Engine, TrainingDiverged
from unetkit.train.tasks import segmentation

TINY = {
    "data": "synthetic:cells",
    "model": "unet",
    "model_options": {"base_channels": 4, "depth": 2},
    "epochs": 3,
    "batch_size": 4,
    "patch_size": 32,
    "steps_per_epoch": 2,
    "synthetic_train": 6,
    "synthetic_val": 2,
    "synthetic_size": 48,
    "samples": 2,
    "deterministic": True,
    "threads": 1,
    "lr": 3e-3,
}


def _config(out: Path, **changes: object) -> TrainConfig:
    return TrainConfig(**{**TINY, "out": str(out), **changes})  # type: ignore[arg-type]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "last" / "model.safetensors"))


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def _interrupt_at(monkeypatch: pytest.MonkeyPatch, epoch: int) -> None:
    """Make the next run die with Ctrl-C in the middle of epoch `epoch` (0-based), after `last/` of the
    previous epoch has been written."""
    real = Engine.train_epoch

    def train_epoch(self: Engine, e: int, steps: int | None = None) -> float:
        if e == epoch:
            raise KeyboardInterrupt
        return real(self, e, steps)

    monkeypatch.setattr(Engine, "train_epoch", train_epoch)


@pytest.mark.parametrize(
    ("model", "options"),
    [
        ("unet", {"base_channels": 4, "depth": 2}),  # BatchNorm running statistics
        ("sa_unet", {"base_channels": 4, "block_size": 3, "keep_prob": 0.8}),  # DropBlock randomness
    ],
)
def test_resume_ends_with_the_same_weights_bitwise(tmp_path, monkeypatch, model, options):
    whole = train(_config(tmp_path / "whole", model=model, model_options=options))
    _interrupt_at(monkeypatch, epoch=2)
    with pytest.raises(KeyboardInterrupt):
        train(_config(tmp_path / "cut", model=model, model_options=options))
    assert json.loads((tmp_path / "cut" / "last" / "config.json").read_text())["epoch"] == 2
    monkeypatch.undo()
    resumed = train(_config(tmp_path / "cut", model=model, model_options=options), resume=tmp_path / "cut")
    _assert_same_weights(tmp_path / "whole", tmp_path / "cut")
    assert [row["train_loss"] for row in resumed.history] == [row["train_loss"] for row in whole.history]
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3]


def test_resume_through_the_cli_with_more_epochs(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--data", "synthetic:cells", "--out", str(run), "--epochs", "1", "--deterministic"]
    small = ["-m", "base_channels=4", "-m", "depth=2", "--set", "synthetic_train=4", "--set", "synthetic_val=1"]
    small += ["--set", "synthetic_size=32", "--patch-size", "32", "--batch-size", "2", "--set", "steps_per_epoch=1"]
    assert main(args + small) == 0
    assert main(args + small) == 2  # the run exists: refuse to overwrite it
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 0
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]


def test_run_directory_contents(tmp_path):
    result = train(_config(tmp_path / "run", epochs=2))
    run = result.run_dir
    for name in ("config.yaml", "metrics.csv", "curves.png", "samples/epoch_001.png", "samples/epoch_002.png"):
        assert (run / name).is_file(), name
    assert (run / "samples" / "progress.gif").read_bytes()[:6] in (b"GIF87a", b"GIF89a")
    for ckpt in ("best", "last"):
        assert {p.name for p in (run / ckpt).iterdir()} >= {"config.json", "model.safetensors"}
    assert (run / "last" / "state.pt").is_file()
    assert not [p for p in run.iterdir() if p.name.startswith(".")], "temporary files left behind"
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert len(rows) == 2
    for key in ("train_loss", "val_loss", "dice", "iou", "lr"):
        assert np.isfinite(float(rows[0][key])), key
    assert 0.0 <= float(rows[-1]["dice"]) <= 1.0
    best = json.loads((run / "best" / "config.json").read_text())
    assert best["epoch"] == result.best_epoch
    umask = os.umask(0)
    os.umask(umask)
    for path in (run / "best", run / "last", run / "samples"):  # not the private modes of mkstemp / mkdtemp
        assert path.stat().st_mode & 0o777 == 0o777 & ~umask, path
    for path in (run / "best" / "config.json", run / "last" / "state.pt", run / "metrics.csv", run / "curves.png"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


def test_checkpoint_rebuilds_the_model_with_its_preprocessing(tmp_path):
    cfg = _config(tmp_path / "run", epochs=1)
    train(cfg)
    model = load_model(tmp_path / "run")  # a run directory resolves to best/
    assert not model.training
    config = model.checkpoint_config  # type: ignore[attr-defined]
    assert config["model"] == "unet"
    assert config["mask"]["mode"] == "instances"
    assert config["preprocess"]["scheme"] == "image"  # synthetic sets: per-image z-score
    x = torch.randn(1, model.in_channels, 40, 40)  # type: ignore[arg-type]
    # loss auto: two softmax channels for the binary target, then the separation's object distance (instances)
    assert config["separation"] == "distance" and model(x).shape == (1, 3, 40, 40)


def test_config_yaml_reproduces_the_run(tmp_path):
    first = tmp_path / "first"
    flags = ["--data", "synthetic:cells", "--epochs", "2", "--deterministic", "--patch-size", "32"]
    flags += ["--batch-size", "4", "-m", "base_channels=4", "-m", "depth=2", "--set", "synthetic_train=6"]
    flags += ["--set", "synthetic_val=2", "--set", "synthetic_size=48", "--set", "steps_per_epoch=2"]
    assert main(["train", *flags, "--out", str(first)]) == 0
    again = tmp_path / "again"
    assert main(["train", "--config", str(first / "config.yaml"), "--out", str(again)]) == 0
    _assert_same_weights(first, again)
    import yaml

    a = yaml.safe_load((first / "config.yaml").read_text())
    b = yaml.safe_load((again / "config.yaml").read_text())
    assert {**a, "out": None} == {**b, "out": None}
    assert a["model_options"] == {"base_channels": 4, "depth": 2}


def test_config_file_errors_name_the_file_and_key(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 2\nlearning_rate: 0.1\n")
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "learning_rate" in err and "'lr'" in err and err.count("\n") == 1
    bad.write_text("epochs: [2\n")
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    real = segmentation.SegmentationLoss.forward
    calls = {"n": 0}

    def forward(self, logits, target, **kwargs):  # type: ignore[no-untyped-def]
        loss = real(self, logits, target, **kwargs)
        if self.training_calls_poisoned():
            return loss * float("nan")
        return loss

    def poisoned(self) -> bool:  # type: ignore[no-untyped-def]
        calls["n"] += 1
        return calls["n"] > 2 + 2  # epoch 1: 2 train steps + 2 validation images; then NaN

    monkeypatch.setattr(segmentation.SegmentationLoss, "forward", forward)
    monkeypatch.setattr(segmentation.SegmentationLoss, "training_calls_poisoned", poisoned, raising=False)
    run = tmp_path / "run"
    cfg = _config(run)
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 1.*last.*\(epoch 1\)"):
        train(cfg)
    assert json.loads((run / "last" / "config.json").read_text())["epoch"] == 1
    model = load_model(run / "last")
    assert all(torch.isfinite(p).all() for p in model.parameters())
    calls["n"] = 0
    code = main(["train", "--config", str(run / "config.yaml"), "--out", str(tmp_path / "cli")])
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "NaN" in err and str(tmp_path / "cli" / "last") in err


def _folder(root: Path, n: int = 3, size: int = 40) -> Path:
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        write_image(root / "images" / f"img{i}.png", rng.integers(0, 255, (size, size), dtype=np.uint8))
        mask = np.zeros((size, size), np.uint8)
        mask[5:20, 5 + i : 25 + i] = 255
        write_image(root / "masks" / f"img{i}.png", mask)
    return root


def _break(kind: str, root: Path) -> str:
    """Damage a good folder data set; return text the error must contain."""
    if kind == "missing folder":
        return str(root / "nowhere")
    if kind == "empty folder":
        for p in (root / "images").iterdir():
            p.unlink()
        for p in (root / "masks").iterdir():
            p.unlink()
        return str(root / "images")
    if kind == "image without mask":
        (root / "masks" / "img1.png").unlink()
        return "img1"
    if kind == "size mismatch":
        write_image(root / "masks" / "img2.png", np.zeros((30, 40), np.uint8))
        return str(root / "masks" / "img2.png")
    if kind == "unreadable file":
        (root / "images" / "img0.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
        return str(root / "images" / "img0.png")
    if kind == "mask values that fit no mode":
        (root / "masks" / "img0.png").unlink()
        write_image(root / "masks" / "img0.tif", np.full((40, 40), 0.5, np.float32))
        return str(root / "masks" / "img0.tif")
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "missing folder",
        "empty folder",
        "image without mask",
        "size mismatch",
        "unreadable file",
        "mask values that fit no mode",
    ],
)
def test_bad_data_gives_one_line_and_writes_nothing(tmp_path, capsys, kind):
    data = _folder(tmp_path / "data")
    expected = _break(kind, data)
    target = expected if kind == "missing folder" else str(data)
    out = tmp_path / "run"
    assert main(["train", "--data", target, "--out", str(out), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert expected in err, err
    assert not out.exists(), "a failed run must leave nothing behind"


def test_binary_mode_refuses_a_mask_with_three_values(tmp_path, capsys):
    data = _folder(tmp_path / "data")
    mask = np.zeros((40, 40), np.uint8)
    mask[:10], mask[10:20] = 1, 2
    write_image(data / "masks" / "img0.png", mask)
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), "--set", "mask_mode=binary"]) == 2
    err = capsys.readouterr().err
    assert str(data / "masks" / "img0.png") in err and "binary" in err and "{0, 1, 2}" in err
    assert not out.exists()


def test_unknown_model_and_enum_values(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--model", "unet_clasic", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "unet_clasic" in err and "unet_classic" in err
    assert main(["train", "--optimizer", "adamm", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "optimizer" in err and "adam" in err
    assert main(["train", "--set", "learning_rate=1", "--out", str(out)]) == 2
    assert "'lr'" in capsys.readouterr().err
    assert not out.exists()


def test_trains_on_a_folder_and_stores_the_training_statistics(tmp_path):
    data = _folder(tmp_path / "data", n=5)
    result = train(_config(tmp_path / "run", data=str(data), val_fraction=0.4, epochs=1))
    extra = json.loads((result.run_dir / "best" / "config.json").read_text())
    assert extra["mask"] == {"mode": "binary", "num_classes": 2, "label_values": [0, 255], "ignore_index": None}
    assert extra["preprocess"]["scheme"] in ("image", "dataset")  # the fingerprint's choice, in raw units


def test_checkpoint_errors_name_the_file(tmp_path):
    train(_config(tmp_path / "run", epochs=1))
    best = tmp_path / "run" / "best"
    config = json.loads((best / "config.json").read_text())

    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / "model.safetensors").write_bytes((best / "model.safetensors").read_bytes())
    (newer / "config.json").write_text(json.dumps({**config, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(ValueError, match=r"newer.*config.json.*upgrade unetkit"):
        load_model(newer)

    other = tmp_path / "other"
    other.mkdir()
    (other / "model.safetensors").write_bytes((best / "model.safetensors").read_bytes())
    (other / "config.json").write_text(json.dumps({**config, "model": "sa_unet"}))
    with pytest.raises(ValueError, match=r"other.*model.safetensors.*do not fit model 'sa_unet'"):
        load_model(other)

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text(json.dumps(config))
    (corrupt / "model.safetensors").write_bytes((best / "model.safetensors").read_bytes()[:100])
    with pytest.raises(ValueError, match=r"corrupt.*model.safetensors.*corrupted"):
        load_model(corrupt)

    (corrupt / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"corrupt.*config.json.*corrupted"):
        load_model(corrupt)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_model(tmp_path / "nowhere")


@pytest.mark.parametrize(("amp", "optimizer"), [("bf16", "sgd"), ("fp16", "adam")])
def test_mixed_precision_and_optimizers_train_finite(tmp_path, amp, optimizer):
    result = train(_config(tmp_path / "run", epochs=1, amp=amp, optimizer=optimizer, deterministic=False))
    row = result.history[0]
    assert np.isfinite(row["train_loss"]) and np.isfinite(row["val_loss"])
    weights = _weights(tmp_path / "run")
    assert all(w.dtype == torch.float32 for w in weights.values() if w.is_floating_point())  # master weights stay fp32


def test_early_stopping_stops_after_patience(tmp_path, monkeypatch):
    scores = iter([0.5, 0.7, 0.6, 0.65, 0.9, 0.95])
    real = Engine.validate

    def validate(self):  # type: ignore[no-untyped-def]
        metrics, picture = real(self)
        return {**metrics, "dice": next(scores)}, picture

    monkeypatch.setattr(Engine, "validate", validate)
    result = train(_config(tmp_path / "run", epochs=6, early_stopping=2))
    assert result.stopped_early and [r["epoch"] for r in result.history] == [1, 2, 3, 4]
    assert result.best_epoch == 2
    assert json.loads((tmp_path / "run" / "best" / "config.json").read_text())["epoch"] == 2


def test_learning_rate_warms_up_then_decays(tmp_path):
    result = train(_config(tmp_path / "run", epochs=4, warmup_epochs=1.0, scheduler="cosine"))
    lrs = [row["lr"] for row in result.history]
    assert lrs[0] == pytest.approx(3e-3)  # end of warm-up: the peak
    assert lrs[0] > lrs[1] > lrs[2] > lrs[3] >= 0.0


def test_resume_recovers_a_save_cut_between_its_two_renames(tmp_path, monkeypatch):
    whole = train(_config(tmp_path / "whole", epochs=3))
    _interrupt_at(monkeypatch, epoch=2)
    with pytest.raises(KeyboardInterrupt):
        train(_config(tmp_path / "cut", epochs=3))
    monkeypatch.undo()
    run = tmp_path / "cut"
    (run / "last").rename(run / ".last.old")  # the state replace_dir leaves if killed between its renames
    resumed = train(_config(run, epochs=3), resume=run)
    _assert_same_weights(tmp_path / "whole", run)
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in whole.history]
    assert not (run / ".last.old").exists()


def test_weight_map_training_with_the_default_loss(tmp_path):
    """`weight_map` picks the paper's weighted cross-entropy (eq. 1; its sigmoid form for one output channel);
    validation images have no weight maps and are scored with unit weights."""
    result = train(_config(tmp_path / "run", epochs=1, weight_map=True))
    assert np.isfinite(result.history[0]["val_loss"]) and np.isfinite(result.history[0]["train_loss"])


def test_separate_touching_needs_instances_and_trains_on_cells(tmp_path, capsys):
    result = train(_config(tmp_path / "run", epochs=1, separate_touching=True, weight_map=True))
    assert np.isfinite(result.history[0]["train_loss"])
    data = _folder(tmp_path / "data")
    code = main(["train", "--data", str(data), "--out", str(tmp_path / "r2"), "--set", "separate_touching=true"])
    assert code == 2 and "needs instance labels" in capsys.readouterr().err
    assert not (tmp_path / "r2").exists()
