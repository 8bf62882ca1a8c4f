"""`predict_volume_file`: one volume file in, its label volume out with the input's geometry, in memory that
does not grow with the volume.

- **NIfTI** (`.nii`, `.nii.gz`): slabs are read along the file's slowest axis (its last, `k`) through
  nibabel's array proxy, which reads exactly those bytes of an uncompressed file (a `.nii.gz` is first
  decompressed, stream-wise, into the run's temporary folder: gzip cannot seek back). Labels go slab by slab
  into a raw temporary file in the file's order; the mask is then that file behind the input's own header
  (affine, orientation codes, units; data type uint8 / uint16, no scaling), gzipped for `.nii.gz`.
- **TIFF stacks** (`Z, Y, X` pages): slabs are ranges of pages, read page by page; the mask is a
  zlib-compressed stack written page by page, with the input's spacing.
- **NRRD**: read and written whole (`unetkit.data.volume`), for want of a reader by range.

The model sees every tile in its own axis order (`unetkit.infer.volume.AxisOrder`); streaming along `k`
changes the order in which tiles run, not their result. Memory: the model, one slab of input in the file's
dtype (and the one read ahead) and the slab's weighted sums, `(K + 1) x tile x` the other two axes, float32
(`unetkit.infer.grid.slab_bytes`).
"""

from __future__ import annotations

import gzip
import logging
import math
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from unetkit._fs import atomic_file, write_error
from unetkit.data.errors import DataError
from unetkit.data.volume import GZIP_LEVEL, read_tiff_spacing, read_volume, volume_stem, volume_suffix, write_volume
from unetkit.infer.grid import run_grid
from unetkit.infer.predictor import Predictor, _tile_bar
from unetkit.infer.volume import AxisOrder, plan_volume, predict_volume

__all__ = ["STREAMED_SUFFIXES", "predict_volume_file", "volume_mask_name"]

logger = logging.getLogger(__name__)

STREAMED_SUFFIXES = (".nii.gz", ".nii", ".tif", ".tiff")
COPY_CHUNK = 16 * 2**20  # bytes per read when copying raw label data into the output
STAT_SAMPLE_VOXELS = 2**22  # per-volume normalisation statistics from at most about this many voxels


def volume_mask_name(path: str | Path) -> str:
    """The mask's file name: the input's stem and format (`case.nii.gz` -> `case.nii.gz` in `--out`)."""
    suffix = volume_suffix(path)
    if suffix is None:
        raise DataError(f"{path}: not a volume file (.nii, .nii.gz, .nrrd, .tif, .tiff)")
    return f"{volume_stem(path)}{suffix.lower()}"


class _Slabs:
    """A volume read slab by slab along `stream_axis`: `read(lo, hi)` gives `(C, S0, S1, S2)` voxels (model
    order) with the stream axis cut to `[lo, hi)`, in the file's dtype."""

    shape: tuple[int, int, int]
    channels: int
    dtype: np.dtype
    stream_axis: int

    def read(self, lo: int, hi: int) -> np.ndarray:
        raise NotImplementedError


class _NiftiSlabs(_Slabs):
    def __init__(self, path: Path, tmp_dir: Path) -> None:
        import nibabel

        if volume_suffix(path) == ".nii.gz":  # decompress once: reading by range in a gzip stream re-reads it
            raw = tmp_dir / "input.nii"
            with gzip.open(path, "rb") as src, open(raw, "wb") as dst:
                shutil.copyfileobj(src, dst, COPY_CHUNK)
            path = raw
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

    def read(self, lo: int, hi: int) -> np.ndarray:
        block = self.tif.asarray(key=list(range(lo, hi)), series=0)
        block = block.reshape(hi - lo, *self.shape[1:], self.channels)  # one page read alone drops its Z axis
        return np.moveaxis(block, -1, 0)  # (C, hi - lo, Y, X)

    def close(self) -> None:
        self.tif.close()


