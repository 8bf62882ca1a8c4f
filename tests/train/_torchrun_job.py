"""A tiny training run for `python -m torch.distributed.run --nproc-per-node 2 _torchrun_job.py MODE OUT`
(tests/train/test_distributed.py): in epoch 2, rank 1 raises (MODE `raise`) or stops answering (MODE `hang`)."""

from __future__ import annotations

import sys
import time

import torch

from unetkit import TrainConfig, train
from unetkit.train.engine import Engine

MODE, OUT = sys.argv[1], sys.argv[2]
real = Engine.train_epoch


def train_epoch(self: Engine, epoch: int, steps: int | None = None) -> float:
    if self.world.rank == 1 and epoch == 1:
        if MODE == "raise":
            raise RuntimeError("rank 1 fails on purpose")
        time.sleep(600)  # alive but silent: rank 0 must give up after `dist_timeout`
    return real(self, epoch, steps)


Engine.train_epoch = train_epoch  # type: ignore[method-assign]
torch.set_num_threads(1)
config = {
    "data": "synthetic:cells",
    "model": "unet",
    "model_options": {"base_channels": 4, "depth": 2, "norm": "none"},
    "epochs": 3,
    "batch_size": 4,
    "patch_size": 32,
    "steps_per_epoch": 2,
    "synthetic_train": 4,
    "synthetic_val": 2,
    "synthetic_size": 32,
    "samples": 0,
    "threads": 1,
    "device": "cpu",
    "dist_timeout": 5.0,
}
train(TrainConfig(**config, out=OUT))
