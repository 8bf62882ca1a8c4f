"""Which TIFFs are volumes: Fiji / ImageJ hyperstacks, OME and tifffile Z stacks, and plain stacks of grey
pages are; RGB images, single pages, pyramids / thumbnails and channel stacks stay 2-D. The spacing comes from
ImageJ's `spacing` and resolution tags, OME's physical sizes and tifffile's shaped metadata."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from unetkit.data import write_image
from unetkit.data.tiff_stack import tiff_kind, tiff_spacing
from unetkit.data.volume import read_tiff_spacing, read_volume

STACK = np.random.default_rng(0).integers(0, 4000, (31, 46, 28), dtype=np.uint16)  # (Z, Y, X), as issue 32's


def _pages(path, arrays, **options):
    with tifffile.TiffWriter(path) as tif:
        for array in arrays:
            tif.write(array, metadata=None, **options)


ZCYX = {"axes": "ZCYX"}
VOLUMES = {
    "imagej-hyperstack": lambda p: tifffile.imwrite(
        p, STACK, imagej=True, metadata={"axes": "ZYX", "spacing": 2.0, "unit": "micron"}, resolution=(2.0, 2.0)
    ),
    "imagej-zcyx": lambda p: tifffile.imwrite(p, np.stack([STACK[:6], STACK[6:12]], 1), imagej=True, metadata=ZCYX),
    "ome-zyx": lambda p: tifffile.imwrite(p, STACK, ome=True, metadata={"axes": "ZYX"}),
    "tifffile-axes-zyx": lambda p: tifffile.imwrite(p, STACK, metadata={"axes": "ZYX"}),
    "tifffile-plain-stack": lambda p: tifffile.imwrite(p, STACK),  # shaped metadata, no axes: Q
    "pages-no-metadata": lambda p: _pages(p, list(STACK[:5])),  # tifffile's I axis
    "pillow-pages": lambda p: Image.fromarray(STACK[0]).save(
        p, save_all=True, append_images=[Image.fromarray(s) for s in STACK[1:4]]
    ),
}
IMAGES = {
    "rgb": lambda p: tifffile.imwrite(p, np.zeros((46, 28, 3), np.uint8)),
    "single-page": lambda p: tifffile.imwrite(p, STACK[0]),
    "single-page-imagej": lambda p: tifffile.imwrite(p, STACK[0], imagej=True),
    "pyramid": lambda p: _pages(p, [STACK[0], STACK[0, ::2, ::2], STACK[0, ::4, ::4]]),
    "stack-and-thumbnail": lambda p: _pages(p, [STACK[0], STACK[1], STACK[2], STACK[0, ::4, ::4]]),
    "rgb-pages": lambda p: _pages(p, [np.zeros((46, 28, 3), np.uint8)] * 3, photometric="rgb"),
    "ome-cyx": lambda p: tifffile.imwrite(p, STACK[:3], ome=True, metadata={"axes": "CYX"}),
    "imagej-channels": lambda p: tifffile.imwrite(p, STACK[:3], imagej=True, metadata={"axes": "CYX"}),
    "tifffile-axes-cyx": lambda p: tifffile.imwrite(p, STACK[:4], photometric="minisblack", metadata={"axes": "CYX"}),
    "imagej-time": lambda p: tifffile.imwrite(p, STACK[:5], imagej=True, metadata={"axes": "TYX"}),
    "channels-last-2": lambda p: write_image(p, np.zeros((46, 28, 2), np.uint8)),  # stored as 46 pages of 28x2
    "channels-last-5": lambda p: tifffile.imwrite(p, np.zeros((46, 28, 5), np.uint16)),
    "single-z-slice": lambda p: tifffile.imwrite(p, STACK[:1, None], imagej=True, metadata={"axes": "ZCYX"}),
}


@pytest.mark.parametrize("name", list(VOLUMES))
def test_stacks_are_volumes(tmp_path, name):
    path = tmp_path / f"{name}.tif"
    VOLUMES[name](path)
    kind = tiff_kind(path)
    assert kind.volume, kind.why
    assert read_volume(path).array.ndim in (3, 4)  # and the volume reader takes it


@pytest.mark.parametrize("name", list(IMAGES))
def test_images_stay_2d(tmp_path, name):
    path = tmp_path / f"{name}.tif"
    IMAGES[name](path)
    kind = tiff_kind(path)
    assert not kind.volume, kind.why


def test_the_evidence_is_said(tmp_path):
    VOLUMES["imagej-hyperstack"](tmp_path / "a.tif")
    assert tiff_kind(tmp_path / "a.tif").why == "ImageJ metadata: axes ZYX, 31 slices"
    VOLUMES["pages-no-metadata"](tmp_path / "b.tif")
    assert tiff_kind(tmp_path / "b.tif").why == "5 grey pages of 46x28"
    IMAGES["stack-and-thumbnail"](tmp_path / "c.tif")
    assert "different shapes" in tiff_kind(tmp_path / "c.tif").why
    (tmp_path / "d.tif").write_bytes(b"II*\0 not a tiff")
    assert tiff_kind(tmp_path / "d.tif").why == "not a readable TIFF"


def test_spacing_of_imagej_ome_and_tifffile_metadata(tmp_path):
    path = tmp_path / "ij.tif"  # issue 32's hyperstack: 2 um slices, 0.5 um pixels
    tifffile.imwrite(path, STACK, imagej=True, metadata={"axes": "ZYX", "spacing": 2.0, "unit": "micron"},
                     resolution=(1 / 0.5, 1 / 0.25))  # fmt: skip
    assert read_tiff_spacing(path) == pytest.approx((2.0, 0.25, 0.5))  # Z, Y (rows), X (columns)
    volume = read_volume(path)
    assert volume.spacing == pytest.approx((2.0, 0.25, 0.5)) and volume.header["unit"] == "micron"
    path = tmp_path / "ome.ome.tif"  # physical sizes in their own units, converted to micrometres
    tifffile.imwrite(path, STACK, ome=True, metadata={"axes": "ZYX", "PhysicalSizeZ": 1500, "PhysicalSizeZUnit": "nm",
                                                      "PhysicalSizeY": 0.3, "PhysicalSizeX": 0.4})  # fmt: skip
    with tifffile.TiffFile(path) as tif:
        assert tiff_spacing(tif) == (pytest.approx([1.5, 0.3, 0.4]), "µm")
    assert read_volume(path).spacing == pytest.approx((1.5, 0.3, 0.4))
    path = tmp_path / "shaped.tif"
    tifffile.imwrite(path, STACK, metadata={"axes": "ZYX", "spacing": [3.0, 0.7, 0.6]})
    assert read_tiff_spacing(path) == pytest.approx((3.0, 0.7, 0.6))
    path = tmp_path / "none.tif"
    tifffile.imwrite(path, STACK)
    assert read_tiff_spacing(path) == (1.0, 1.0, 1.0)
