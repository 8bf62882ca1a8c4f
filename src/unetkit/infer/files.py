"""`predict_file`: one image file (or zarr store) in, masks, probabilities, overlays and instance labels out,
with memory that does not grow with the image.

The input is read band by band (`unetkit.infer.readers`; a reader thread reads the next band while the
current one runs), every output is written band by band (`unetkit.infer.writers`, in a writer thread), and
instance labels are computed block by block from a temporary file of foreground probabilities
(`unetkit.infer.instances_tiled`). What stays in memory is the model, one band of input in the file's own
dtype, the band's weighted sums and, for instances, one block of the watershed.
"""

from __future__ import annotations

import contextlib
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

from unetkit._fs import fsync_dir, public_mode, write_error
from unetkit.infer.instances import foreground_probability
from unetkit.infer.instances_tiled import (
    DEFAULT_BLOCK,
    DEFAULT_MARGIN,
    STRIP_ROWS,
    WATERSHED_BYTES_PER_PIXEL,
    RawPlane,
    tiled_instances,
)
from unetkit.infer.predictor import (
    DEFAULT_OVERLAP,
    Predictor,
    _make_plan,
    _tile_bar,
    fitted_instances,
    resolve_instances,
)
from unetkit.infer.readers import ImageSource, open_source
from unetkit.infer.tiling import TilePlan, run_tiled
from unetkit.infer.writers import LARGE_PIXELS, QUEUE_BANDS, TIFF_TILE, BackgroundSink, open_writer

__all__ = [
    "MASK_FORMATS",
    "band_bytes",
    "OVERLAY_SAMPLE_PIXELS",
    "existing_outputs",
    "output_names",
    "predict_file",
    "remove_dead_temps",
]

logger = logging.getLogger(__name__)

MASK_FORMATS = ("auto", "png", "tif", "zarr")
OVERLAY_SAMPLE_PIXELS = 4 * 2**20  # overlay contrast from the 1st-99th percentiles of at most this many pixels
OVERLAY_ALPHA = 0.45  # as unetkit.viz.overlay
OVERLAY_CHUNK = 1024  # columns of the overlay drawn at a time


def _formats(height: int, width: int, mask_format: str) -> dict[str, str]:
    """File format of each output: the mask's by `mask_format`, side outputs TIFF (or zarr with zarr masks)."""
    if mask_format not in MASK_FORMATS:
        raise ValueError(f"`mask_format` must be one of {', '.join(MASK_FORMATS)}, got {mask_format!r}")
    large = height * width > LARGE_PIXELS
    mask = mask_format if mask_format != "auto" else ("tif" if large else "png")
    side = "zarr" if mask == "zarr" else "tif"
    return {"mask": mask, "probs": side, "overlay": "tif" if large else "png", "instances": side}


def output_names(stem: str, height: int, width: int, mask_format: str = "auto") -> dict[str, str]:
    """The file names `predict_file` writes for an input of that stem and size."""
    formats = _formats(height, width, mask_format)
    suffix = {"mask": "", "probs": "_probs", "overlay": "_overlay", "instances": "_instances"}
    return {key: f"{stem}{suffix[key]}.{fmt}" for key, fmt in formats.items()}


def _display_limits(source: ImageSource) -> tuple[np.floating, np.floating]:
    """The 1st and 99th percentiles of the (scaled) image, as `unetkit.viz.display_image` takes
    them, from every pixel up to `OVERLAY_SAMPLE_PIXELS`, else from a regular grid of that many."""
    stride = max(1, math.ceil(math.sqrt(source.height * source.width / OVERLAY_SAMPLE_PIXELS)))
    rows = []
    for y in range(0, source.height, stride):
        rows.append(source.region(y, y + 1, 0, source.width)[:3, :, ::stride].astype(np.float32))
    sample = np.concatenate(rows, axis=1) * np.float32(source.scale)
    if sample.shape[0] < 3:
        sample = np.repeat(sample[:1], 3, axis=0)
    lo, hi = np.percentile(sample, [1, 99])  # float32, as display_image computes them
    return lo, hi


