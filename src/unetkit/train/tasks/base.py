"""What a task gives the engine (`unetkit.train.engine`): a small object that reads its data, says which model
arguments and loss it needs, draws the batches of an epoch, validates, and names what its checkpoints must
remember. The engine owns everything else (epochs, the step, history, best / last, stops, DDP, reports).

Randomness: the engine hands `batch` two generators re-seeded from `(seed, epoch)` every epoch (and restored
mid-epoch after a stop), and `validate` must draw only from generators seeded from `seed` alone, so that a
resumed run draws exactly what an uninterrupted one draws.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from unetkit.models import create_model
from unetkit.models.inference import context_margins, forward_whole, valid_input_shape
from unetkit.train.data import PatchSampler, TensorSet, per_axis
from unetkit.train.distributed import World
from unetkit.train.step import channels_last_format

__all__ = ["Forward", "PatchTask", "Task", "Validation", "epoch_seed", "model_defaults", "output_key"]


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """The seed of random stream `stream` in epoch `epoch` of a run seeded `seed`."""
    return (seed * 1_000_003 + epoch * 101 + stream) % (2**63 - 1)


def model_defaults(model: str) -> dict[str, Any]:
    """A registered model's arguments at their defaults (built on the meta device: no weights allocated)."""
    with torch.device("meta"):
        config: dict[str, Any] = create_model(model).model_config  # type: ignore[assignment]
    return config


def output_key(model: str) -> str:
    """The name of a registered model's output-channel argument: `num_classes` or `out_channels`."""
    return "num_classes" if "num_classes" in model_defaults(model) else "out_channels"


@dataclass(frozen=True)
class Forward:
    """How validation runs a model as training does: memory layout and autocast of the training step.

    Attributes:
        autocast: the step's autocast context factory.
        channels_last: feed NHWC inputs.
    """

    autocast: Callable[[], AbstractContextManager[Any]]
    channels_last: bool

    def __call__(self, model: nn.Module, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        """`(B, C, H, W)` -> float32 output; images of any size (`forward_whole`) without `t`, `model(x, t)` with."""
        if self.channels_last:
            x = x.contiguous(memory_format=channels_last_format(x))
        with self.autocast():
            out = forward_whole(model, x) if t is None else model(x, t)
        return out.float()


@dataclass
class Validation:
    """What `Task.validate` returns: metrics (floats, `val_loss` among them when there is validation data)
    and a picture for `samples/epoch_NNN.png` and TensorBoard (`(H, W, 3)` uint8; on rank 0 only)."""

    metrics: dict[str, float]
    picture: np.ndarray | None = None


class Task(Protocol):
    """The plug-in interface of the engine; see the module docstring."""

    name: str
    monitor: str  # the validation metric that picks `best/`, larger is better; "loss" ranks by -val_loss
    curve_metrics: tuple[str, ...]  # drawn beside the losses in curves.png
    train_size: int  # images in the training split (`steps_per_epoch: 0` passes over them once)
    bn_average_epochs: int  # epochs whose BatchNorm statistics are the plain average of the batches (engine)

    def model_options(self) -> dict[str, Any]:
        """The model's arguments that the data decides (channels in and out, time embedding, ...)."""
        ...

    def attach(self, model: nn.Module) -> None:
        """Called once with the built model (before training): size patches to it, check it fits."""
        ...

    def loss(self) -> nn.Module:
        """The training step's `loss_fn(output, target, weight=..., valid=...)`."""
        ...

    def epoch_order(self, steps: int, batch_size: int, generator: torch.Generator) -> list[int]:
        """Training-image indices for an epoch of `steps` global batches."""
        ...

    def batch(
        self, indices: list[int], generator: torch.Generator, augment: torch.Generator, rows: slice
    ) -> dict[str, torch.Tensor]:
        """This process's `rows` of the global batch of images `indices`, for `TrainStep`."""
        ...

    def validate(self, model: nn.Module, forward: Forward, world: World) -> Validation:
        """Score `model` (eval mode, the weights `best/` would hold) on this process's share of the
        validation images; metrics reduced over processes."""
        ...

    def extra(self) -> dict[str, Any]:
        """The checkpoint's task entries (`task`, `preprocess`, ...) that prediction and export read."""
        ...

    def finish(self, run: Path) -> None:
        """Called on rank 0 once training ended normally, with `best/` and `last/` written: the task's
        post-training work on the run directory (segmentation's instance tuning)."""
        ...


class PatchTask:
    """What the tasks that train on random patches of in-memory images share: the sampler, sized to the model.

    `patch_size` is the side (or per-axis shape) of the training patches, raised axis by axis to the model's next
    legal input side; for unpadded models (`unet_classic`, `unet_classic_3d`) the side of the output tile, the
    input adding the context margin (mirrored at image borders); `0` trains on whole images (padded models only).
    """

    def __init__(
        self, train_set: TensorSet, patch_size: int | Sequence[int], foreground_oversample: float = 0.0
    ) -> None:
        self.train_set = train_set
        self.patch_size = patch_size
        self.foreground_oversample = foreground_oversample
        self.bn_average_epochs = 0  # BatchNorm's usual moving average from the first epoch
        self.sampler: PatchSampler | None = None

    def attach(self, model: nn.Module) -> None:
        dims = self.train_set.images[0].ndim - 1  # 2 for images (C, H, W), 3 for volumes (C, D, H, W)
        patch, margins = per_axis(self.patch_size, dims, "patch_size"), context_margins(model, dims)
        if any(patch):  # per axis: the next legal input side, the context margin added for unpadded models
            patch = valid_input_shape(model, [p + 2 * m for p, m in zip(patch, margins, strict=True)])
        elif any(margins):
            raise ValueError("`patch_size` 0 (whole images) does not fit an unpadded model; give a patch size")
        self.sampler = PatchSampler(self.train_set, patch, margins, self.foreground_oversample)
        self.check_patch(self.sampler.height, self.sampler.width)

    def check_patch(self, height: int, width: int) -> None:
        """Refuse a patch (input) size the task cannot use; nothing by default."""

    def finish(self, run: Path) -> None:
        """No post-training work by default."""

    def epoch_order(self, steps: int, batch_size: int, generator: torch.Generator) -> list[int]:
        return self._sampler().epoch_order(steps, batch_size, generator)

    def _sampler(self) -> PatchSampler:
        if self.sampler is None:
            raise RuntimeError("call attach(model) before drawing batches: it sizes the patches to the model")
        return self.sampler
