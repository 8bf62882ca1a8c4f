"""Prediction on images of any size: a model (or any predictor) and an image in, probabilities or labels
out, through the tiling engine; and the file-to-file form behind `unetkit predict`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np
import torch
from torch import nn

from unetkit._device import resolve_device
from unetkit.infer.grid import _index, _tile_bar
from unetkit.infer.instances import INSTANCE_METHODS
from unetkit.infer.tiling import BLEND_MODES, TilePlan, plan_tiles, run_tiled
from unetkit.models.inference import context_margin, context_margins, model_spatial_dims, valid_input_shape

__all__ = [
    "DEFAULT_OVERLAP",
    "DEFAULT_TILE",
    "Predictor",
    "fitted_instances",
    "instance_method",
    "predict",
    "predict_labels",
    "resolve_instances",
]

logger = logging.getLogger(__name__)

DEFAULT_TILE = 512  # input side for padded models; the paper's 388 output side for unpadded ones
DEFAULT_CLASSIC_TILE = 388
DEFAULT_OVERLAP = 0.25


def _dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th of the 8 flips / quarter turns of the last two axes (k = 0 is the identity)."""
    if k >= 4:
        x = x.flip(-1)
    return torch.rot90(x, k % 4, dims=(-2, -1))


def _undo_dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    x = torch.rot90(x, -(k % 4), dims=(-2, -1))
    return x.flip(-1) if k >= 4 else x


def _axis_flips(k: int) -> list[int]:
    """The axes (of a 3D tile) the k-th of the 8 axis flips mirrors: bit `i` of k flips spatial axis `i`."""
    return [2 + i for i in range(3) if k >> i & 1]


