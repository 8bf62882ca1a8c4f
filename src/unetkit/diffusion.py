"""Denoising diffusion: noise schedules, the forward process, and two samplers, all written here.

- Ho, Jain, Abbeel 2020, "Denoising Diffusion Probabilistic Models", arXiv:2006.11239: the linear
  beta schedule (1e-4 to 0.02 over T = 1000 steps), the noise-prediction objective
  `|| eps - eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t) ||^2` (their eq. 14) and ancestral
  sampling with the posterior `q(x_{t-1} | x_t, x0)` (their eqs. 6-7).
- Nichol, Dhariwal 2021, "Improved Denoising Diffusion Probabilistic Models", arXiv:2102.09672: the
  cosine schedule `abar(t) = f(t) / f(0)`, `f(t) = cos^2((t / T + s) / (1 + s) * pi / 2)`, `s = 0.008`,
  betas clipped at 0.999 (their eq. 17), the scaling of the linear schedule to other T, and sampling
  on a subset of the timesteps ("respacing").
- Song, Meng, Ermon 2021, "Denoising Diffusion Implicit Models", arXiv:2010.02502: the DDIM update
  (their eq. 12), deterministic for `eta = 0`.

Images live in [-1, 1] during diffusion; samplers clip the predicted `x0` to that range, as the DDPM
reference code does. Noise is drawn on the CPU from a seeded generator, so a seed gives the same
samples on any device (up to the model's own arithmetic).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from unetkit._options import look_up_option

__all__ = [
    "SAMPLERS",
    "SCHEDULES",
    "NoiseSchedule",
    "Samples",
    "cosine_betas",
    "linear_betas",
    "load_diffusion_model",
    "sample",
    "timestep_subset",
]

SCHEDULES = ("linear", "cosine")
SAMPLERS = ("ddpm", "ddim")


def linear_betas(steps: int, beta_start: float = 1e-4, beta_end: float = 0.02, max_beta: float = 0.999) -> torch.Tensor:
    """Ho et al.'s linear schedule, scaled by `1000 / steps` so that other `steps` keep its shape
    (Nichol & Dhariwal 2021, `get_named_beta_schedule`), clipped at `max_beta` for very few steps.
    `(steps,)` float64."""
    scale = 1000.0 / steps
    return torch.linspace(beta_start * scale, beta_end * scale, steps, dtype=torch.float64).clamp(max=max_beta)


def cosine_betas(steps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule (eq. 17): `beta_t = 1 - abar(t + 1) / abar(t)`, clipped at
    `max_beta`. `(steps,)` float64."""
    t = torch.arange(steps + 1, dtype=torch.float64) / steps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)


