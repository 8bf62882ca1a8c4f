"""Folder data sets: images, masks and optional field-of-view files matched by file stem.

Layout (see DESIGN.md, "Data conventions")::

    ROOT/images/NAME.{png,jpg,jpeg,tif,tiff,bmp}
    ROOT/masks/NAME.{png,tif,tiff,bmp}
    ROOT/fov/NAME.*                      optional; nonzero = inside the field of view

or the same three folders under `ROOT/train/`, `ROOT/val/` and `ROOT/test/`. A split without its own
folder is empty, except validation: without `val/`, a seeded `val_fraction` of the training images
is held out.

Masks are read by `unetkit.data.masks` (palette PNGs as indices, an optional ignore index) in one of
three modes (`MaskInfo.mode`): `binary` (0/1 or 0/255), `classes` (any values, mapped to indices in
sorted order) or `instances` (instance ids, 0 = background; the class target is `id > 0`); `auto`
decides from evidence and says why. Images keep the file's own units (see `SegmentationSet`). Every
error is a one-line `DataError` that names the file or folder.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unetkit._options import look_up_option
from unetkit.data.errors import DataError
from unetkit.data.io import IMAGE_SUFFIXES, read_image
from unetkit.data.masks import (
    MASK_MODES,
    MAX_CLASS_VALUES,
    MAX_MASK_VALUE,
    check_ignore_index,
    class_targets,
    is_palette_png,
    mask_evidence,
    read_mask,
    resolve_mask_mode,
)
from unetkit.data.types import MaskInfo, SegmentationSet

__all__ = [
    "MASK_MODES",
    "MASK_SUFFIXES",
    "MAX_CLASS_VALUES",
    "MAX_MASK_VALUE",
    "channel_stats",
    "intensity_scale",
    "load_folder",
    "read_fov",
    "to_chw_float",
]

logger = logging.getLogger(__name__)

MASK_SUFFIXES = (".png", ".tif", ".tiff", ".bmp")
LOSSY_SUFFIXES = (".jpg", ".jpeg")
SPLITS = ("train", "val", "test")
STD_FLOOR = 1e-6
# how many names or values an error message lists before it says "and N more"
LISTED = 5


@dataclass(frozen=True)
class _Files:
    """One image with its mask and optional field-of-view file, matched by stem."""

    name: str
    image: Path
    mask: Path
    fov: Path | None


@dataclass(frozen=True)
class _Sample:
    """The pixels of one `_Files`."""

    files: _Files
    image: np.ndarray  # float32 (C, H, W)
    mask: np.ndarray  # int64 (H, W) raw mask values
    fov: np.ndarray | None  # bool (H, W)
    values: np.ndarray  # sorted distinct mask values
    dtype: str = "float32"  # the image file's dtype
    mask_dtype: str = "uint8"  # the mask file's dtype, `palette` for palette PNGs


def _listing(items: list[str]) -> str:
    """`a, b, c, d, e and 3 more`: a short list for a one-line message."""
    shown = ", ".join(str(item) for item in items[:LISTED])
    return f"{shown} and {len(items) - LISTED} more" if len(items) > LISTED else shown


def _size(array: np.ndarray) -> str:
    return f"{array.shape[-2]}x{array.shape[-1]}"


def intensity_scale(dtype: np.dtype) -> float:
    """The factor that maps an integer dtype's full range to `[0, 1]` (`1 / 255` for uint8, `1 / 65535`
    for uint16, ...); 1 for floats and bool. Training and prediction both apply it, so a model sees the
    same units whether an image arrives as 8-bit PNG, 16-bit TIFF or float array."""
    dtype = np.dtype(dtype)
    if dtype.kind in "ui":
        return 1.0 / float(np.iinfo(dtype).max)
    return 1.0


def to_chw_float(array: np.ndarray, *, scale: bool = True) -> np.ndarray:
    """Channels first as float32, integer images scaled by `intensity_scale` (uint8 / 255, uint16 / 65535)
    unless `scale` is False (the file's own units, as folder data sets keep them).

    `(H, W) -> (1, H, W)`, `(H, W, C) -> (C, H, W)`; the alpha channel of an RGBA image is dropped.

    Args:
        array: an image as `read_image` returns it.

    Raises:
        ValueError: `array` is not 2-D or 3-D, or not of a real numeric dtype.
    """
    array = np.asarray(array)
    if array.ndim not in (2, 3):
        raise ValueError(f"`array` must be (H, W) or (H, W, C), got shape {array.shape}")
    if array.dtype.kind not in "biuf":
        raise ValueError(f"`array` must hold real numbers, got dtype {array.dtype}")
    if array.ndim == 2:
        array = array[None]  # (1, H, W)
    else:
        if array.shape[-1] == 4:
            array = array[..., :3]  # RGBA -> RGB
        array = np.moveaxis(array, -1, 0)  # (C, H, W)
    factor = intensity_scale(array.dtype) if scale else 1.0
    out = np.ascontiguousarray(array, dtype=np.float32)
    return out * np.float32(factor) if factor != 1.0 else out


def channel_stats(images: list[np.ndarray]) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation over every pixel of every image.

    Images of different sizes count by their pixels. Accumulates in float64, two passes (mean, then
    squared deviations), so large offsets such as 16-bit intensities do not cancel. The standard
    deviation is floored at `1e-6` so that normalising a constant channel stays finite.

    Args:
        images: float32 `(C, H, W)` arrays sharing `C`.

    Raises:
        ValueError: `images` is empty, an array is not `(C, H, W)`, or the channel counts differ.
    """
    if len(images) == 0:
        raise ValueError("`images` must hold at least one image, got an empty list")
    for i, image in enumerate(images):
        if np.ndim(image) != 3:
            raise ValueError(f"`images[{i}]` must be (C, H, W), got shape {np.shape(image)}")
    channels = images[0].shape[0]
    for i, image in enumerate(images):
        if image.shape[0] != channels:
            raise ValueError(f"`images[{i}]` has {image.shape[0]} channels, expected {channels} like `images[0]`")
    count = sum(image.shape[1] * image.shape[2] for image in images)
    if count == 0:
        raise ValueError("`images` hold no pixels (every image is 0 pixels in size)")
    total = np.zeros(channels, dtype=np.float64)
    for image in images:
        total += np.sum(image, axis=(1, 2), dtype=np.float64)
    mean = total / count
    squares = np.zeros(channels, dtype=np.float64)
    for image in images:
        squares += np.sum((image.astype(np.float64) - mean[:, None, None]) ** 2, axis=(1, 2))
    std = np.maximum(np.sqrt(squares / count), STD_FLOOR)
    return [float(m) for m in mean], [float(s) for s in std]


def _files_by_stem(folder: Path, suffixes: tuple[str, ...], *, refuse_jpeg: bool = False) -> dict[str, Path]:
    """The image files of `folder` keyed by stem; hidden files and other suffixes are skipped."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        suffix = path.suffix.lower()
        if refuse_jpeg and suffix in LOSSY_SUFFIXES:
            raise DataError(
                f"{path}: JPEG masks are not supported (lossy compression changes label values): "
                "save masks as PNG or TIFF"
            )
        if suffix not in suffixes:
            logger.debug("skipping %s: not one of %s", path, ", ".join(suffixes))
            continue
        if path.stem in found:
            raise DataError(f"{folder}: two files with the stem {path.stem!r}: {found[path.stem].name}, {path.name}")
        found[path.stem] = path
    return found


def _scan_split(folder: Path) -> list[_Files]:
    """Match `folder/images`, `folder/masks` and optional `folder/fov` by stem, names sorted."""
    for sub in ("images", "masks"):
        if not (folder / sub).is_dir():
            raise DataError(f"{folder}: no {sub}/ sub-folder; expected {folder}/images/ and {folder}/masks/")
    images = _files_by_stem(folder / "images", IMAGE_SUFFIXES)
    if not images:
        raise DataError(f"{folder / 'images'}: no image files, expected NAME{{{','.join(IMAGE_SUFFIXES)}}}")
    masks = _files_by_stem(folder / "masks", MASK_SUFFIXES, refuse_jpeg=True)
    missing = sorted(set(images) - set(masks))
    if missing:
        raise DataError(
            f"{folder / 'images'}: {len(missing)} image(s) have no mask of the same name in {folder / 'masks'}: "
            f"{_listing(missing)}"
        )
    orphans = sorted(set(masks) - set(images))
    if orphans:
        raise DataError(
            f"{folder / 'masks'}: {len(orphans)} mask(s) have no image of the same name in {folder / 'images'}: "
            f"{_listing(orphans)}"
        )
    fovs: dict[str, Path] | None = None
    if (folder / "fov").is_dir():
        fovs = _files_by_stem(folder / "fov", IMAGE_SUFFIXES)
        missing = sorted(set(images) - set(fovs))
        if missing:
            raise DataError(
                f"{folder / 'fov'}: {len(missing)} image(s) have no field-of-view file (every image needs one "
                f"when fov/ exists): {_listing(missing)}"
            )
        orphans = sorted(set(fovs) - set(images))
        if orphans:
            raise DataError(
                f"{folder / 'fov'}: {len(orphans)} field-of-view file(s) have no image of the same name in "
                f"{folder / 'images'}: {_listing(orphans)}"
            )
    return [_Files(name, images[name], masks[name], None if fovs is None else fovs[name]) for name in sorted(images)]


def read_fov(path: str | Path) -> np.ndarray:
    """A field of view as bool `(H, W)`: True where any colour channel is nonzero."""
    fov = read_image(path)
    if fov.ndim == 2:
        return fov != 0
    if fov.shape[-1] in (2, 4):
        fov = fov[..., :-1]  # drop alpha
    return np.asarray(fov.any(axis=-1))


def _read_sample(files: _Files) -> _Sample:
    """Read the files of one sample, checking that their sizes agree."""
    raw = read_image(files.image)
    image = to_chw_float(raw, scale=False)
    mask = read_mask(files.mask)
    if image.shape[-2:] != mask.shape:
        raise DataError(f"{files.mask}: mask is {_size(mask)} (HxW) but its image {files.image} is {_size(image)}")
    fov = None
    if files.fov is not None:
        fov = read_fov(files.fov)
        if fov.shape != mask.shape:
            raise DataError(
                f"{files.fov}: field of view is {_size(fov)} (HxW) but its image {files.image} is {_size(image)}"
            )
    mask_dtype = "palette" if is_palette_png(files.mask) else _stored_dtype(files.mask)
    return _Sample(files, image, mask, fov, np.unique(mask), str(raw.dtype), mask_dtype)


def _stored_dtype(path: Path) -> str:
    """The dtype a mask file stores (uint8 for 8-bit PNGs, uint16 for 16-bit ones, the TIFF's own)."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            return str(tif.series[0].dtype)
    with open(path, "rb") as file:
        head = file.read(25)
    if head.startswith(b"\x89PNG") and len(head) == 25:
        return "uint16" if head[24] == 16 else "uint8"
    return "uint8"


def _build_set(samples: list[_Sample], info: MaskInfo) -> SegmentationSet:
    """The `SegmentationSet` of read samples, with targets in class indices of `info` and the valid
    pixels (field of view less ignored pixels) in `fov`."""
    images, targets, instances, valids = [], [], [], []
    for sample in samples:
        images.append(sample.image)
        target, valid = class_targets(sample.mask, info, sample.files.mask)
        targets.append(target)
        if info.mode == "instances":
            ids = (
                sample.mask if info.ignore_index is None else np.where(sample.mask == info.ignore_index, 0, sample.mask)
            )
            instances.append(ids.astype(np.int32))
        if sample.fov is not None:
            valid = sample.fov if valid is None else sample.fov & valid
        valids.append(valid)
    any_valid = any(v is not None for v in valids)
    fov = [np.ones(t.shape, bool) if v is None else v for v, t in zip(valids, targets, strict=True)]
    return SegmentationSet(
        images=images,
        targets=targets,
        names=[s.files.name for s in samples],
        instances=instances if info.mode == "instances" else None,
        fov=fov if samples and any_valid else None,
        extra={"dtypes": [s.dtype for s in samples]},
    )


def _split_off_val(
    samples: list[_Sample], val_fraction: float, seed: int, folder: Path
) -> tuple[list[_Sample], list[_Sample]]:
    """Hold out `round(n * val_fraction)` samples (at least one when the fraction is positive) by a seeded shuffle."""
    n = len(samples)
    n_val = math.floor(n * val_fraction + 0.5)
    if val_fraction > 0 and n_val == 0 and n >= 2:
        n_val = 1
    if n_val >= n:
        raise DataError(
            f"{folder}: `val_fraction` {val_fraction} holds out {n_val} of {n} images, leaving none to train on; "
            "lower it or add a val/ folder"
        )
    if val_fraction > 0 and n_val == 0:
        logger.warning("%s: only %d image, the validation split is empty", folder, n)
    order = np.random.default_rng(seed).permutation(n)
    held_out = set(order[:n_val].tolist())
    train = [s for i, s in enumerate(samples) if i not in held_out]
    val = [s for i, s in enumerate(samples) if i in held_out]
    return train, val


def load_folder(
    root: str | Path,
    *,
    mask_mode: str = "auto",
    val_fraction: float = 0.2,
    seed: int = 0,
    ignore_index: int | None = None,
) -> tuple[dict[str, SegmentationSet], MaskInfo]:
    """Load a folder data set into memory, split into `train`, `val` and `test`.

    With `ROOT/train/` (and optionally `val/`, `test/`), each split comes from its folder; otherwise
    `ROOT/images` + `ROOT/masks` are the training data. Without a `val/` folder, `val_fraction` of
    the training images (chosen by `numpy.random.default_rng(seed)`) become the validation split.
    Names are sorted within each split. A split without data is an empty `SegmentationSet`.

    Mask modes: `binary` (every mask within {0, 1} or {0, 255}; target = mask > 0), `classes`
    (label values = sorted union over all splits, at most 256; target = index of the value),
    `instances` (instance ids, 0 = background; target = id > 0, ids kept in `instances`) and `auto`
    (binary if every mask fits, else instances if the masks look like label images, else classes: the
    rules of `unetkit.data.masks`). Pixels of value `ignore_index` are no class: their target is 0 and
    they are False in `fov`, which then holds the valid pixels of every image.

    Args:
        root: the data set folder.
        mask_mode: `"auto"`, `"binary"`, `"classes"` or `"instances"`.
        val_fraction: share of the training images held out for validation when there is no `val/`
            folder, in `[0, 1)`; `0` gives an empty validation split.
        seed: seed of the validation hold-out.
        ignore_index: mask value of pixels that no loss, metric or prediction uses (VOC's 255), or None.

    Returns:
        The splits keyed `"train"`, `"val"`, `"test"`, and how mask values map to classes.

    Raises:
        ValueError: an unknown `mask_mode`, or `val_fraction` / `seed` out of range.
        DataError: a missing folder, unmatched, duplicate, unreadable or inconsistent files, or mask
            values that fit no mode; the one-line message names the file or folder.
    """
    mask_mode = look_up_option("mask_mode", mask_mode, MASK_MODES)
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float, np.integer, np.floating)):
        raise ValueError(f"`val_fraction` must be a number in [0, 1), got {val_fraction!r}")
    if not 0 <= val_fraction < 1:  # also refuses NaN
        raise ValueError(f"`val_fraction` must be in [0, 1), got {val_fraction}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative integer, got {seed!r}")
    ignore_index = check_ignore_index(ignore_index)
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: no such folder")
    if not root.is_dir():
        raise DataError(f"{root}: is a file, expected a folder with images/ and masks/ (or train/)")

    found: dict[str, list[_Files]] = {}
    if (root / "train").is_dir():
        for split in SPLITS:
            if (root / split).is_dir():
                found[split] = _scan_split(root / split)
        if (root / "images").is_dir():
            logger.warning("%s: has train/, so %s is ignored", root, root / "images")
    else:
        strays = [split for split in ("val", "test") if (root / split).is_dir()]
        if strays and not (root / "images").is_dir():
            raise DataError(f"{root}: has {', '.join(s + '/' for s in strays)} but no train/ sub-folder")
        found["train"] = _scan_split(root)

    loaded: dict[str, list[_Sample]] = {}
    reference: _Sample | None = None
    for split, files in found.items():
        loaded[split] = []
        for entry in files:
            sample = _read_sample(entry)
            if reference is None:
                reference = sample
            if sample.image.shape[0] != reference.image.shape[0]:
                raise DataError(
                    f"{entry.image}: has {sample.image.shape[0]} channel(s) but {reference.files.image} has "
                    f"{reference.image.shape[0]}; every image of a data set needs the same channel count"
                )
            loaded[split].append(sample)
    info = _resolve_mode([s for samples in loaded.values() for s in samples], mask_mode, root, ignore_index)

    if "val" not in loaded:
        loaded["train"], loaded["val"] = _split_off_val(loaded["train"], val_fraction, seed, root)
    splits = {split: _build_set(loaded.get(split, []), info) for split in SPLITS}
    logger.info("%s: %s", root, ", ".join(f"{len(splits[split])} {split}" for split in SPLITS))
    return splits, info


def _resolve_mode(samples: list[_Sample], mask_mode: str, root: Path, ignore_index: int | None = None) -> MaskInfo:
    """The mask reading of every sample (`unetkit.data.masks.resolve_mask_mode`); blobs only for `auto`."""
    evidence = [
        mask_evidence(s.mask, s.files.mask, ignore_index=ignore_index, dtype=s.mask_dtype)
        if mask_mode == "auto"
        else _plain_evidence(s, ignore_index)
        for s in samples
    ]
    return resolve_mask_mode(evidence, mask_mode, root, ignore_index=ignore_index)


def _plain_evidence(sample: _Sample, ignore_index: int | None):  # type: ignore[no-untyped-def]
    """Values only (no blob analysis): what an explicit mask mode needs."""
    from unetkit.data.masks import MaskEvidence

    values, ignored = sample.values, 0
    if ignore_index is not None and ignore_index in values:
        values, ignored = values[values != ignore_index], int(np.count_nonzero(sample.mask == ignore_index))
    return MaskEvidence(sample.files.mask, sample.mask_dtype, values, int(sample.mask.size), ignored=ignored)
