"""Mask files as `unetkit evaluate` reads them (moved here from `unetkit.cli.evaluate`, so that the page scores
a prediction exactly as the command does): grey labels as int64, and the rule that reads a side whose values are
all in {0, 255} as binary.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["binary_side", "read_mask"]


def read_mask(path: Path) -> np.ndarray:
    """A mask file -> `(H, W)` int64 labels (alpha dropped; RGB only where its channels are equal)."""
    from unetkit.data.io import read_image

    mask = read_image(path)
    if mask.ndim == 3:
        if mask.shape[-1] in (2, 4):
            mask = mask[..., :-1]  # drop alpha
        if not np.all(mask == mask[..., :1]):
            raise ValueError(f"{path}: mask must be grey (one channel or equal channels), got shape {mask.shape}")
        mask = mask[..., 0]
    if not np.issubdtype(mask.dtype, np.integer) and not np.array_equal(mask, np.round(mask)):
        raise ValueError(f"{path}: mask must hold integer labels, got {mask.dtype} with fractional values")
    return mask.astype(np.int64)


def binary_side(masks: list[np.ndarray]) -> bool:
    """Whether the values of all `masks` are in {0, 255} with some 255: a binary side, read as 255 -> 1."""
    values = np.unique(np.concatenate([np.unique(m) for m in masks]))
    return bool(np.isin(values, (0, 255)).all() and values.max(initial=0) == 255)
