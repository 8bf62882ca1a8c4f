"""Diffusion (DDPM, Ho et al. 2020, arXiv:2006.11239) on `ImageTask`'s images: `x0 = 2 x - 1` for a patch
`x` in [0, 1], `t ~ U{0, T - 1}`, `eps ~ N(0, I)`; the model sees `x_t` and `t` and predicts `eps` (their
eq. 14). Samples are patch-sized, so a patch must lie inside every training image (no padding). Validation:
the same loss on draws fixed by `seed` (centre crops of the validation images), and a grid of samples (DDIM,
`sample_steps`) each epoch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from unetkit import viz
from unetkit.diffusion import NoiseSchedule, sample
from unetkit.train.distributed import World
from unetkit.train.tasks.base import Forward, Validation, epoch_seed
from unetkit.train.tasks.image2image import ImageTask

if TYPE_CHECKING:
    from unetkit.train.config import TrainConfig

__all__ = ["DiffusionTask"]

SAMPLE_GRID = 16  # images in the per-epoch sample grid


class DiffusionTask(ImageTask):
    name = "diffusion"
    curve_metrics = ()
    monitor = "loss"

    def __init__(self, config: TrainConfig, device: torch.device) -> None:
        super().__init__(config, device)
        self.schedule = NoiseSchedule.make(config.beta_schedule, config.diffusion_steps)

    def model_options(self) -> dict[str, Any]:
        options = {**super().model_options(), "time_embedding": self.config.time_embedding}
        chosen = self.config.model_options.get("time_embedding", options["time_embedding"])
        if not chosen:
            raise ValueError("task 'diffusion' needs a model with a timestep embedding: `time_embedding` must be > 0")
        return options

    def check_patch(self, height: int, width: int) -> None:
        for name, image in zip(self.train_set.names, self.train_set.images, strict=False):
            if image.shape[-2] < height or image.shape[-1] < width:
                raise ValueError(
                    f"{self.config.data}: image {name!r} is {image.shape[-2]}x{image.shape[-1]}, smaller than the "
                    f"{height}x{width} patches diffusion samples; give a `patch_size` of at most its side (or 0 for "
                    "whole images of one size)"
                )

    def _draw(self, clean: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        x0 = 2 * clean - 1  # images in [-1, 1] for diffusion, as Ho et al.
        t = torch.randint(0, self.schedule.steps, (clean.shape[0],), generator=generator).to(clean.device)
        eps = torch.randn(clean.shape, generator=generator).to(clean.device)
        return {"image": self.schedule.q_sample(x0, t, eps), "t": t, "target": eps}

    def pair(self, clean: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return self._draw(clean, generator)

    @torch.no_grad()
    def validate(self, model: nn.Module, forward: Forward, world: World) -> Validation:
        n = len(self.val_images)
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        for i in world.shard(n):
            x = self.val_images[i]
            top, left = (x.shape[-2] - self.side) // 2, (x.shape[-1] - self.side) // 2
            if top < 0 or left < 0:
                raise ValueError(
                    f"{self.config.data}: validation image {i} is {x.shape[-2]}x{x.shape[-1]}, smaller than the "
                    f"{self.side}x{self.side} patches of this run"
                )
            crop = x[None, :, top : top + self.side, left : left + self.side]
            drawn = self._draw(crop, torch.Generator().manual_seed(epoch_seed(self.config.seed, i, 3)))
            output = forward(model, drawn["image"], drawn["t"])
            total += self.loss_fn(output, drawn["target"]).double()
        world.sum_(total)
        metrics = {"val_loss": (total / n).item()} if n else {}
        picture = None
        if self.config.samples and world.is_main:
            drawn_images = sample(
                model,
                self.schedule,
                SAMPLE_GRID,
                (self.channels, self.side, self.side),
                sampler="ddim",
                steps=self.config.sample_steps,
                seed=self.config.seed,
                device=self.device,
            )
            picture = viz.image_grid(drawn_images.images.numpy(), columns=8)
        return Validation(metrics, picture)

    def extra(self) -> dict[str, Any]:
        schedule = {"beta_schedule": self.config.beta_schedule, "steps": self.config.diffusion_steps}
        return {**super().extra(), "diffusion": {**schedule, "prediction": "eps"}}
