"""Folders of plain images for the image-to-image tasks (denoise, superres, diffusion): no masks, any size,
grey or RGB, 8 / 16 bit or float, read by the readers (and under the limits) of segmentation.

Layout::

    ROOT/NAME.{png,jpg,jpeg,tif,tiff,bmp}      or ROOT/images/NAME.*  (a segmentation folder's images)

or the same under `ROOT/train/`, `ROOT/val/` and `ROOT/test/`. Without `val/`, a seeded `val_fraction` of the
training images is held out, as for segmentation. Images come back as float32 `(C, H, W)` in [0, 1]: integer
images scaled by their dtype's range, float images as they are (they must lie in [0, 1]).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from unetkit.data.errors import DataError
from unetkit.data.folder import to_chw_float
from unetkit.data.io import IMAGE_SUFFIXES, read_image

__all__ = ["ImageSplits", "image_files", "load_image_folder"]

logger = logging.getLogger(__name__)


@dataclass
class ImageSplits:
    """Images `(C, H, W)` float32 in [0, 1] and their names, per split."""

    train: list[np.ndarray] = field(default_factory=list)
    val: list[np.ndarray] = field(default_factory=list)
    test: list[np.ndarray] = field(default_factory=list)
    names: dict[str, list[str]] = field(default_factory=dict)


def image_files(folder: Path) -> list[Path]:
    """The image files of `folder` (or of `folder/images/`), sorted; hidden files and other suffixes skipped."""
    if (folder / "images").is_dir():
        folder = folder / "images"
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )
    stems: dict[str, Path] = {}
    for path in files:
        if path.stem in stems:
            raise DataError(f"{folder}: two files with the stem {path.stem!r}: {stems[path.stem].name}, {path.name}")
        stems[path.stem] = path
    return files


def _read(path: Path) -> np.ndarray:
    image = to_chw_float(read_image(path))
    if image.dtype.kind == "f" and (image.min() < 0 or image.max() > 1):
        raise DataError(
            f"{path}: float pixel values must lie in [0, 1] for image-to-image training, got "
            f"[{float(image.min()):.4g}, {float(image.max()):.4g}]; save 8- or 16-bit images or rescale"
        )
    return image


def _held_out(n: int, val_fraction: float, seed: int) -> set[int]:
    """Indices of the validation share: `round(n * val_fraction)`, at least one when the fraction is positive."""
    count = int(np.floor(n * val_fraction + 0.5))
    if val_fraction > 0 and n >= 2:
        count = max(count, 1)
    return set(np.random.default_rng(seed).permutation(n)[: min(count, n - 1)].tolist())


def load_image_folder(root: str | Path, *, val_fraction: float = 0.2, seed: int = 0) -> ImageSplits:
    """Read a folder of images (see the module docstring) into train, validation and test splits.

    Raises:
        DataError: a missing folder, no images, an unreadable or oversized file, float values outside [0, 1],
            or images whose channel counts differ; the one-line message names the file or folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder" if not root.exists() else f"{root}: not a folder")
    split_dirs = {name: root / name for name in ("train", "val", "test") if (root / name).is_dir()}
    sources = split_dirs if "train" in split_dirs else {"train": root}
    splits = ImageSplits(names={"train": [], "val": [], "test": []})
    channels: tuple[int, Path] | None = None
    for split, folder in sources.items():
        files = image_files(folder)
        if not files and split == "train":
            raise DataError(f"{folder}: no image files, expected NAME{{{','.join(IMAGE_SUFFIXES)}}}")
        for path in files:
            image = _read(path)
            if channels is None:
                channels = (image.shape[0], path)
            elif image.shape[0] != channels[0]:
                raise DataError(
                    f"{path}: image has {image.shape[0]} channel(s), but {channels[1]} has {channels[0]}; "
                    "every image of a data set needs the same channels"
                )
            getattr(splits, split).append(image)
            splits.names[split].append(path.stem)
    if "val" not in split_dirs:
        held = _held_out(len(splits.train), val_fraction, seed)
        if not held and val_fraction > 0:
            logger.warning("%s: only %d image, the validation split is empty", root, len(splits.train))
        keep = [i for i in range(len(splits.train)) if i not in held]
        names = splits.names["train"]
        splits.val = [splits.train[i] for i in sorted(held)]
        splits.names["val"] = [names[i] for i in sorted(held)]
        splits.train = [splits.train[i] for i in keep]
        splits.names["train"] = [names[i] for i in keep]
    return splits
