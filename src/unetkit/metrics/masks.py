"""Mask files as `unetkit evaluate` reads them, for the page (`unetkit serve`): the package's one mask reader
(`unetkit.data.masks`), and the rule that reads a side whose values are all in {0, 255} as binary.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["binary_side", "read_mask"]


def read_mask(path: Path) -> np.ndarray:
    """A mask file -> `(H, W)` int64 labels, through the one mask reader of `train`, `evaluate` and `predict`
    (`unetkit.data.masks.read_mask`: palette PNGs as indices, equal-channel RGB(A) as grey)."""
    from unetkit.data.masks import read_mask as read

    return read(path)


def binary_side(masks: list[np.ndarray]) -> bool:
    """Whether the values of all `masks` are in {0, 255} with some 255: a binary side, read as 255 -> 1."""
    values = np.unique(np.concatenate([np.unique(m) for m in masks]))
    return bool(np.isin(values, (0, 255)).all() and values.max(initial=0) == 255)
