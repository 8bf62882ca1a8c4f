"""Training for the image-to-image tasks on digits: `denoise`, `superres` and `diffusion` (DDPM).

The conventions of the segmentation loop (`unetkit.train.loop`) hold here too: the resolved config
next to the run, `best/` and `last/` checkpoints written atomically, `metrics.csv`, `curves.png`,
pictures under `samples/`, and exact resume: every epoch re-seeds the data order and every random
draw (corruption amounts, noise, timesteps) from `(seed, epoch)`, so a run resumed after epoch k
draws what an uninterrupted run draws.

- `denoise`: input `x (1 - a) + u a`, `u ~ U(0, 1)`, `a ~ U(0, noise_amount)` per image; target `x`.
- `superres`: input down-sampled by `scale_factor` and up-sampled again (bicubic); target `x`.
- `diffusion`: `x0 = 2 x - 1`, `t ~ U{0, T - 1}`, `eps ~ N(0, I)`; the model sees `x_t` and `t` and
  predicts `eps` (Ho et al. 2020, eq. 14). Validation: the same loss on fixed draws, and a sample
  grid (DDIM, `sample_steps`) each epoch.

With `ema_decay > 0` an exponential moving average of the weights (as Ho et al. sample from) is kept
beside them: validation, pictures and `best/` use it; `last/` holds the raw weights and the average
goes into `last/state.pt` for resume.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.data.corrupt import add_noise, reduce_resolution
from unetkit.data.digits import load_digits
from unetkit.diffusion import NoiseSchedule, sample
from unetkit.metrics.image import psnr, ssim
from unetkit.models import create_model
from unetkit.models.checkpoint import load_model, replace_dir, save_model, unwrap_model
from unetkit.train import report
from unetkit.train.config import TrainConfig
from unetkit.train.data import steps_for_epoch
from unetkit.train.loop import (
    STATE,
    TrainingDiverged,
    TrainResult,
    _atomic_torch_save,
    _bar,
    _device,
    _epoch_seed,
    _lr_lambda,
    _optimizer,
    _out_key,
    _tensorboard,
)
from unetkit.train.step import resolve_amp, resolve_compile

__all__ = ["ImageTrainer", "corrupt", "model_options_for"]

logger = logging.getLogger(__name__)
SAMPLE_GRID = 16  # images in the per-epoch sample grid (diffusion)
STRIP = 8  # validation images in the per-epoch input / output / target strip


def model_options_for(config: TrainConfig) -> dict[str, Any]:
    """Model arguments for an image task: one channel in and out, a timestep embedding for diffusion."""
    options: dict[str, Any] = {"in_channels": 1, _out_key(config.model): 1}
    if config.task == "diffusion":
        options["time_embedding"] = config.time_embedding
    if config.model == "unet_dense_bottleneck":
        options["image_size"] = config.digits_size
    options.update(config.model_options)
    if config.task == "diffusion" and not options.get("time_embedding"):
        raise ValueError("task 'diffusion' needs a model with a timestep embedding: `time_embedding` must be > 0")
    return options


def corrupt(config: TrainConfig, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The model input of `denoise` / `superres` for clean images `x` `(B, 1, S, S)` in [0, 1]."""
    if config.task == "denoise":
        amount = torch.rand(x.shape[0], generator=generator) * config.noise_amount
        return add_noise(x, amount.to(x.device), generator)
    return reduce_resolution(x, config.scale_factor)


