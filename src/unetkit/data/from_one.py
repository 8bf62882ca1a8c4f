"""A training set from one annotated picture: augment one image/mask pair into `n` pairs.

This is the classic tutorial flow behind the U-Net paper's claim that strong elastic augmentation lets the
network learn from very few annotated images (Ronneberger et al. 2015, arXiv:1505.04597, Sec. 3.1).
The pairs are written to `out_dir/images/0000.png ...` and `out_dir/masks/0000.png ...`; the folder appears
only when complete (built in a temporary sibling folder, then renamed into place).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from unetkit._fs import public_mode
from unetkit.data.augment import AugmentConfig, augment_batch
from unetkit.data.errors import DataError
from unetkit.data.io import read_image, write_image

__all__ = ["MAX_CLASSES", "default_config", "make_dataset_from_one"]

logger = logging.getLogger(__name__)

# a class-index mask holds values 0 .. MAX_CLASSES - 1; binary masks may also be {0, 255}
MAX_CLASSES = 64
# pairs augmented per `augment_batch` call: bounds memory for large pictures
CHUNK = 16


def default_config() -> AugmentConfig:
    """The tutorial's augmentation: elastic as in the paper (Sec. 3.1), flips, quarter turns, an affine with
    30 degrees and 20 % zoom, brightness and contrast."""
    return AugmentConfig(rotate_deg=30.0, scale=0.2)


def _read_mask(path: Path) -> np.ndarray:
    """The mask as `(H, W)` in its own label values; colour masks must have equal colour channels."""
    mask = read_image(path)
    if mask.ndim == 3:
        colour = mask[..., :3]  # an alpha channel carries no label
        if not (colour == colour[..., :1]).all():
            raise DataError(f"{path}: colour mask with different channels; expected a grey label mask")
        mask = colour[..., 0]
    if mask.dtype.kind == "f":
        if not (mask == np.round(mask)).all():
            raise DataError(f"{path}: mask values must be whole numbers, got fractional values")
        mask = mask.astype(np.int64)
    values = np.unique(mask)
    binary = set(values.tolist()) <= {0, 255}
    if not binary and (values.min() < 0 or values.max() >= MAX_CLASSES):
        shown = ", ".join(str(v) for v in values[:8]) + (", ..." if values.size > 8 else "")
        raise DataError(
            f"{path}: mask values must be binary {{0, 1}} / {{0, 255}} or class indices 0..{MAX_CLASSES - 1}, "
            f"got {values.size} values: {shown}"
        )
    return mask


def _to_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round and clip float pixels into an integer dtype's range; float dtypes are cast as they are."""
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        values = np.clip(np.rint(values), info.min, info.max)
    return values.astype(dtype)


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise DataError(f"{out_dir}: exists and is not empty; choose another --out")


def make_dataset_from_one(
    image_path: str | Path,
    mask_path: str | Path,
    out_dir: str | Path,
    n: int = 200,
    *,
    seed: int = 0,
    size: int | None = None,
    config: AugmentConfig | None = None,
) -> Path:
    """Write `n` augmented copies of one image and its mask as a folder data set.

    Args:
        image_path: the picture (grey or colour, 8- or 16-bit PNG, or any image `read_image` reads).
        mask_path: its label mask, same height and width: binary {0, 1} / {0, 255} or class indices.
        out_dir: new or empty folder; gets `images/` and `masks/` with files `0000.png ...`.
        n: number of pairs to write.
        seed: seeds the generator, so the same arguments give the same files.
        size: random `size x size` crop of every augmented pair; `None` keeps the full size.
        config: augmentation; `None` uses `default_config()`.

    Returns:
        `out_dir`. Images keep the input's dtype and channels (8-bit stays 8-bit, 16-bit is a 16-bit
        PNG, other dtypes are written as `.tif`); masks keep the input's label values.

    Raises:
        DataError: unreadable files, a bad mask, differing sizes, a picture smaller than `size`, or a
            non-empty `out_dir`.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"`n` must be an int >= 1, got {n!r}")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 2):
        raise ValueError(f"`size` must be None or an int >= 2, got {size!r}")
    image_path, mask_path, out_dir = Path(image_path), Path(mask_path), Path(out_dir)
    config = default_config() if config is None else config
    _check_out_dir(out_dir)
    image = read_image(image_path)  # (H, W) or (H, W, C)
    mask = _read_mask(mask_path)  # (H, W)
    height, width = image.shape[:2]
    if mask.shape != (height, width):
        raise DataError(
            f"{image_path} is {height}x{width} but {mask_path} is {mask.shape[0]}x{mask.shape[1]}; "
            "image and mask must have the same size"
        )
    if size is not None and (height < size or width < size):
        raise DataError(f"{image_path}: {height}x{width} is smaller than `size` {size}x{size}")
    if min(height, width) < 2:  # flips, quarter turns and elastic deformation need two pixels a side
        raise DataError(f"{image_path}: image is {height}x{width} pixels (HxW), expected at least 2x2 to augment")
    image_dtype, mask_dtype = image.dtype, mask.dtype
    if mask_dtype not in (np.uint8, np.uint16):
        mask_dtype = np.dtype(np.uint8) if mask.max() <= np.iinfo(np.uint8).max else np.dtype(np.uint16)
    suffix = ".png" if image_dtype in (np.uint8, np.uint16) else ".tif"
    width_digits = max(4, len(str(n - 1)))

    pixels = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    pixels = pixels[None, None] if image.ndim == 2 else pixels.permute(2, 0, 1)[None]  # (1, C, H, W)
    labels = torch.from_numpy(mask.astype(np.int64))[None]  # (1, H, W)
    generator = torch.Generator().manual_seed(seed)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        for start in range(0, n, CHUNK):
            count = min(CHUNK, n - start)
            images, masks, _ = augment_batch(
                pixels.expand(count, -1, -1, -1), labels.expand(count, -1, -1), config=config, generator=generator
            )  # (b, C, H, W), (b, H, W)
            if size is not None:
                tops = torch.randint(0, height - size + 1, (count,), generator=generator).tolist()
                lefts = torch.randint(0, width - size + 1, (count,), generator=generator).tolist()
            for i in range(count):
                img, msk = images[i], masks[i]
                if size is not None:
                    top, left = tops[i], lefts[i]
                    img = img[:, top : top + size, left : left + size]
                    msk = msk[top : top + size, left : left + size]
                # (H, W) for grey pictures, (H, W, C) for colour ones
                array = img[0].numpy() if image.ndim == 2 or image.shape[2] == 1 else img.permute(1, 2, 0).numpy()
                name = f"{start + i:0{width_digits}d}"
                write_image(tmp / "images" / f"{name}{suffix}", _to_dtype(array, image_dtype))
                write_image(tmp / "masks" / f"{name}.png", msk.numpy().astype(mask_dtype))
        _check_out_dir(out_dir)  # another process may have filled it meanwhile
        if out_dir.exists():
            out_dir.rmdir()
        public_mode(tmp)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("wrote %d augmented pairs (%d chunks) to %s", n, math.ceil(n / CHUNK), out_dir)
    return out_dir
