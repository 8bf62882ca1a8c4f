"""The one place where a device name becomes a `torch.device`: `auto` is CUDA when available, else the CPU."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(name: str | torch.device | None, *, flag: str = "device") -> torch.device:
    """`auto` (or None) -> `cuda` when available, else `cpu`; any other name as PyTorch reads it.

    Raises:
        ValueError: a name PyTorch does not know, or a CUDA device on a machine without CUDA (naming `flag`).
    """
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"`{flag}` must be auto, cpu, cuda or cuda:N, got {name!r}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"`{flag}` {name!r} asked for, but CUDA is not available here")
    return device
