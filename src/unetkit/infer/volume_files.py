"""`predict_volume_file`: one volume file in, its label volume (and, when asked, its class probabilities, its
object labels and an overlay of three orthogonal planes) out with the input's geometry, in memory that does not
grow with the volume.

- **NIfTI** (`.nii`, `.nii.gz`): slabs are read along the file's slowest axis (its last, `k`) through
  nibabel's array proxy, which reads exactly those bytes of an uncompressed file (a `.nii.gz` is first
  decompressed, stream-wise, into the run's temporary folder: gzip cannot seek back). Labels go slab by slab
  into a raw temporary file in the file's order; the mask is then that file behind the input's own header
  (affine, orientation codes, units; data type uint8 / uint16, no scaling), gzipped for `.nii.gz`.
  Probabilities go to one raw file per class (NIfTI is Fortran order: the class axis is slowest, each class a
  contiguous block), then behind the same header made 4-D float32 `(X, Y, Z, K)`: `<stem>_probs.nii.gz`
  (`.nii` for a `.nii` input).
- **TIFF stacks** (`Z, Y, X` pages): slabs are ranges of pages, read page by page; the mask is a
  zlib-compressed stack written page by page, with the input's spacing; the probabilities a float32 ImageJ
  hyperstack `<stem>_probs.tif`, axes `Z, C, Y, X` (classes as Fiji's channels), with the input's spacing.
- **NRRD** (and TIFFs that are not a plain page stack): read and written whole (`unetkit.data.volume`), for
  want of a reader by range; probabilities as `(X, Y, Z, K)` with the class axis a vector axis (NRRD), or the
  ImageJ hyperstack above (TIFF).

`<stem>_instances.<its suffix>` (`--instances`): object labels, uint16 (int32 beyond 65535 objects), 0 the
background, numbered in the raster order of the model's axes, with the input's geometry like the mask. Streamed
inputs keep the foreground probability (and the model's object distance, for method `distance`) in raw files
while the slabs go by, then label them block by block (`unetkit.infer.instances_tiled`: the labels of
`instances_from_probs(..., spatial_dims=3)` over the whole volume, exactly, for components smaller than the
margin); NRRD and other whole-read volumes are labelled in memory by `instances_from_probs`.

`<stem>_overlay.png` shows the three planes through the centre voxel (`unetkit.infer.volume_outputs`), kept
while the slabs stream by. Every output is written into a temporary folder of `--out` and moved into place
when all are complete, so a failure leaves nothing behind.

The model sees every tile in its own axis order (`unetkit.infer.volume.AxisOrder`); streaming along `k`
changes the order in which tiles run, not their result. Memory: the model, one slab of input in the file's
dtype (and the one read ahead) and the slab's weighted sums, `(K + 1) x tile x` the other two axes, float32
(`unetkit.infer.grid.slab_bytes`); probabilities add one class of one slab at a time, the overlay three planes,
instances the slab's foreground (and distance) in float32, about 12 bytes per voxel of the slab while it is
converted and written. After the slabs, instances take one labelling block (`instance_bytes`: `(block + 2
margin)^3` voxels at `WATERSHED_BYTES_PER_VOXEL`: 247 MiB for the default 80 + 2 x 20) and arrays of one
entry per object; the final pass reads bands of at most one block's voxels (or one slice, if larger). Measured
(`benchmarks/volume_instances_memory.py`): the peak of `--instances watershed` is the peak of the mask alone,
401 MiB on 128^3 voxels and 483 MiB on 384 x 384 x 192, within the small volume's peak plus the large one's slab.
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unetkit._fs import fsync_dir, write_error
from unetkit.data.errors import DataError
from unetkit.data.tiff_stack import tiff_spacing
from unetkit.data.volume import (
    nifti_claim,
    read_tiff_spacing,
    read_volume,
    short_nifti,
    volume_stem,
    volume_suffix,
    write_volume,
)
from unetkit.infer.grid import run_grid
from unetkit.infer.instances import instances_from_probs
from unetkit.infer.instances_tiled import WATERSHED_BYTES_PER_VOXEL, block_defaults
from unetkit.infer.predictor import Predictor, _tile_bar, fitted_instances, resolve_instances
from unetkit.infer.volume import AxisOrder, plan_volume, predict_volume
from unetkit.infer.volume_outputs import COPY_CHUNK, Planes, VolumeSink, draw_planes, raw_pages, write_nifti, write_tiff
from unetkit.viz import save_png

__all__ = [
    "STREAMED_SUFFIXES",
    "instance_bytes",
    "predict_volume_file",
    "volume_mask_name",
    "volume_output_names",
    "volume_outputs_exist",
]

logger = logging.getLogger(__name__)

STREAMED_SUFFIXES = (".nii.gz", ".nii", ".tif", ".tiff")
STAT_SAMPLE_VOXELS = 2**22  # per-volume normalisation statistics from at most about this many voxels


def volume_mask_name(path: str | Path) -> str:
    """The mask's file name: the input's stem and format (`case.nii.gz` -> `case.nii.gz` in `--out`)."""
    return volume_output_names(path)["mask"]


def volume_output_names(path: str | Path) -> dict[str, str]:
    """The file names `predict_volume_file` writes for the volume at `path`: `mask` (`case.nii.gz`), `probs`
    (`case_probs.nii.gz`: the input's suffix), `instances` (`case_instances.nii.gz`) and `overlay`
    (`case_overlay.png`)."""
    suffix = volume_suffix(path)
    if suffix is None:
        raise DataError(f"{path}: not a volume file (.nii, .nii.gz, .nrrd, .tif, .tiff)")
    stem, suffix = volume_stem(path), suffix.lower()
    return {
        "mask": f"{stem}{suffix}",
        "probs": f"{stem}_probs{suffix}",
        "instances": f"{stem}_instances{suffix}",
        "overlay": f"{stem}_overlay.png",
    }


def volume_outputs_exist(out_dir: str | Path, path: str | Path, asked: dict[str, bool]) -> bool:
    """Whether `out_dir` holds every output asked for the volume at `path` (`--skip-existing`): its mask and
    each of `probs`, `instances`, `overlay` set in `asked`."""
    names = volume_output_names(path)
    wanted = ["mask"] + [key for key in ("probs", "instances", "overlay") if asked.get(key)]
    return all((Path(out_dir) / names[key]).is_file() for key in wanted)


def instance_bytes(block: int | None = None, margin: int | None = None) -> int:
    """What the block-wise labelling of `--instances` holds at a time on a volume (besides arrays of one entry per
    object): one block of `(block + 2 margin)^3` voxels at `WATERSHED_BYTES_PER_VOXEL` (the watershed and the
    block's own arrays). Default block and margin: `unetkit.infer.instances_tiled.block_defaults(3)`."""
    default_block, default_margin = block_defaults(3)
    block = default_block if block is None else block
    margin = default_margin if margin is None else margin
    return WATERSHED_BYTES_PER_VOXEL * (block + 2 * margin) ** 3


class _Slabs:
    """A volume read slab by slab along `stream_axis`: `read(lo, hi)` gives `(C, S0, S1, S2)` voxels (model
    order) with the stream axis cut to `[lo, hi)`, in the file's dtype."""

    shape: tuple[int, int, int]
    channels: int
    dtype: np.dtype
    stream_axis: int

    def read(self, lo: int, hi: int) -> np.ndarray:
        raise NotImplementedError


def _nifti_bytes(path: Path) -> int:
    """The bytes a NIfTI file must hold by its header (read from the header only; the voxels stay on disk)."""
    import nibabel

    try:
        image = nibabel.load(str(path))
    except Exception as err:  # nibabel raises its own types for a file that is not NIfTI
        raise DataError(f"{path}: not a readable NIfTI file ({type(err).__name__}: {err})") from err
    return nifti_claim(image)


class _NiftiSlabs(_Slabs):
    def __init__(self, path: Path, tmp_dir: Path) -> None:
        import nibabel

        given = path
        need = _nifti_bytes(path)  # header, extensions and the voxels its header claims
        if volume_suffix(path) == ".nii.gz":  # decompress once: reading by range in a gzip stream re-reads it
            raw = tmp_dir / "input.nii"
            with gzip.open(path, "rb") as src, open(raw, "wb") as dst:
                while dst.tell() < need and (chunk := src.read(min(COPY_CHUNK, need - dst.tell()))):
                    dst.write(chunk)  # no more than the header claims: a gzip bomb stops here
            path = raw
        held = path.stat().st_size
        if held < need:  # refused before any voxel is read or any buffer sized to the claim
            raise short_nifti(given, need, held)
        image = nibabel.load(str(path))
        if not isinstance(image, (nibabel.Nifti1Image, nibabel.Nifti2Image)):
            raise DataError(f"{path}: not a NIfTI image ({type(image).__name__})")
        self.image = image
        shape = tuple(int(n) for n in self.image.shape)
        if len(shape) == 5 and shape[3] == 1:  # (X, Y, Z, T=1, C): NIfTI's vector intent
            shape = shape[:3] + shape[4:]
        if len(shape) not in (3, 4):
            raise DataError(f"{path}: expected a 3-D volume (X, Y, Z) or (X, Y, Z, C), got shape {shape}")
        self.shape = (shape[0], shape[1], shape[2])
        self.channels = shape[3] if len(shape) == 4 else 1
        self.dtype = np.dtype(self.image.get_data_dtype())
        proxy: Any = self.image.dataobj  # an ArrayProxy: scaling applied on reading
        slope, inter = proxy.slope, proxy.inter
        if (slope, inter) != (1.0, 0.0):
            self.dtype = np.dtype(np.float32)  # scaled on reading, as read_volume does
        self.header: Any = self.image.header
        self.stream_axis = 2

    def read(self, lo: int, hi: int) -> np.ndarray:
        block = np.asanyarray(self.image.dataobj[:, :, lo:hi])  # reads those slices' bytes only
        if block.ndim == 5:
            block = block[:, :, :, 0]
        block = block[..., None] if block.ndim == 3 else block
        return np.moveaxis(block, -1, 0)  # (C, X, Y, hi - lo)


class _TiffSlabs(_Slabs):
    def __init__(self, path: Path) -> None:
        import tifffile

        self.tif = tifffile.TiffFile(path)
        series = self.tif.series[0]
        axes = str(series.axes).replace("I", "Z").replace("Q", "Z")
        if axes not in ("ZYX", "ZYXS") or len(series.pages) != series.shape[0]:
            self.tif.close()
            raise _NotStreamable(axes)
        self.shape = (int(series.shape[0]), int(series.shape[1]), int(series.shape[2]))
        self.channels = int(series.shape[3]) if axes == "ZYXS" else 1
        self.dtype = np.dtype(series.dtype)
        self.stream_axis = 0
        self.geometry = read_tiff_spacing(path)
        self.unit = tiff_spacing(self.tif)[1]

    def read(self, lo: int, hi: int) -> np.ndarray:
        block = self.tif.asarray(key=list(range(lo, hi)), series=0)
        block = block.reshape(hi - lo, *self.shape[1:], self.channels)  # one page read alone drops its Z axis
        return np.moveaxis(block, -1, 0)  # (C, hi - lo, Y, X)

    def close(self) -> None:
        self.tif.close()


class _NotStreamable(Exception):
    """A TIFF whose pages are not a plain `Z, Y, X` stack: read whole instead."""


def _publish(written: dict[str, Path], out_dir: Path) -> dict[str, Path]:
    """Move the finished outputs (files of the temporary folder) into `out_dir`, under their names."""
    targets = {key: out_dir / path.name for key, path in written.items()}
    for key, path in written.items():
        os.replace(path, targets[key])
    fsync_dir(out_dir)
    return targets


def predict_volume_file(
    predictor: Predictor,
    path: str | Path,
    out_dir: str | Path,
    *,
    tile: int | tuple[int, ...] | None = None,
    overlap: float = 0.25,
    blend: str = "gaussian",
    batch_size: int = 2,
    probs: bool = False,
    overlay: bool = False,
    instances: str | None = None,
    progress: bool | Callable[[int, int], None] = False,
    instance_block: int | None = None,
    instance_margin: int | None = None,
) -> dict[str, Path]:
    """Predict one volume file with a 3D model; write `<stem>.<its suffix>` in `out_dir` (labels in the training
    masks' values, the input's affine / header or spacing) and, when asked, `<stem>_probs.<its suffix>` (float32
    probabilities of every class, the input's geometry; see the module docstring for each format's layout),
    `<stem>_instances.<its suffix>` (object labels, uint16 or int32, the input's geometry) and
    `<stem>_overlay.png` (`unetkit.infer.volume_outputs.draw_planes`). Returns `{"mask": path, ...}` with
    `probs`, `instances` and `overlay` where asked. Nothing is left behind on failure: slabs, raw data and the
    outputs live in a temporary folder of `out_dir` until all are written.

    Args:
        instances: None, `auto` or a method of `unetkit.infer.instances.INSTANCE_METHODS`
            (`unetkit.infer.predictor.resolve_instances`); its settings are those training fitted, if any
            (`unetkit.infer.predictor.fitted_instances`).
        instance_block, instance_margin: the labelling's blocks (`unetkit.infer.instances_tiled.tiled_instances`).
    """
    from unetkit.infer.files import temp_prefix

    path, out_dir = Path(path), Path(out_dir)
    suffix = volume_suffix(path)
    if predictor.spatial_dims != 3:
        raise ValueError(f"{path}: a volume, and the model is {predictor.spatial_dims}D; use a 3D checkpoint")
    method = resolve_instances(predictor, instances)
    if suffix is None:
        raise DataError(f"{path}: not a volume file; a 3D model predicts .nii, .nii.gz, .nrrd or TIFF stacks")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    names = volume_output_names(path)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp_dir = Path(tempfile.mkdtemp(prefix=temp_prefix(volume_stem(path)), dir=out_dir))
    except OSError as err:
        raise write_error(err, out_dir) from err
    asked = {"probs": probs, "overlay": overlay, "instances": method is not None}
    targets = {key: tmp_dir / name for key, name in names.items() if key == "mask" or asked[key]}
    tiling: dict[str, Any] = {"tile": tile, "overlap": overlap, "blend": blend, "batch_size": batch_size}
    tiling["progress"] = progress
    labelling: dict[str, Any] | None = None
    if method is not None:
        labelling = {"method": method, "block": instance_block, "margin": instance_margin}
        labelling.update(fitted_instances(predictor.config, method))  # tuned in training, when it was
    try:
        source: _Slabs | None = None
        if suffix in (".nii", ".nii.gz"):
            source = _NiftiSlabs(path, tmp_dir)
        elif suffix in (".tif", ".tiff"):
            try:
                source = _TiffSlabs(path)
            except _NotStreamable:
                source = None
        if source is None:  # NRRD, and TIFFs that are not a plain stack: whole
            _predict_whole(predictor, path, targets, labelling, **tiling)
        else:
            try:
                _stream(predictor, source, path, targets, tmp_dir, labelling, **tiling)
            finally:
                if isinstance(source, _TiffSlabs):
                    source.close()
        try:
            return _publish(targets, out_dir)
        except OSError as err:
            raise write_error(err, out_dir / names["mask"]) from err
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _stream(
    predictor: Predictor,
    source: _Slabs,
    path: Path,
    targets: dict[str, Path],
    tmp_dir: Path,
    labelling: dict[str, Any] | None,
    *,
    tile: Any,
    overlap: float,
    blend: str,
    batch_size: int,
    progress: Any,
) -> None:
    from unetkit.data.folder import intensity_scale

    if predictor.in_channels is not None and source.channels != predictor.in_channels:
        raise DataError(f"{path}: volume has {source.channels} channels, the model expects {predictor.in_channels}")
    order = (source.stream_axis, *(a for a in range(3) if a != source.stream_axis))
    plan = plan_volume(predictor, source.shape, tile, overlap, blend, order)
    to_engine = (0, *(1 + a for a in order))
    stream = source.stream_axis
    scale = 1.0 if predictor.raw_units else intensity_scale(source.dtype)
    image_planes = Planes(source.shape, stream, np.float32) if "overlay" in targets else None

    def reader(indices: tuple[np.ndarray, ...]) -> torch.Tensor:
        lo, hi = int(indices[0].min()), int(indices[0].max()) + 1
        voxels = source.read(lo, hi)  # (C, ...) in the model's order, the stream axis cut to [lo, hi)
        if image_planes is not None:
            image_planes.add(lo, voxels[0])
        block = voxels.transpose(to_engine)  # (C, rows, ...) in the engine's order
        block = np.take(block, indices[0] - lo, axis=1)
        for axis, idx in enumerate(indices[1:], start=2):
            block = np.take(block, idx, axis=axis)
        if block.dtype.kind == "f" and not np.isfinite(block).all():
            raise DataError(f"{path}: contains NaN or infinite voxel values")
        return torch.from_numpy(np.ascontiguousarray(block))

    label_values = predictor.config.get("mask", {}).get("label_values") or None
    sink = VolumeSink(label_values, order, source.shape, fortran=stream == 2, tmp_dir=tmp_dir,
                      probs="probs" in targets, planes=image_planes is not None, distance=predictor.distance,
                      instances=None if labelling is None else labelling["method"])  # fmt: skip
    try:
        try:
            with _tile_bar(plan, progress) as bar, predictor.for_image(_sample(predictor, source)):
                model = AxisOrder(predictor, order)  # tiles in the model's own axis order
                run_grid(
                    model, reader, plan, sink, batch_size=batch_size, device=predictor.device, progress=bar,
                    scale=scale,
                )  # fmt: skip
        finally:
            sink.close()
        logger.info("%s: %d tiles in %d slabs along axis %d", path, plan.num_tiles, plan.num_slabs, stream)
        if labelling is not None:
            count, instance_dtype = sink.label_instances(**labelling)
            logger.info("%s: %d objects (%s)", path, count, labelling["method"])
    finally:
        sink.close_instances()
    if isinstance(source, _NiftiSlabs):
        write_nifti(targets["mask"], source.header, source.shape, [tmp_dir / "labels.raw"], sink.dtype)
        if "probs" in targets:
            write_nifti(targets["probs"], source.header, source.shape, sink.prob_files(), np.float32, sink.classes)
        if "instances" in targets:
            write_nifti(targets["instances"], source.header, source.shape, [tmp_dir / "instances.raw"], instance_dtype)
        spacing = tuple(float(z) for z in source.header.get_zooms()[:3])
    else:
        assert isinstance(source, _TiffSlabs)
        z, y, x = source.shape
        labels = raw_pages(tmp_dir / "labels.raw", z, (y, x), sink.dtype)
        write_tiff(targets["mask"], source.shape, labels, sink.dtype, source.geometry)
        if "probs" in targets:
            pages = raw_pages(sink.prob_files()[0], z, (sink.classes, y, x), np.float32)
            write_tiff(targets["probs"], source.shape, pages, np.float32, source.geometry, classes=sink.classes,
                       unit=source.unit)  # fmt: skip
        if "instances" in targets:
            pages = raw_pages(tmp_dir / "instances.raw", z, (y, x), instance_dtype)
            write_tiff(targets["instances"], source.shape, pages, instance_dtype, source.geometry)
        spacing = source.geometry
    if image_planes is not None:
        assert sink.planes is not None
        picture = draw_planes(image_planes, sink.planes, _positive(spacing), sink.classes, up=stream == 2)
        save_png(picture, targets["overlay"])


def _positive(spacing: Any) -> tuple[float, ...]:
    """Spacings as the overlay's aspect takes them: zero or non-finite ones (careless headers) count as 1."""
    return tuple(abs(float(s)) if math.isfinite(float(s)) and float(s) != 0 else 1.0 for s in spacing)


def _sample(predictor: Predictor, source: _Slabs) -> torch.Tensor | None:
    """A regular grid of at most `STAT_SAMPLE_VOXELS` voxels, read slice by slice, for per-volume statistics
    (normalisation scheme `image`); None where the checkpoint needs none."""
    if predictor.normalization is None or predictor.normalization.scheme != "image":
        return None
    stride = max(1, math.ceil((math.prod(source.shape) / STAT_SAMPLE_VOXELS) ** (1 / 3)))
    cut = tuple(slice(None, None, stride) if a != source.stream_axis else slice(None) for a in range(3))
    slices = [source.read(i, i + 1)[(slice(None), *cut)] for i in range(0, source.shape[source.stream_axis], stride)]
    return torch.from_numpy(np.concatenate(slices, axis=1 + source.stream_axis).astype(np.float32))


def _predict_whole(
    predictor: Predictor,
    path: Path,
    targets: dict[str, Path],
    labelling: dict[str, Any] | None,
    *,
    tile: Any,
    overlap: float,
    blend: str,
    batch_size: int,
    progress: Any,
) -> None:
    """NRRD (and TIFFs that are not a plain page stack): the volume read whole, every output written whole (the
    instances by one `instances_from_probs` over the whole volume)."""
    volume = read_volume(path)
    array = np.moveaxis(volume.array, -1, 0) if volume.array.ndim == 4 else volume.array
    probs = predict_volume(
        predictor, array, tile=tile, overlap=overlap, blend=blend, batch_size=batch_size, progress=progress
    )
    distance = None
    if predictor.distance:  # the object distance is no class
        probs, distance = probs[:-1], probs[-1]
    if labelling is not None:
        options = {key: value for key, value in labelling.items() if key not in ("method", "block", "margin")}
        method = labelling["method"]
        objects = instances_from_probs(
            probs, method, spatial_dims=3, distance=distance if method == "distance" else None, **options
        )
        count = int(objects.max(initial=0))
        objects = objects.astype(np.uint16 if count <= np.iinfo(np.uint16).max else np.int32)
        write_volume(targets["instances"], objects, like=volume)
        logger.info("%s: %d objects (%s)", path, count, method)
        del objects
    classes = probs.argmax(0)
    values = predictor.config.get("mask", {}).get("label_values")
    labels = np.asarray(values, dtype=np.int64)[classes] if values else classes
    dtype = np.uint8 if labels.max(initial=0) <= 255 else np.uint16
    write_volume(targets["mask"], labels.astype(dtype), like=volume)
    if "probs" in targets:
        if volume.format == "tiff":
            unit = (volume.header or {}).get("unit")
            write_tiff(targets["probs"], volume.shape, (probs[:, z] for z in range(volume.shape[0])), np.float32,
                       volume.spacing, classes=probs.shape[0], unit=unit)  # fmt: skip
        else:
            write_volume(targets["probs"], np.moveaxis(probs, 0, -1).astype(np.float32, copy=False), like=volume)
    if "overlay" in targets:
        image_planes, label_planes = Planes(volume.shape, 0, np.float32), Planes(volume.shape, 0, np.int32)
        image_planes.add(0, np.asarray(array if array.ndim == 3 else array[0]))
        label_planes.add(0, classes)
        picture = draw_planes(image_planes, label_planes, volume.spacing, probs.shape[0], up=volume.format != "tiff")
        save_png(picture, targets["overlay"])
