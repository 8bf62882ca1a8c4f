"""Measurement helpers shared by the benchmarks: device sync, peak memory, machine and version facts."""

from __future__ import annotations

import ctypes
import gc
import importlib
import os
import platform
from typing import Any

import numpy as np
import torch

from unetkit.version import __version__

__all__ = ["cpu_ticks", "machine", "others_share", "peak", "proc_kib", "reset_peak", "sync", "versions"]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def proc_kib(key: str, path: str = "/proc/self/status") -> int:
    """A `key:  N kB` field of a /proc file, in bytes."""
    with open(path) as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no {key} in {path}")


def reset_peak(device: torch.device) -> int | None:
    """Start a peak-memory measurement; returns the baseline in bytes (None: not measurable here)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # glibc: hand freed heap back, so the baseline is what is live
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # reset the resident set's high-water mark (Linux >= 4.0)
        return proc_kib("VmRSS")
    except OSError:
        return None


def peak(device: torch.device, baseline: int | None) -> int | None:
    if baseline is None:
        return None
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) - baseline
    return proc_kib("VmHWM") - baseline


def cpu_ticks() -> tuple[int, int, int] | None:
    """Clock ticks since boot from /proc (Linux): (all CPUs, all CPUs busy, this process busy)."""
    try:
        with open("/proc/stat") as handle:
            ticks = [int(v) for v in handle.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
        with open("/proc/self/stat") as handle:
            own = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return sum(ticks), sum(ticks) - ticks[3] - ticks[4], int(own[11]) + int(own[12])  # utime + stime


def others_share(start: tuple[int, int, int] | None) -> float | None:
    """Fraction of the machine's CPU time that other processes (and the hypervisor) took since `start`."""
    end = cpu_ticks()
    if start is None or end is None or end[0] == start[0]:
        return None
    return round(((end[1] - start[1]) - (end[2] - start[2])) / (end[0] - start[0]), 3)


def machine(device: torch.device) -> dict[str, Any]:
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "")
    except OSError:
        cpu = platform.processor()
    cpu = f"{cpu or 'CPU'} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    return {"type": device.type, "name": name, "cpu": cpu, "platform": platform.platform()}


def versions(*optional: str) -> dict[str, str]:
    """Python, torch, numpy, unetkit, CUDA/cuDNN when present, and each importable `optional` package."""
    found = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "unetkit": __version__,
        "numpy": np.__version__,
    }
    for name in optional:
        try:
            found[name] = str(importlib.import_module(name).__version__)
        except ImportError:
            continue
    if torch.cuda.is_available():
        found["cuda"] = str(torch.version.cuda)
        found["cudnn"] = str(torch.backends.cudnn.version())
    return found
