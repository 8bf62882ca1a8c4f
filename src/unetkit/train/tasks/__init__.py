"""The tasks the engine trains, one small plug-in object each (`base.Task`): adding a task adds a file here
and a line in `TASK_CLASSES`, not a loop."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from unetkit.train.tasks.base import Forward, Task, Validation, epoch_seed, output_key
from unetkit.train.tasks.diffusion import DiffusionTask
from unetkit.train.tasks.image2image import DenoiseTask, ImageTask, SuperResTask
from unetkit.train.tasks.segmentation import SegmentationTask

if TYPE_CHECKING:
    from unetkit.train.config import TrainConfig

__all__ = [
    "TASK_CLASSES",
    "DenoiseTask",
    "DiffusionTask",
    "Forward",
    "ImageTask",
    "SegmentationTask",
    "SuperResTask",
    "Task",
    "Validation",
    "epoch_seed",
    "make_task",
    "output_key",
]

TASK_CLASSES: dict[str, type] = {
    "segmentation": SegmentationTask,
    "denoise": DenoiseTask,
    "superres": SuperResTask,
    "diffusion": DiffusionTask,
}


def make_task(config: TrainConfig, device: torch.device) -> Task:
    """The task object of `config.task`; it reads the data (and fails, naming the file, before anything is written)."""
    task: Task = TASK_CLASSES[config.task](config, device)
    return task