class _NotStreamable(Exception):
    """A TIFF whose pages are not a plain `Z, Y, X` stack: read whole instead."""


class _LabelSink:
    """Turns finished rows into labels and appends them, in the file's byte order, to a raw temporary file."""

    def __init__(self, predictor: Predictor, source: _Slabs, order: tuple[int, ...], raw: Path) -> None:
        label_values = predictor.config.get("mask", {}).get("label_values") or None
        values = None if label_values is None else np.asarray(label_values, dtype=np.int64)
        self.dtype = np.uint8 if values is None or values.max() <= 255 else np.uint16
        self.lut = None if values is None else values.astype(self.dtype)
        self.to_model = tuple(order.index(a) for a in range(3))
        self.fortran = source.stream_axis == 2  # NIfTI: first index fastest
        self.file: BinaryIO = open(raw, "wb")  # noqa: SIM115  # closed by `close`

    def __call__(self, r0: int, r1: int, values: torch.Tensor) -> None:
        probs = values.numpy()  # (K, rows, ...) in the engine's order
        if self.lut is None and probs.shape[0] > 256:
            raise ValueError(f"{probs.shape[0]} classes do not fit an 8-bit mask; give the checkpoint label values")
        classes = (probs[1] > probs[0]).view(np.uint8) if probs.shape[0] == 2 else probs.argmax(0)
        labels = self.lut[classes] if self.lut is not None else classes.astype(self.dtype)
        labels = labels.transpose(self.to_model)  # model (file) order, the stream axis cut to the slab
        data = labels.transpose(2, 1, 0) if self.fortran else labels
        np.ascontiguousarray(data, dtype=self.dtype).tofile(self.file)

    def close(self) -> None:
        self.file.close()


def _chunks(raw: Path) -> Iterator[bytes]:
    with open(raw, "rb") as file:
        while chunk := file.read(COPY_CHUNK):
            yield chunk


def _write_nifti(target: Path, source: _NiftiSlabs, raw: Path, dtype: Any) -> None:
    """The input's header, made a 3-D label volume of `dtype`, then the raw labels; gzipped for `.nii.gz`."""
    header = source.header.copy()
    header.set_data_shape(source.shape)
    header.set_data_dtype(dtype)
    header.set_slope_inter(1.0, 0.0)  # labels as they are, never rescaled
    header.set_intent("none")
    offset = int(header.single_vox_offset) + int(header.extensions.get_sizeondisk())  # header, extensions, data
    header.set_data_offset(offset)
    gz = volume_suffix(target) == ".nii.gz"
    with atomic_file(target) as tmp, gzip.open(tmp, "wb", compresslevel=GZIP_LEVEL) if gz else open(tmp, "wb") as out:
        header.write_to(out)
        out.write(b"\0" * (offset - out.tell()))
        for chunk in _chunks(raw):
            out.write(chunk)


def _write_tiff(target: Path, shape: tuple[int, int, int], raw: Path, dtype: Any, spacing: Any) -> None:
    import tifffile

    page = shape[1] * shape[2] * np.dtype(dtype).itemsize

    def pages() -> Iterator[np.ndarray]:
        with open(raw, "rb") as file:
            for _ in range(shape[0]):
                yield np.frombuffer(file.read(page), dtype=dtype).reshape(shape[1:])

    resolution = (1.0 / spacing[2], 1.0 / spacing[1])
    with atomic_file(target) as tmp:
        tifffile.imwrite(
            tmp, pages(), shape=shape, dtype=dtype, resolution=resolution, compression="zlib",
            metadata={"axes": "ZYX", "spacing": list(spacing)},
        )  # fmt: skip