def _overlay_band(image: np.ndarray, classes: np.ndarray, limits: tuple[np.floating, np.floating]) -> np.ndarray:
    """`(C, h, W)` scaled image and `(h, W)` classes -> `(3, h, W)` uint8: the prediction in green over the
    contrast-stretched image, as `unetkit.viz.overlay` draws it with fixed display limits."""
    from unetkit.viz import TP

    lo, hi = limits
    x = image[:3] if image.shape[0] >= 3 else np.repeat(image[:1], 3, axis=0)
    rgb = (np.clip((x - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8).astype(np.float32)
    fg = classes > 0
    colour = np.asarray(TP, dtype=np.float32)[:, None]
    rgb[:, fg] = (1 - OVERLAY_ALPHA) * rgb[:, fg] + OVERLAY_ALPHA * colour
    return rgb.clip(0, 255).astype(np.uint8)


def band_bytes(plan: TilePlan, channels: int, itemsize: int, classes: int, outputs: dict[str, bool]) -> int:
    """An upper bound of the memory `predict_file` holds besides the model and one batch of tiles.

    While tiles run: the input band, the one read ahead and the decoded TIFF segments they share (three
    bands of `tile + 2 margin + 2 TIFF_TILE` rows, in the file's dtype), the band's weighted sums and their
    weights (`K + 1` float32 planes), its finished rows (`K` planes), what the writer thread gets of them
    (classes, and the foreground for instances, the probabilities for `probs`, `QUEUE_BANDS` waiting, one
    written, one being made) and the tile row each tiled-TIFF writer buffers (as many in flight). Then, for
    instances: one block of the watershed and one strip of the numbering pass (or one block's core, where that is
    larger). Every term is a constant or a number of image columns times a constant: nothing grows with the
    image's height.
    """
    rows, width = plan.tile_h, plan.width
    columns = width + 2 * plan.margin + plan.tile_w
    inputs = 3 * channels * itemsize * (rows + 2 * plan.margin + 2 * TIFF_TILE) * columns
    sums = 4 * (2 * classes + 1) * rows * width
    handed = 1 + 8 * outputs.get("instances", False) + 4 * classes * outputs.get("probs", False)  # fg, distance
    handed += 3 * outputs.get("overlay", False)
    flight = (QUEUE_BANDS + 2) * handed * rows * width
    per_pixel = {"mask": 1, "probs": 4 * classes, "overlay": 3}  # bytes per pixel of each tiled output
    tiled = plan.height * plan.width > LARGE_PIXELS
    buffers = sum(n for key, n in per_pixel.items() if outputs.get(key, key == "mask")) * TIFF_TILE * width
    predicting = inputs + sums + flight + (QUEUE_BANDS + 2) * buffers * tiled
    if not outputs.get("instances", False):
        return predicting
    side = DEFAULT_BLOCK + 2 * DEFAULT_MARGIN
    numbering = (4 + 3 * 8) * max(STRIP_ROWS * width, DEFAULT_BLOCK**2) + (QUEUE_BANDS + 2) * 4 * TIFF_TILE * width
    return max(predicting, WATERSHED_BYTES_PER_PIXEL * side * side + numbering)


def _classes(values: np.ndarray) -> np.ndarray:
    """`(K, h, W)` probabilities -> `(h, W)` class indices; two classes by one comparison (argmax's ties
    go to class 0, and so do they here)."""
    if values.shape[0] == 2:
        return (values[1] > values[0]).view(np.uint8)
    return values.argmax(axis=0)


class _Outputs:
    """The writers of one prediction, fed band by band from the writer thread."""

    def __init__(self, predictor: Predictor, source: ImageSource, tmp_dir: Path, formats: dict[str, str], **want: Any):
        self.source, self.tmp_dir, self.formats, self.want = source, tmp_dir, formats, want
        self.height, self.width = source.height, source.width
        label_values = predictor.config.get("mask", {}).get("label_values") or None
        values = None if label_values is None else np.asarray(label_values, dtype=np.int64)
        self.mask_dtype = np.uint8 if values is None or values.max() <= 255 else np.uint16
        self.lut = None if values is None else values.astype(self.mask_dtype)
        self.writers: dict[str, Any] = {}
        self.image: ImageSource | None = None
        self.foreground: RawPlane | None = None
        self.distance: RawPlane | None = None
        self.split = predictor.distance  # the last output channel is the object distance, not a class
        try:
            self.writers["mask"] = open_writer(
                self.file("mask"), formats["mask"], self.height, self.width, 1, self.mask_dtype
            )
            if want["overlay"]:
                self.image = open_source(source.path, source.channels)  # its own file handle, for this thread
                self.limits = _display_limits(self.image)
                self.writers["overlay"] = open_writer(
                    self.file("overlay"), formats["overlay"], self.height, self.width, 3, np.uint8
                )
            if want["instances"] is not None:
                self.foreground = RawPlane(tmp_dir / "foreground.raw", self.height, self.width, np.float32)
                if want["instances"] == "distance":
                    self.distance = RawPlane(tmp_dir / "distance.raw", self.height, self.width, np.float32)
        except BaseException:
            self.abort()
            raise

    def file(self, key: str) -> Path:
        return self.tmp_dir / f"{key}.{self.formats[key]}"

    def prepare(self, y0: int, y1: int, values: torch.Tensor) -> tuple[Any, ...]:
        """In the device loop's thread: what the writers need of a band, smaller than the band's
        probabilities (classes as uint8, the foreground for instances, the probabilities only if asked)."""
        probs = values.numpy()  # (K, h, W) float32 (then the object distance, for a separation model)
        distance = probs[-1].copy() if self.distance is not None else None
        if self.split:
            probs = probs[:-1]
        if self.lut is None and probs.shape[0] > np.iinfo(self.mask_dtype).max + 1:
            raise ValueError(f"{self.source.path}: {probs.shape[0]} classes do not fit an 8-bit mask")
        cls = _classes(probs).astype(np.uint8 if probs.shape[0] <= 256 else np.int64, copy=False)
        foreground = foreground_probability(probs) if self.foreground is not None else None
        kept = probs.copy() if self.want["probs"] else None  # `values` is reused
        return y0, y1, cls, kept, foreground, distance

    def write(
        self, y0: int, y1: int, cls: np.ndarray, probs: np.ndarray | None, foreground: Any, distance: Any = None
    ) -> None:
        """In the writer thread: encode and write one band of every output."""
        labels = self.lut[cls] if self.lut is not None else cls
        self.writers["mask"].write(labels.astype(self.mask_dtype, copy=False))
        if probs is not None:
            if "probs" not in self.writers:
                self.writers["probs"] = open_writer(
                    self.file("probs"), self.formats["probs"], self.height, self.width, probs.shape[0], np.float32
                )
            self.writers["probs"].write(probs)
        if self.image is not None:  # drawn in column chunks: its float temporaries stay small
            rgb = np.empty((3, y1 - y0, self.width), dtype=np.uint8)
            for x0 in range(0, self.width, OVERLAY_CHUNK):
                x1 = min(self.width, x0 + OVERLAY_CHUNK)
                image = self.image.region(y0, y1, x0, x1).astype(np.float32) * np.float32(self.image.scale)
                rgb[:, :, x0:x1] = _overlay_band(image, cls[:, x0:x1], self.limits)
            self.writers["overlay"].write(rgb)
        if foreground is not None:
            assert self.foreground is not None
            self.foreground.append(foreground)
        if distance is not None:
            assert self.distance is not None
            self.distance.append(distance)

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        if self.image is not None:
            self.image.close()

    def abort(self) -> None:
        for writer in self.writers.values():
            writer.abort()
        if self.image is not None:
            self.image.close()
        if self.foreground is not None:
            self.foreground.close()
        if self.distance is not None:
            self.distance.close()

    def instances(self, method: str, block: int, margin: int, **options: Any) -> None:
        """Object labels from the foreground file, block by block, into `instances.*` (`options`: those of
        `unetkit.infer.instances.instances_from_probs`)."""
        assert self.foreground is not None
        labels = RawPlane(self.tmp_dir / "labels.raw", self.height, self.width, np.int32)
        try:
            count, bands = tiled_instances(
                self.foreground, labels, method=method, block=block, margin=margin, distance=self.distance,
                **options,
            )  # fmt: skip
            dtype = np.uint16 if count <= np.iinfo(np.uint16).max else np.int32
            writer = open_writer(self.file("instances"), self.formats["instances"], self.height, self.width, 1, dtype)
            self.writers["instances"] = writer
            for band in bands:
                writer.write(band.astype(dtype))
            writer.close()
            logger.info("%s: %d objects", self.source.path, count)
        finally:
            labels.close()
            (self.tmp_dir / "labels.raw").unlink(missing_ok=True)
            self.foreground.close()
            (self.tmp_dir / "foreground.raw").unlink(missing_ok=True)
            if self.distance is not None:
                self.distance.close()
                (self.tmp_dir / "distance.raw").unlink(missing_ok=True)


def _publish(tmp: Path, target: Path) -> None:
    """Move a finished output (a file or a zarr folder) into place."""
    if tmp.is_dir():
        if target.exists():
            old = target.with_name(f".{target.name}.tmp-old")
            os.replace(target, old)
            shutil.rmtree(old, ignore_errors=True)
        public_mode(tmp)
        os.replace(tmp, target)
        return
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    public_mode(tmp)
    os.replace(tmp, target)


def predict_file(
    predictor: Predictor,
    path: str | Path,
    out_dir: str | Path,
    *,
    tile: int | None = None,
    overlap: float = DEFAULT_OVERLAP,
    blend: str = "gaussian",
    batch_size: int = 4,
    probs: bool = False,
    overlay: bool = False,
    mask_format: str = "auto",
    instances: str | None = None,
    progress: bool | Callable[[int, int], None] = False,
    instance_block: int = DEFAULT_BLOCK,
    instance_margin: int = DEFAULT_MARGIN,
) -> dict[str, Path]:
    """Predict one image file; write `<stem>.png|.tif|.zarr` (labels in the training masks' values),
    optionally `<stem>_probs.tif|.zarr` (float32 `(K, H, W)`; chunky `(H, W, K)` in tiled TIFF),
    `<stem>_overlay.png|.tif` and, with `instances` set to a method of
    `unetkit.infer.instances.instances_from_probs` (or `auto`: `unetkit.infer.predictor.instance_method`),
    `<stem>_instances.tif|.zarr` (object labels, uint16, or int32 beyond 65535 objects, computed block by block:
    `unetkit.infer.instances_tiled`).

    Formats: `mask_format` `auto` gives PNG up to `LARGE_PIXELS` (64 MP), TIFF above; TIFF outputs above
    `LARGE_PIXELS` are tiled, zlib-compressed BigTIFF, smaller ones uncompressed; `zarr` writes chunked
    zarr stores (`pip install unetkit[zarr]`). Everything is written band by band into a temporary folder
    and moved into place when complete, so a failure leaves nothing behind, and memory does not grow with
    the image (see the module docstring).
    """
    path, out_dir = Path(path), Path(out_dir)
    instances = resolve_instances(predictor, instances)
    with open_source(path, predictor.in_channels) as source:
        formats = _formats(source.height, source.width, mask_format)
        names = output_names(path.stem, source.height, source.width, mask_format)
        plan = _make_plan(predictor, source.height, source.width, tile, overlap, blend)
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            tmp_dir = Path(tempfile.mkdtemp(prefix=temp_prefix(path.stem), dir=out_dir))
        except OSError as err:
            raise write_error(err, out_dir) from err
        try:
            outputs = _Outputs(
                predictor, source, tmp_dir, formats, probs=probs, overlay=overlay, instances=instances
            )  # fmt: skip
            try:
                sink = BackgroundSink(outputs.write)

                def prepared(y0: int, y1: int, values: torch.Tensor) -> None:
                    sink(*outputs.prepare(y0, y1, values))

                scale = 1.0 if predictor.raw_units else source.scale  # a normalisation spec takes raw values
                try:
                    with _tile_bar(plan, progress) as bar, predictor.for_image(_statistics_sample(predictor, source)):
                        run_tiled(
                            predictor, source.read, plan, prepared, batch_size=batch_size, device=predictor.device,
                            progress=bar, scale=scale,
                        )  # fmt: skip
                except BaseException:
                    with contextlib.suppress(BaseException):  # the first error is the one to report
                        sink.close()
                    raise
                sink.close()
                outputs.close()
                if instances is not None:
                    fitted = fitted_instances(predictor.config, instances)  # tuned in training, when it was
                    outputs.instances(instances, instance_block, instance_margin, **fitted)
            except BaseException:
                outputs.abort()
                raise
            asked = {"probs": probs, "overlay": overlay, "instances": instances is not None}
            wanted = ["mask"] + [key for key, on in asked.items() if on]
            written = {key: out_dir / names[key] for key in wanted}
            for key in wanted:
                _publish(outputs.file(key), written[key])
            fsync_dir(out_dir)
        except OSError as err:  # a full disk or a read-only folder: one line naming the output, nothing left behind
            raise write_error(err, out_dir / names["mask"]) from err
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    return written


STAT_BAND_PIXELS = 1 << 24  # pixels read at once for the per-image statistics' subsample


def _statistics_sample(predictor: Predictor, source: ImageSource) -> torch.Tensor | None:
    """The subsample of the raw image (`unetkit.data.normalize.stat_stride`) its per-image normalisation
    statistics come from, read in bands of rows; None when the checkpoint's normalisation needs none."""
    norm = predictor.normalization
    if norm is None or norm.scheme != "image":
        return None
    from unetkit.data.normalize import stat_stride

    step = stat_stride(source.height, source.width)
    rows = max(step, STAT_BAND_PIXELS // max(source.width, 1) // step * step)  # a multiple of the step
    parts = [  # copied out of each band: a strided view would keep the whole band, and so the whole image
        source.region(y0, min(y0 + rows, source.height), 0, source.width)[:, ::step, ::step].copy()
        for y0 in range(0, source.height, rows)
    ]
    return torch.from_numpy(np.concatenate(parts, axis=1).astype(np.float32))


def existing_outputs(out_dir: Path, stem: str, mask_format: str, asked: dict[str, bool]) -> bool:
    """Whether `out_dir` holds every output asked for an input of that stem (`--skip-existing`): the mask
    and each of `probs`, `overlay`, `instances` set in `asked`, in any of the formats they may have."""
    suffix = {"mask": "", "probs": "_probs", "overlay": "_overlay", "instances": "_instances"}
    kinds = {"png", "tif", "zarr"} if mask_format == "auto" else {mask_format}
    formats = {"mask": kinds, "probs": {"tif", "zarr"}, "overlay": {"png", "tif"}, "instances": {"tif", "zarr"}}
    wanted = ["mask"] + [key for key, on in asked.items() if on]
    return all(any((out_dir / f"{stem}{suffix[k]}.{fmt}").exists() for fmt in formats[k]) for k in wanted)


TEMP_PREFIX = "tmp-"  # temporary folders are `.STEM.tmp-PID-XXXX`: the process that owns them is known


def temp_prefix(stem: str) -> str:
    """The prefix of this process's temporary folders for an input of that stem."""
    return f".{stem}.{TEMP_PREFIX}{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_dead_temps(out_dir: Path) -> list[Path]:
    """Remove the temporary folders and files (`unetkit._fs.atomic_file`'s) that killed predictions left in
    `out_dir` (those whose process is no longer running; others' live ones are kept); returns them, and logs
    each."""
    removed: list[Path] = []
    if not out_dir.is_dir():
        return removed
    for entry in sorted(out_dir.glob(f".*.{TEMP_PREFIX}*-*")):
        owner = entry.name.rsplit(f".{TEMP_PREFIX}", 1)[1].split("-", 1)[0]
        if entry.is_symlink() or not owner.isdigit() or _alive(int(owner)):
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        logger.warning("removed %s, left by a prediction that was killed (process %s)", entry, owner)
        removed.append(entry)
    return removed
