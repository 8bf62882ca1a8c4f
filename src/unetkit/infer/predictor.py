"""Prediction on images of any size: a model (or any predictor) and an image in, probabilities or labels
out, through the tiling engine; and the file-to-file form behind `unetkit predict`.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from unetkit._fs import fsync_dir, preallocate, public_mode, write_error
from unetkit.data.errors import DataError
from unetkit.infer.tiling import BLEND_MODES, TilePlan, plan_tiles, run_tiled
from unetkit.models.inference import context_margin

__all__ = ["DEFAULT_OVERLAP", "DEFAULT_TILE", "Predictor", "predict", "predict_file", "predict_labels"]

logger = logging.getLogger(__name__)

DEFAULT_TILE = 512  # input side for padded models; the paper's 388 output side for unpadded ones
DEFAULT_CLASSIC_TILE = 388
DEFAULT_OVERLAP = 0.25
LARGE_PIXELS = 64 * 1024 * 1024  # above this, masks are written as tiled-by-rows TIFF, never held whole


def _dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th of the 8 flips / quarter turns of the last two axes (k = 0 is the identity)."""
    if k >= 4:
        x = x.flip(-1)
    return torch.rot90(x, k % 4, dims=(-2, -1))


def _undo_dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    x = torch.rot90(x, -(k % 4), dims=(-2, -1))
    return x.flip(-1) if k >= 4 else x


