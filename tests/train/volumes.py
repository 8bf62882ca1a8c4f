"""Small NIfTI volume data sets for the 3D training tests: bright balls in noise, as a scanner ships them
(int16 voxels, anisotropic spacing in the affine)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (24, 24, 16)
SPACING = (1.0, 1.0, 2.0)


def ball_case(rng: np.random.Generator, shape: tuple[int, ...] = SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """An int16 image and its uint8 mask: one ball of radius 4-7 mm, 60 units brighter, noise of std 20."""
    grid = np.indices(shape).astype(np.float32)  # (3, *shape)
    centre = rng.uniform([8, 8, 5], [shape[0] - 8, shape[1] - 8, shape[2] - 5])
    step = np.array(SPACING, dtype=np.float32)[:, None, None, None]
    distance = np.sqrt((((grid - centre[:, None, None, None]) * step) ** 2).sum(0))
    mask = (distance < rng.uniform(4, 7)).astype(np.uint8)
    image = (100 + 60 * mask + rng.normal(0, 20, shape)).astype(np.int16)
    return image, mask


def save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.diag([*SPACING, 1.0])), path)


def make_volume_folder(root: Path, cases: int = 6, *, seed: int = 0, ignore_slab: bool = False) -> Path:
    """`root/images/caseK.nii.gz` + `root/masks/caseK.nii.gz`; with `ignore_slab` the masks' first 3 slices along
    the last axis are 255 (no class)."""
    rng = np.random.default_rng(seed)
    for k in range(cases):
        image, mask = ball_case(rng)
        if ignore_slab:
            mask[..., :3] = 255
        save(root / "images" / f"case{k}.nii.gz", image)
        save(root / "masks" / f"case{k}.nii.gz", mask)
    return root


HYPERSTACK = (31, 46, 28)  # (Z, Y, X): issue 32's Fiji stacks
HYPERSTACK_SPACING = (2.0, 0.5, 0.5)  # um: 2 um slices, 0.5 um pixels


def save_hyperstack(path: Path, array: np.ndarray) -> None:
    """A Fiji / ImageJ hyperstack (axes ZYX) with `HYPERSTACK_SPACING` in its ImageJ metadata and resolution."""
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    z, y, x = HYPERSTACK_SPACING
    metadata = {"axes": "ZYX", "spacing": z, "unit": "micron"}
    tifffile.imwrite(path, array, imagej=True, metadata=metadata, resolution=(1 / x, 1 / y))


def make_hyperstack_folder(root: Path, cases: int = 4, *, seed: int = 0) -> Path:
    """`root/images/stackK.tif` (uint16) + `root/masks/stackK.tif` (uint8 0/1): a bright nucleus-like ball
    (radius 3-5 um, thick slices respected) per stack, as Fiji saves them."""
    rng = np.random.default_rng(seed)
    grid = np.indices(HYPERSTACK).astype(np.float32)
    step = np.array(HYPERSTACK_SPACING, dtype=np.float32)[:, None, None, None]
    for k in range(cases):
        centre = rng.uniform([10, 14, 10], [21, 32, 18])
        distance = np.sqrt((((grid - centre[:, None, None, None]) * step) ** 2).sum(0))
        mask = (distance < rng.uniform(3, 5)).astype(np.uint8)
        image = (400 + 300 * mask.astype(np.float32) + rng.normal(0, 60, HYPERSTACK)).clip(0, None).astype(np.uint16)
        save_hyperstack(root / "images" / f"stack{k}.tif", image)
        save_hyperstack(root / "masks" / f"stack{k}.tif", mask)
    return root
