"""Data-parallel training across processes (DDP), launched by torchrun or by `unetkit train --devices N`.

torchrun (`torch.distributed.run`) starts one process per device and tells each its `RANK`, `WORLD_SIZE`,
`LOCAL_RANK` and rendezvous address by environment variables; `setup` reads them, joins the process group
(nccl for CUDA, gloo for the CPU) with an explicit timeout, and returns a `World` that the training loop asks
for its share of every batch, for DDP wrapping and for reductions. In a single process `World` does nothing.

How a step is split, and why it equals the single-process step:
- `batch_size` is the global batch. Every process draws the same epoch order, patch positions and
  augmentation parameters for the whole batch (same generators, same seeds) and keeps its rows
  `rank * b .. (rank + 1) * b - 1`, `b = batch_size / world_size`. A sample's patch and transform thus
  depend only on its position in the global batch, whatever the number of processes.
- Each process's loss is a mean over its equal share; DDP averages gradients across processes (in buckets,
  overlapped with the backward pass), which is the gradient of the mean over the global batch. This holds
  when every share weighs the same in the loss: it stops holding when the loss normalises by something
  that differs between shares (valid/FOV masks with different pixel counts, weight maps, Dice computed
  over the batch) or with per-process BatchNorm statistics (use `sync_batchnorm`).
- Dropout and DropBlock draw from a per-process seed, so models with them are equivalent in distribution,
  not bitwise.
"""

from __future__ import annotations

import datetime
import logging
import os
import signal
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["LaunchFailed", "World", "env_rank", "launch", "per_process_batch", "setup"]

logger = logging.getLogger(__name__)


class LaunchFailed(RuntimeError):
    """A process of a `launch`ed job failed; `exitcode` is that process's exit status."""

    def __init__(self, message: str, exitcode: int) -> None:
        super().__init__(message)
        self.exitcode = exitcode


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError as err:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from err


def env_rank() -> int:
    """This process's rank as torchrun set it (0 outside torchrun)."""
    return _env_int("RANK", 0)


def per_process_batch(batch_size: int, world_size: int) -> int:
    """The share of the global `batch_size` each of `world_size` processes trains on."""
    if batch_size % world_size:
        raise ValueError(
            f"`batch_size` {batch_size} is the global batch and must divide evenly among {world_size} "
            f"processes; use a multiple of {world_size}"
        )
    return batch_size // world_size


