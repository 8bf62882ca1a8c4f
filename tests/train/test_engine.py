"""The one engine for every task: a stop by Ctrl-C or SIGTERM at a random step saves `last/` and resume ends
with bitwise the weights of an uninterrupted run; a full disk during a save keeps the previous checkpoint and
resume still ends bitwise equal; EMA and gradient checkpointing work for every task, segmentation included."""

from __future__ import annotations

import json
import random
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.cli.faults import fill_disk_on
from tests.train.volumes import make_volume_folder
from unetkit import TrainConfig, train
from unetkit._fs import WriteError
from unetkit.cli.main import main
from unetkit.train.interrupt import TrainingInterrupted
from unetkit.train.step import TrainStep

COMMON = {"epochs": 3, "batch_size": 4, "steps_per_epoch": 3, "deterministic": True, "threads": 1, "samples": 1}
TASKS: dict[str, dict[str, object]] = {
    "segmentation": {
        "data": "synthetic:cells",
        "model": "sa_unet",  # DropBlock draws from the global generator: the hardest state to restore
        "model_options": {"base_channels": 4, "block_size": 3, "keep_prob": 0.8},
        "patch_size": 32,
        "synthetic_train": 6,
        "synthetic_val": 2,
        "synthetic_size": 48,
        "lr": 3e-3,
    },
    "segmentation-3d": {  # volumes: per-axis patches, 3D augmentation, foreground oversampling
        "task": "segmentation",
        "data": "",  # a folder of NIfTI volumes, written by the `whole` fixture
        "model_options": {"base_channels": 4, "depth": 2},
        "patch_size": [16, 16, 8],
        "batch_size": 2,
        "foreground_oversample": 0.5,
        "plan": "off",
    },
    "denoise": {"data": "synthetic:digits", "synthetic_train": 12, "synthetic_val": 3, "patch_size": 16},
    "superres": {"data": "synthetic:digits", "synthetic_train": 12, "synthetic_val": 3, "patch_size": 0},
    "diffusion": {
        "data": "synthetic:digits",
        "synthetic_train": 12,
        "synthetic_val": 3,
        "patch_size": 0,
        "diffusion_steps": 20,
        "sample_steps": 2,
        "time_embedding": 8,
        "ema_decay": 0.9,  # the moving average is part of the state to restore
    },
}
IMAGE_MODEL = {"model": "basic_unet", "model_options": {"channels": [4, 8]}}
STEPS = COMMON["epochs"] * COMMON["steps_per_epoch"]


def _config(task: str, out: Path, **changes: object) -> TrainConfig:
    segmentation = task.startswith("segmentation")
    values = {**COMMON, **({} if segmentation else IMAGE_MODEL), "task": task, **TASKS[task]}
    return TrainConfig(**{**values, "out": str(out), **changes})  # type: ignore[arg-type]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "last" / "model.safetensors"))


def _same(a: Path, b: Path) -> bool:
    wa, wb = _weights(a), _weights(b)
    same = wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    sa, sb = (torch.load(r / "last" / "state.pt", weights_only=True) for r in (a, b))
    losses = [[row["train_loss"] for row in s["history"]] for s in (sa, sb)]
    return same and losses[0] == losses[1] and (sa["ema"] is None) == (sb["ema"] is None)


def _signal_at(monkeypatch: pytest.MonkeyPatch, call: int, signum: int) -> None:
    """Send this process `signum` during the `call`-th training step (1-based)."""
    real = TrainStep.__call__
    count = {"n": 0}

    def step(self, batch):  # type: ignore[no-untyped-def]
        count["n"] += 1
        if count["n"] == call:
            signal.raise_signal(signum)
        return real(self, batch)

    monkeypatch.setattr(TrainStep, "__call__", step)


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """The uninterrupted run of each task."""
    TASKS["segmentation-3d"]["data"] = str(make_volume_folder(tmp_path_factory.mktemp("volumes"), cases=4))
    runs = {}
    for task in TASKS:
        run = tmp_path_factory.mktemp(f"whole-{task}") / "run"
        train(_config(task, run))
        runs[task] = run
    return runs


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
@pytest.mark.parametrize("task", list(TASKS))
def test_a_stop_at_a_random_step_saves_and_resumes_bitwise(tmp_path, monkeypatch, whole, task, signum):
    call = random.Random(f"{task}-{signum}").randint(1, STEPS - 1)  # a step of any epoch but the very last
    _signal_at(monkeypatch, call, signum)
    cut = tmp_path / "cut"
    with pytest.raises(TrainingInterrupted) as stopped:
        train(_config(task, cut))
    monkeypatch.undo()
    assert stopped.value.signum == signum
    saved = json.loads((cut / "last" / "config.json").read_text())
    epoch, step = divmod(call, COMMON["steps_per_epoch"])
    assert (saved["epoch"], saved.get("step", 0)) == (epoch, step), call  # the step after the signal's
    assert f"--resume {cut}" in str(stopped.value)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handlers are gone
    train(None, resume=cut)
    assert _same(whole[task], cut)


