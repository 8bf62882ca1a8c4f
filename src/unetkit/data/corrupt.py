"""Corruptions that make the inputs of the image-to-image tasks from clean images in [0, 1].

- Noise, as in the Hugging Face diffusion course's first denoiser: `x (1 - a) + u a` with `u` uniform
  in [0, 1] and an amount `a` in [0, 1] per image (0 = clean, 1 = pure noise).
- Additive white Gaussian noise of standard deviation `sigma` per image, clipped to [0, 1] (as an 8-bit file
  of a noisy picture holds it), the corruption of denoising benchmarks (e.g. DnCNN, Zhang et al. 2017,
  arXiv:1608.03981, at sigma 15, 25, 50 / 255).
- Resolution: area down-sampling by an integer factor, then bicubic up-sampling to the original size
  (clipped to [0, 1]), the classic input of SRCNN (Dong et al. 2014, arXiv:1501.00092).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["add_gaussian_noise", "add_noise", "reduce_resolution"]


def add_noise(x: torch.Tensor, amount: torch.Tensor | float, generator: torch.Generator | None = None) -> torch.Tensor:
    """`(B, C, H, W)` in [0, 1] -> `x (1 - a) + u a`, `u ~ U(0, 1)` drawn on the CPU from `generator`.

    Args:
        x: clean images.
        amount: a number or `(B,)` amounts in [0, 1].
        generator: seeds the noise (the same noise on every device).
    """
    a = torch.as_tensor(amount, dtype=x.dtype, device=x.device)
    if a.ndim == 0:
        a = a.expand(x.shape[0])
    if a.shape != (x.shape[0],) or bool(((a < 0) | (a > 1)).any()):
        raise ValueError(f"`amount` must be a number or ({x.shape[0]},) values in [0, 1], got {amount!r}")
    noise = torch.rand(x.shape, generator=generator).to(device=x.device, dtype=x.dtype)
    a = a.view(-1, 1, 1, 1)
    return x * (1 - a) + noise * a


def add_gaussian_noise(
    x: torch.Tensor, sigma: torch.Tensor | float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """`(B, C, H, W)` in [0, 1] -> `clip(x + sigma n, 0, 1)`, `n ~ N(0, I)` drawn on the CPU from `generator`.

    Args:
        x: clean images.
        sigma: a number or `(B,)` standard deviations >= 0 (in units of the [0, 1] range).
        generator: seeds the noise (the same noise on every device).
    """
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if s.ndim == 0:
        s = s.expand(x.shape[0])
    if s.shape != (x.shape[0],) or bool((s < 0).any()):
        raise ValueError(f"`sigma` must be a number or ({x.shape[0]},) values >= 0, got {sigma!r}")
    noise = torch.randn(x.shape, generator=generator).to(device=x.device, dtype=x.dtype)
    return (x + noise * s.view(-1, 1, 1, 1)).clamp(0, 1)


def reduce_resolution(x: torch.Tensor, factor: int) -> torch.Tensor:
    """`(B, C, H, W)` -> the same size, down-sampled by `factor` (area) and up-sampled back (bicubic)."""
    if not isinstance(factor, int) or factor < 1 or x.shape[-1] % factor or x.shape[-2] % factor:
        raise ValueError(f"`factor` must be an integer >= 1 that divides {tuple(x.shape[-2:])}, got {factor!r}")
    small = F.avg_pool2d(x, factor)
    return F.interpolate(small, size=x.shape[-2:], mode="bicubic", align_corners=False).clamp(0, 1)
