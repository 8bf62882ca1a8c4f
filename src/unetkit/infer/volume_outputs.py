"""The outputs of `unetkit.infer.volume_files.predict_volume_file`, made slab by slab while the tiles run.

`VolumeSink` takes the finished rows of each slab (`unetkit.infer.grid.GridSink`) and appends, in the output
file's byte order, the labels to one raw temporary file and, with `probs`, the probabilities: for NIfTI
(Fortran order, the class axis slowest) one raw file per class, whose concatenation is the 4-D data block;
for TIFF stacks one file in page order `Z, K` (each slice's K class pages together). The overlay keeps only
its three planes (`Planes`). The files are then written from the raw files (`write_nifti`, `write_tiff`), in
chunks, so nothing grows with the volume but the planes (one plane per axis).

With `instances`, the sink also appends the foreground probability (and, for method `distance`, the model's
object distance) to raw files (`unetkit.infer.instances_tiled.RawArray`: the volume in the model's axis order,
stored in the file's byte order), which `VolumeSink.label_instances` then labels block by block
(`unetkit.infer.instances_tiled.tiled_instances`, exactly the labels of `instances_from_probs(...,
spatial_dims=3)` over the whole volume for components smaller than the margin) into `instances.raw`, in the
file's order like the mask.

The overlay (`draw_planes`): the three orthogonal planes through the volume's centre voxel (`n // 2` on each
axis), side by side in array-axis order (the plane across axis 0, then across axis 1, then across axis 2), the
image's first channel in grey (one contrast for the three: its 1st-99th percentiles over them) with each
predicted class > 0 in its colour of `unetkit.viz.class_colours` (class 1 green, as 2-D overlays). Each plane
is stretched to its voxel spacing (nearest neighbour, the finest spacing one pixel), so thick slices look thick.
NIfTI and NRRD planes show their first array axis to the right and the second up (a RAS-aligned volume as
viewers show it); TIFF stacks show rows down and columns right, as Fiji shows its pages.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from unetkit._fs import atomic_file
from unetkit.data.volume import GZIP_LEVEL, volume_suffix
from unetkit.infer.instances import foreground_probability
from unetkit.infer.instances_tiled import RawArray, tiled_instances

__all__ = [
    "COPY_CHUNK",
    "OVERLAY_MAX_SIDE",
    "Planes",
    "VolumeSink",
    "draw_planes",
    "raw_pages",
    "write_nifti",
    "write_tiff",
]

COPY_CHUNK = 16 * 2**20  # bytes per read when copying raw data into an output
OVERLAY_MAX_SIDE = 2048  # the overlay's planes are shrunk (all by one factor) to at most this many pixels a side
OVERLAY_GAP = 4  # pixels between the overlay's planes (`unetkit.viz.picture_row`)


class Planes:
    """The three planes through the centre voxel of a volume, filled slab by slab.

    Args:
        shape: the volume's spatial shape (model order).
        stream: the axis slabs are cut along.
        dtype: the planes' dtype.
    """

    def __init__(self, shape: Sequence[int], stream: int, dtype: Any) -> None:
        self.shape = tuple(int(n) for n in shape)
        self.stream = stream
        self.centre = tuple(n // 2 for n in self.shape)
        self.planes = [np.zeros([n for i, n in enumerate(self.shape) if i != a], dtype=dtype) for a in range(3)]

    def add(self, lo: int, block: np.ndarray) -> None:
        """Copy what `block` holds of the planes: `block` is the volume (model order) with its stream axis
        cut to `[lo, lo + block.shape[stream])`."""
        hi = lo + block.shape[self.stream]
        for axis, plane in enumerate(self.planes):
            centre = self.centre[axis]
            if axis == self.stream:
                if lo <= centre < hi:
                    plane[...] = np.take(block, centre - lo, axis=axis)
                continue
            where: list[Any] = [slice(None), slice(None)]
            where[self.stream - (axis < self.stream)] = slice(lo, hi)  # the stream axis in the plane
            plane[tuple(where)] = np.take(block, centre, axis=axis)


class VolumeSink:
    """Turns finished rows into labels (and probabilities, and the overlay's label planes) and appends them to
    raw temporary files in the output's byte order.

    Args:
        label_values: the training masks' values per class, or None (class indices are the labels).
        order: the engine's axis `j` is the model's axis `order[j]` (`unetkit.infer.volume.AxisOrder`).
        shape: the volume's spatial shape (model order).
        fortran: NIfTI (the first index fastest) rather than C order with the stream axis first (TIFF).
        tmp_dir: where the raw files go: `labels.raw`, `probs-K.raw` (NIfTI) or `probs.raw` (TIFF).
        probs: also write the probabilities.
        planes: keep the overlay's label planes.
        distance: the model's last output is the separation's object distance (left out of labels and probabilities).
        instances: the instance method (`unetkit.infer.instances.INSTANCE_METHODS`) to keep the foreground
            probability (`foreground.raw`) and, for `distance`, the object distance (`distance.raw`) for; None
            for no instances.
    """

    def __init__(
        self,
        label_values: Sequence[int] | None,
        order: tuple[int, ...],
        shape: Sequence[int],
        *,
        fortran: bool,
        tmp_dir: Path,
        probs: bool = False,
        planes: bool = False,
        distance: bool = False,
        instances: str | None = None,
    ) -> None:
        values = None if not label_values else np.asarray(label_values, dtype=np.int64)
        self.dtype = np.uint8 if values is None or values.max() <= 255 else np.uint16
        self.lut = None if values is None else values.astype(self.dtype)
        self.to_model = tuple(order.index(a) for a in range(3))
        self.stream = order[0]
        self.fortran, self.tmp_dir, self.probs = fortran, tmp_dir, probs
        self.classes = 0
        self.split = distance  # the last channel is the object distance of a separation model, not a class
        self.planes = Planes(shape, self.stream, np.int32) if planes else None
        self.files: dict[str, BinaryIO] = {}
        self.raws: dict[str, RawArray] = {}  # the foreground (and distance) for instances: model order, file layout
        self.shape = tuple(int(n) for n in shape)
        self.layout = (2, 1, 0) if fortran else (0, 1, 2)  # the file's axes, slowest first, in the model's order
        try:
            self.files["labels"] = open(tmp_dir / "labels.raw", "wb")  # noqa: SIM115  # closed by `close`
            if instances is not None:
                self.raws["foreground"] = RawArray(tmp_dir / "foreground.raw", self.shape, np.float32, self.layout)
                if instances == "distance":
                    if not distance:
                        raise ValueError("instance method 'distance' needs a model with the separation's distance")
                    self.raws["distance"] = RawArray(tmp_dir / "distance.raw", self.shape, np.float32, self.layout)
        except BaseException:
            self.close()
            self.close_instances()
            raise

    def prob_files(self) -> list[Path]:
        """The raw probability files, in the order their bytes follow one another in the output."""
        if not self.fortran:
            return [self.tmp_dir / "probs.raw"]
        return [self.tmp_dir / f"probs-{k}.raw" for k in range(self.classes)]

    def __call__(self, r0: int, r1: int, values: torch.Tensor) -> None:
        probs = values.numpy()  # (K, rows, ...) in the engine's order
        if "distance" in self.raws:  # the object distance, before it is split off
            self.raws["distance"].append(probs[-1].transpose(self.to_model))
        if self.split:
            probs = probs[:-1]
        self.classes = probs.shape[0]
        if self.lut is None and probs.shape[0] > 256:
            raise ValueError(f"{probs.shape[0]} classes do not fit an 8-bit mask; give the checkpoint label values")
        classes = (probs[1] > probs[0]).view(np.uint8) if probs.shape[0] == 2 else probs.argmax(0)
        classes = classes.transpose(self.to_model)  # model (file) order, the stream axis cut to the slab
        labels = self.lut[classes] if self.lut is not None else classes.astype(self.dtype)
        self._write("labels", labels.transpose(2, 1, 0) if self.fortran else labels, self.dtype)
        if self.planes is not None:
            self.planes.add(r0, classes)
        if "foreground" in self.raws:
            self.raws["foreground"].append(foreground_probability(probs, spatial_dims=3).transpose(self.to_model))
        if self.probs:
            model = probs.transpose((0, *(1 + a for a in self.to_model)))  # (K, model order)
            if self.fortran:  # one block per class, each in Fortran order
                for k in range(model.shape[0]):
                    self._write(f"probs-{k}", model[k].transpose(2, 1, 0), np.float32)
            else:  # (rows, K, ...): each slice's class pages together
                self._write("probs", np.moveaxis(model, 0, 1), np.float32)

    def _write(self, key: str, data: np.ndarray, dtype: Any) -> None:
        if key not in self.files:
            self.files[key] = open(self.tmp_dir / f"{key}.raw", "wb")  # noqa: SIM115  # closed by `close`
        np.ascontiguousarray(data, dtype=dtype).tofile(self.files[key])

    def close(self) -> None:
        """Close the raw files of labels and probabilities (the instances' ones stay open for `label_instances`)."""
        for file in self.files.values():
            file.close()

    def label_instances(
        self, method: str, *, block: int | None = None, margin: int | None = None, **options: Any
    ) -> tuple[int, Any]:
        """Object labels of the kept foreground, block by block, into `instances.raw` in the file's order (as the
        mask); the foreground and distance files are removed. Returns the number of objects and the dtype they are
        written in: uint16, or int32 beyond 65535 objects.

        Args:
            method, options: as `unetkit.infer.instances.instances_from_probs`.
            block, margin: as `unetkit.infer.instances_tiled.tiled_instances` (default its 3-D ones).
        """
        labels = RawArray(self.tmp_dir / "instances-ids.raw", self.shape, np.int32, self.layout)
        try:
            count, bands = tiled_instances(
                self.raws["foreground"], labels, method=method, block=block, margin=margin,
                distance=self.raws.get("distance"), band_axis=self.stream, **options,
            )  # fmt: skip
            dtype = np.uint16 if count <= np.iinfo(np.uint16).max else np.int32
            with open(self.tmp_dir / "instances.raw", "wb") as out:
                for band in bands:  # (model order, the stream axis cut)
                    np.ascontiguousarray(band.transpose(self.layout), dtype=dtype).tofile(out)
        finally:
            labels.close()
            (self.tmp_dir / "instances-ids.raw").unlink(missing_ok=True)
            self.close_instances()
        return count, dtype

    def close_instances(self) -> None:
        """Close and remove the instances' raw files (idempotent)."""
        for raw in self.raws.values():
            raw.close()
            raw.path.unlink(missing_ok=True)
        self.raws.clear()


def _chunks(raws: Sequence[Path]) -> Iterator[bytes]:
    for raw in raws:
        with open(raw, "rb") as file:
            while chunk := file.read(COPY_CHUNK):
                yield chunk


def write_nifti(
    target: Path, header: Any, shape: Sequence[int], raws: Sequence[Path], dtype: Any, classes: int | None = None
) -> None:
    """The input's `header` (affine, orientation codes, units, extensions) made a volume of `shape` and `dtype`,
    then the raw files' bytes one after another; 4-D `(X, Y, Z, classes)` with `classes` (probabilities: a
    spacing of 1 and a display range of 0-1 on the class axis). Gzipped for `.nii.gz`, written atomically."""
    header = header.copy()
    header.set_data_shape((*shape, classes) if classes is not None else tuple(shape))
    header.set_data_dtype(dtype)
    header.set_slope_inter(1.0, 0.0)  # values as they are, never rescaled
    header.set_intent("none")
    if classes is not None:
        header.set_zooms((*header.get_zooms()[:3], 1.0))
        header["cal_min"], header["cal_max"] = 0.0, 1.0
    offset = int(header.single_vox_offset) + int(header.extensions.get_sizeondisk())  # header, extensions, data
    header.set_data_offset(offset)
    gz = volume_suffix(target) == ".nii.gz"
    with atomic_file(target) as tmp, gzip.open(tmp, "wb", compresslevel=GZIP_LEVEL) if gz else open(tmp, "wb") as out:
        header.write_to(out)
        out.write(b"\0" * (offset - out.tell()))
        for chunk in _chunks(raws):
            out.write(chunk)


def raw_pages(raw: Path, count: int, shape: Sequence[int], dtype: Any) -> Iterator[np.ndarray]:
    """`count` blocks of `shape` read one after another from a raw file."""
    size = math.prod(shape) * np.dtype(dtype).itemsize
    with open(raw, "rb") as file:
        for _ in range(count):
            yield np.frombuffer(file.read(size), dtype=dtype).reshape(tuple(shape))


def write_tiff(
    target: Path,
    shape: Sequence[int],
    pages: Iterator[np.ndarray],
    dtype: Any,
    spacing: Sequence[float],
    *,
    classes: int | None = None,
    unit: str | None = None,
) -> None:
    """A TIFF stack of `shape` `(Z, Y, X)` from `pages` (one `(Y, X)` page, or with `classes` one `(K, Y, X)`
    block, per slice), with `spacing` `(Z, Y, X)`, written atomically. Labels: a zlib-compressed stack (axes
    `ZYX`, tifffile's `spacing`). Probabilities (`classes`): a float32 ImageJ hyperstack, axes `ZCYX` (each
    slice's class pages together, channels = classes in Fiji), ImageJ's `spacing` and `unit` with the X / Y
    resolution, uncompressed (as ImageJ reads hyperstacks)."""
    import tifffile

    resolution = (1.0 / spacing[2], 1.0 / spacing[1])  # pixels per unit along X (columns), then Y (rows)
    with atomic_file(target) as tmp:
        if classes is None:
            tifffile.imwrite(
                tmp, pages, shape=tuple(shape), dtype=dtype, resolution=resolution, compression="zlib",
                metadata={"axes": "ZYX", "spacing": list(spacing)},
            )  # fmt: skip
            return
        metadata: dict[str, Any] = {"axes": "ZCYX", "spacing": float(spacing[0])}
        if unit:
            metadata["unit"] = unit
        full = (shape[0], classes, shape[1], shape[2])
        tifffile.imwrite(tmp, pages, shape=full, dtype=dtype, imagej=True, resolution=resolution, metadata=metadata)


def _stretch(n: int, factor: float) -> np.ndarray:
    """Nearest-neighbour indices that show `n` voxels on `round(n * factor)` pixels (at least 1)."""
    size = max(1, round(n * factor))
    return np.minimum(((np.arange(size) + 0.5) * n / size).astype(np.int64), n - 1)


def draw_planes(image: Planes, labels: Planes, spacing: Sequence[float], num_classes: int, *, up: bool) -> np.ndarray:
    """The overlay picture of the module docstring, `(H, W, 3)` uint8.

    Args:
        image: the image's planes (intensities).
        labels: the class indices' planes.
        spacing: voxel size per array axis.
        num_classes: the model's classes (the colours).
        up: NIfTI / NRRD orientation (first axis right, second up) rather than TIFF's (rows down).
    """
    from unetkit.viz import class_overlay, picture_row

    lo, hi = np.percentile(np.concatenate([p.ravel() for p in image.planes]).astype(np.float32), [1, 99])
    finest = min(spacing)
    stretched = [n * s / finest for n, s in zip(image.shape, spacing, strict=True)]
    shrink = min(1.0, OVERLAY_MAX_SIDE / max(stretched))
    pictures = []
    for axis in range(3):
        rest = [a for a in range(3) if a != axis]
        rows, cols = (_stretch(image.shape[a], spacing[a] / finest * shrink) for a in rest)
        picture = class_overlay(
            image.planes[axis][np.ix_(rows, cols)], labels.planes[axis][np.ix_(rows, cols)], num_classes, (lo, hi)
        )
        pictures.append(picture.transpose(1, 0, 2)[::-1] if up else picture)
    return picture_row(pictures, gap=OVERLAY_GAP)
