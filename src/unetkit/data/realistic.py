"""Realistic folder data sets, generated and written to disk the way real ones come, for tests,
benchmarks and `unetkit data realistic NAME --out DIR`.

The pictures are synthetic (exact ground truth, no download); what is realistic is how they are stored,
where the defaults of a segmentation tool usually fail:

- `nuclei`: fluorescence-like nuclei (the `cells` generator) as uint16 TIFFs that use a small part of
  their range (values about 5..300 of 65535, exposure varying from image to image, shot noise), with
  uint16 instance-label TIFF masks (0 = background, 1..N one id per nucleus), as the 2018 Data Science
  Bowl and most nuclei sets ship them.
- `voc`: RGB photos as JPEG with PASCAL VOC-style palette PNG masks: class indices 0 (background), 1, 8
  and 15 (three object kinds told apart by shape and texture), and the 255 "void" band along every
  object outline.
- `bit12`: 12-bit camera data in 16-bit PNGs (values 0..4095 of 65535): fundus-like vessel images
  (the `vessels` generator) with 0/1 8-bit PNG masks (black to the eye) and field-of-view PNGs.
- `ct`: float32 TIFF slices in Hounsfield-like units (air -1000, soft tissue 0..60, enhancing lesions
  +120..200, fatty ones -110..-60) with uint8 TIFF class masks {0, 1, 2}: absolute units, where one
  normalisation for the whole data set keeps what per-image z-scoring would throw away.

- `tiles`: tiles of 256^2 cut from one large generated fluorescence scene of touching nuclei
  (`unetkit.data.scenes`, a generator apart from `cells`), uint16 images and uint16 instance masks that
  keep the scene's ids (arbitrary, with gaps, unique over the scene, so each tile holds its own subset),
  sparse tiles beside crowded ones; `n` training tiles in `train/` and a third as many held-out tiles
  from another part of the scene in `test/`.
- `stacks`: the same in 3-D: stacks of 32 x 96 x 96 voxels of 1.25 x 0.5 x 0.5 um (anisotropic) cut
  from one scene, as NIfTI (`.nii.gz`, spacing in the affine) with uint16 instance masks; `n` in
  `train/`, a third as many in `test/`.

Images have odd, varying sizes (the scene sets: fixed tiles). Every set depends only on `(name, n, seed)`.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage

from unetkit._fs import atomic_file, public_mode
from unetkit._options import look_up_option
from unetkit.data.io import write_image
from unetkit.data.synthetic import make_synthetic

__all__ = ["REALISTIC_NAMES", "VOC_CLASSES", "voc_palette", "write_realistic"]

REALISTIC_NAMES = ("nuclei", "voc", "bit12", "ct", "tiles", "stacks")
# the VOC class indices the `voc` set uses, and VOC's ignore ("void") value
VOC_CLASSES = (1, 8, 15)
VOC_VOID = 255
VOC_BORDER = 3  # width in pixels of the void band along object outlines
SIDES = (150, 212)  # image height and width are drawn from this range
SOURCE_SIDE = 224  # the square synthetic picture that is cropped


def voc_palette() -> np.ndarray:
    """The PASCAL VOC colour map: `(256, 3)` uint8, colour `i` from the bits of `i` spread over R, G, B."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for index in range(256):
        code, colour = index, [0, 0, 0]
        for shift in range(7, -1, -1):
            for channel in range(3):
                colour[channel] |= ((code >> channel) & 1) << shift
            code >>= 3
        palette[index] = colour
    return palette


