"""One optimisation step of the project's training path, for every task, shared by the engine and
`unetkit bench`; and the moving average of the weights (`EMA`) that any task can keep.

A batch is a dict: `image` (the model input), `target`, optional `valid`, `weight` and `distance` (pixel maps the loss
honours) and, for diffusion, `t` (the timesteps, the model's second input). The loss is any module called as
`loss_fn(output, target, weight=..., valid=...)`.

The fast path on CUDA (the defaults `TrainConfig` resolves there): bf16 autocast, channels-last inputs,
`torch.compile`, fused AdamW, cuDNN autotuning, and no host-device synchronisation inside the step. The
step keeps the running loss sum, a non-finite flag and the index of the first non-finite step on the
device; `read()` copies them to the host once per log interval. (fp16 autocast keeps a GradScaler, whose
`step` reads its inf check on the host: that path syncs by construction.)
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from unetkit.layers import center_crop

Reducer = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def channels_last_format(x: torch.Tensor | int) -> torch.memory_format:
    """The channels-last layout of a tensor (or of a tensor rank): NHWC for images, NDHWC for volumes."""
    rank = x if isinstance(x, int) else x.ndim
    return torch.channels_last_3d if rank == 5 else torch.channels_last


__all__ = [
    "EMA",
    "TIMESTEPS",
    "Reducer",
    "StepReading",
    "TrainStep",
    "channels_last_format",
    "crop_to",
    "resolve_amp",
    "resolve_compile",
    "set_fast_backends",
]

TIMESTEPS = "t"  # the batch key of a second model input (diffusion timesteps)
DISTANCE = "distance"  # the batch key of the object-distance target (`unetkit.losses.SeparationLoss`)


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """`auto` = bf16 on GPUs that support it, fp16 on older GPUs, off on CPU; `off`, `bf16`, `fp16`."""
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "fp16":
        return torch.float16
    if mode == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def resolve_compile(value: bool | str, device: torch.device) -> bool:
    """`auto` compiles on CUDA only: on a CPU the compile time (minutes) outweighs the gain of short runs."""
    if value == "auto":
        return device.type == "cuda"
    return bool(value)


def set_fast_backends(device: torch.device, deterministic: bool = False) -> None:
    """cuDNN autotuning and TF32 matmuls for the fp32 parts, unless determinism is asked for."""
    if device.type == "cuda" and not deterministic:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def crop_to(batch: dict[str, torch.Tensor], like: torch.Tensor) -> dict[str, torch.Tensor]:
    """Copy-and-crop the targets of an unpadded model to its smaller output."""
    dims = like.ndim - 2  # spatial axes: 2 for images, 3 for volumes
    if batch["target"].shape[-dims:] == like.shape[-dims:]:
        return batch
    return {
        k: (v if k in ("image", TIMESTEPS) else center_crop(v, like=like, spatial_dims=dims)) for k, v in batch.items()
    }


class EMA:
    """An exponential moving average of a model's weights, `ema <- d ema + (1 - d) w` after every update, with
    the warm-up `d = min(decay, (1 + n) / (10 + n))` at update `n` (as timm's `ModelEmaV2` / Ho et al. sample
    from); buffers (BatchNorm statistics) are copied. `module` is a frozen copy of the model.

    Args:
        model: the model being trained (unwrapped: not DDP or compiled).
        decay: the average's decay in (0, 1), e.g. 0.995.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"`decay` must be in (0, 1), got {decay!r}")
        self.decay = decay
        self.module = copy.deepcopy(model).requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        ema_params: list[torch.Tensor] = list(self.module.parameters())
        params: list[torch.Tensor] = list(model.parameters())
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        for ema_buffer, buffer in zip(self.module.buffers(), model.buffers(), strict=True):
            ema_buffer.copy_(buffer)

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])


@dataclass
class StepReading:
    """What `TrainStep.read` hands the host: the loss summed since the last reset, over how many steps, and the
    first bad step."""

    loss_sum: float
    steps: int
    first_nonfinite: int | None  # index (counted over the step's life) of the first NaN/Inf loss

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / max(self.steps, 1)