class Predictor:
    """Wraps a model, or any callable `(B, C, h, w) -> (B, K, h', w')` such as an exported model, with
    what the tiler needs: preprocessing, output activation, test-time augmentation and mixed precision.

    Args:
        model: an `nn.Module` (a loaded checkpoint brings its normalisation and label values; it is moved
            to `device`, put in eval mode and in channels-last memory format, in place) or a callable.
        device: where tiles run; default: the model's device, else CUDA when available, else CPU.
        tta: average the 8 flips / quarter turns (4 flips where a tile is not square).
        activation: `auto` (sigmoid for one output channel, as two probabilities; softmax otherwise),
            `sigmoid`, `softmax` or `none` (raw outputs).
        amp: bf16 autocast on CUDA (default) or not.
        mean, std: normalisation; default from `model.checkpoint_config["preprocess"]`, else none.
    """

    def __init__(
        self,
        model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
        *,
        device: str | torch.device | None = None,
        tta: bool = False,
        activation: str = "auto",
        amp: bool = True,
        mean: list[float] | None = None,
        std: list[float] | None = None,
    ) -> None:
        if activation not in ("auto", "sigmoid", "softmax", "none"):
            raise ValueError(f"`activation` must be auto, sigmoid, softmax or none, got {activation!r}")
        self.model = model
        config = getattr(model, "checkpoint_config", None) or {}
        self.config: dict[str, Any] = config
        preprocess = config.get("preprocess", {})
        mean = mean if mean is not None else preprocess.get("mean")
        std = std if std is not None else preprocess.get("std")
        if device is None:
            params = list(model.parameters()) if isinstance(model, nn.Module) else []
            device = params[0].device if params else ("cuda" if torch.cuda.is_available() else "cpu")
        self.device = torch.device(device)
        self.channels_last = isinstance(model, nn.Module)
        if isinstance(model, nn.Module):  # in place, as `model.eval()`: channels-last is ~2x faster on CPU too
            model.to(self.device).eval()
            model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.tta = tta
        self.activation = activation
        self.amp = amp and self.device.type == "cuda"
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32, device=self.device)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32, device=self.device)
        self.margin = context_margin(model) or int(getattr(model, "margin", 0) or 0)
        self.align = int(getattr(model, "downsample_factor", 1) or 1)
        self.in_channels: int | None = getattr(model, "in_channels", None)
        if self.in_channels is None and self.mean is not None:
            self.in_channels = int(self.mean.numel())

    def legal_output(self, n: int) -> int:
        """The smallest legal output side `>= n` (unpadded models); `n` for padded ones."""
        if self.margin == 0:
            return n
        valid: Callable[[int], int] = self.model.valid_input_size  # type: ignore[union-attr,assignment]
        return int(valid(n + 2 * self.margin)) - 2 * self.margin

    def _activate(self, out: torch.Tensor) -> torch.Tensor:
        out = out.float()
        kind = self.activation
        if kind == "auto":
            kind = "sigmoid" if out.shape[1] == 1 else "softmax"
        if kind == "sigmoid":
            p = torch.sigmoid(out)
            return torch.cat([1 - p, p], dim=1) if out.shape[1] == 1 else p
        if kind == "softmax":
            return torch.softmax(out, dim=1)
        return out

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, C, h, w)` raw pixels on `self.device` -> `(B, K, h - 2m, w - 2m)` probabilities."""
        if self.mean is not None and self.std is not None:
            x = (x - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)
        square = x.shape[-1] == x.shape[-2]
        ks = (range(8) if square else (0, 2, 4, 6)) if self.tta else (0,)
        total = None
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else nullcontext()
        for k in ks:
            with autocast:
                x_k = _dihedral(x, k) if k else x  # k = 0: no copy
                memory = torch.channels_last if self.channels_last else torch.contiguous_format
                out = self.model(x_k.contiguous(memory_format=memory))
            out = self._activate(out)
            out = _undo_dihedral(out, k) if k else out
            total = out if total is None else total + out
        assert total is not None
        return total if len(ks) == 1 else total / len(ks)


def _as_chw(image: np.ndarray | torch.Tensor, channels: int | None, name: str = "image") -> torch.Tensor:
    """`(H, W)`, `(C, H, W)` or `(H, W, C)` -> float `(C, H, W)` on the CPU."""
    from unetkit.data.folder import intensity_scale

    array = image.numpy() if isinstance(image, torch.Tensor) and not image.is_floating_point() else image
    scale = intensity_scale(array.dtype) if isinstance(array, np.ndarray) else 1.0
    x = image if isinstance(image, torch.Tensor) else torch.from_numpy(np.array(image, copy=True))
    if x.ndim == 2:
        x = x[None]
    elif x.ndim == 3:
        if (channels is not None and x.shape[0] != channels and x.shape[-1] == channels) or (
            channels is None and x.shape[-1] in (1, 3, 4) and x.shape[0] not in (1, 3, 4)
        ):
            x = x.permute(2, 0, 1)
    else:
        raise ValueError(f"`{name}` must be (H, W), (C, H, W) or (H, W, C), got shape {tuple(x.shape)}")
    if channels is not None and x.shape[0] != channels:
        raise ValueError(f"`{name}` has {x.shape[0]} channels, the model expects {channels}")
    if x.shape[-1] == 0 or x.shape[-2] == 0:
        raise ValueError(f"`{name}` is empty: shape {tuple(x.shape)}")
    x = x.float() * scale if scale != 1.0 else x.float()
    if not torch.isfinite(x).all():
        raise ValueError(f"`{name}` holds NaN or infinite values")
    return x


def _index(idx: np.ndarray) -> slice | torch.Tensor:
    """A slice where `idx` is a run of consecutive indices (a view, no copy), else the indices (a gather)."""
    if idx.size and int(idx[-1]) - int(idx[0]) == idx.size - 1 and bool((np.diff(idx) == 1).all()):
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return torch.from_numpy(idx)


def _make_plan(predictor: Predictor, height: int, width: int, tile: int | None, overlap: float, blend: str) -> TilePlan:
    if tile is None:
        tile = DEFAULT_CLASSIC_TILE if predictor.margin else DEFAULT_TILE
    if not isinstance(tile, int) or isinstance(tile, bool) or tile < 1:
        raise ValueError(f"`tile` must be a positive integer, got {tile!r}")
    smallest = predictor.legal_output(1) if predictor.margin else predictor.align
    if tile < smallest:
        what = "output tile" if predictor.margin else "tile (its down-sampling factor)"
        raise ValueError(f"`tile` {tile} is smaller than the model's smallest {what}, {smallest}")
    return plan_tiles(
        height, width, tile=tile, overlap=overlap, margin=predictor.margin, blend=blend,
        legal_output=predictor.legal_output, align=predictor.align,
    )  # fmt: skip


def predict(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor] | Predictor,
    image: np.ndarray | torch.Tensor,
    *,
    tile: int | None = None,
    overlap: float = DEFAULT_OVERLAP,
    blend: str = "gaussian",
    tta: bool = False,
    batch_size: int = 4,
    device: str | torch.device | None = None,
    activation: str = "auto",
    progress: bool = False,
) -> np.ndarray:
    """Probabilities `(K, H, W)` for an image of any size, tile by tile.

    Args:
        model: a model (e.g. from `load_model`, whose normalisation is applied), a callable predictor
            (e.g. an exported model), or a `Predictor`.
        image: raw pixels, `(H, W)`, `(C, H, W)` or `(H, W, C)`; integer images are scaled to `[0, 1]`
            by their dtype's range, as in training (`unetkit.data.folder.intensity_scale`).
        tile: output tile side for unpadded models (default 388, the paper's), tile side for padded ones
            (default 512).
        overlap: fraction shared by neighbouring tiles of padded models, in `[0, 1)`.
        blend: `gaussian`, `constant` or `center` (padded models).
        tta: average the 8 flips / quarter turns.
        batch_size: tiles per forward pass.
        device: where the tiles run.
        activation: see `Predictor`; `none` returns the raw, blended outputs.
        progress: a progress bar over tiles.
    """
    if blend not in BLEND_MODES:
        raise ValueError(f"`blend` must be one of {', '.join(BLEND_MODES)}, got {blend!r}")
    pred = model if isinstance(model, Predictor) else Predictor(model, device=device, tta=tta, activation=activation)
    x = _as_chw(image, pred.in_channels)
    height, width = x.shape[-2:]
    plan = _make_plan(pred, height, width, tile, overlap, blend)
    out: np.ndarray | None = None

    def sink(y0: int, y1: int, values: torch.Tensor) -> None:
        nonlocal out
        if out is None:
            out = np.empty((values.shape[0], height, width), dtype=np.float32)
        out[:, y0:y1] = values.numpy()

    def reader(rows: np.ndarray, cols: np.ndarray) -> torch.Tensor:
        return x[:, _index(rows)][:, :, _index(cols)]

    with _tile_bar(plan, progress) as bar:
        run_tiled(pred, reader, plan, sink, batch_size=batch_size, device=pred.device, progress=bar)
    assert out is not None
    return out


def predict_labels(model: nn.Module | Predictor, image: np.ndarray | torch.Tensor, **kwargs: Any) -> np.ndarray:
    """Class indices `(H, W)` (int64): the argmax of `predict`."""
    return predict(model, image, **kwargs).argmax(axis=0)


class _tile_bar:
    """A tqdm bar over tiles (only when asked and the image has several tiles)."""

    def __init__(self, plan: TilePlan, enabled: bool) -> None:
        self.total = plan.num_tiles
        self.bar = None
        if enabled and self.total > 1:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, desc="tiles", leave=False, dynamic_ncols=True)

    def __enter__(self) -> Callable[[int], None] | None:
        if self.bar is None:
            return None
        bar = self.bar

        def update(done: int) -> None:
            bar.update(done - bar.n)

        return update

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


# --- files -----------------------------------------------------------------------------------------


class _ImageSource:
    """An input image read whole, or, for large uncompressed TIFFs, band by band from the file."""

    def __init__(self, path: Path, channels: int | None) -> None:
        self.path = path
        self.array: np.ndarray | None = None
        self.memmap: np.ndarray | None = None
        if path.suffix.lower() in (".tif", ".tiff"):
            self.memmap = _tiff_memmap(path)
        if self.memmap is None:
            from unetkit.data.io import read_image

            self.array = read_image(path)
        source = self.memmap if self.memmap is not None else self.array
        assert source is not None
        shape = source.shape
        if len(shape) == 2:
            self.channels_last, self.channels, self.height, self.width = True, 1, shape[0], shape[1]
        elif len(shape) == 3 and self.array is None and shape[0] <= 16 < shape[-1]:  # planar TIFF (C, H, W)
            self.channels_last, self.channels, self.height, self.width = False, shape[0], shape[1], shape[2]
        elif len(shape) == 3:  # read_image gives (H, W, C)
            self.channels_last, self.channels, self.height, self.width = True, shape[2], shape[0], shape[1]
        else:
            raise DataError(f"{path}: expected a 2-D image, got shape {shape}")
        self.drop_alpha = self.channels == 4 and channels == 3 and self.channels_last  # RGBA -> RGB, as in training
        if self.drop_alpha:
            self.channels = 3
        if channels is not None and self.channels != channels:
            raise DataError(f"{path}: image has {self.channels} channels, the model expects {channels}")
        from unetkit.data.folder import intensity_scale

        self.scale = intensity_scale(source.dtype)
        if self.height == 0 or self.width == 0:
            raise DataError(f"{path}: empty image ({self.height}x{self.width})")

    def read(self, rows: np.ndarray, cols: np.ndarray) -> torch.Tensor:
        source = self.memmap if self.memmap is not None else self.array
        assert source is not None
        lo, hi = int(rows.min()), int(rows.max()) + 1
        if self.channels_last:
            block = np.asarray(source[lo:hi] if source.ndim == 3 else source[lo:hi, :, None])
            block = block[rows - lo][:, cols]
            if self.drop_alpha:
                block = block[..., :3]
            out = torch.from_numpy(np.ascontiguousarray(np.moveaxis(block, -1, 0)))
        else:
            block = np.asarray(source[:, lo:hi])[:, rows - lo][:, :, cols]
            out = torch.from_numpy(np.ascontiguousarray(block))
        out = out.float()
        if self.scale != 1.0:
            out = out * self.scale
        if not torch.isfinite(out).all():
            raise DataError(f"{self.path}: contains NaN or infinite pixel values")
        return out

    def whole(self) -> np.ndarray:
        """`(C, H, W)` float32 (for overlays of images that fit in memory)."""
        rows, cols = np.arange(self.height), np.arange(self.width)
        return self.read(rows, cols).numpy()


def _tiff_memmap(path: Path) -> np.ndarray | None:
    """A read-only memory map of an uncompressed, contiguous single-series TIFF; None otherwise."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if len(tif.series) != 1 or len(tif.series[0].pages) != 1:
                return None
            page = tif.pages[0]
            if page.compression != 1 or not page.is_contiguous or page.dtype is None:
                return None
        return tifffile.memmap(path, mode="r")
    except Exception:  # anything unusual: let the whole-image reader report it
        return None


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
    progress: bool = False,
) -> dict[str, Path]:
    """Predict one image file; write `<stem>.png|.tif` (labels in the training masks' values),
    optionally `<stem>_probs.tif` (float32, `(K, H, W)`), `<stem>_overlay.png` and, with `instances` set
    to a method of `unetkit.infer.instances.instances_from_probs`, `<stem>_instances.tif` (object labels,
    uint16, or int32 beyond 65535 objects; the foreground probability is then held whole in memory).

    Outputs are streamed row band by row band into temporary files and renamed into place only when
    complete, so a failure leaves nothing behind; large images are never held whole in memory when
    they come as uncompressed TIFF and the mask is written as TIFF.
    """
    import tifffile

    path, out_dir = Path(path), Path(out_dir)
    if mask_format not in ("auto", "png", "tif"):
        raise ValueError(f"`mask_format` must be auto, png or tif, got {mask_format!r}")
    from unetkit.infer.instances import INSTANCE_METHODS, foreground_probability, instances_from_probs

    if instances is not None and instances not in INSTANCE_METHODS:
        raise ValueError(f"`instances` must be None or one of {', '.join(INSTANCE_METHODS)}, got {instances!r}")
    source = _ImageSource(path, predictor.in_channels)
    height, width = source.height, source.width
    plan = _make_plan(predictor, height, width, tile, overlap, blend)
    label_values = predictor.config.get("mask", {}).get("label_values") or None
    fmt = mask_format if mask_format != "auto" else ("tif" if height * width > LARGE_PIXELS else "png")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.stem}.tmp", dir=out_dir))
    except OSError as err:
        raise write_error(err, out_dir) from err
    written: dict[str, Path] = {}
    try:
        lut: np.ndarray | None = None
        labels_dtype: type = np.uint8
        if label_values is not None:
            lut = np.asarray(label_values, dtype=np.int64)
            labels_dtype = np.uint8 if lut.max() <= 255 else np.uint16
        mask_tmp = tmp_dir / f"mask.{fmt}"
        labels_mm: np.memmap | None = None
        labels_mem: np.ndarray | None = None
        if fmt == "tif":
            labels_mm = tifffile.memmap(mask_tmp, shape=(height, width), dtype=labels_dtype)
            preallocate(mask_tmp, mask_tmp.stat().st_size)  # a full disk fails now, not as SIGBUS mid-write
        else:
            labels_mem = np.empty((height, width), dtype=labels_dtype)
        probs_mm: np.memmap | None = None
        foreground = np.empty((height, width), dtype=np.float32) if instances is not None else None

        def sink(y0: int, y1: int, values: torch.Tensor) -> None:
            nonlocal probs_mm
            cls = values.argmax(dim=0).numpy()
            lab = lut[cls] if lut is not None else cls
            if lut is None and lab.max() > np.iinfo(labels_dtype).max:
                raise ValueError(f"{path}: {values.shape[0]} classes do not fit an 8-bit mask")
            target = labels_mm if labels_mm is not None else labels_mem
            assert target is not None
            target[y0:y1] = lab.astype(labels_dtype)
            if probs:
                if probs_mm is None:
                    probs_mm = tifffile.memmap(
                        tmp_dir / "probs.tif", shape=(values.shape[0], height, width), dtype=np.float32
                    )
                    preallocate(tmp_dir / "probs.tif", (tmp_dir / "probs.tif").stat().st_size)
                probs_mm[:, y0:y1] = values.numpy()
            if foreground is not None:
                foreground[y0:y1] = foreground_probability(values.numpy())

        with _tile_bar(plan, progress) as bar:
            run_tiled(predictor, source.read, plan, sink, batch_size=batch_size, device=predictor.device, progress=bar)
        if labels_mm is not None:
            labels_mm.flush()
            del labels_mm
        else:
            from unetkit.data.io import write_image

            assert labels_mem is not None
            write_image(mask_tmp, labels_mem)
        final = out_dir / f"{path.stem}.{fmt}"
        written["mask"] = final
        if probs:
            assert probs_mm is not None
            probs_mm.flush()
            del probs_mm
            written["probs"] = out_dir / f"{path.stem}_probs.tif"
        if overlay:
            from unetkit import viz

            mask = tifffile.imread(mask_tmp) if fmt == "tif" else labels_mem
            assert mask is not None
            classes = np.searchsorted(lut, mask) if lut is not None else mask
            viz.save_png(viz.overlay(source.whole(), classes), tmp_dir / "overlay.png")
            written["overlay"] = out_dir / f"{path.stem}_overlay.png"
        if foreground is not None:
            assert instances is not None
            objects = instances_from_probs(foreground, instances)
            objects_dtype = np.uint16 if objects.max(initial=0) <= np.iinfo(np.uint16).max else np.int32
            tifffile.imwrite(tmp_dir / "instances.tif", objects.astype(objects_dtype), compression="zlib")
            written["instances"] = out_dir / f"{path.stem}_instances.tif"
        names = {"mask": f"mask.{fmt}", "probs": "probs.tif", "overlay": "overlay.png", "instances": "instances.tif"}
        for key, target in written.items():
            name = names[key]
            with open(tmp_dir / name, "rb") as handle:
                os.fsync(handle.fileno())
            public_mode(tmp_dir / name)
            os.replace(tmp_dir / name, target)
        fsync_dir(out_dir)
    except OSError as err:  # a full disk or a read-only folder: one line naming the output, nothing left behind
        raise write_error(err, out_dir / f"{path.stem}.{fmt}") from err
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return written
