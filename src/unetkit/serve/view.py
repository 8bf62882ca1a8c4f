"""What the page shows of one prediction, built from the files `unetkit predict` wrote: the pyramids of the
display image, the class map, the foreground probabilities, the instance labels and the ground truth.

Everything is read and written in bands of rows: an uncompressed TIFF input or mask is read through a
memory map, other files are decoded once (as `unetkit predict` decodes them); no float copy of a large
image is made whole, and the probabilities are read from their file band by band.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.serve._infer import ImageSource, tiff_memmap
from unetkit.serve.pyramid import TILE, LayerWriter, level_count, row_bands

__all__ = ["DISPLAY_PERCENTILES", "View", "build_view", "class_map", "display_limits"]

DISPLAY_PERCENTILES = (1.0, 99.0)  # the contrast stretch of `unetkit predict --overlay` and the run's samples
SAMPLE_PIXELS = 1 << 22  # pixels the stretch limits are taken from (every pixel of smaller images)

Progress = Callable[[int, int], None]


@dataclass
class View:
    """The pyramids of one prediction and what the page needs to draw them."""

    folder: Path
    height: int
    width: int
    levels: int
    num_classes: int
    layers: list[str] = field(default_factory=list)
    tile: int = TILE

    def as_dict(self) -> dict[str, Any]:
        return {
            "height": self.height,
            "width": self.width,
            "levels": self.levels,
            "tile": self.tile,
            "num_classes": self.num_classes,
            "layers": self.layers,
        }


def display_limits(source: Any) -> tuple[np.float64, np.float64]:
    """The 1st and 99th percentiles of an image source's displayed channels, over a regular sample of pixels."""
    stride = max(1, math.ceil(math.sqrt(source.height * source.width / SAMPLE_PIXELS)))
    rows, cols = np.arange(0, source.height, stride), np.arange(0, source.width, stride)
    sample = _shown(source.read(rows, cols).numpy())
    lo, hi = np.percentile(sample, DISPLAY_PERCENTILES)
    return lo, hi  # NumPy float64 scalars: the stretch then computes in float64, as `display_image` does


def _shown(chw: np.ndarray) -> np.ndarray:
    """The channels shown: the first three, or the first repeated as grey."""
    return chw[:3] if chw.shape[0] >= 3 else np.repeat(chw[:1], 3, axis=0)


def _stretch(chw: np.ndarray, lo: np.float64, hi: np.float64) -> np.ndarray:
    """`(C, h, w)` float -> `(h, w, 3)` uint8, `lo..hi` mapped to 0..255."""
    x = np.clip((_shown(chw) - lo) / max(hi - lo, 1e-6), 0, 1)
    return (np.moveaxis(x, 0, -1) * 255).astype(np.uint8)


def class_map(label_values: list[int] | None, num_classes: int) -> np.ndarray | None:
    """A lookup table from mask values (the training masks' values) to class indices; None when equal."""
    if not label_values:
        return None
    values = np.asarray(label_values, dtype=np.int64)
    if values.min() < 0 or values.max() >= 1 << 16:
        raise ValueError(f"mask label values {label_values} are outside 0..65535")
    table = np.zeros(int(values.max()) + 1, dtype=np.uint16 if num_classes > 256 else np.uint8)
    table[values] = np.arange(len(values))
    return table


def _mask_array(path: Path) -> np.ndarray:
    """A mask file as `(H, W)` integers: a memory map of an uncompressed TIFF, else decoded whole."""
    if path.suffix.lower() in (".tif", ".tiff"):
        mapped = tiff_memmap(path)
        if mapped is not None:
            return mapped
    from unetkit.data.io import read_image

    return read_image(path)


