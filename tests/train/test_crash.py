"""Crash safety of training: Ctrl-C saves the step reached and resume continues from it exactly; runs
killed with SIGKILL or stopped by SIGINT / SIGTERM at random moments resume to the weights of an uninterrupted
run (a few trials here, 21 under `-m slow`, more with `benchmarks/crash_trials.py`); `--deterministic` runs
are bitwise equal. `test_engine.py` has the same for every task.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from unetkit import TrainConfig, train
from unetkit.cli.main import main
from unetkit.train.engine import Engine
from unetkit.train.interrupt import TrainingInterrupted
from unetkit.train.tasks import segmentation

ROOT = Path(__file__).resolve().parents[2]
TINY = {
    "data": "synthetic:cells",
    "model": "sa_unet",  # DropBlock draws from the global generator: the hardest state to restore
    "model_options": {"base_channels": 4, "block_size": 3, "keep_prob": 0.8},
    "epochs": 3,
    "batch_size": 4,
    "patch_size": 32,
    "steps_per_epoch": 3,
    "synthetic_train": 6,
    "synthetic_val": 2,
    "synthetic_size": 48,
    "samples": 1,
    "deterministic": True,
    "threads": 1,
    "lr": 3e-3,
}
STEPS, VAL = TINY["steps_per_epoch"], TINY["synthetic_val"]


def _config(out: Path, **changes: object) -> TrainConfig:
    return TrainConfig(**{**TINY, "out": str(out), **changes})  # type: ignore[arg-type]


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = load_file(str(a / "last" / "model.safetensors")), load_file(str(b / "last" / "model.safetensors"))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _ctrl_c_at(monkeypatch: pytest.MonkeyPatch, call: int, times: int = 1) -> None:
    """Send this process SIGINT `times` times during the `call`-th loss evaluation (1-based; every training
    step and every validation image evaluates the loss once)."""
    real = segmentation.SegmentationLoss.forward
    count = {"n": 0}

    def forward(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        count["n"] += 1
        if count["n"] == call:
            for _ in range(times):
                signal.raise_signal(signal.SIGINT)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(segmentation.SegmentationLoss, "forward", forward)


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """The uninterrupted run."""
    run = tmp_path_factory.mktemp("whole") / "run"
    return run, train(_config(run))


def test_ctrl_c_saves_the_step_and_resume_ends_bitwise_equal(tmp_path, monkeypatch, whole):
    _ctrl_c_at(monkeypatch, STEPS + VAL + 2)  # the second step of epoch 2
    cut = tmp_path / "cut"
    with pytest.raises(TrainingInterrupted, match=rf"saved {cut}/last at epoch 2 step 2/3; .* --resume {cut}"):
        train(_config(cut))
    monkeypatch.undo()
    saved = json.loads((cut / "last" / "config.json").read_text())
    assert (saved["epoch"], saved["step"]) == (1, 2)  # one epoch complete, two steps of the next
    resumed = train(None, resume=cut)
    assert _same_weights(whole[0], cut)
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in whole[1].history]
    assert "step" not in json.loads((cut / "last" / "config.json").read_text())


def test_ctrl_c_during_validation_stops_before_the_next_step(tmp_path, monkeypatch, whole):
    _ctrl_c_at(monkeypatch, STEPS + 1)  # validating epoch 1: the epoch ends and is saved first
    with pytest.raises(TrainingInterrupted, match="epoch 2 step 0/3"):
        train(_config(tmp_path / "cut"))
    monkeypatch.undo()
    assert json.loads((tmp_path / "cut" / "last" / "config.json").read_text())["epoch"] == 1
    train(None, resume=tmp_path / "cut")
    assert _same_weights(whole[0], tmp_path / "cut")


def test_a_second_ctrl_c_stops_at_once_and_keeps_the_last_save(tmp_path, monkeypatch, whole):
    _ctrl_c_at(monkeypatch, STEPS + VAL + 2, times=2)  # twice within one step of epoch 2
    with pytest.raises(KeyboardInterrupt) as caught:
        train(_config(tmp_path / "cut"))
    assert not isinstance(caught.value, TrainingInterrupted)  # not the saving stop: at once
    monkeypatch.undo()
    assert json.loads((tmp_path / "cut" / "last" / "config.json").read_text())["epoch"] == 1
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is gone
    train(None, resume=tmp_path / "cut")
    assert _same_weights(whole[0], tmp_path / "cut")


def test_ctrl_c_through_the_cli_exits_130_and_says_how_to_continue(tmp_path, monkeypatch, capsys):
    _ctrl_c_at(monkeypatch, 2)
    run = tmp_path / "run"
    flags = ["--data", "synthetic:cells", "--epochs", "1", "--deterministic", "--patch-size", "32", "--batch-size", "2"]
    flags += ["-m", "base_channels=4", "-m", "depth=2", "--set", "synthetic_train=4", "--set", "synthetic_val=1"]
    flags += ["--set", "synthetic_size=32", "--set", "steps_per_epoch=3", "--set", "samples=0"]
    assert main(["train", *flags, "--out", str(run)]) == 130
    err = [line.split("\r")[-1] for line in capsys.readouterr().err.split("\n") if line.split("\r")[-1].strip()]
    assert err == [
        f"unetkit train: interrupted: saved {run}/last at epoch 1 step 2/3; "
        f"continue exactly with: unetkit train --resume {run}"
    ]
    monkeypatch.undo()
    assert main(["train", "--resume", str(run)]) == 0
    assert json.loads((run / "last" / "config.json").read_text())["epoch"] == 1


def test_a_run_killed_before_its_first_checkpoint_resumes_from_its_config(tmp_path, monkeypatch, whole):
    real = Engine.train_epoch

    def killed(self, epoch):  # type: ignore[no-untyped-def]
        raise SystemExit("killed")  # nothing saved: as SIGKILL in epoch 1 leaves it

    monkeypatch.setattr(Engine, "train_epoch", killed)
    with pytest.raises(SystemExit):
        train(_config(tmp_path / "cut"))
    monkeypatch.setattr(Engine, "train_epoch", real)
    assert (tmp_path / "cut" / "config.yaml").is_file() and not (tmp_path / "cut" / "last").exists()
    (tmp_path / "cut" / ".last.tmpab12cd").mkdir()  # what a save killed midway leaves
    (tmp_path / "cut" / ".metrics.x1y2.tmp.csv").write_text("half")
    train(None, resume=tmp_path / "cut")
    assert _same_weights(whole[0], tmp_path / "cut")
    assert not [p.name for p in (tmp_path / "cut").iterdir() if p.name.startswith(".")]


def test_deterministic_runs_are_bitwise_identical(tmp_path):
    flags = ["--data", "synthetic:cells", "--epochs", "2", "--deterministic", "--model", "sa_unet"]
    flags += ["-m", "base_channels=4", "-m", "block_size=3", "-m", "keep_prob=0.8", "--patch-size", "32"]
    flags += ["--batch-size", "4", "--set", "synthetic_train=6", "--set", "synthetic_val=2"]
    flags += ["--set", "synthetic_size=48", "--set", "steps_per_epoch=2", "--set", "samples=0"]
    for name in ("a", "b"):
        assert main(["train", *flags, "--out", str(tmp_path / name)]) == 0
    for ckpt in ("best", "last"):
        a = (tmp_path / "a" / ckpt / "model.safetensors").read_bytes()
        assert a == (tmp_path / "b" / ckpt / "model.safetensors").read_bytes(), ckpt
    states = [torch.load(tmp_path / n / "last" / "state.pt", weights_only=True) for n in ("a", "b")]
    for key in ("exp_avg", "exp_avg_sq"):
        for p in states[0]["optimizer"]["state"]:
            assert torch.equal(states[0]["optimizer"]["state"][p][key], states[1]["optimizer"]["state"][p][key])
    losses = [[row["train_loss"] for row in s["history"]] for s in states]
    assert losses[0] == losses[1]


def _crash_trials(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "trials.json"
    cmd = [sys.executable, "benchmarks/crash_trials.py", "--workdir", str(tmp_path / "runs"), "--out", str(out), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(out.read_text())


def test_killed_runs_resume_to_the_same_weights(tmp_path):
    """Three trials: SIGKILL (at a random moment or as a checkpoint save begins), SIGINT and SIGTERM."""
    report = _crash_trials(tmp_path, "--trials", "3", "--models", "unet", "--epochs", "3", "--max-kills", "2")
    summary = report["summary"]
    assert summary["trials"] == 3 and summary["all_same"]
    assert summary["signals_sent"] >= 2
    assert [t["signal"] for t in report["trials"]] == ["kill", "int", "term"]
    for trial in report["trials"]:
        assert all(trial["identical"].values()), trial


@pytest.mark.slow
def test_twenty_crash_trials(tmp_path):
    report = _crash_trials(tmp_path, "--trials", "21")
    assert report["summary"]["all_same"] and report["summary"]["signals_sent"] >= 21