@dataclass
class NoiseSchedule:
    """The forward process `q(x_t | x0) = N(sqrt(abar_t) x0, (1 - abar_t) I)` for `t = 0 .. steps - 1`.

    Attributes:
        name: `linear` or `cosine`.
        betas: `(steps,)` float64 noise variances.
        alphas_cumprod: `(steps,)` float64 `abar_t = prod_{s <= t} (1 - beta_s)`, decreasing.
    """

    name: str
    betas: torch.Tensor
    alphas_cumprod: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0)

    @classmethod
    def make(cls, name: str, steps: int) -> NoiseSchedule:
        """A named schedule with `steps` timesteps."""
        name = look_up_option("beta_schedule", name, SCHEDULES)
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 2:
            raise ValueError(f"`diffusion_steps` must be an integer >= 2, got {steps!r}")
        return cls(name, linear_betas(steps) if name == "linear" else cosine_betas(steps))

    @property
    def steps(self) -> int:
        """Number of timesteps T."""
        return int(self.betas.numel())

    def _abar(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """`abar_t` for `(B,)` integer timesteps, shaped `(B, 1, 1, 1)` like `like`."""
        return self.alphas_cumprod.to(like.device)[t.long()].to(like.dtype).view(-1, *([1] * (like.ndim - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """`x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps` (Ho et al. eq. 4). `(B, C, H, W)` -> same."""
        abar = self._abar(t, x0)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Invert `q_sample` for a noise estimate: `x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)`."""
        abar = self._abar(t, x_t)
        return (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()


def timestep_subset(total: int, steps: int) -> list[int]:
    """`steps` timesteps out of `0 .. total - 1`, evenly spaced, always ending at `total - 1`, descending."""
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= total:
        raise ValueError(f"`steps` must be an integer in [1, {total}], got {steps!r}")
    picked = torch.linspace(0, total - 1, steps, dtype=torch.float64).round().long().unique()
    return sorted(picked.tolist(), reverse=True)


@dataclass
class Samples:
    """What `sample` returns.

    Attributes:
        images: `(N, C, H, W)` samples in [0, 1].
        timesteps: the timesteps of the recorded frames, descending (empty unless `record > 0`).
        frames: `x_t` in [0, 1] at those timesteps, each `(N, C, H, W)`.
        predicted: the model's `x0` estimate in [0, 1] at those timesteps.
    """

    images: torch.Tensor
    timesteps: list[int] = field(default_factory=list)
    frames: list[torch.Tensor] = field(default_factory=list)
    predicted: list[torch.Tensor] = field(default_factory=list)


@torch.no_grad()
def sample(
    model: nn.Module,
    schedule: NoiseSchedule,
    n: int,
    shape: tuple[int, int, int],
    *,
    sampler: str = "ddpm",
    steps: int | None = None,
    eta: float = 0.0,
    seed: int = 0,
    batch_size: int = 256,
    record: int = 0,
    device: str | torch.device = "cpu",
) -> Samples:
    """Draw `n` images from a noise-predicting model `model(x_t, t)`.

    Args:
        model: predicts the noise `eps` of `x_t` at timesteps `t` (`(B,)`, indices into the schedule).
        schedule: the schedule the model was trained with.
        n: number of images.
        shape: `(C, H, W)` of one image.
        sampler: `ddpm` (ancestral, Ho et al.) or `ddim` (Song et al.).
        steps: sampling steps, a subset of the schedule's timesteps; `None` = all of them.
        eta: DDIM noise scale; `0` = deterministic given the starting noise, `1` = DDPM-like.
        seed: seeds the starting noise and every noise draw.
        batch_size: images per forward pass.
        record: keep this many intermediate frames (evenly spaced over the steps) for a figure.
        device: where the model runs.

    Returns:
        `Samples` with images in [0, 1].
    """
    sampler = look_up_option("sampler", sampler, SAMPLERS)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"`n` must be an integer >= 1, got {n!r}")
    if eta < 0:
        raise ValueError(f"`eta` must be >= 0, got {eta!r}")
    timesteps = timestep_subset(schedule.steps, schedule.steps if steps is None else steps)
    keep = set()
    if record > 0:
        picks = torch.linspace(0, len(timesteps) - 1, min(record, len(timesteps))).round().long().tolist()
        keep = {timesteps[i] for i in picks}
    device = torch.device(device)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((n, *shape), generator=generator)  # CPU noise: the same on every device
    abar_all = schedule.alphas_cumprod
    result = Samples(images=x)
    was_training = model.training
    model.eval()
    try:
        for i, t in enumerate(timesteps):
            t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
            abar_t = float(abar_all[t])
            abar_prev = float(abar_all[t_prev]) if t_prev >= 0 else 1.0
            eps = torch.cat(
                [
                    model(chunk.to(device), torch.full((len(chunk),), float(t), device=device)).float().cpu()
                    for chunk in x.split(batch_size)
                ]
            )
            x0 = ((x - math.sqrt(1 - abar_t) * eps) / math.sqrt(abar_t)).clamp(-1, 1)
            if t in keep:
                result.timesteps.append(t)
                result.frames.append(((x.clamp(-1, 1) + 1) / 2).clone())
                result.predicted.append((x0 + 1) / 2)
            beta = 1 - abar_t / abar_prev  # the step's beta, respaced (Nichol & Dhariwal 2021, sec. 4)
            if sampler == "ddpm":
                # posterior q(x_{t-1} | x_t, x0), Ho et al. eq. 7
                mean = (math.sqrt(abar_prev) * beta / (1 - abar_t)) * x0 + (
                    math.sqrt(1 - beta) * (1 - abar_prev) / (1 - abar_t)
                ) * x
                sigma = math.sqrt(beta * (1 - abar_prev) / (1 - abar_t))
            else:
                # DDIM, Song et al. eq. 12 with sigma from eq. 16; eps recomputed from the clipped x0
                sigma = eta * math.sqrt((1 - abar_prev) / (1 - abar_t) * beta)
                eps = (x - math.sqrt(abar_t) * x0) / math.sqrt(1 - abar_t)
                mean = math.sqrt(abar_prev) * x0 + math.sqrt(max(1 - abar_prev - sigma**2, 0.0)) * eps
            x = mean + sigma * torch.randn(x.shape, generator=generator) if t_prev >= 0 and sigma > 0 else mean
    finally:
        model.train(was_training)
    result.images = ((x.clamp(-1, 1) + 1) / 2).contiguous()
    return result


def load_diffusion_model(
    path: str | Path, *, device: str | torch.device = "cpu"
) -> tuple[nn.Module, NoiseSchedule, tuple[int, int, int]]:
    """The model, schedule and image shape `(C, H, W)` of a checkpoint from `unetkit train --task diffusion`.

    Raises:
        ValueError: the checkpoint is of another task (segmentation, denoise, superres).
    """
    from unetkit.models.checkpoint import load_model, read_checkpoint_config, resolve_checkpoint

    folder = resolve_checkpoint(path)
    config = read_checkpoint_config(folder)
    task = config.get("task", "segmentation")
    if task != "diffusion" or "diffusion" not in config:
        raise ValueError(
            f"{folder}: a {task} checkpoint; sampling needs a diffusion checkpoint (unetkit train --task diffusion)"
        )
    settings, image = config["diffusion"], config["image"]
    schedule = NoiseSchedule.make(settings["beta_schedule"], int(settings["steps"]))
    model = load_model(folder, map_location=device)
    return model, schedule, (int(image["channels"]), int(image["size"]), int(image["size"]))
