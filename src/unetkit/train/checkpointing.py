"""A run directory's checkpoints and its lock: `best/` and `last/` saved atomically through one saver (model,
optimiser, scheduler, grad scaler, EMA, history and the step reached, as timm's `CheckpointSaver`), the
training state loaded once and safely for exact resume, what a killed save left behind, what `last/` still
holds when a save fails, and the lock that keeps two training processes out of one run directory.

    RUN/best/          the weights validation scored best (the moving average when `ema_decay` > 0)
    RUN/last/          the raw weights of the last save + `state.pt` (tensors and plain data only)
    RUN/train.lock     while a run trains: its pid, host and start time, under an `flock`

See `unetkit.train.interrupt` for what a run survives.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import io
import json
import logging
import os
import socket
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from torch import nn

from unetkit._errors import UserError
from unetkit._fs import remove_stale_temps, write_error
from unetkit.models.checkpoint import recover_dir, save_model
from unetkit.train.config import TrainConfig, config_from_dict, load_config

__all__ = [
    "LOCK",
    "STATE",
    "RunCheckpoints",
    "RunLock",
    "RunLocked",
    "clean_run",
    "kept_checkpoint",
    "load_state",
    "peek_config",
    "resumed_config",
]

logger = logging.getLogger(__name__)
STATE = "state.pt"  # in last/: optimiser, scheduler, scaler, EMA, history, config and, after a stop, the step
LOCK = "train.lock"


def load_state(path: Path, device: torch.device | str) -> dict[str, Any]:
    """`state.pt` of `last/`, loaded once with `weights_only=True` (tensors and plain data; no code runs)."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except OSError as err:
        raise ValueError(f"{path}: cannot read training state ({err.strerror or err})") from err
    except Exception as err:  # a truncated zip, a bad or unsafe pickle, ...: the file is damaged
        reason = (str(err).strip().splitlines() or [""])[0][:80]
        raise ValueError(f"{path}: corrupted training state ({type(err).__name__}: {reason})") from err
    if not isinstance(state, dict) or not isinstance(state.get("config"), dict) or "epoch" not in state:
        raise ValueError(f"{path}: not a unetkit training state")
    return state


class RunCheckpoints:
    """The one saver of a run directory: `save_best` and `save_last` write through `replace_dir`, so a crash
    leaves the previous checkpoint or the new one, and a full disk raises `WriteError` naming the checkpoint."""

    def __init__(self, run: Path) -> None:
        self.run = run

    def save_best(self, model: nn.Module, extra: dict[str, Any]) -> None:
        save_model(model, self.run / "best", extra=extra)

    def save_last(self, model: nn.Module, extra: dict[str, Any], state: dict[str, Any]) -> None:
        """`last/`: the model (a checkpoint that loads alone) and the training state beside it, in one replace."""
        buffer = io.BytesIO()  # serialised in memory: torch's own file writer reports a full disk as RuntimeError
        torch.save(state, buffer)
        save_model(model, self.run / "last", extra=extra, files={STATE: buffer.getvalue()})


def clean_run(run: Path) -> None:
    """Finish what a killed save left (a `last/` cut between its renames) and remove its temporary files.
    Only the process that holds the run's lock may call it."""
    recover_dir(run / "last")  # a save cut between its two renames leaves last/ as .last.old
    recover_dir(run / "best")
    for folder in (run, run / "samples"):
        for path in remove_stale_temps(folder):
            logger.info("removed %s (left by a killed save)", path)


def peek_config(run: Path) -> TrainConfig:
    """The saved config of the run directory `run`, read from `config.yaml` without changing anything
    (the device and process-group settings that are needed before the run is locked)."""
    if not (run / "config.yaml").is_file():
        raise FileNotFoundError(f"{run / 'last' / STATE}: no training state to resume from (is {run} a run directory?)")
    return load_config(run / "config.yaml")