def _crop(rng: np.random.Generator, *arrays: np.ndarray) -> list[np.ndarray]:
    """The same random `h x w` window (sides drawn from `SIDES`) of arrays whose last two axes are square."""
    side = arrays[0].shape[-1]
    h, w = (int(rng.integers(SIDES[0], SIDES[1] + 1)) for _ in range(2))
    top, left = int(rng.integers(0, side - h + 1)), int(rng.integers(0, side - w + 1))
    return [a[..., top : top + h, left : left + w] for a in arrays]


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Ids renumbered 1..N in order of first appearance, as real label images are."""
    present = np.unique(labels)
    present = present[present > 0]
    lut = np.zeros(int(labels.max(initial=0)) + 1, dtype=np.int64)
    lut[present] = np.arange(1, present.size + 1)
    return lut[labels]


def _nuclei(n: int, seed: int, out: Path) -> None:
    data, _ = make_synthetic("cells", n, SOURCE_SIDE, seed=seed)
    assert data.instances is not None
    for i in range(n):
        rng = np.random.default_rng([seed, i, 101])
        image, labels = _crop(rng, data.images[i][0], data.instances[i])
        gain = rng.uniform(70.0, 260.0)  # exposure: the brightest nucleus lands at about 60..300 counts
        offset = rng.uniform(4.0, 12.0)  # camera offset
        counts = rng.poisson(np.clip(image, 0, None) * gain + offset)  # shot noise
        write_image(out / "images" / f"img_{i:03d}.tif", counts.astype(np.uint16))
        write_image(out / "masks" / f"img_{i:03d}.tif", _relabel(labels).astype(np.uint16))


def _smooth(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.normal(size=shape), sigma)
    return field / max(float(np.abs(field).max()), 1e-12)


def _voc_scene(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """An RGB picture `(h, w, 3)` uint8 and its class labels `(h, w)` (0 or a `VOC_CLASSES` value)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = rng.uniform(0.25, 0.75, 3)
    image = base[:, None, None] + 0.25 * np.stack([_smooth(rng, (h, w), 18.0) for _ in range(3)])
    image += 0.06 * np.stack([_smooth(rng, (h, w), 1.5) for _ in range(3)])  # fine texture
    labels = np.zeros((h, w), dtype=np.int64)
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(len(VOC_CLASSES)))
        cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
        size = rng.uniform(0.12, 0.24) * min(h, w)
        theta = rng.uniform(0, math.pi)
        u = (xx - cx) * math.cos(theta) + (yy - cy) * math.sin(theta)
        v = (yy - cy) * math.cos(theta) - (xx - cx) * math.sin(theta)
        colour = rng.uniform(0.1, 0.9, 3)[:, None, None]
        if kind == 0:  # disc with a radial gradient
            r = np.hypot(u / size, v / (size * rng.uniform(0.7, 1.0)))
            inside = r <= 1.0
            paint = colour * (1.15 - 0.45 * r)[None]
        elif kind == 1:  # box with stripes
            inside = (np.abs(u) <= size) & (np.abs(v) <= size * rng.uniform(0.5, 0.9))
            paint = colour * (0.8 + 0.25 * np.sign(np.sin(u / 2.5)))[None]
        else:  # triangle, flat
            inside = (v <= size * 0.6) & (v >= 1.7 * np.abs(u) - size)
            paint = colour * np.ones((1, h, w))
        image = np.where(inside[None], paint, image)
        labels[inside] = VOC_CLASSES[kind]
    image = ndimage.gaussian_filter(image, (0, 0.7, 0.7)) + rng.normal(0, 0.02, image.shape)
    return (np.clip(np.moveaxis(image, 0, -1), 0, 1) * 255).round().astype(np.uint8), labels


def _write_palette_png(path: Path, indices: np.ndarray) -> None:
    from PIL import Image

    picture = Image.fromarray(indices.astype(np.uint8), mode="P")
    picture.putpalette(voc_palette().ravel().tolist())
    with atomic_file(path) as tmp:
        picture.save(tmp, format="PNG")


