"""The device's own limits, measured in the same process as the training cases: dense matrix-multiply peak
(bf16 and fp32) and copy bandwidth."""

from __future__ import annotations

import time

import torch

from unetkit.bench._measure import sync

__all__ = ["copy_bandwidth", "matmul_peak"]


def _best_time(fn, repeats: int, device: torch.device) -> float:  # type: ignore[no-untyped-def]
    fn()
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 5, inner: int = 10) -> float:
    """FLOP/s of `inner` chained n x n x n matrix products, best of `repeats` (2·n³ FLOPs per product)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype) / n**0.5
    allow = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 (bf16 is its own figure)

    def run() -> None:
        c = a
        for _ in range(inner):
            c = c @ b

    try:
        seconds = _best_time(run, repeats, device)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allow
    return 2 * n**3 * inner / seconds


def copy_bandwidth(device: torch.device, nbytes: int, repeats: int = 5) -> float:
    """Bytes/s of a device-to-same-device copy, counting the read and the write (2 x `nbytes` per copy)."""
    src = torch.empty(nbytes // 4, device=device, dtype=torch.float32).fill_(1.0)
    dst = torch.empty_like(src)
    seconds = _best_time(lambda: dst.copy_(src), repeats, device)
    return 2 * src.numel() * 4 / seconds
