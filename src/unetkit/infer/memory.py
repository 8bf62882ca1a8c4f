"""The allocator setting every large prediction runs with (`unetkit predict` and the page's server alike)."""

from __future__ import annotations

from typing import Any

__all__ = ["MMAP_THRESHOLD", "return_freed_memory", "trim_heap"]

MMAP_THRESHOLD = 128 * 1024  # glibc's default, kept fixed: band buffers are mapped and handed back when freed


def _glibc() -> Any:
    """The C library, or None where it cannot be loaded (then the calls below are no-ops)."""
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def return_freed_memory() -> None:
    """Keep glibc's mmap threshold at its default instead of letting it rise to the size of the last freed
    buffer: with it fixed, every band-sized array is its own mapping, returned to the system when freed, so
    the threads' heaps do not keep the high-water mark of many bands (measured: 4000² masks peak at 552 MB
    without, 427 MB with, the same as 1000²). A no-op where the C library is not glibc."""
    mallopt = getattr(_glibc(), "mallopt", None)
    if mallopt is not None:
        mallopt(-3, MMAP_THRESHOLD)  # M_MMAP_THRESHOLD


def trim_heap() -> None:
    """Collect garbage and hand the C heap's free pages back to the system (glibc's `malloc_trim`), so that
    a long-lived process (the page's server) starts each prediction from its live memory, not its history.
    A no-op where the C library is not glibc."""
    import gc

    gc.collect()
    trim = getattr(_glibc(), "malloc_trim", None)
    if trim is not None:
        trim(0)