class ImageTrainer:
    """Builds data, model and optimiser for an image task, and runs epochs (see the module docstring)."""

    def __init__(self, config: TrainConfig, run: Path, progress: bool) -> None:
        self.config = config
        self.run = run
        self.progress = progress
        self.device = _device(config.device)
        self.amp_dtype = resolve_amp(config.amp, self.device)
        splits = load_digits(
            config.data,
            size=config.digits_size,
            seed=config.seed,
            n_train=config.synthetic_train,
            n_val=config.synthetic_val,
            n_test=0,  # the test split is for evaluation only (`unetkit.infer.restore`)
            val_fraction=config.val_fraction,
        )
        self.train_images = torch.from_numpy(splits.train).to(self.device)
        self.val_images = torch.from_numpy(splits.val).to(self.device)
        self.schedule = NoiseSchedule.make(config.beta_schedule, config.diffusion_steps)
        torch.manual_seed(config.seed)
        self.model = create_model(config.model, **model_options_for(config)).to(self.device)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.steps = steps_for_epoch(config.steps_per_epoch, len(self.train_images), config.batch_size)
        self.optimizer = _optimizer(config, self.model, self.device)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_lambda(config, self.steps))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.forward = torch.compile(self.model) if resolve_compile(config.compile, self.device) else self.model
        self.ema: nn.Module | None = None
        if config.ema_decay > 0:
            self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.history: list[dict[str, Any]] = []
        self.best_score = -math.inf
        self.best_epoch = 0
        self.stale = 0
        self.start_epoch = 0

    # --- checkpoints -------------------------------------------------------------------------------
    def _extra(self, epoch: int, metrics: dict[str, Any]) -> dict[str, Any]:
        config = self.config
        extra: dict[str, Any] = {
            "task": config.task,
            "preprocess": {"range": [0.0, 1.0], "note": "images in [0, 1]; diffusion works in [-1, 1]"},
            "image": {"channels": 1, "size": config.digits_size, "data": config.data},
            "output": "identity",
            "epoch": epoch,
            "metrics": metrics,
            "train_config": config.to_dict(),
        }
        if config.task == "diffusion":
            extra["diffusion"] = {
                "beta_schedule": config.beta_schedule,
                "steps": config.diffusion_steps,
                "prediction": "eps",
            }
        elif config.task == "denoise":
            extra["denoise"] = {"noise": "uniform", "max_amount": config.noise_amount}
        else:
            extra["superres"] = {"scale_factor": config.scale_factor, "down": "area", "up": "bicubic"}
        return extra

    def save_last(self, epoch: int, metrics: dict[str, Any]) -> None:
        tmp = Path(tempfile.mkdtemp(prefix=".last.tmp", dir=self.run))
        try:
            save_model(self.model, tmp / "ckpt", extra=self._extra(epoch, metrics))
            for item in (tmp / "ckpt").iterdir():
                os.replace(item, tmp / item.name)
            (tmp / "ckpt").rmdir()
            state = {
                "epoch": epoch,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "history": self.history,
                "best_score": self.best_score,
                "best_epoch": self.best_epoch,
                "stale": self.stale,
                "config": self.config.to_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None,
            }
            _atomic_torch_save(state, tmp / STATE)
            replace_dir(tmp, self.run / "last")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def restore(self, run: Path) -> None:
        state = torch.load(run / "last" / STATE, map_location=self.device, weights_only=False)
        loaded = load_model(run / "last", map_location=self.device)
        unwrap_model(self.model).load_state_dict(loaded.state_dict())
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.history = state["history"]
        self.best_score, self.best_epoch, self.stale = state["best_score"], state["best_epoch"], state["stale"]
        self.start_epoch = int(state["epoch"])

    @property
    def evaluated(self) -> nn.Module:
        """The weights that validation, pictures and `best/` use: the moving average when kept."""
        return self.ema if self.ema is not None else self.model

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.ema is None:
            return
        updates = self.scheduler.last_epoch  # optimiser steps so far, restored on resume
        decay = min(self.config.ema_decay, (1 + updates) / (10 + updates))  # warm-up of the average
        ema_params: list[torch.Tensor] = list(self.ema.parameters())
        params: list[torch.Tensor] = list(self.model.parameters())
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)  # ema <- decay * ema + (1 - decay) * w
        for ema_buffer, buffer in zip(self.ema.buffers(), self.model.buffers(), strict=True):
            ema_buffer.copy_(buffer)

    # --- one step ----------------------------------------------------------------------------------
    def _autocast(self):  # type: ignore[no-untyped-def]
        if self.amp_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.config.channels_last else x

    def loss_and_output(
        self, x: torch.Tensor, generator: torch.Generator, model: nn.Module | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Clean `x` `(B, 1, S, S)` -> (loss, model input, model output) with draws from `generator`."""
        run: Any = self.forward if model is None else model
        if self.config.task == "diffusion":
            x0 = 2 * x - 1  # images in [-1, 1] for diffusion, as Ho et al.
            t = torch.randint(0, self.schedule.steps, (x.shape[0],), generator=generator).to(x.device)
            eps = torch.randn(x.shape, generator=generator).to(x.device)
            inputs = self.schedule.q_sample(x0, t, eps)
            with self._autocast():
                output = run(self._layout(inputs), t).float()
            return F.mse_loss(output, eps), inputs, output  # Ho et al. eq. 14
        inputs = corrupt(self.config, x, generator)
        with self._autocast():
            output = run(self._layout(inputs)).float()
        if self.config.loss == "l1":
            return F.l1_loss(output, x), inputs, output
        return F.mse_loss(output, x), inputs, output

    def train_epoch(self, epoch: int) -> float:
        config = self.config
        torch.manual_seed(_epoch_seed(config.seed, epoch, 0))
        gen = torch.Generator().manual_seed(_epoch_seed(config.seed, epoch, 1))
        n = len(self.train_images)
        order = torch.cat([torch.randperm(n, generator=gen) for _ in range(-(-self.steps * config.batch_size // n))])
        self.model.train()
        total = torch.zeros((), device=self.device)
        bar = _bar(self.steps, f"epoch {epoch + 1}/{config.epochs}", self.progress)
        for step in range(self.steps):
            index = order[step * config.batch_size : (step + 1) * config.batch_size].to(self.device)
            loss, _, _ = self.loss_and_output(self.train_images[index], gen)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if config.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            self._update_ema()
            total += loss.detach()
            if not torch.isfinite(loss.detach()):
                raise TrainingDiverged(f"epoch {epoch + 1}, step {step + 1}")
            if bar is not None:
                bar.update(1)
                if step % 5 == 0 or step == self.steps - 1:
                    bar.set_postfix(loss=f"{total.item() / (step + 1):.4f}")
        if bar is not None:
            bar.close()
        return total.item() / self.steps

    @torch.no_grad()
    def validate(self, epoch: int) -> dict[str, Any]:
        """Validation loss on draws fixed by `seed` (the same every epoch), PSNR / SSIM, a picture."""
        config = self.config
        model = self.evaluated.eval()
        gen = torch.Generator().manual_seed(_epoch_seed(config.seed, 0, 3))
        losses, outputs, inputs = [], [], []
        for chunk in self.val_images.split(config.batch_size * 4):
            loss, x_in, out = self.loss_and_output(chunk, gen, model)
            losses.append(loss * len(chunk))
            inputs.append(x_in)
            outputs.append(out)
        metrics: dict[str, Any] = {"val_loss": (torch.stack(losses).sum() / len(self.val_images)).item()}
        folder = self.run / "samples"
        if config.task == "diffusion":
            if config.samples:
                drawn = sample(
                    model,
                    self.schedule,
                    SAMPLE_GRID,
                    (1, config.digits_size, config.digits_size),
                    sampler="ddim",
                    steps=config.sample_steps,
                    seed=config.seed,
                    device=self.device,
                )
                grid = report.image_grid(drawn.images.numpy(), columns=8)
                report.save_png(grid, folder / f"epoch_{epoch + 1:03d}.png")
            return metrics
        restored = torch.cat(outputs).clamp(0, 1)
        corrupted = torch.cat(inputs)
        metrics["psnr"] = psnr(restored, self.val_images).mean().item()
        metrics["ssim"] = ssim(restored, self.val_images).mean().item()
        metrics["psnr_input"] = psnr(corrupted.clamp(0, 1), self.val_images).mean().item()
        if config.samples:
            k = min(STRIP, len(self.val_images))
            rows = torch.cat([corrupted[:k].clamp(0, 1), restored[:k], self.val_images[:k]]).cpu().numpy()
            report.save_png(report.image_grid(rows, columns=k), folder / f"epoch_{epoch + 1:03d}.png")
        return metrics

    def fit(self) -> TrainResult:
        config = self.config
        writer = _tensorboard(self.run)
        stopped_early = False
        for epoch in range(self.start_epoch, config.epochs):
            start = time.perf_counter()
            train_loss = self.train_epoch(epoch)
            metrics = self.validate(epoch)
            row = {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                **metrics,
                "lr": self.optimizer.param_groups[0]["lr"],
                "seconds": time.perf_counter() - start,
            }
            self.history.append(row)
            score = -metrics["val_loss"] if config.monitor == "loss" else metrics[config.monitor]
            if score > self.best_score:
                self.best_score, self.best_epoch, self.stale = score, epoch + 1, 0
                save_model(self.evaluated, self.run / "best", extra=self._extra(epoch + 1, row))
            else:
                self.stale += 1
            self.save_last(epoch + 1, row)
            report.epoch_reports(self.history, self.run, writer, config.epochs, curve_metrics=("psnr",))
            if config.early_stopping and self.stale >= config.early_stopping:
                logger.info("early stopping: no improvement of %s for %d epochs", config.monitor, self.stale)
                stopped_early = True
                break
        frames = sorted((self.run / "samples").glob("epoch_*.png"))
        report.save_gif(frames, self.run / "samples" / "progress.gif")
        if writer is not None:
            writer.close()
        return TrainResult(self.run, self.best_epoch, self.best_score, self.history, stopped_early)
