"""Which TIFF files are volumes, and the voxel size their metadata gives.

A `.tif` may hold a 2-D image (grey, RGB, a few channels) or a stack of 2-D pages (a confocal or light-sheet
Z stack, as Fiji / ImageJ saves it). `tiff_kind` tells them apart from what the file says, reading its
headers only (no pixels):

- **a volume** when its metadata names a Z axis longer than 1: ImageJ hyperstacks (`slices`, axes `ZYX`,
  `ZCYX`), OME-TIFF (`SizeZ`), tifffile's shaped metadata (`axes`), or any format tifffile reads axes from
  (LSM, STK, ...); or, without axis metadata, when its pages make a stack: two or more pages, every page of
  the file of one 2-D shape, one sample per pixel (grey; tifffile's `I` / `Q` axes, pages of unknown meaning);
- **a 2-D image** otherwise: a single page (grey, or RGB `(H, W, 3)`), pages that differ in shape (pyramids,
  thumbnails, reduced-resolution pages), pages of several samples each (RGB pages) without Z metadata,
  metadata that names channels (`C`, `S`) or time (`T`) and no Z axis (OME `CYX`, ImageJ `channels`), or
  pages at most `MAX_CHANNELS_LAST` pixels wide and narrower than both their height and their count: an
  `(H, W, C)` array of 2 or more than 4 channels, which tifffile stores as H pages of `(W, C)` (as
  `unetkit.data.write_image` does).

A few grey pages without axis metadata are a (thin) volume, not channels: channel stacks need an axis
(`metadata={'axes': 'CYX'}`, OME `CYX`, ImageJ `channels`).

`tiff_spacing` gives the voxel size `(Z, Y, X)` as the file states it: tifffile's shaped `spacing` (what
`unetkit.data.volume.write_volume` writes), OME's `PhysicalSizeZ/Y/X` (in micrometres, whatever unit each axis
names), or ImageJ's `spacing` (Z) with the `YResolution` / `XResolution` tags (pixels per unit in-plane); 1
where the file says nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["MAX_CHANNELS_LAST", "TIFF_SUFFIXES", "TiffKind", "tiff_kind", "tiff_spacing"]

logger = logging.getLogger(__name__)

TIFF_SUFFIXES = (".tif", ".tiff")
# tifffile stores an (H, W, C) array of 2 or more than 4 channels as H pages of (W, C): pages at most this wide
# and narrower than both their height and their count are such an image (`read_image` reads them channels last)
MAX_CHANNELS_LAST = 16
# OME length units -> micrometres (OME's default unit)
_MICROMETRES = {"pm": 1e-6, "Å": 1e-4, "nm": 1e-3, "µm": 1.0, "um": 1.0, "micron": 1.0, "mm": 1e3, "cm": 1e4, "m": 1e6}


@dataclass(frozen=True)
class TiffKind:
    """What a TIFF file holds.

    Attributes:
        volume: True for a stack of 2-D pages (a volume), False for a 2-D image.
        why: the evidence, for log lines and messages (`"ImageJ metadata: axes ZYX, 31 slices"`).
    """

    volume: bool
    why: str


def _source(tif: Any, series: Any) -> str:
    if tif.is_imagej:
        return "ImageJ metadata"
    if tif.is_ome:
        return "OME metadata"
    return f"{series.kind} metadata" if series.kind not in ("generic", "uniform") else "metadata"


def _kind(tif: Any) -> TiffKind:
    series = tif.series[0]
    axes, shape = str(series.axes), tuple(int(n) for n in series.shape)
    # the axes that hold more than one value (a single Z slice or time point is no axis)
    long = "".join(a for a, n in zip(axes, shape, strict=True) if n > 1 or a in "YX")
    sizes = dict(zip(axes, shape, strict=True))
    if "Z" in long:
        return TiffKind(True, f"{_source(tif, series)}: axes {axes}, {sizes['Z']} slices")
    if "S" in long and not set(long) - set("YXS"):
        return TiffKind(False, f"one page of {sizes['S']} samples per pixel (RGB), no Z axis")
    if set(long) - set("YXIQS"):
        return TiffKind(False, f"{_source(tif, series)}: axes {axes}, no Z axis")
    pages = len(tif.pages)
    if long not in ("IYX", "QYX"):
        what = "pages of several samples per pixel" if "S" in long else "a single page"
        what = f"its first image is one of {pages} pages of different images" if long == "YX" and pages > 1 else what
        return TiffKind(False, f"{what}, no Z axis in its metadata")
    if len(tif.series) > 1 or len(series.pages) != pages:
        return TiffKind(False, f"{pages} pages of different shapes (a pyramid or thumbnails)")
    if shape[2] <= MAX_CHANNELS_LAST and shape[2] < min(shape[0], shape[1]):
        return TiffKind(False, f"an (H, W, C) image of {shape[2]} channels, stored row by row ({pages} pages)")
    return TiffKind(True, f"{pages} grey pages of {shape[1]}x{shape[2]}")


def tiff_kind(path: str | Path) -> TiffKind:
    """Whether the TIFF at `path` is a volume or a 2-D image, by the rules of the module docstring; a file
    tifffile cannot open is a 2-D image here (the image reader then names its problem)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return _kind(tif)
    except Exception as err:  # tifffile raises many types for files it cannot parse
        logger.debug("%s: not a readable TIFF (%s)", path, err)
        return TiffKind(False, "not a readable TIFF")


def _ome_spacing(tif: Any) -> list[float] | None:
    import tifffile

    try:
        image = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]
        pixels = (image[0] if isinstance(image, list) else image)["Pixels"]
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    out = []
    for axis in "ZYX":
        size = pixels.get(f"PhysicalSize{axis}")
        unit = str(pixels.get(f"PhysicalSize{axis}Unit", "µm"))
        if size is None or unit not in _MICROMETRES:
            out.append(1.0)
            continue
        out.append(float(size) * _MICROMETRES[unit])
    return out if out != [1.0, 1.0, 1.0] else None


def tiff_spacing(tif: Any) -> tuple[list[float], str | None]:
    """The voxel size `[Z, Y, X]` and its unit (None where not stated) of an open `tifffile.TiffFile`, as its
    metadata gives it (module docstring); values are as written, not checked for being positive."""
    shaped = (tif.shaped_metadata or [{}])[0] if tif.is_shaped else {}
    if "spacing" in shaped:
        return [float(s) for s in list(shaped["spacing"])[:3]], None
    if tif.is_ome:
        ome = _ome_spacing(tif)
        if ome is not None:
            return ome, "µm"
    imagej = tif.imagej_metadata or {}
    tags = tif.pages[0].tags
    resolution = [tags[t].value for t in ("YResolution", "XResolution") if t in tags]
    in_plane = [den / num if num else 1.0 for num, den in resolution] if len(resolution) == 2 else [1.0, 1.0]
    unit = imagej.get("unit")
    return [float(imagej.get("spacing", 1.0)), *in_plane], str(unit) if unit is not None else None