@dataclass(frozen=True)
class World:
    """This process's place in the job; with `size == 1` every method is a no-op."""

    device: torch.device
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # `setup` created the process group and `close` destroys it

    @property
    def is_main(self) -> bool:
        """Rank 0 writes logs, checkpoints and pictures and shows the progress bar."""
        return self.rank == 0

    def batch_rows(self, batch_size: int) -> slice:
        """This process's rows of a global batch."""
        share = per_process_batch(batch_size, self.size)
        return slice(self.rank * share, (self.rank + 1) * share)

    def shard(self, n: int) -> range:
        """This process's contiguous part of `range(n)` (validation images); sizes differ by at most one."""
        start = self.rank * n // self.size
        return range(start, (self.rank + 1) * n // self.size)

    def seed(self, seed: int) -> int:
        """A per-process seed for layer randomness (dropout, DropBlock); `seed` itself on rank 0."""
        return seed if self.rank == 0 else (seed ^ (self.rank * 0x9E3779B97F4A7C15)) % (2**63 - 1)

    def wrap(self, model: nn.Module) -> nn.Module:
        """`model` in DistributedDataParallel (default gradient buckets); `model` itself in one process."""
        if self.size == 1:
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over all processes, in place."""
        if self.size > 1:
            dist.all_reduce(tensor)
        return tensor

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """Mean of `tensor` over all processes (a new tensor); `tensor` itself in one process."""
        if self.size == 1:
            return tensor
        return self.sum_(tensor.clone()) / self.size

    def reduce_reading(self, value: torch.Tensor, first_bad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`TrainStep.read`'s reduction: the mean over processes of each one's loss sum (equal shards: the global
        batch's) and the earliest non-finite step of any process (-1: none), in one all-reduce each."""
        if self.size == 1:
            return value, first_bad
        never = torch.iinfo(torch.long).max
        earliest = torch.where(first_bad < 0, torch.full_like(first_bad, never), first_bad).neg()
        dist.all_reduce(earliest, op=dist.ReduceOp.MAX)  # max of -index = min index
        earliest = earliest.neg()
        first = torch.where(earliest == never, torch.full_like(earliest, -1), earliest)
        return self.sum_(value.clone()) / self.size, first

    def average(self, values: list[torch.Tensor], count: int) -> torch.Tensor:
        """Mean of all processes' scalar `values`, `count` of them in all (a process may have none)."""
        if self.size == 1:
            return torch.stack(values).mean()
        total = torch.stack(values).sum() if values else torch.zeros((), device=self.device)
        return self.sum_(total) / count

    def agree(self, flag: bool) -> bool:
        """Whether any process passes True (one tiny all-reduce: every process must call it at the same point);
        `flag` itself in one process. The engine's stop on SIGINT / SIGTERM, decided together."""
        if self.size == 1:
            return flag
        value = torch.tensor(int(flag), device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def broadcast_buffers(self, model: nn.Module) -> None:
        """Rank 0's buffers (BatchNorm running statistics) on every process, in place."""
        if self.size > 1:
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.size > 1:
            dist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """Every process's `obj` in rank order on rank 0, `[]` elsewhere; `[obj]` in one process."""
        if self.size == 1:
            return [obj]
        out: list[Any] | None = [None] * self.size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out or []

    def close(self) -> None:
        """Leave the process group if `setup` joined it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def setup(device: torch.device, *, timeout_s: float) -> World:
    """Join the torchrun job this process belongs to, if any.

    Args:
        device: the device asked for (`torch.device("cuda")` becomes `cuda:LOCAL_RANK` in a job).
        timeout_s: how long a process waits in a collective (or at start-up for the others) before the
            job fails instead of hanging; gloo and nccl both honour it.

    Returns:
        The process's `World`; one process (no torchrun, or `WORLD_SIZE=1`) gets `World(device)`.
    """
    if dist.is_available() and dist.is_initialized():  # the caller made the group: use it, leave it
        rank, size = dist.get_rank(), dist.get_world_size()
        local_rank = _env_int("LOCAL_RANK", rank)
        return World(_local_device(device, local_rank, size), rank, size, local_rank)
    size = _env_int("WORLD_SIZE", 1)
    if size <= 1:
        return World(device)
    if not dist.is_available():
        raise RuntimeError("this PyTorch build has no torch.distributed; train in one process")
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    device = _local_device(device, local_rank, size)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend,
        timeout=datetime.timedelta(seconds=timeout_s),
        device_id=device if device.type == "cuda" else None,
    )
    logger.info("process group: %d processes, backend %s, this is rank %d on %s", size, backend, rank, device)
    return World(device, dist.get_rank(), dist.get_world_size(), local_rank, owns_group=True)


def _local_device(device: torch.device, local_rank: int, size: int) -> torch.device:
    if device.type != "cuda":
        return device
    if device.index is not None and size > 1:
        raise ValueError(
            f"`device` {device} names one GPU, but {size} processes train together; use `cuda` or `auto` "
            "(each process takes cuda:LOCAL_RANK; choose GPUs with CUDA_VISIBLE_DEVICES)"
        )
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise ValueError(
            f"process with LOCAL_RANK {local_rank} has no GPU of its own: {count} visible on this machine; "
            "start at most that many processes per machine"
        )
    return torch.device("cuda", local_rank)


def launch(argv: list[str], nproc: int) -> None:
    """Run `python -m unetkit *argv` in `nproc` processes on this machine through PyTorch's elastic
    launcher, as `torchrun --standalone --nproc-per-node NPROC -m unetkit *argv` does (a free local port
    for the rendezvous; no restarts). Returns when every process has finished.

    Raises:
        LaunchFailed: a process failed; the launcher has stopped the others. Its error is in the output above.
        KeyboardInterrupt / TrainingInterrupted: Ctrl-C or SIGTERM reached the launcher, which passed SIGTERM on
            to the processes (they save `last/` together and stop; see `unetkit.train.interrupt`).
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    from unetkit.train.interrupt import TrainingInterrupted

    if nproc < 1:
        raise ValueError(f"`devices` must be >= 1, got {nproc}")
    args = get_args_parser().parse_args(["--standalone", f"--nproc-per-node={nproc}", "--module", "unetkit", *argv])
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}  # the launcher replaces them
    try:
        run(args)
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        code = failure.exitcode if failure.exitcode > 0 else 1
        how = f"exit status {failure.exitcode}" if failure.exitcode > 0 else f"signal {-failure.exitcode}"
        raise LaunchFailed(f"process of rank {rank} failed ({how}); its error is above", code) from None
    except SignalException as err:  # the launcher has stopped the processes
        if err.sigval == signal.SIGINT:
            raise KeyboardInterrupt from None
        if err.sigval == signal.SIGTERM:
            raise TrainingInterrupted(
                "terminated (SIGTERM): the processes were asked to save and stop; rank 0's report is above",
                signal.SIGTERM,
            ) from None
        raise
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