def predict_volume_file(
    predictor: Predictor,
    path: str | Path,
    out_dir: str | Path,
    *,
    tile: int | tuple[int, ...] | None = None,
    overlap: float = 0.25,
    blend: str = "gaussian",
    batch_size: int = 2,
    progress: bool | Callable[[int, int], None] = False,
) -> dict[str, Path]:
    """Predict one volume file with a 3D model; write `<stem>.<its suffix>` in `out_dir` (labels in the training
    masks' values, the input's affine / header or spacing). Returns `{"mask": path}`. Nothing is left behind on
    failure: slabs and labels live in a temporary folder of `out_dir`, and the mask is written atomically.
    """
    from unetkit.infer.files import temp_prefix

    path, out_dir = Path(path), Path(out_dir)
    suffix = volume_suffix(path)
    if predictor.spatial_dims != 3:
        raise ValueError(f"{path}: a volume, and the model is {predictor.spatial_dims}D; use a 3D checkpoint")
    if suffix is None:
        raise DataError(f"{path}: not a volume file; a 3D model predicts .nii, .nii.gz, .nrrd or TIFF stacks")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    target = out_dir / volume_mask_name(path)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp_dir = Path(tempfile.mkdtemp(prefix=temp_prefix(volume_stem(path)), dir=out_dir))
    except OSError as err:
        raise write_error(err, out_dir) from err
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
            return {"mask": _predict_whole(predictor, path, target, tile, overlap, blend, batch_size, progress)}
        try:
            _stream(predictor, source, path, target, tmp_dir, tile, overlap, blend, batch_size, progress)
        finally:
            if isinstance(source, _TiffSlabs):
                source.close()
        return {"mask": target}
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _stream(
    predictor: Predictor,
    source: _Slabs,
    path: Path,
    target: Path,
    tmp_dir: Path,
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

    def reader(indices: tuple[np.ndarray, ...]) -> torch.Tensor:
        lo, hi = int(indices[0].min()), int(indices[0].max()) + 1
        block = source.read(lo, hi).transpose(to_engine)  # (C, rows, ...) in the engine's order
        block = np.take(block, indices[0] - lo, axis=1)
        for axis, idx in enumerate(indices[1:], start=2):
            block = np.take(block, idx, axis=axis)
        if block.dtype.kind == "f" and not np.isfinite(block).all():
            raise DataError(f"{path}: contains NaN or infinite voxel values")
        return torch.from_numpy(np.ascontiguousarray(block))

    sink = _LabelSink(predictor, source, order, tmp_dir / "labels.raw")
    try:
        with _tile_bar(plan, progress) as bar, predictor.for_image(_sample(predictor, source)):
            model = AxisOrder(predictor, order)  # tiles in the model's own axis order
            run_grid(
                model, reader, plan, sink, batch_size=batch_size, device=predictor.device, progress=bar, scale=scale
            )
    finally:
        sink.close()
    logger.info("%s: %d tiles in %d slabs along axis %d", path, plan.num_tiles, plan.num_slabs, stream)
    if isinstance(source, _NiftiSlabs):
        _write_nifti(target, source, tmp_dir / "labels.raw", sink.dtype)
    else:
        assert isinstance(source, _TiffSlabs)
        _write_tiff(target, source.shape, tmp_dir / "labels.raw", sink.dtype, source.geometry)


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
    target: Path,
    tile: Any,
    overlap: float,
    blend: str,
    batch_size: int,
    progress: Any,
) -> Path:
    """NRRD (and TIFFs that are not a plain page stack): the volume read whole, labels written whole."""
    volume = read_volume(path)
    array = np.moveaxis(volume.array, -1, 0) if volume.array.ndim == 4 else volume.array
    probs = predict_volume(
        predictor, array, tile=tile, overlap=overlap, blend=blend, batch_size=batch_size, progress=progress
    )
    classes = probs.argmax(0)
    values = predictor.config.get("mask", {}).get("label_values")
    labels = np.asarray(values, dtype=np.int64)[classes] if values else classes
    dtype = np.uint8 if labels.max(initial=0) <= 255 else np.uint16
    return write_volume(target, labels.astype(dtype), like=volume)