def _voc(n: int, seed: int, out: Path) -> None:
    for i in range(n):
        rng = np.random.default_rng([seed, i, 102])
        h, w = (int(rng.integers(SIDES[0], SIDES[1] + 1)) for _ in range(2))
        image, labels = _voc_scene(rng, h, w)
        # VOC's void band: pixels within VOC_BORDER // 2 of a boundary between two labels
        edge = ndimage.maximum_filter(labels, 3) != ndimage.minimum_filter(labels, 3)
        void = ndimage.binary_dilation(edge, iterations=max(VOC_BORDER // 2, 0)) if VOC_BORDER > 2 else edge
        mask = np.where(void, VOC_VOID, labels)
        write_image(out / "images" / f"{2007 + i % 5}_{i:06d}.jpg", image)
        _write_palette_png(out / "masks" / f"{2007 + i % 5}_{i:06d}.png", mask)


def _bit12(n: int, seed: int, out: Path) -> None:
    data, _ = make_synthetic("vessels", n, SOURCE_SIDE, seed=seed)
    assert data.fov is not None
    for i in range(n):
        rng = np.random.default_rng([seed, i, 103])
        image, target, fov = _crop(rng, data.images[i][0], data.targets[i], data.fov[i])
        scale = rng.uniform(2600.0, 4000.0)  # 12 bits: at most 4095
        values = np.clip(np.round(image * scale + rng.uniform(0, 60)), 0, 4095)
        write_image(out / "images" / f"eye_{i:03d}.png", values.astype(np.uint16))
        write_image(out / "masks" / f"eye_{i:03d}.png", target.astype(np.uint8))  # 0/1: black to the eye
        write_image(out / "fov" / f"eye_{i:03d}.png", fov.astype(np.uint8) * 255)


def _ct(n: int, seed: int, out: Path) -> None:
    for i in range(n):
        rng = np.random.default_rng([seed, i, 104])
        h, w = (int(rng.integers(SIDES[0], SIDES[1] + 1)) for _ in range(2))
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        body = ((xx - w / 2) / (0.44 * w)) ** 2 + ((yy - h / 2) / (0.4 * h)) ** 2 <= 1.0
        hu = np.where(body, rng.uniform(0, 60) + 25 * _smooth(rng, (h, w), 6.0), -1000.0)
        labels = np.zeros((h, w), dtype=np.uint8)
        for _ in range(int(rng.integers(2, 6))):
            kind = int(rng.integers(1, 3))
            r = rng.uniform(5, 14)
            cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
            blob = ((xx - cx) / r) ** 2 + ((yy - cy) / (r * rng.uniform(0.6, 1.0))) ** 2 <= 1.0
            blob &= body
            hu = np.where(blob, rng.uniform(120, 200) if kind == 1 else rng.uniform(-110, -60), hu)
            labels[blob] = kind
        hu = ndimage.gaussian_filter(hu, 0.8) + rng.normal(0, 18.0, hu.shape)
        write_image(out / "images" / f"slice_{i:03d}.tif", hu.astype(np.float32))
        write_image(out / "masks" / f"slice_{i:03d}.tif", labels)


TILE_2D = 256
STACK = (32, 96, 96)
STACK_SPACING = (1.25, 0.5, 0.5)  # micrometres per voxel, (Z, Y, X)


def _scene_split(n: int) -> tuple[int, int]:
    """Training and held-out tiles for `n` training tiles."""
    return n, max(2, n // 3)


def _tiles(n: int, seed: int, out: Path) -> None:
    from unetkit.data.scenes import nuclei_scene, scene_tiles

    train, test = _scene_split(n)
    columns = 4
    rows = math.ceil((train + test) / columns)
    scene = nuclei_scene((rows * TILE_2D, columns * TILE_2D), seed=seed)
    for k, ((row, col), window) in enumerate(scene_tiles(scene, TILE_2D)[: train + test]):
        split = "train" if k < train else "test"
        name = f"slide_r{row}_c{col}"  # tiles named after their place on the slide, as tiling tools do
        ids = scene.labels[window]
        write_image(out / split / "images" / f"{name}.tif", scene.image[window])
        write_image(out / split / "masks" / f"{name}.tif", ids.astype(np.uint16 if ids.max() < 2**16 else np.int32))


def _stacks(n: int, seed: int, out: Path) -> None:
    from unetkit.data.scenes import nuclei_scene, scene_tiles
    from unetkit.data.volume import write_volume

    train, test = _scene_split(n)
    columns = 3
    rows = math.ceil((train + test) / columns)
    scene = nuclei_scene((STACK[0], rows * STACK[1], columns * STACK[2]), seed=seed, spacing=STACK_SPACING)
    xyz = tuple(reversed(STACK_SPACING))  # NIfTI order: X, Y, Z
    for k, ((_, row, col), window) in enumerate(scene_tiles(scene, STACK)[: train + test]):
        split = "train" if k < train else "test"
        name = f"stack_r{row}_c{col}"
        write_volume(out / split / "images" / f"{name}.nii.gz", scene.image[window].T, spacing=xyz)
        write_volume(out / split / "masks" / f"{name}.nii.gz", scene.labels[window].T.astype(np.uint16), spacing=xyz)


_WRITERS = {"nuclei": _nuclei, "voc": _voc, "bit12": _bit12, "ct": _ct, "tiles": _tiles, "stacks": _stacks}


def write_realistic(name: str, out: str | Path, *, n: int = 24, seed: int = 0) -> Path:
    """Write the realistic set `name` as a folder data set `out/images`, `out/masks` (and `out/fov`); the scene
    sets (`tiles`, `stacks`) as `out/train/...` and `out/test/...`.

    The folder appears whole or not at all (written beside it, then renamed).

    Args:
        name: one of `REALISTIC_NAMES`.
        out: a folder that does not exist yet.
        n: images (training tiles or stacks for the scene sets), >= 2.
        seed: data seed, >= 0.

    Raises:
        ValueError: an unknown name, `n` or `seed` out of range.
        FileExistsError: `out` exists.
    """
    name = look_up_option("name", name, REALISTIC_NAMES)
    for arg, value, least in (("n", n, 2), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise ValueError(f"`{arg}` must be an integer >= {least}, got {value!r}")
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out}: already exists; choose a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp", dir=out.parent))
    try:
        _WRITERS[name](int(n), int(seed), tmp)
        public_mode(tmp)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