def _probs_bands(path: Path, num_classes: int, height: int, width: int) -> Callable[[int, int], np.ndarray]:
    """A reader of `(rows, W, K - 1)` foreground probabilities from `<stem>_probs.tif` (float32, `(K, H, W)`):
    plain reads at the series' offset when its data are contiguous, else one decode."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        offset, shape, dtype = series.dataoffset, tuple(series.shape), np.dtype(series.dtype)
    if shape != (num_classes, height, width):
        raise ValueError(f"{path.name}: probabilities of shape {shape}, expected {(num_classes, height, width)}")
    if offset is None or dtype.byteorder not in ("=", "|", "<" if np.little_endian else ">"):
        whole = tifffile.imread(path)
        return lambda y0, y1: np.moveaxis(whole[1:, y0:y1], 0, -1)

    def read(y0: int, y1: int) -> np.ndarray:
        out = np.empty((y1 - y0, width, num_classes - 1), dtype=np.float32)
        with open(path, "rb") as handle:
            for k in range(1, num_classes):
                handle.seek(offset + (k * height + y0) * width * dtype.itemsize)
                out[..., k - 1] = np.fromfile(handle, dtype=dtype, count=(y1 - y0) * width).reshape(y1 - y0, width)
        return out

    return read


def build_view(
    image: Path,
    written: dict[str, Path],
    folder: Path,
    *,
    num_classes: int,
    label_values: list[int] | None,
    truth: np.ndarray | None = None,
    progress: Progress | None = None,
) -> View:
    """The pyramids of one prediction.

    Args:
        image: the input image file.
        written: what `predict_file` wrote (`mask`, `probs`, optionally `instances`).
        folder: where the pyramids go.
        num_classes: the model's classes.
        label_values: the checkpoint's mask values per class (None: the mask holds class indices).
        truth: the ground truth as class indices `(H, W)`, when given.
        progress: called with `(bands done, bands in all)`.
    """
    source = ImageSource(image, None)
    height, width = source.height, source.width
    view = View(folder, height, width, level_count(height, width), num_classes)
    folder.mkdir(parents=True, exist_ok=True)
    bands = list(row_bands(height, width, max(3, source.channels)))
    steps = len(bands) * (3 + ("instances" in written) + (truth is not None))
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, steps)

    lo, hi = display_limits(source)
    writer = LayerWriter(folder, "image", height, width, view.levels, np.uint8, channels=3)
    cols = np.arange(width)
    for y0, y1 in bands:
        writer.write(_stretch(source.read(np.arange(y0, y1), cols).numpy(), lo, hi))
        step()
    writer.close()
    del source
    view.layers.append("image")

    table = class_map(label_values, num_classes)
    mask = _mask_array(written["mask"])
    if mask.shape != (height, width):
        raise ValueError(f"{written['mask'].name}: mask of shape {mask.shape}, expected {(height, width)}")
    class_type = np.uint16 if num_classes > 256 else np.uint8
    writer = LayerWriter(folder, "classes", height, width, view.levels, class_type, reduce="nearest")
    for y0, y1 in bands:
        band = np.asarray(mask[y0:y1])
        writer.write(table[band] if table is not None else band.astype(class_type))
        step()
    writer.close()
    del mask
    view.layers.append("classes")

    read_probs = _probs_bands(written["probs"], num_classes, height, width)
    writer = LayerWriter(folder, "probs", height, width, view.levels, np.uint8, channels=num_classes - 1)
    for y0, y1 in bands:
        writer.write(np.rint(read_probs(y0, y1) * 255).astype(np.uint8))
        step()
    writer.close()
    view.layers.append("probs")

    if "instances" in written:
        import tifffile

        objects = tifffile.imread(written["instances"])
        writer = LayerWriter(folder, "instances", height, width, view.levels, np.int32, reduce="nearest")
        for y0, y1 in bands:
            writer.write(objects[y0:y1].astype(np.int32))
            step()
        writer.close()
        del objects
        view.layers.append("instances")

    if truth is not None:
        writer = LayerWriter(folder, "truth", height, width, view.levels, np.uint16, reduce="nearest")
        for y0, y1 in bands:
            writer.write(np.minimum(truth[y0:y1], np.iinfo(np.uint16).max).astype(np.uint16))
            step()
        writer.close()
        view.layers.append("truth")
    return view
