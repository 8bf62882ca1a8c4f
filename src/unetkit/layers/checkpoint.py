"""Gradient checkpointing for model stages that gives the same outputs, gradients and
BatchNorm statistics as a plain run.

The best-known PyTorch U-Net calls the `torch.utils.checkpoint` module as a function, which raises
`TypeError`. Here each stage runs through `torch.utils.checkpoint.checkpoint` (non-reentrant); the
recomputation in backward restores BatchNorm running statistics afterwards, so they are updated
once per step as without checkpointing, and the RNG state is replayed so DropBlock masks match.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["GradCheckpointMixin", "checkpoint_module"]


@contextmanager
def _frozen_running_stats(module: nn.Module) -> Iterator[None]:
    saved = [
        (m, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        and m.training
        and m.running_mean is not None
        and m.running_var is not None
        and m.num_batches_tracked is not None
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, mean, var, count in saved:
                m.running_mean.copy_(mean)  # type: ignore[union-attr]
                m.running_var.copy_(var)  # type: ignore[union-attr]
                m.num_batches_tracked.copy_(count)  # type: ignore[union-attr]


def checkpoint_module(module: nn.Module, *args: Any) -> Any:
    """Run `module(*args)` under activation checkpointing; the recompute leaves BN stats alone."""
    calls = 0

    def run(*inputs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            return module(*inputs)
        with _frozen_running_stats(module):
            return module(*inputs)

    return checkpoint(run, *args, use_reentrant=False, preserve_rng_state=True)


class GradCheckpointMixin:
    """Adds `set_grad_checkpointing()` to a model whose forward calls `self._run_stage(stage, ...)`."""

    grad_checkpointing: bool = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Trade compute for memory: recompute each stage's activations in the backward pass.

        Applies to this module and every submodule that has the mixin.
        """
        modules = self.modules() if isinstance(self, nn.Module) else [self]
        for module in modules:
            if isinstance(module, GradCheckpointMixin):
                module.grad_checkpointing = bool(enable)

    def _run_stage(self, stage: nn.Module, *args: Any) -> Any:
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint_module(stage, *args)
        return stage(*args)