@pytest.mark.parametrize("task", list(TASKS))
def test_a_full_disk_during_a_save_keeps_the_last_checkpoint_and_resume_ends_bitwise(
    tmp_path, monkeypatch, whole, task
):
    fill_disk_on(monkeypatch, r"^state\.pt$", after=1)  # epoch 1 saves; epoch 2's state.pt fails
    run = tmp_path / "run"
    with pytest.raises(WriteError, match=rf"{run}/last: cannot write \(No space left on device\); .*epoch 1"):
        train(_config(task, run))
    monkeypatch.undo()
    assert json.loads((run / "last" / "config.json").read_text())["epoch"] == 1
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]  # no temporary left
    train(None, resume=run)
    assert _same(whole[task], run)


def test_sigterm_through_the_cli_exits_143_and_says_how_to_continue(tmp_path, monkeypatch, capsys):
    _signal_at(monkeypatch, 2, signal.SIGTERM)
    run = tmp_path / "run"
    flags = ["--task", "denoise", "--data", "synthetic:digits", "--model", "basic_unet", "-m", "channels=[4,8]"]
    flags += ["--epochs", "1", "--patch-size", "0", "--set", "synthetic_train=8", "--set", "synthetic_val=2"]
    flags += ["--set", "steps_per_epoch=3", "--deterministic", "--batch-size", "4"]
    assert main(["train", *flags, "--out", str(run)]) == 143
    err = [line.split("\r")[-1] for line in capsys.readouterr().err.split("\n") if line.split("\r")[-1].strip()]
    assert err[-1] == (
        f"unetkit train: terminated (SIGTERM): saved {run}/last at epoch 1 step 2/3; "
        f"continue exactly with: unetkit train --resume {run}"
    )
    monkeypatch.undo()
    assert main(["train", "--resume", str(run)]) == 0
    assert not (run / "train.lock").exists()


def test_segmentation_keeps_an_ema_for_validation_and_best(tmp_path):
    run = tmp_path / "run"
    result = train(_config("segmentation", run, ema_decay=0.5, epochs=2))
    state = torch.load(run / "last" / "state.pt", weights_only=True)
    assert state["ema"]["updates"] == 2 * COMMON["steps_per_epoch"]
    best, last = load_file(str(run / "best" / "model.safetensors")), _weights(run)
    average = state["ema"]["module"]
    if result.best_epoch == 2:  # best/ holds the average, last/ the raw weights
        assert all(torch.equal(best[k], average[k].cpu()) for k in best)
    assert any(not torch.equal(last[k], average[k].cpu()) for k in last if last[k].is_floating_point())


def test_grad_checkpointing_is_a_flag_and_gives_the_same_weights(tmp_path):
    plain = train(_config("denoise", tmp_path / "plain", epochs=1, model="unet", model_options={"base_channels": 4}))
    argv = ["train", "--task", "denoise", "--data", "synthetic:digits", "--model", "unet", "-m", "base_channels=4"]
    argv += ["--epochs", "1", "--patch-size", "16", "--batch-size", "4", "--deterministic", "--grad-checkpointing"]
    argv += ["--set", "synthetic_train=12", "--set", "synthetic_val=3", "--set", "steps_per_epoch=3"]
    argv += ["--set", "samples=1", "--set", "threads=1"]
    assert main([*argv, "--out", str(tmp_path / "ckpt")]) == 0
    assert _same(plain.run_dir, tmp_path / "ckpt")
    assert "grad_checkpointing: true" in (tmp_path / "ckpt" / "config.yaml").read_text()


class _Clock:
    """A clock for the engine that advances one second at every reading: epochs of a known length."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 1.0
        return self.now


def test_a_spent_time_budget_stops_at_an_epoch_boundary_and_keeps_the_best(tmp_path, monkeypatch, caplog):
    import logging

    from unetkit.train import engine

    monkeypatch.setattr(engine, "time", _Clock())  # each epoch reads the clock 3 times: 3 "seconds" an epoch
    with caplog.at_level(logging.INFO):
        result = train(_config("segmentation", tmp_path / "run", epochs=6, time_budget="10s"))
    # 0.9 of 10 s for the epochs: after epoch 3, 9 s are spent and a fourth would end past them
    assert [row["epoch"] for row in result.history] == [1, 2, 3] and result.stopped_early
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()
    assert any("time budget 10s spent after epoch 3 of 6" in r.getMessage() for r in caplog.records)
    unlimited = train(_config("segmentation", tmp_path / "free", epochs=4))
    assert len(unlimited.history) == 4 and not unlimited.stopped_early


def test_too_few_steps_in_all_are_warned(tmp_path, caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="unetkit.train.engine"):
        train(_config("segmentation", tmp_path / "run", epochs=1))
    warning = next(r.getMessage() for r in caplog.records if "too few to learn" in r.getMessage())
    assert "3 training steps in all (1 epoch(s) of 3 step(s)" in warning and "--time-budget" in warning