class Predictor:
    """Wraps a model, or any callable `(B, C, h, w) -> (B, K, h', w')` such as an exported model, with
    what the tiler needs: preprocessing, output activation, test-time augmentation and mixed precision.

    Args:
        model: an `nn.Module` (a loaded checkpoint brings its normalisation and label values; it is moved
            to `device`, put in eval mode and in channels-last memory format, in place) or a callable.
        device: where tiles run; default: the model's device, else CUDA when available, else CPU.
        tta: average the 8 flips / quarter turns (4 flips where a tile is not square); for a 3D model the 8
            flips of the three axes (quarter turns would mix axes of different spacing).
        activation: `auto` (sigmoid for one output channel, as two probabilities; softmax otherwise),
            `sigmoid`, `softmax` or `none` (raw outputs). A checkpoint trained with `separation: distance` has one
            more output, the object distance: it gets a sigmoid and stays the last channel.
        amp: bf16 autocast on CUDA (default) or not.
        mean, std: normalisation of checkpoints without a normalisation scheme (integer images are then
            scaled by their dtype's maximum first); default from `model.checkpoint_config["preprocess"]`.

    A checkpoint whose `preprocess` names a `scheme` (`unetkit.data.normalize`) gets raw pixel values and
    normalises them as training did: per image (statistics from `for_image`, else from each input), or
    with the data set's fixed statistics.
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
        from unetkit.data.normalize import Normalization

        self.normalization = Normalization.from_dict(preprocess) if "scheme" in preprocess else None
        self.distance = config.get("separation") == "distance"  # the last output is the object distance
        self.raw_units = self.normalization is not None  # no division by the dtype maximum
        self._image_params: torch.Tensor | None = None  # (4, C) of the image being predicted
        if self.normalization is None:
            mean = mean if mean is not None else preprocess.get("mean")
            std = std if std is not None else preprocess.get("std")
        if device is None:
            params = list(model.parameters()) if isinstance(model, nn.Module) else []
            device = params[0].device if params else resolve_device(None)
        self.device = torch.device(device)
        self.spatial_dims = model_spatial_dims(model)
        self.channels_last = isinstance(model, nn.Module)
        self.memory_format = torch.channels_last if self.spatial_dims == 2 else torch.channels_last_3d
        if isinstance(model, nn.Module):  # in place, as `model.eval()`: channels-last is ~2x faster on CPU too
            model.to(self.device).eval()
            model.to(memory_format=self.memory_format)  # type: ignore[call-overload]
        self.tta = tta
        self.activation = activation
        self.amp = amp and self.device.type == "cuda"
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32, device=self.device)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32, device=self.device)
        dims = self.spatial_dims
        if dims == 2:
            self.margin = context_margin(model) or int(getattr(model, "margin", 0) or 0)
            self.margins: tuple[int, ...] = (self.margin,) * 2
        else:  # per axis: anisotropic models lose different context on each axis
            self.margins = context_margins(model, dims)
            self.margin = max(self.margins)
        self.align = int(getattr(model, "downsample_factor", 1) or 1)
        self.aligns: tuple[int, ...] = tuple(getattr(model, "downsample_factors", None) or (self.align,) * dims)
        self.in_channels: int | None = getattr(model, "in_channels", None)
        if self.in_channels is None and self.mean is not None:
            self.in_channels = int(self.mean.numel())

    def legal_output(self, n: int) -> int:
        """The smallest legal output side `>= n` (unpadded models); `n` for padded ones."""
        if self.margin == 0:
            return n
        valid: Callable[[int], int] = self.model.valid_input_size  # type: ignore[union-attr,assignment]
        return int(valid(n + 2 * self.margin)) - 2 * self.margin

    def legal_output_axis(self, n: int, axis: int) -> int:
        """The smallest legal output side `>= n` on spatial `axis` (unpadded models); `n` for padded ones."""
        m = self.margins[axis]
        if m == 0:
            return n
        shape = [2 * mi + 1 for mi in self.margins]  # the axes are independent: only `axis` is read
        shape[axis] = n + 2 * m
        return valid_input_shape(self.model, shape)[axis] - 2 * m

    def _activate(self, out: torch.Tensor) -> torch.Tensor:
        out = out.float()
        if self.distance and self.activation != "none":
            return torch.cat([self._activate_classes(out[:, :-1]), torch.sigmoid(out[:, -1:])], dim=1)
        return self._activate_classes(out)

    def _activate_classes(self, out: torch.Tensor) -> torch.Tensor:
        kind = self.activation
        if kind == "auto":
            kind = "sigmoid" if out.shape[1] == 1 else "softmax"
        if kind == "sigmoid":
            p = torch.sigmoid(out)
            return torch.cat([1 - p, p], dim=1) if out.shape[1] == 1 else p
        if kind == "softmax":
            return torch.softmax(out, dim=1)
        return out

    @contextmanager
    def for_image(self, sample: torch.Tensor | None, *, strided: bool = True) -> Iterator[None]:
        """Normalise the tiles of one image with that image's statistics (scheme `image`), from `sample`:
        (`strided`) its subsample at `unetkit.data.normalize.stat_stride`, or the whole `(C, H, W)` image;
        None: nothing to set (no normalisation spec, or one that needs no per-image statistics)."""
        if self.normalization is None or sample is None:
            yield
            return
        array = sample.numpy()
        norm = self.normalization
        params = norm.params(array) if strided else norm.image_params(array)
        self._image_params = torch.as_tensor(params, dtype=torch.float32, device=self.device)
        try:
            yield
        finally:
            self._image_params = None

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        assert self.normalization is not None
        if self.normalization.scheme == "none":
            return x
        spatial = (None,) * (x.ndim - 2)
        if self._image_params is not None:
            params = self._image_params[(slice(None), None, slice(None), *spatial)]  # (4, 1, C, 1, 1[, 1])
        else:  # no image given: each input is its own image
            rows = [self.normalization.image_params(t.float().cpu().numpy()) for t in x]
            stacked = torch.as_tensor(np.stack(rows, axis=1), dtype=torch.float32, device=x.device)
            params = stacked[(..., *spatial)]
        low, high, mean, std = params
        return (torch.maximum(torch.minimum(x, high), low) - mean) / std

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, C, h, w)` (or `(B, C, d, h, w)`) raw pixels on `self.device` -> `(B, K, h - 2m, w - 2m)`
        (`(B, K, d', h', w')`) probabilities."""
        if self.normalization is not None:
            x = self._normalize(x)
        elif self.mean is not None and self.std is not None:
            ones = (1,) * (x.ndim - 2)
            x = (x - self.mean.view(1, -1, *ones)) / self.std.view(1, -1, *ones)
        volume = x.ndim == 5
        square = x.shape[-1] == x.shape[-2]
        ks = (range(8) if square or volume else (0, 2, 4, 6)) if self.tta else (0,)
        total = None
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else nullcontext()
        memory = self.memory_format if self.channels_last else torch.contiguous_format
        for k in ks:
            with autocast:
                flipped = x.flip(_axis_flips(k)) if volume else _dihedral(x, k)
                x_k = flipped if k else x  # k = 0: no copy
                out = self.model(x_k.contiguous(memory_format=memory))
            out = self._activate(out)
            if k:
                out = out.flip(_axis_flips(k)) if volume else _undo_dihedral(out, k)
            total = out if total is None else total + out
        assert total is not None
        return total if len(ks) == 1 else total / len(ks)


