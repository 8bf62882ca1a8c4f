"""Checkpoints and the run-directory lock: the training state is loaded once and safely (a `state.pt` swapped
for a pickle that runs code is refused and runs nothing, for every task); a second training process on a run
in progress exits 2 naming the holder, and leaves the holder's files alone; a lock left by a dead process is
taken over; the lock goes when the run ends, however it ends."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from unetkit import TrainConfig, train
from unetkit.cli.main import main
from unetkit.train.checkpointing import LOCK, RunLock, RunLocked

TINY = {
    "data": "synthetic:cells",
    "model": "unet",
    "model_options": {"base_channels": 4, "depth": 2},
    "epochs": 1,
    "batch_size": 2,
    "patch_size": 32,
    "steps_per_epoch": 2,
    "synthetic_train": 4,
    "synthetic_val": 1,
    "synthetic_size": 32,
    "samples": 0,
    "threads": 1,
}
FLAGS = ["--data", "synthetic:cells", "--epochs", "1", "--patch-size", "32", "--batch-size", "2"]
FLAGS += ["-m", "base_channels=4", "-m", "depth=2", "--set", "synthetic_train=4", "--set", "synthetic_val=1"]
FLAGS += ["--set", "synthetic_size=32", "--set", "steps_per_epoch=2", "--set", "samples=0"]


class _Payload:
    """Unpickling this creates a file: what a swapped `state.pt` could do if it were loaded unsafely."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (str(self.target), "w"))


@pytest.mark.parametrize("task", ["segmentation", "denoise", "superres", "diffusion"])
def test_a_swapped_state_runs_no_code_on_resume(tmp_path, capsys, task):
    run = tmp_path / "run"
    changes = {} if task == "segmentation" else {"task": task, "data": "synthetic:digits", "patch_size": 0}
    if task == "diffusion":
        changes.update(diffusion_steps=10, sample_steps=1, time_embedding=8)
    if task != "segmentation":
        changes.update(model="basic_unet", model_options={"channels": [4, 8]})
    train(TrainConfig(**{**TINY, **changes, "out": str(run)}))  # type: ignore[arg-type]
    state = torch.load(run / "last" / "state.pt", weights_only=True)
    marker = tmp_path / "payload-ran"
    torch.save({**state, "config": {**state["config"], "payload": _Payload(marker)}}, run / "last" / "state.pt")
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{run}/last/state.pt: corrupted training state (UnpicklingError" in err and len(err.splitlines()) == 1
    assert not marker.exists()
    assert not (run / LOCK).exists()


def test_a_second_run_on_a_run_in_progress_exits_2_naming_the_holder(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *FLAGS, "--out", str(run)]) == 0
    capsys.readouterr()
    saved = (run / "last" / "model.safetensors").read_bytes()
    (run / ".last.tmpab12cd").mkdir()  # the holder's save in progress
    with RunLock(run):  # another process's lock, held here
        holder = f"pid {os.getpid()} on {socket.gethostname()}, since "
        assert main(["train", "--resume", str(run), "--epochs", "2"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"unetkit train: error: {run}: in use by another training run ({holder}")
        assert err.endswith("wait for it to end, or choose another --out") and len(err.splitlines()) == 1
        assert (run / ".last.tmpab12cd").is_dir()  # its temporary was not cleaned away
        assert main(["train", *FLAGS, "--out", str(tmp_path / "fresh")]) == 0  # another directory: fine
        capsys.readouterr()
        with pytest.raises(RunLocked, match="in use by another training run"):
            train(TrainConfig(**{**TINY, "out": str(run)}))  # type: ignore[arg-type]
    assert (run / "last" / "model.safetensors").read_bytes() == saved
    assert not (run / LOCK).exists()


def test_two_processes_on_one_out_the_second_exits_2(tmp_path):
    run = tmp_path / "run"
    slow = [*FLAGS[:3], "3", *FLAGS[4:], "--set", "steps_per_epoch=40"]
    cmd = [sys.executable, "-m", "unetkit", "train", *slow, "--out", str(run)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not (run / LOCK).is_file() or not (run / LOCK).read_text().strip():
            assert first.poll() is None and time.monotonic() < deadline, "the first run did not start"
            time.sleep(0.05)
        holder = json.loads((run / LOCK).read_text())
        second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        assert second.returncode == 2, second.stderr
        assert f"in use by another training run (pid {first.pid} on {holder['host']}" in second.stderr
        assert holder["pid"] == first.pid
        assert first.wait(timeout=300) == 0, first.stderr.read() if first.stderr else ""
    finally:
        if first.poll() is None:
            first.kill()
    assert not (run / LOCK).exists() and (run / "last" / "model.safetensors").is_file()


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path, caplog):
    run = tmp_path / "run"
    run.mkdir()
    dead = {"pid": 2**22 + 12345, "host": socket.gethostname(), "started": "2020-01-01T00:00:00+00:00"}
    (run / LOCK).write_text(json.dumps(dead))  # written by a process killed with SIGKILL: no flock holds it
    with caplog.at_level("WARNING"):
        train(TrainConfig(**{**TINY, "out": str(run)}))  # type: ignore[arg-type]
    assert f"took over the lock of a run that is no longer running (pid {dead['pid']}" in caplog.text
    assert not (run / LOCK).exists()


def test_the_lock_goes_with_a_failed_run_and_so_does_the_folder_it_made(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *FLAGS, "--data", str(tmp_path / "nowhere"), "--out", str(run)]) == 2
    assert "nowhere: no such folder" in capsys.readouterr().err
    assert not run.exists()


def test_a_lock_that_is_a_symbolic_link_is_not_followed(tmp_path):
    """`RUN/train.lock` linking to another file: the lock would write its pid over that file; it is refused."""
    precious = tmp_path / "notes.txt"
    precious.write_text("keep me\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK).symlink_to(precious)
    with pytest.raises(ValueError, match=r"train\.lock: is a symbolic link; a run's lock is a plain file"):
        RunLock(run).acquire()
    assert precious.read_text() == "keep me\n" and (run / LOCK).is_symlink()