class TrainStep:
    """Forward, loss, backward and optimiser update for one batch, without host synchronisation.

    Args:
        model: the network (already on its device and memory format).
        loss_fn: `loss_fn(logits, target, weight=..., valid=...)` returning a scalar.
        optimizer: the optimiser over `model`'s parameters.
        scheduler: stepped once per step when given.
        amp_dtype: autocast dtype, or None for full precision.
        channels_last: feed NHWC inputs.
        compile: wrap the model in `torch.compile` (the eager module stays `model`).
        compile_mode: `torch.compile` mode, e.g. `"max-autotune"` (CUDA graphs where shapes are static).
        grad_clip: max gradient norm; 0 disables clipping.
        net: the module to call when it is not `model` itself, e.g. `model` wrapped in
            DistributedDataParallel (clipping and state stay with `model`).
        ema: a moving average of `model`'s weights, updated after every optimiser step.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        scheduler: Any = None,
        amp_dtype: torch.dtype | None = None,
        channels_last: bool = True,
        compile: bool = False,
        compile_mode: str | None = None,
        grad_clip: float = 0.0,
        net: nn.Module | None = None,
        ema: EMA | None = None,
    ) -> None:
        self.model = model
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.amp_dtype = amp_dtype
        self.channels_last = channels_last
        self.grad_clip = grad_clip
        self.ema = ema
        net = model if net is None else net
        self.forward = torch.compile(net, mode=compile_mode) if compile else net
        self.device = next(model.parameters()).device
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=amp_dtype == torch.float16)
        self._loss_sum = torch.zeros((), device=self.device)
        self._first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        self._count = 0
        self._total = 0

    def autocast(self) -> AbstractContextManager[Any]:
        """The step's autocast context (a no-op without mixed precision)."""
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """One update from `batch` (`image`, `target`, optional `valid`, `weight` and `t`); returns the loss
        as a device tensor (reading it syncs: leave that to `read`)."""
        image = batch["image"]
        if self.channels_last:
            image = image.contiguous(memory_format=channels_last_format(image))
        inputs = (image, batch[TIMESTEPS]) if TIMESTEPS in batch else (image,)
        with self.autocast():
            logits = self.forward(*inputs)
        batch = crop_to(batch, logits)
        extra = {DISTANCE: batch[DISTANCE]} if DISTANCE in batch else {}  # the separation target, where trained
        loss = self.loss_fn(
            logits.float(), batch["target"], weight=batch.get("weight"), valid=batch.get("valid"), **extra
        )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip, foreach=True)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        loss = loss.detach()
        self._loss_sum += loss
        bad = ~torch.isfinite(loss) & (self._first_bad < 0)
        self._first_bad = torch.where(bad, torch.full_like(self._first_bad, self._total), self._first_bad)
        self._count += 1
        self._total += 1
        return loss

    @property
    def steps_taken(self) -> int:
        """Steps run over this object's life (the index the first non-finite step is counted in)."""
        return self._total

    @property
    def loss_sum(self) -> torch.Tensor:
        """The device-side loss sum since the last reset (this process's)."""
        return self._loss_sum

    def reset(self, loss_sum: torch.Tensor | None = None) -> None:
        """Start a new sum, at zero or at `loss_sum` (a resumed epoch's sum so far)."""
        self._loss_sum = torch.zeros((), device=self.device) if loss_sum is None else loss_sum.to(self.device).clone()
        self._count = 0

    def read(self, reduce: Reducer | None = None, *, reset: bool = True) -> StepReading:
        """Copy the accumulated loss to the host (one sync); with `reset`, start a new sum.

        Args:
            reduce: in several processes, `(mean over processes, earliest bad step)` from this process's
                `(loss sum, first bad step or -1)` (see `World.reduce_reading`); every process must read
                at the same steps.
            reset: start a new sum after reading (off: the sum runs on, e.g. over an epoch, added in step
                order so that an interrupted and resumed epoch sums bitwise as an uninterrupted one).
        """
        total, first = self._loss_sum, self._first_bad
        if reduce is not None:
            total, first = reduce(total, first)
        reading = StepReading(total.item(), self._count, None if int(first.item()) < 0 else int(first.item()))
        if reset:
            self.reset()
        return reading

    def state_dict(self) -> dict[str, Any]:
        """The grad scaler's state (what a resume needs beyond model, optimiser and scheduler)."""
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scaler.load_state_dict(state)
