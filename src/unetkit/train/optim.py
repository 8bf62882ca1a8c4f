"""The optimiser and the learning-rate schedule of a run: AdamW / Adam / SGD (Nesterov momentum), a linear
warm-up, then cosine, constant or polynomial decay (nnU-Net's power 0.9), stepped once per optimiser step."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from unetkit.train.config import TrainConfig

__all__ = ["build_optimizer", "build_scheduler", "lr_factor"]

POLY_POWER = 0.9  # nnU-Net's polynomial decay


def lr_factor(config: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """The multiplier of the peak learning rate at each optimiser step."""
    total = config.epochs * steps_per_epoch
    warmup = round(config.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        if config.scheduler == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if config.scheduler == "poly":
            return (1.0 - progress) ** POLY_POWER
        return 1.0

    return factor


def build_optimizer(config: TrainConfig, model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    """The optimiser over `model`'s trainable parameters (fused AdamW / Adam on CUDA)."""
    params = [p for p in model.parameters() if p.requires_grad]
    fused = True if device.type == "cuda" else None
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)
    return torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, nesterov=True
    )


def build_scheduler(
    config: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config, steps_per_epoch))