def _as_chw(
    image: np.ndarray | torch.Tensor, channels: int | None, name: str = "image", *, scale_dtype: bool = True
) -> torch.Tensor:
    """`(H, W)`, `(C, H, W)` or `(H, W, C)` -> float `(C, H, W)` on the CPU (integer images divided by their
    dtype's maximum when `scale_dtype`)."""
    from unetkit.data.folder import intensity_scale

    array = image.numpy() if isinstance(image, torch.Tensor) and not image.is_floating_point() else image
    scale = intensity_scale(array.dtype) if isinstance(array, np.ndarray) and scale_dtype else 1.0
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
    distance: bool = False,
) -> np.ndarray:
    """Probabilities `(K, H, W)` for an image of any size, tile by tile; `(K, D, H, W)` for a volume
    `(D, H, W)` or `(C, D, H, W)` with a 3D model (`unetkit.infer.volume.predict_volume`).

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
        distance: also return the object distance of a model trained with `separation: distance`, as one more
            channel after the classes (`unetkit.infer.instances`, method `distance`); without it, that model's
            output is its class probabilities alone, as any model's.
    """
    if blend not in BLEND_MODES:
        raise ValueError(f"`blend` must be one of {', '.join(BLEND_MODES)}, got {blend!r}")
    pred = model if isinstance(model, Predictor) else Predictor(model, device=device, tta=tta, activation=activation)
    if distance and not pred.distance:
        raise ValueError("`distance` asks for the object distance, and the model has none (separation 'distance')")
    keep = slice(None) if distance or not pred.distance else slice(0, -1)
    if pred.spatial_dims == 3:
        from unetkit.infer.volume import predict_volume

        volume = predict_volume(
            pred, image, tile=tile, overlap=overlap, blend=blend, batch_size=batch_size, progress=progress
        )
        return volume if keep == slice(None) else np.ascontiguousarray(volume[keep])
    x = _as_chw(image, pred.in_channels, scale_dtype=not pred.raw_units)
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

    with _tile_bar(plan, progress) as bar, pred.for_image(x, strided=False):
        run_tiled(pred, reader, plan, sink, batch_size=batch_size, device=pred.device, progress=bar)
    assert out is not None
    return out if keep == slice(None) else np.ascontiguousarray(out[keep])


def predict_labels(model: nn.Module | Predictor, image: np.ndarray | torch.Tensor, **kwargs: Any) -> np.ndarray:
    """Class indices `(H, W)` (int64): the argmax of `predict`."""
    return predict(model, image, **kwargs).argmax(axis=0)


INSTANCE_SETTINGS = ("min_size", "h", "threshold", "smoothing", "sharpen", "seed")


def instance_method(config: dict[str, Any], asked: str) -> str:
    """The instance method for `--instances ASKED`: `auto` is the one training chose on its validation split
    (`unetkit.train.instance_tuning`), else `distance` for a model with the separation's distance, else
    `watershed`; a named method as given."""
    if asked != "auto":
        return asked
    chosen = (config.get("instances") or {}).get("method")
    if chosen:
        return str(chosen)
    return "distance" if config.get("separation") == "distance" else "watershed"


def fitted_instances(config: dict[str, Any], method: str) -> dict[str, Any]:
    """The post-processing settings training fitted on its validation split (`unetkit.train.instance_tuning`),
    if any: `min_size` for every method, the method's own (`h`, `seed`, ...) when it was the one fitted."""
    fitted = config.get("instances") or {}
    keys = ("min_size",) if fitted.get("method") != method else INSTANCE_SETTINGS
    return {key: fitted[key] for key in keys if key in fitted}


def resolve_instances(predictor: Predictor, asked: str | None) -> str | None:
    """The instance method `predict --instances ASKED` runs with this predictor's model: None without the flag,
    `auto` resolved by `instance_method`.

    Raises:
        ValueError: an unknown method, or `distance` for a model without the separation's distance output.
    """
    if asked is None:
        return None
    if asked not in ("auto", *INSTANCE_METHODS):
        raise ValueError(f"`instances` must be None, auto or one of {', '.join(INSTANCE_METHODS)}, got {asked!r}")
    method = instance_method(predictor.config, asked)
    if method == "distance" and not predictor.distance:
        raise ValueError(
            "`--instances distance` needs a model trained with separation 'distance' (its object distance "
            "output); this checkpoint has none: use components or watershed"
        )
    return method
