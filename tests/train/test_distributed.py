"""Training in 2 CPU processes (gloo) through torchrun and `unetkit train --devices 2`: the same losses and
weights as 1 process with the same global batch, with and without BatchNorm; a failing or silent rank ends
the job with an error; checkpoints resume across process counts. Each run takes seconds; the processes
are real (subprocesses), started with a free port and a time limit."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

from unetkit import TrainConfig, train
from unetkit.cli.main import main
from unetkit.train.distributed import World, per_process_batch

BASE: dict[str, Any] = {
    "data": "synthetic:cells",
    "model": "unet",
    "model_options": {"base_channels": 4, "depth": 2},
    "epochs": 2,
    "batch_size": 4,
    "patch_size": 32,
    "steps_per_epoch": 3,
    "synthetic_train": 6,
    "synthetic_val": 3,  # uneven validation shards: 1 and 2 images
    "synthetic_size": 48,
    "samples": 2,  # one overlay from each process's shard, gathered on rank 0
    "deterministic": True,
    "threads": 1,
    "device": "cpu",
    "scheduler": "constant",
    "warmup_epochs": 0.0,
    "lr": 3e-3,
    "dist_timeout": 60.0,
}
CASES = {
    "no_batchnorm": {"model_options": {"base_channels": 4, "depth": 2, "norm": "none"}},
    "sync_batchnorm": {"sync_batchnorm": True},
}
TIMEOUT = 240  # seconds for one multi-process job on a busy 2-core machine (about 15 s quiet)
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def _run(cmd: list[str], timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _two_processes(config: dict[str, Any], out: Path, *, launcher: str, extra: list[str] | None = None) -> None:
    cfg = out.parent / f"{out.name}.yaml"
    cfg.write_text(yaml.safe_dump(config))
    args = ["train", "--config", str(cfg), "--out", str(out), *(extra or [])]
    if launcher == "torchrun":
        cmd = [*TORCHRUN, "-m", "unetkit", *args]
    else:
        cmd = [sys.executable, "-m", "unetkit", *args, "--devices", "2"]
    result = _run(cmd)
    assert result.returncode == 0, result.stderr[-4000:]


def _rows(run: Path) -> list[dict[str, float]]:
    with (run / "metrics.csv").open() as handle:
        return [{k: float(v) for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


def _assert_same_run(a: Path, b: Path) -> None:
    rows_a, rows_b = _rows(a), _rows(b)
    assert [r["epoch"] for r in rows_a] == [r["epoch"] for r in rows_b]
    for ra, rb in zip(rows_a, rows_b, strict=True):
        for key in ("train_loss", "val_loss", "dice", "iou", "lr"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-5, abs=1e-6), (key, ra, rb)
    wa, wb = load_file(str(a / "last" / "model.safetensors")), load_file(str(b / "last" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """For each case, 2 epochs in 1 process (in this one) and in 2 (no BatchNorm through torchrun,
    SyncBatchNorm through `--devices 2`)."""
    root = tmp_path_factory.mktemp("ddp")
    out = {}
    for name, change in CASES.items():
        config = {**BASE, **change}
        train(TrainConfig(**config, out=str(root / f"{name}-1")))
        launcher = "torchrun" if name == "no_batchnorm" else "devices"
        _two_processes(config, root / f"{name}-2", launcher=launcher)
        out[f"{name}-1"], out[f"{name}-2"] = root / f"{name}-1", root / f"{name}-2"
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_equal_one_process_with_the_same_global_batch(runs: dict[str, Path], case: str) -> None:
    one, two = runs[f"{case}-1"], runs[f"{case}-2"]
    _assert_same_run(one, two)
    assert _rows(one)[-1]["train_loss"] < _rows(one)[0]["train_loss"]  # it trained
    for name in ("config.yaml", "curves.png", "samples/epoch_002.png", "samples/progress.gif", "best/config.json"):
        assert (two / name).is_file(), name  # written once, by rank 0
    assert not [p for p in two.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_a_two_process_checkpoint_resumes_in_one_process_and_back(runs: dict[str, Path], tmp_path: Path) -> None:
    one, two = runs["sync_batchnorm-1"], runs["sync_batchnorm-2"]
    reference = shutil.copytree(one, tmp_path / "1-then-1")
    train(TrainConfig(**{**BASE, "epochs": 3}), resume=reference)  # the run's own continuation
    two_then_one = shutil.copytree(two, tmp_path / "2-then-1")
    train(TrainConfig(**{**BASE, "epochs": 3}), resume=two_then_one)
    _assert_same_run(reference, two_then_one)
    one_then_two = shutil.copytree(one, tmp_path / "1-then-2")
    resume = ["train", "--resume", str(one_then_two), "--epochs", "3", "--devices", "2"]
    result = _run([sys.executable, "-m", "unetkit", *resume])
    assert result.returncode == 0, result.stderr[-4000:]
    _assert_same_run(reference, one_then_two)
    assert [r["epoch"] for r in _rows(one_then_two)] == [1, 2, 3]


@pytest.mark.parametrize(
    ("mode", "message"),
    [("raise", "rank 1 fails on purpose"), pytest.param("hang", "Timed out", marks=pytest.mark.slow)],
)
def test_a_failing_or_silent_rank_ends_the_job_with_an_error(tmp_path: Path, mode: str, message: str) -> None:
    job = Path(__file__).with_name("_torchrun_job.py")  # a hang ends in _run's timeout (TimeoutExpired), a failure
    result = _run([*TORCHRUN, str(job), mode, str(tmp_path / "run")], timeout=TIMEOUT)
    assert result.returncode != 0
    assert message in result.stderr


@pytest.mark.slow
def test_devices_reports_a_failed_process_in_one_line(tmp_path: Path) -> None:
    missing, run = tmp_path / "missing", tmp_path / "run"
    result = _run(
        [sys.executable, "-m", "unetkit", "train", "--data", str(missing), "--out", str(run), "--devices", "2"]
    )
    assert result.returncode == 2  # the processes' own status: bad input
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert errors == [f"unetkit train: error: {missing}: no such folder"], result.stderr  # one line, once
    assert "torch.distributed" not in result.stderr  # none of the elastic launcher's log lines
    assert not run.exists()


def test_devices_relaunches_the_command_and_reports_the_first_failure(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch.distributed.run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    seen = {}

    def run(args: Any) -> None:
        seen.update(vars(args))
        failures = {1: ProcessFailure(local_rank=1, pid=123, exitcode=3, error_file="")}
        raise ChildFailedError("unetkit", failures)

    monkeypatch.setattr(torchrun, "run", run)
    argv = ["--debug", "train", "--devices=2", "--data", "synthetic:cells", "--devices", "2", "--epochs", "1"]
    assert main(argv) == 3
    assert (
        capsys.readouterr().err
        == "unetkit train: error: process of rank 1 failed (exit status 3); its error is above\n"
    )
    assert seen["nproc_per_node"] == "2" and seen["standalone"] and seen["module"]
    assert [seen["training_script"], *seen["training_script_args"]] == [
        "unetkit",
        "--debug",
        "train",
        "--data",
        "synthetic:cells",
        "--epochs",
        "1",
    ]
    assert main(["train", "--devices", "two"]) == 2  # argparse's refusal, one line
    assert main(["train", "--devices", "0"]) == 2


def test_the_global_batch_splits_evenly_or_fails_clearly() -> None:
    assert per_process_batch(8, 4) == 2
    with pytest.raises(ValueError, match="`batch_size` 6 is the global batch and must divide evenly among 4"):
        per_process_batch(6, 4)
    worlds = [World(torch.device("cpu"), rank, 3) for rank in range(3)]
    assert [w.batch_rows(6) for w in worlds] == [slice(0, 2), slice(2, 4), slice(4, 6)]
    assert [list(w.shard(7)) for w in worlds] == [[0, 1], [2, 3], [4, 5, 6]]
    assert len({w.seed(5) for w in worlds}) == 3 and worlds[0].seed(5) == 5
    single = World(torch.device("cpu"))
    assert single.batch_rows(5) == slice(0, 5) and list(single.shard(3)) == [0, 1, 2]


def _sigterm_in_epoch(cmd: list[str], epoch: str) -> subprocess.CompletedProcess[str]:
    """Start `cmd` and send the launcher SIGTERM as soon as rank 0's progress bar shows `epoch` (e.g. "2/3")
    begun: an event, not a delay, so the signal lands inside that epoch however loaded the machine is."""
    import os
    import signal
    import threading

    job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert job.stderr is not None and job.stdout is not None
    chunks: list[bytes] = []
    begun = threading.Event()
    marker = f"epoch {epoch}:".encode()

    def read() -> None:
        assert job.stderr is not None
        while chunk := os.read(job.stderr.fileno(), 65536):
            chunks.append(chunk)
            if marker in b"".join(chunks[-2:]):
                begun.set()
        begun.set()  # the process ended first: the assertions report it

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    begun.wait(timeout=TIMEOUT)
    if job.poll() is None:
        job.send_signal(signal.SIGTERM)
    out = job.stdout.read().decode()
    job.wait(timeout=TIMEOUT)
    reader.join(timeout=TIMEOUT)
    return subprocess.CompletedProcess(cmd, job.returncode, out, b"".join(chunks).decode(errors="replace"))


def test_sigterm_stops_every_process_at_one_step_rank_0_saves_and_resume_is_bitwise(tmp_path: Path) -> None:
    """SIGTERM (what Slurm and Kubernetes send) to `--devices 2`: the launcher passes it on, the processes agree
    on the step (an all-reduced flag at each log interval), rank 0 saves `last/` with every process's loss sum
    and layer generators (DropBlock draws per process), exit status 143; resuming in two processes ends with the
    weights and losses of an uninterrupted two-process run, bitwise."""
    config = {
        **BASE,
        "model": "sa_unet",
        "model_options": {"base_channels": 4, "block_size": 3, "keep_prob": 0.8},
        "epochs": 3,
        "steps_per_epoch": 16,
        "log_every": 1,
        "samples": 0,
        "scheduler": "cosine",
    }
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    _two_processes(config, whole, launcher="devices")
    cfg = tmp_path / "cut.yaml"
    cfg.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "unetkit", "train", "--config", str(cfg), "--out", str(cut), "--devices", "2"]
    mid_epoch = r"terminated \(SIGTERM\): saved \S+ at epoch 2 step (\d+)/16"
    stopped = _sigterm_in_epoch(cmd, "2/3")
    assert stopped.returncode == 143, stopped.stderr[-4000:]
    saves = re.findall(mid_epoch, stopped.stderr)
    assert len(saves) == 1, stopped.stderr[-4000:]  # rank 0 alone reports (and writes) the save, mid-epoch
    assert json.loads((cut / "last" / "config.json").read_text())["step"] == int(saves[0])
    assert stopped.stderr.strip().splitlines()[-1].startswith("unetkit train: terminated (SIGTERM)")
    assert not [p.name for p in cut.iterdir() if p.name.startswith(".") or p.name == "train.lock"]
    resumed = _run([sys.executable, "-m", "unetkit", "train", "--resume", str(cut), "--devices", "2"])
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    wa, wb = load_file(str(whole / "last" / "model.safetensors")), load_file(str(cut / "last" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [r["train_loss"] for r in _rows(whole)] == [r["train_loss"] for r in _rows(cut)]


@pytest.mark.slow
def test_an_image_task_trains_in_two_processes_as_in_one(tmp_path: Path) -> None:
    config = {
        **BASE,
        "task": "denoise",
        "data": "synthetic:digits",
        "model": "basic_unet",
        "model_options": {"channels": [4, 8]},
        "patch_size": 0,
        "synthetic_train": 8,
        "synthetic_val": 3,
        "noise_type": "gaussian",
        "noise_amount": 0.3,
    }
    train(TrainConfig(**config, out=str(tmp_path / "one")))
    _two_processes(config, tmp_path / "two", launcher="devices")
    for key in ("train_loss", "val_loss", "psnr", "ssim"):
        a, b = [r[key] for r in _rows(tmp_path / "one")], [r[key] for r in _rows(tmp_path / "two")]
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6), key
