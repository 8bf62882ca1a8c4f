"""Stopping a training run cleanly, and what a run survives.

**Ctrl-C (SIGINT)**: the first one asks the loop to stop at the next step boundary; it saves `last/`
with the step reached and the states of every random generator (`MidEpoch`), and raises
`TrainingInterrupted` (the CLI exits with status 130 and prints how to continue). `--resume` then
continues from that very step: the run ends with the weights of an uninterrupted one, bitwise, in
deterministic mode. A second Ctrl-C interrupts at once; `last/` then holds the last saved checkpoint.
Ctrl-C while the data loads or the model is built interrupts at once (there is nothing to save yet).

**SIGKILL, a crash, a power cut**: checkpoints are written atomically (`replace_dir`), so `last/` is
the last complete save: the end of the last complete epoch (or a Ctrl-C save). Every epoch re-seeds
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

__all__ = ["MidEpoch", "StopFlag", "TrainingInterrupted"]

logger = logging.getLogger(__name__)


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on Ctrl-C after saving `last/`; the message says where and how to continue."""


class StopFlag:
    """Set by the first SIGINT while `installed`; the training loop checks it between steps."""

    def __init__(self) -> None:
        self.requested = False

    @contextmanager
    def installed(self) -> Iterator[StopFlag]:
        """Catch SIGINT in this block (main thread only, and only where SIGINT is not ignored)."""
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.getsignal(signal.SIGINT) if in_main else None
        if previous is None or previous == signal.SIG_IGN:
            yield self
            return
        restore = previous if callable(previous) else signal.default_int_handler

        def handler(signum: int, frame: Any) -> None:
            self.requested = True
            signal.signal(signal.SIGINT, restore)  # a second Ctrl-C interrupts at once
            logger.warning("interrupted: saving at the end of this step (Ctrl-C again to stop at once)")

        signal.signal(signal.SIGINT, handler)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


@dataclass
class MidEpoch:
    """Where an epoch stopped: steps done, the loss summed so far and the state of every generator the
    epoch draws from (patches and order, augmentation, and the global ones behind DropBlock)."""

    step: int
    loss_sum: torch.Tensor
    patch_rng: torch.Tensor
    augment_rng: torch.Tensor
    torch_rng: torch.Tensor
    cuda_rng: torch.Tensor | None = None

    @classmethod
    def capture(cls, step: int, loss_sum: torch.Tensor, patch: torch.Generator, augment: torch.Generator) -> MidEpoch:
        cuda = torch.cuda.get_rng_state(loss_sum.device) if loss_sum.device.type == "cuda" else None
        return cls(step, loss_sum.detach().cpu(), patch.get_state(), augment.get_state(), torch.get_rng_state(), cuda)

    def restore(self, patch: torch.Generator, augment: torch.Generator, device: torch.device) -> torch.Tensor:
        """Put the generators back where they were; returns the loss sum on `device`."""
        patch.set_state(self.patch_rng)
        augment.set_state(self.augment_rng)
        torch.set_rng_state(self.torch_rng)
        if self.cuda_rng is not None and device.type == "cuda":
            torch.cuda.set_rng_state(self.cuda_rng, device)
        return self.loss_sum.to(device)

    def to_state(self) -> dict[str, Any]:
        return dict(vars(self))

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> MidEpoch | None:
        return None if state is None else cls(**state)
