"""Stopping a training run cleanly, and what a run survives.

**Ctrl-C (SIGINT) and SIGTERM** (what Slurm, Kubernetes and `kill` send before they kill): the first one asks
the engine to stop at the next step boundary; it saves `last/` with the step reached and the states of every
random generator (`MidEpoch`), and raises `TrainingInterrupted` (the CLI exits with status 130 for SIGINT,
143 for SIGTERM, and prints how to continue). `--resume` then continues from that very step: the run ends with
the weights of an uninterrupted one, bitwise, in deterministic mode. A second signal of the same kind acts at
once (Ctrl-C raises `KeyboardInterrupt`, SIGTERM terminates); `last/` then holds the last saved checkpoint.
A signal while the data loads or the model is built acts at once (there is nothing to save yet).

Several processes (DDP): every process gets the signal at its own moment, so they agree on where to stop:
at each log interval (`log_every` steps) and after each epoch's checkpoint they all-reduce the flag
(`World.agree`), and stop together at the first of those boundaries after any of them was signalled; rank 0
alone writes.

**SIGKILL, a crash, a power cut**: checkpoints are written atomically (`replace_dir`), so `last/` is
the last complete save: the end of the last complete epoch (or a signal's save). Every epoch re-seeds
its generators from `(seed, epoch)`, so `--resume` redoes the cut epoch exactly as an uninterrupted
run does it. A run killed before its first checkpoint resumes from epoch 1 with its `config.yaml`.
`benchmarks/crash_trials.py` kills runs at random moments and checks the final weights.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["STOP_SIGNALS", "MidEpoch", "StopFlag", "TrainingInterrupted", "exit_status"]

logger = logging.getLogger(__name__)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_status(signum: int) -> int:
    """The shell's status for a process ended by signal `signum`: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + int(signum)


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on Ctrl-C or SIGTERM after saving `last/`; the message says where and how to continue.

    Attributes:
        signum: the signal that asked for the stop (`signal.SIGINT` or `signal.SIGTERM`).
    """

    def __init__(self, message: str, signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.signum = int(signum)


class StopFlag:
    """Set by the first SIGINT or SIGTERM while `installed`; the engine checks it between steps."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @contextmanager
    def installed(self) -> Iterator[StopFlag]:
        """Catch SIGINT and SIGTERM in this block (main thread only, and only signals that are not ignored)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous: dict[int, Any] = {}
        for sig in STOP_SIGNALS:
            handler = signal.getsignal(sig)
            if handler is not None and handler != signal.SIG_IGN:
                previous[sig] = handler

        def handle(signum: int, frame: Any) -> None:
            if self.signum is None:
                self.signum = signum
            again = previous[signum]
            if signum == signal.SIGINT and not callable(again):
                again = signal.default_int_handler
            signal.signal(signum, again)  # the same signal again acts at once
            name = signal.Signals(signum).name
            logger.warning("%s: saving at the end of this step (%s again to stop at once)", name, name)

        for number in previous:
            signal.signal(number, handle)
        try:
            yield self
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)


@dataclass
class MidEpoch:
    """Where an epoch stopped: steps done, the loss summed so far and the state of every generator the
    epoch draws from (patches and order, augmentation or noise, and the global ones behind DropBlock).

    Several processes share the data generators but each has its own loss sum and global generators (layer
    randomness is per process): `per_rank` holds those of every rank, so that a resume in as many processes
    continues each one bitwise; in another number of processes every process takes rank 0's.
    """

    step: int
    loss_sum: torch.Tensor
    patch_rng: torch.Tensor
    augment_rng: torch.Tensor
    torch_rng: torch.Tensor
    cuda_rng: torch.Tensor | None = None
    per_rank: list[dict[str, Any]] | None = None

    @staticmethod
    def own(loss_sum: torch.Tensor) -> dict[str, Any]:
        """This process's part: its loss sum and global generators."""
        cuda = torch.cuda.get_rng_state(loss_sum.device) if loss_sum.device.type == "cuda" else None
        return {"loss_sum": loss_sum.detach().cpu(), "torch_rng": torch.get_rng_state(), "cuda_rng": cuda}

    @classmethod
    def capture(cls, step: int, loss_sum: torch.Tensor, patch: torch.Generator, augment: torch.Generator) -> MidEpoch:
        own = cls.own(loss_sum)
        return cls(step, own["loss_sum"], patch.get_state(), augment.get_state(), own["torch_rng"], own["cuda_rng"])

    def restore(
        self, patch: torch.Generator, augment: torch.Generator, device: torch.device, rank: int = 0, size: int = 1
    ) -> torch.Tensor:
        """Put the generators back where they were (process `rank` of `size`); returns the loss sum on `device`."""
        patch.set_state(self.patch_rng)
        augment.set_state(self.augment_rng)
        own: dict[str, Any] = {"loss_sum": self.loss_sum, "torch_rng": self.torch_rng, "cuda_rng": self.cuda_rng}
        if self.per_rank is not None and len(self.per_rank) == size:
            own = self.per_rank[rank]
        torch.set_rng_state(own["torch_rng"])
        if own["cuda_rng"] is not None and device.type == "cuda":
            torch.cuda.set_rng_state(own["cuda_rng"], device)
        return own["loss_sum"].to(device)

    def to_state(self) -> dict[str, Any]:
        return dict(vars(self))

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> MidEpoch | None:
        return None if state is None else cls(**state)
