"""Data sets of volumes: a folder laid out exactly like a folder of images (nnU-Net's raw layout: `data/nnunet.py`).

Folder layout (DESIGN.md, "Data conventions"), with NIfTI / NRRD / TIFF-stack files (`data/volume.py`)::

    ROOT/images/NAME.nii.gz          (X, Y, Z) or (X, Y, Z, C)
    ROOT/masks/NAME.nii.gz           labels (X, Y, Z)
    ROOT/fov/NAME.nii.gz             optional; nonzero = inside the field of view

or the same under `ROOT/train/`, `ROOT/val/`, `ROOT/test/`, with a seeded `val_fraction` held out when there is
no `val/`; masks are read in the modes of `load_folder` (binary, classes, instances, auto), by the same rules.

Images come back as float32 `(C, S0, S1, S2)` in their own units: no scaling by dtype (CT is in HU, MRI in
arbitrary units); the fingerprint's normalisation decides. Every error is a one-line `DataError` naming the file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unetkit._options import look_up_option
from unetkit.data.errors import DataError
from unetkit.data.folder import MASK_MODES, MAX_MASK_VALUE, _build_set, _Files, _listing, _resolve_mode, _Sample
from unetkit.data.folder import _split_off_val as split_off_val
from unetkit.data.io import IMAGE_SUFFIXES
from unetkit.data.masks import check_ignore_index
from unetkit.data.tiff_stack import TIFF_SUFFIXES, TiffKind, tiff_kind
from unetkit.data.types import MaskInfo, SegmentationSet
from unetkit.data.volume import Volume, is_volume_file, read_volume, volume_stem

__all__ = [
    "MEDICAL_SUFFIXES",
    "VolumeCase",
    "VolumeSet",
    "load_cases",
    "load_volume_folder",
    "read_case",
    "read_fov",
    "read_labels",
    "scan_volume_folder",
    "volume_layout",
]

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MEDICAL_SUFFIXES = (".nii.gz", ".nii", ".nrrd")  # unambiguously volumes (a .tif may be a 2-D image)


@dataclass(frozen=True)
class VolumeCase:
    """One case: its image file(s) (one per channel in nnU-Net's layout), its mask and field of view, if any."""

    name: str
    images: tuple[Path, ...]
    mask: Path | None
    fov: Path | None = None


@dataclass
class VolumeSet(SegmentationSet):
    """A `SegmentationSet` of volumes: images `(C, S0, S1, S2)`, targets `(S0, S1, S2)`, and per case the
    voxel spacing and the image files (the reference a prediction is written `like`)."""

    spacing: list[tuple[float, float, float]] = field(default_factory=list)
    sources: list[tuple[Path, ...]] = field(default_factory=list)

    def subset(self, indices: list[int]) -> VolumeSet:
        """The cases at `indices`, in that order."""
        base = SegmentationSet.subset(self, indices)
        return VolumeSet(
            **{k: getattr(base, k) for k in ("images", "targets", "names", "instances", "fov", "extra")},
            spacing=[self.spacing[i] for i in indices],
            sources=[self.sources[i] for i in indices],
        )


def _volumes_by_stem(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file() or not is_volume_file(path):
            continue
        stem = volume_stem(path)
        if stem in found:
            raise DataError(f"{folder}: two files with the name {stem!r}: {found[stem].name}, {path.name}")
        found[stem] = path
    return found


def match_names(names: set[str], other: set[str], folder: Path, other_folder: Path, what: str) -> None:
    """Refuse the `names` of `folder` that `other_folder` lacks (its files of kind `what`)."""
    missing = sorted(names - other)
    if missing:
        raise DataError(
            f"{folder}: {len(missing)} volume(s) have no {what} of the same name in {other_folder}: {_listing(missing)}"
        )


def _scan_split(folder: Path) -> list[VolumeCase]:
    for sub in ("images", "masks"):
        if not (folder / sub).is_dir():
            raise DataError(f"{folder}: no {sub}/ sub-folder; expected {folder}/images/ and {folder}/masks/")
    images = _volumes_by_stem(folder / "images")
    if not images:
        raise DataError(f"{folder / 'images'}: no volume files, expected NAME.nii.gz, .nii, .nrrd, .tif or .tiff")
    masks = _volumes_by_stem(folder / "masks")
    match_names(set(images), set(masks), folder / "images", folder / "masks", "mask")
    match_names(set(masks), set(images), folder / "masks", folder / "images", "image")
    fovs: dict[str, Path] = {}
    if (folder / "fov").is_dir():
        fovs = _volumes_by_stem(folder / "fov")
        match_names(set(images), set(fovs), folder / "images", folder / "fov", "field-of-view file")
        match_names(set(fovs), set(images), folder / "fov", folder / "images", "image")
    return [VolumeCase(name, (images[name],), masks[name], fovs.get(name)) for name in sorted(images)]


def scan_volume_folder(root: str | Path) -> dict[str, list[VolumeCase]]:
    """The cases of a folder of volumes by split (`train`, and `val` / `test` where their folders exist)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: {'no such folder' if not root.exists() else 'is a file, expected a folder'}")
    if (root / "train").is_dir():
        return {split: _scan_split(root / split) for split in SPLITS if (root / split).is_dir()}
    strays = [split for split in ("val", "test") if (root / split).is_dir()]
    if strays and not (root / "images").is_dir():
        raise DataError(f"{root}: has {', '.join(s + '/' for s in strays)} but no train/ sub-folder")
    return {"train": _scan_split(root)}


def read_labels(path: str | Path, shape: tuple[int, ...] | None = None) -> tuple[np.ndarray, Volume]:
    """A label volume as int64 `(S0, S1, S2)` of its raw, non-negative integer values, and its `Volume` (spacing,
    affine); `shape`, when given, is the image's, which the labels must match (training, `unetkit evaluate`).

    Raises:
        DataError: an unreadable volume, more than one channel, non-integer, negative or too large values, or
            another shape; the message names the file.
    """
    path = Path(path)
    volume = read_volume(path)
    mask = volume.array[..., 0] if volume.array.ndim == 4 and volume.channels == 1 else volume.array
    if mask.ndim != 3:
        raise DataError(f"{path}: expected a single-channel label volume, got {volume.channels} channels")
    if mask.dtype.kind == "f" and not np.array_equal(mask, np.round(mask)):
        raise DataError(f"{path}: labels hold non-integer values (dtype {mask.dtype}); expected integer labels")
    low, high = mask.min().item(), mask.max().item()
    if low < 0 or high > MAX_MASK_VALUE:
        raise DataError(f"{path}: labels must be integers in [0, {MAX_MASK_VALUE}], got values from {low} to {high}")
    if shape is not None and volume.shape != shape:
        raise DataError(f"{path}: is {volume.shape} voxels but its image is {shape}")
    return mask.astype(np.int64), volume


def read_case(case: VolumeCase) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, Volume]:
    """The voxels of one case: image float32 `(C, S0, S1, S2)`, labels int64 `(S0, S1, S2)` or None, field of
    view bool `(S0, S1, S2)` or None, and the first image file's `Volume` (spacing, affine, header)."""
    volumes = [read_volume(path) for path in case.images]
    reference = volumes[0]
    for path, volume in zip(case.images[1:], volumes[1:], strict=True):
        if volume.shape != reference.shape:
            raise DataError(f"{path}: is {volume.shape} voxels but {case.images[0]} is {reference.shape}")
        if not np.allclose(volume.affine, reference.affine, atol=1e-3):
            logger.warning("%s: its geometry (affine) differs from %s", path, case.images[0])
    channels = [np.moveaxis(v.array, -1, 0) if v.array.ndim == 4 else v.array[None] for v in volumes]
    image = np.ascontiguousarray(np.concatenate(channels, axis=0), dtype=np.float32)  # (C, S0, S1, S2)
    mask = None
    if case.mask is not None:
        mask, labels = read_labels(case.mask, reference.shape)
        if not np.allclose(labels.affine, reference.affine, atol=1e-3):
            logger.warning("%s: its geometry (affine) differs from its image %s", case.mask, case.images[0])
    fov = read_fov(case.fov, reference.shape) if case.fov is not None else None
    return image, mask, fov, reference


def read_fov(path: str | Path, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A field of view as bool `(S0, S1, S2)`: True where any channel is nonzero; `shape`, when given, is the
    image's, which it must match."""
    volume = read_volume(path)
    if shape is not None and volume.shape != shape:
        raise DataError(f"{path}: field of view is {volume.shape} voxels but its image is {shape}")
    inside = np.asarray(volume.array != 0)
    return inside if inside.ndim == 3 else np.asarray(inside.any(axis=-1))


def _label_dtype(path: Path) -> str:
    """The dtype a label volume stores, from its header alone (the mask reading's evidence: label images are
    stored wider than 8 bits); `uint8` where the header does not say."""
    from unetkit.data.volume import volume_suffix

    suffix = volume_suffix(path)
    try:
        if suffix in (".nii", ".nii.gz"):
            import nibabel

            header: Any = nibabel.load(str(path)).header  # a NIfTI header (read_volume checked the kind)
            return str(header.get_data_dtype())
        if suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                return str(tif.series[0].dtype)
        if suffix == ".nrrd":
            import nrrd

            with open(path, "rb") as file:
                kind = str(nrrd.read_header(file).get("type", "")).lower()
            if "char" in kind or "int8" in kind:
                return "int8" if "unsigned" not in kind and "uint" not in kind and "uchar" not in kind else "uint8"
            return "float32" if "float" in kind or "double" in kind else "int16"  # wider than 8 bits
    except Exception:  # the reader has already read the file whole; a header it cannot parse again says nothing
        return "uint8"
    return "uint8"


@dataclass(frozen=True)
class _Read:
    """Read cases of one split, with what each `_Sample` does not hold: spacing and image files."""

    samples: list[_Sample]
    spacing: dict[Path, tuple[float, float, float]]
    sources: dict[Path, tuple[Path, ...]]


def _read_cases(cases: list[VolumeCase], first: tuple[int, Path] | None) -> _Read:
    """Read every case (all with labels), checking that channel counts agree with `first` (count, file)."""
    read = _Read([], {}, {})
    for case in cases:
        image, mask, fov, reference = read_case(case)
        first = first or (image.shape[0], case.images[0])
        if image.shape[0] != first[0]:
            raise DataError(
                f"{case.images[0]}: has {image.shape[0]} channel(s) but {first[1]} has {first[0]}; every "
                "volume of a data set needs the same channel count"
            )
        if mask is None or case.mask is None:
            raise DataError(f"{case.images[0]}: has no label volume")
        files = _Files(case.name, case.images[0], case.mask, case.fov)
        stored = _label_dtype(case.mask)
        read.samples.append(_Sample(files, image, mask, fov, np.unique(mask), mask_dtype=stored))
        read.spacing[case.images[0]] = reference.spacing
        read.sources[case.images[0]] = case.images
    return read


def load_cases(
    found: dict[str, list[VolumeCase]],
    mask_info: Callable[[list[_Sample]], MaskInfo],
    root: Path,
    val_fraction: float,
    seed: int,
) -> tuple[dict[str, VolumeSet], MaskInfo]:
    """Read the cases of every split, decide the classes by `mask_info` (which may refuse them), hold out a seeded
    `val_fraction` of `train` as `val` when `found` has no `val`, and build the splits."""
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction < 1:
        raise ValueError(f"`val_fraction` must be a number in [0, 1), got {val_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative integer, got {seed!r}")
    loaded: dict[str, list[_Sample]] = {}
    spacing: dict[Path, tuple[float, float, float]] = {}
    sources: dict[Path, tuple[Path, ...]] = {}
    first: tuple[int, Path] | None = None
    for split, cases in found.items():
        read = _read_cases(cases, first)
        loaded[split] = read.samples
        spacing.update(read.spacing)
        sources.update(read.sources)
        if read.samples and first is None:
            first = (read.samples[0].image.shape[0], read.samples[0].files.image)
    info = mask_info([s for samples in loaded.values() for s in samples])
    if "val" not in loaded:
        loaded["train"], loaded["val"] = split_off_val(loaded["train"], val_fraction, seed, root)
    splits = {}
    for split in SPLITS:
        samples = loaded.get(split, [])
        base = _build_set(samples, info)
        splits[split] = VolumeSet(
            **{k: getattr(base, k) for k in ("images", "targets", "names", "instances", "fov", "extra")},
            spacing=[spacing[s.files.image] for s in samples],
            sources=[sources[s.files.image] for s in samples],
        )
    logger.info("%s: %s masks, %s", root, info.mode, ", ".join(f"{len(splits[s])} {s}" for s in SPLITS))
    return splits, info


def load_volume_folder(
    root: str | Path,
    *,
    mask_mode: str = "auto",
    val_fraction: float = 0.2,
    seed: int = 0,
    ignore_index: int | None = None,
) -> tuple[dict[str, VolumeSet], MaskInfo]:
    """Load a folder of volumes into memory, split into `train`, `val` and `test`, as `load_folder` does for
    images (same layout, mask modes, hold-out rule, seed and `ignore_index`: voxels of that label are no class,
    their target 0 and False in `fov`).

    Raises:
        ValueError: an unknown `mask_mode` or `val_fraction` out of range.
        DataError: a missing folder, unmatched or unreadable files, sizes that disagree; the message names them.
    """
    mask_mode = look_up_option("mask_mode", mask_mode, MASK_MODES)
    ignore = check_ignore_index(ignore_index)
    root = Path(root)
    found = scan_volume_folder(root)
    return load_cases(found, lambda samples: _resolve_mode(samples, mask_mode, root, ignore), root, val_fraction, seed)


def _kind(path: Path) -> TiffKind:
    """A NIfTI / NRRD file is a volume, a TIFF what `tiff_kind` says, any other image a 2-D image."""
    name = path.name.lower()
    if name.endswith(MEDICAL_SUFFIXES):
        return TiffKind(True, "a NIfTI / NRRD volume")
    if name.endswith(TIFF_SUFFIXES):
        return tiff_kind(path)
    return TiffKind(False, "a 2-D image")


def _by_stem(folder: Path) -> dict[str, Path]:
    """The image and volume files of `folder` by stem (the first of two with one stem: the loaders refuse them)."""
    found: dict[str, Path] = {}
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or not path.is_file():
                continue
            if is_volume_file(path) or path.suffix.lower() in IMAGE_SUFFIXES:
                found.setdefault(volume_stem(path), path)
    return found


def _tiff_layout(root: Path) -> str | None:
    """`"folder"` when the TIFF images of `root` (or of its splits) are stacks, None when they are 2-D images;
    a mix, or a mask of the other kind than its image, is a `DataError` naming the files."""
    splits = [root / s for s in SPLITS if (root / s).is_dir()] if (root / "train").is_dir() else [root]
    volumes: list[tuple[Path, TiffKind]] = []
    flat: list[tuple[Path, TiffKind]] = []
    for split in splits:
        masks = _by_stem(split / "masks")
        for stem, image in _by_stem(split / "images").items():
            kind = _kind(image)
            if image.name.lower().endswith(TIFF_SUFFIXES):
                (volumes if kind.volume else flat).append((image, kind))
            mask = masks.get(stem)
            if mask is None:
                continue  # the loaders name missing masks
            other = _kind(mask)
            if other.volume != kind.volume:
                what = {True: "a volume", False: "a 2-D image"}
                raise DataError(
                    f"{mask}: is {what[other.volume]} ({other.why}) but its image {image} is {what[kind.volume]} "
                    f"({kind.why}); an image and its mask must both be volumes or both 2-D"
                )
    if volumes and flat:
        (stack, why), (image, flat_why) = volumes[0], flat[0]
        raise DataError(
            f"{root}: mixes TIFF volumes and 2-D TIFF images ({stack.name}: {why.why}; {image.name}: {flat_why.why}); "
            "a data set holds one kind"
        )
    if volumes:
        logger.info("%s: a folder of volumes: %s is a TIFF stack (%s)", root, volumes[0][0].name, volumes[0][1].why)
        return "folder"
    return None


def volume_layout(root: str | Path) -> str | None:
    """`"nnunet"` (a `dataset.json` beside `imagesTr/`), `"folder"` (NIfTI or NRRD files, or TIFF stacks
    (`unetkit.data.tiff_stack.tiff_kind`), in `images/` or `train/images/`) or None (2-D images).

    Raises:
        DataError: a folder that mixes TIFF stacks and 2-D TIFF images, or an image and its mask of which one is
            a volume and the other 2-D; the message names both files.
    """
    root = Path(root)
    if (root / "dataset.json").is_file() and (root / "imagesTr").is_dir():
        return "nnunet"
    for folder in (root / "images", root / "train" / "images"):
        if folder.is_dir() and any(p.name.lower().endswith(MEDICAL_SUFFIXES) for p in folder.iterdir()):
            _tiff_layout(root)  # a 2-D mask beside a NIfTI image is named here
            return "folder"
    return _tiff_layout(root)