def resumed_config(run: Path, config: TrainConfig | None) -> tuple[TrainConfig, dict[str, Any] | None]:
    """The saved config of the run directory `run` (epochs raised to `config.epochs` when larger), and its
    training state (`None` for a run killed before its first checkpoint: it starts from epoch 1). The state
    is loaded here once; the engine restores from this object."""
    state_file = run / "last" / STATE
    state: dict[str, Any] | None = None
    if state_file.is_file():
        state = load_state(state_file, "cpu")
        saved, source = dict(state["config"]), str(state_file)
    elif (run / "config.yaml").is_file():
        saved, source = load_config(run / "config.yaml").to_dict(), str(run / "config.yaml")
        logger.warning("%s: no checkpoint yet (stopped in the first epoch): starting from epoch 1", run)
    else:
        raise FileNotFoundError(f"{state_file}: no training state to resume from (is {run} a run directory?)")
    saved["epochs"] = max(saved["epochs"], config.epochs) if config is not None else saved["epochs"]
    saved["out"] = str(run)
    return config_from_dict(saved, source=source), state


def kept_checkpoint(run: Path, err: OSError) -> str:
    """What `last/` holds after a failed save, and how to go on."""
    try:
        saved = json.loads((run / "last" / "config.json").read_text())
    except (OSError, ValueError):
        return "no checkpoint saved yet"
    where = f"epoch {saved.get('epoch')}" + (f" step {saved['step']}" if "step" in saved else "")
    remedy = "free some space" if err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)) else "fix that"
    return f"{run / 'last'} still holds {where}; {remedy}, then: unetkit train --resume {run}"


class RunLocked(UserError, RuntimeError):
    """Another training process holds the run directory's lock; the message names it."""


class RunLock:
    """Exclusive use of a run directory while one process trains in it: `RUN/train.lock` under `flock`.

    The kernel drops an `flock` when its process dies, however it dies, so a lock file left by a killed run
    is recognised as stale (the lock is free) and taken over. `release` removes the file, and the run
    directory too when this lock created it and nothing else was written there.

    Raises (on entering):
        RunLocked: a live process holds the lock: its pid, host and start time are in the message.
        WriteError: the run directory cannot be created.
    """

    def __init__(self, run: Path) -> None:
        self.run = run
        self.path = run / LOCK
        self._fd: int | None = None
        self._created = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.release()

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # no flock on this platform: no lock
            logger.debug("%s: no file locking on this platform", self.run)
            return
        self._created = not self.run.exists()
        try:
            self.run.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise write_error(err, self.run) from err
        for _ in range(10):  # the file may be removed by its last holder between our open and our flock
            flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
            try:
                fd = os.open(self.path, flags, 0o666)
            except OSError as err:
                self._forget_dir()
                if err.errno == errno.ELOOP:  # a link: writing the lock through it would replace another file
                    raise ValueError(
                        f"{self.path}: is a symbolic link; a run's lock is a plain file: remove the link "
                        "(unetkit does not follow it)"
                    ) from None
                raise write_error(err, self.path) from err
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                holder = _describe(_read_holder(fd))
                os.close(fd)
                if err.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                    raise
                raise RunLocked(
                    f"{self.run}: in use by another training run ({holder}); wait for it to end, or choose another "
                    "--out"
                ) from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        else:
            raise RunLocked(f"{self.path}: could not be locked (it keeps being replaced)")
        stale = _read_holder(fd)
        if stale:
            logger.warning("%s: took over the lock of a run that is no longer running (%s)", self.run, _describe(stale))
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == os.fstat(self._fd).st_ino:
                self.path.unlink()
        os.close(self._fd)  # drops the flock
        self._fd = None
        self._forget_dir()

    def _forget_dir(self) -> None:
        """Remove the run directory when this lock created it and it stayed empty (a run refused at once)."""
        if self._created:
            with contextlib.suppress(OSError):
                self.run.rmdir()
            self._created = False


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        data = os.pread(fd, 4096, 0)
        holder = json.loads(data.decode()) if data.strip() else {}
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "a process that has not said who it is yet"
    return f"pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('started')}"
