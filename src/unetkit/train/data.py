"""From a `TrainConfig` to tensors ready for training: load a folder or synthetic set, fit the intensity
normalisation (`unetkit.data.normalize`) on its training split and apply it to every image before
augmentation, compute weight maps, and draw random patches reproducibly from a seed. Ignored mask
pixels and the field of view arrive as `valid`, which every loss, metric and the sampler honour.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from unetkit.data.normalize import Normalization
from unetkit.data.types import MaskInfo, SegmentationSet

if TYPE_CHECKING:
    from unetkit.train.config import TrainConfig

__all__ = ["PatchSampler", "PreparedData", "TensorSet", "check_fit", "prepare_data", "to_tensors"]

SYNTHETIC_PREFIX = "synthetic:"
SYNTHETIC_DATA_SEED = 0  # the built-in data sets are fixed; `seed` varies training, not the data
# a patch side beyond this many times the largest training image is refused: its patches would be mostly
# mirror padding, each step would cost (patch / image)^2 times an image's work and learn nothing more
PATCH_SLACK = 2


@dataclass
class TensorSet:
    """Normalised images and their targets on one device; lists because sizes may differ."""

    images: list[torch.Tensor]  # (C, H, W) float32, normalised
    targets: list[torch.Tensor]  # (H, W) int64; empty for the image-to-image tasks (the image is the target)
    valid: list[torch.Tensor]  # (H, W) bool
    weights: list[torch.Tensor] | None  # (H, W) float32 weight maps
    names: list[str]
    distances: list[torch.Tensor] | None = None  # (H, W) float32 object-distance targets (`data.distance`)

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class PreparedData:
    """Training and validation splits with what the checkpoint must remember about them."""

    train: SegmentationSet
    val: SegmentationSet
    mask: MaskInfo
    in_channels: int
    normalization: Normalization
    spacing: tuple[float, ...] | None = None  # volumes: the training cases' median voxel spacing, per axis

    @property
    def spatial_dims(self) -> int:
        """2 for images `(C, H, W)`, 3 for volumes `(C, D, H, W)`."""
        return int(self.train.images[0].ndim - 1)


def prepare_data(
    data: str,
    *,
    mask_mode: str,
    val_fraction: float,
    seed: int,
    synthetic_train: int,
    synthetic_val: int,
    synthetic_size: int,
    separate_touching: bool = False,
    ignore_index: int | None = None,
    normalize: str = "auto",
) -> PreparedData:
    """Load `data` (a folder of images or volumes, an nnU-Net raw data set, or `synthetic:NAME`) and fit the
    intensity normalisation on its training split (`normalize`: `auto`, `image`, `dataset` or `none`; `auto` is
    `image` for the synthetic sets and the fingerprint's choice for folders)."""
    from unetkit.data.normalize import fit_normalization
    from unetkit.data.synthetic import make_synthetic
    from unetkit.data.volume_folder import VolumeSet

    if data.startswith(SYNTHETIC_PREFIX):
        name = data[len(SYNTHETIC_PREFIX) :]
        full, mask = make_synthetic(name, synthetic_train + synthetic_val, synthetic_size, seed=SYNTHETIC_DATA_SEED)
        train = full.subset(list(range(synthetic_train)))
        val = full.subset(list(range(synthetic_train, synthetic_train + synthetic_val)))
    else:
        from unetkit.data.any_folder import load_any_folder

        splits, mask = load_any_folder(
            data, mask_mode=mask_mode, val_fraction=val_fraction, seed=seed, ignore_index=ignore_index
        )
        train, val = splits["train"], splits["val"]
    if len(train) == 0:
        raise ValueError(f"{data}: no training images")
    if separate_touching:
        train, val = _separate(train, data), _separate(val, data)
    synthetic = data.startswith(SYNTHETIC_PREFIX)
    dtypes = train.extra.get("dtypes") if not synthetic else None
    foreground = [(t > 0) if train.fov is None else (t > 0) & train.fov[i] for i, t in enumerate(train.targets)]
    normalization = fit_normalization(
        train.images,
        scheme="image" if synthetic and normalize == "auto" else normalize,
        dtypes=dtypes if isinstance(dtypes, list) else None,
        foreground=foreground,
    )
    spacing = None
    if isinstance(train, VolumeSet) and train.spacing:
        spacing = tuple(float(v) for v in np.median(np.array(train.spacing, dtype=np.float64), axis=0))
    return PreparedData(train, val, mask, int(train.images[0].shape[0]), normalization, spacing)


def check_fit(config: TrainConfig, prepared: PreparedData, out_channels: int, out_key: str, extra: int = 0) -> None:
    """Settings that do not fit the data fail here, before anything is written, naming the setting.

    Args:
        config: the run's settings.
        prepared: its data.
        out_channels: the class channels training will use.
        out_key: the model's name for its output channels (`num_classes` or `out_channels`).
        extra: output channels beyond the classes (the separation's distance channel).

    Raises:
        ValueError: channels or classes of the model options, `out_channels`, a `patch_size` more than
            `PATCH_SLACK` times the largest image, or images too small for whole-image training with augmentation.
    """
    classes, channels = prepared.mask.num_classes, prepared.in_channels
    given = config.model_options.get("in_channels")
    if given is not None and given != channels:
        raise ValueError(
            f"`model_options.in_channels` {given!r} does not fit {config.data}: its images have {channels} channel(s)"
        )
    if (out_channels == 1 and classes > 2) or (out_channels != 1 and out_channels < classes):
        raise ValueError(
            f"`out_channels` {out_channels} does not fit {config.data}: its masks hold {classes} classes "
            f"(expected 1 for binary masks with a BCE-family loss, or at least {classes})"
        )
    key = out_key
    given = config.model_options.get(key)
    if given is not None and given != out_channels + extra:
        plus = f" and {extra} for the separation's distance" if extra else ""
        raise ValueError(
            f"`model_options.{key}` {given!r} does not fit {config.data}: {classes} classes with loss "
            f"{config.loss!r} need {out_channels} output channel(s){plus}; set `out_channels` to change it"
        )
    dims = prepared.spatial_dims
    patch = per_axis(config.patch_size, dims, "patch_size")
    largest = max((image.shape[1:] for image in prepared.train.images), key=max, default=None)
    if largest is not None and max(patch) > PATCH_SLACK * max(largest):
        raise ValueError(
            f"`patch_size` {config.patch_size} is more than {PATCH_SLACK}x the largest training image of {config.data} "
            f"({'x'.join(map(str, largest))}): its patches would be mostly padding; give at most "
            f"{PATCH_SLACK * max(largest)}, or 0 to train on whole images"
        )
    if not any(patch) and config.augment.get("enabled", True) is not False:
        for name, image in zip(prepared.train.names, prepared.train.images, strict=True):
            if min(image.shape[1:]) < 2:  # flips and elastic deformation need 2 pixels per axis
                raise ValueError(
                    f"{config.data}: image {name!r} is {'x'.join(map(str, image.shape[1:]))}; whole-image training "
                    f"(`patch_size` 0) with augmentation needs at least {'x'.join(['2'] * dims)}: give a patch size"
                )


def check_spatial_dims(config: TrainConfig, prepared: PreparedData, model_dims: int | None) -> int:
    """The model's `spatial_dims` for the data: 3 for volumes, 2 for images; refuses a model that cannot take them.

    Args:
        config: the run's settings (`model`, `model_options`).
        prepared: its data.
        model_dims: the model's default `spatial_dims`, or None for a 2-D-only model (no such argument).
    """
    dims, kind = prepared.spatial_dims, "volumes" if prepared.spatial_dims == 3 else "2-D images"
    if model_dims is None:
        if dims == 3:
            raise ValueError(
                f"`model` {config.model!r} is 2-D only and {config.data} holds volumes; give a model with "
                "`spatial_dims` (unet, sa_unet, unet_classic_3d)"
            )
        return 2
    explicit = config.model_options.get("spatial_dims")
    chosen = explicit if explicit is not None else (3 if dims == 3 else model_dims)  # volumes: 3 by default
    if chosen != dims:
        where = "`model_options.spatial_dims`" if explicit is not None else f"model {config.model!r}: spatial_dims"
        raise ValueError(
            f"{where} {chosen} does not fit {config.data}: it holds {kind}, which need spatial_dims {dims}"
        )
    return dims


def _separate(data: SegmentationSet, source: str) -> SegmentationSet:
    """Binary targets with touching instances divided by background (`touching_borders`)."""
    from unetkit.data.weightmap import touching_borders

    if data.instances is None:
        raise ValueError(
            f"{source}: `separate_touching` needs instance labels (synthetic:cells or mask_mode: instances)"
        )
    targets = [
        np.where(touching_borders(inst), 0, t).astype(t.dtype)
        for t, inst in zip(data.targets, data.instances, strict=True)
    ]
    return SegmentationSet(
        targets=targets, images=data.images, names=data.names, instances=data.instances, fov=data.fov, extra=data.extra
    )


def to_tensors(
    data: SegmentationSet,
    normalization: Normalization,
    device: torch.device,
    *,
    weight_map: dict[str, float] | None = None,
    distance: bool = False,
    spacing: Sequence[float] | None = None,
) -> TensorSet:
    """Normalise `data` (each whole image, as prediction does) and move it to `device`; with `weight_map`
    (`w0`, `sigma`) compute the U-Net paper's border weight map from the instance labels; with `distance`, the
    normalised object distance (`unetkit.data.distance.object_distance`, at the voxel `spacing`) that trains
    the separation of touching objects."""
    images = [torch.from_numpy(normalization.apply(x)).to(device) for x in data.images]
    targets = [torch.from_numpy(np.ascontiguousarray(t)).long().to(device) for t in data.targets]
    if data.fov is not None:
        valid = [torch.from_numpy(np.ascontiguousarray(f)).bool().to(device) for f in data.fov]
    else:
        valid = [torch.ones(t.shape, dtype=torch.bool, device=device) for t in targets]
    weights = None
    if weight_map is not None:
        from unetkit.data.weightmap import unet_weight_map

        if data.instances is None:
            raise ValueError(
                "`weight_map` needs instance labels: use synthetic:cells or a folder with mask_mode: instances"
            )
        weights = [
            torch.from_numpy(unet_weight_map(inst, w0=weight_map["w0"], sigma=weight_map["sigma"])).float().to(device)
            for inst in data.instances
        ]
    distances = None
    if distance:
        from unetkit.data.distance import object_distance

        if data.instances is None:
            raise ValueError("`separation` 'distance' needs instance labels: a folder with mask_mode: instances")
        distances = [torch.from_numpy(object_distance(inst, spacing)).to(device) for inst in data.instances]
    return TensorSet(images, targets, valid, weights, list(data.names), distances)


def _constant_pad(x: torch.Tensor, pad: list[int], value: float) -> torch.Tensor:
    if x.dtype == torch.bool:
        return F.pad(x.to(torch.uint8), pad, value=int(value)).bool()
    return F.pad(x, pad, value=value)


def _pad_to(x: torch.Tensor, shape: tuple[int, ...], *, mode: str, value: float = 0.0) -> torch.Tensor:
    """`x` padded (centred) on its last `len(shape)` axes to at least `shape`: mirrored, or with `value`."""
    pad: list[int] = []
    for n, want in zip(reversed(x.shape[-len(shape) :]), reversed(shape), strict=True):  # F.pad order
        extra = max(want - n, 0)
        pad += [extra // 2, extra - extra // 2]
    if not any(pad):
        return x
    if mode == "constant":
        return _constant_pad(x, pad, value)
    from unetkit.models.inference import mirror_pad

    images = x.ndim == len(shape) + 1  # (C, *S) images; (*S) maps
    return mirror_pad(x[None], pad)[0] if images else mirror_pad(x[None, None], pad)[0, 0]


def _pad_margin(data: TensorSet, margins: tuple[int, ...]) -> TensorSet:
    """Mirror the images by `margins` (per spatial axis) on both sides; targets get 0 and `valid` False there."""
    from unetkit.models.inference import mirror_pad

    pad = [m for m in reversed(margins) for _ in range(2)]
    return TensorSet(
        [mirror_pad(x[None], pad)[0] for x in data.images],
        [_constant_pad(t, pad, 0) for t in data.targets],
        [_constant_pad(v, pad, False) for v in data.valid],
        None if data.weights is None else [_constant_pad(w, pad, 1.0) for w in data.weights],
        list(data.names),
        None if data.distances is None else [_constant_pad(d, pad, 0.0) for d in data.distances],
    )


class PatchSampler:
    """Draw batches of random patches of images `(C, H, W)` or volumes `(C, D, H, W)`; every draw comes from a
    `torch.Generator`, so an epoch is reproduced exactly from its seed (resume needs no sampler state).

    Images smaller than the patch are mirror-padded and the padding is marked invalid. With
    `foreground_oversample` p, each patch is, with probability p, centred on a random valid foreground
    pixel (nnU-Net's foreground oversampling, 1/3 there), so rare classes are seen; ignored pixels
    (`valid` False) are never such a centre and travel with their patch as invalid. For unpadded
    models (`margin > 0`) every image is first mirror-padded by the model's context margin, with the
    padding marked invalid, so that the output tiles (the input patch less the margin on each side)
    cover the whole image, borders included, as in the paper's overlap-tile strategy (Fig. 2).
    """

    def __init__(
        self,
        data: TensorSet,
        patch_size: int | Sequence[int],
        margin: int | Sequence[int] = 0,
        foreground_oversample: float = 0.0,
    ) -> None:
        """
        Args:
            data: the training tensors.
            patch_size: input patch side, or shape (one side per spatial axis); `0` uses whole images (which
                must then share one size).
            margin: context pixels an unpadded model loses on each side, or one per axis (0 for padded models).
            foreground_oversample: share of patches centred on a valid foreground pixel, in [0, 1].
        """
        if len(data) == 0:
            raise ValueError("no training images to sample from")
        if not 0.0 <= foreground_oversample <= 1.0:
            raise ValueError(f"`foreground_oversample` must be in [0, 1], got {foreground_oversample}")
        dims = data.images[0].ndim - 1
        margins = per_axis(margin, dims, "margin")
        if any(margins):
            data = _pad_margin(data, margins)
        self.data = data
        self.oversample = float(foreground_oversample)
        # flat indices of valid foreground pixels per image, for oversampled patch centres
        self.foreground = (
            [
                torch.nonzero(((t > 0) & v).flatten().cpu()).flatten()
                for t, v in zip(data.targets, data.valid, strict=True)
            ]
            if self.oversample > 0
            else []
        )
        patch = per_axis(patch_size, dims, "patch_size")
        if not any(patch):
            sizes = {tuple(x.shape[1:]) for x in data.images}
            if len(sizes) > 1:
                raise ValueError(f"`patch_size` 0 (whole images) needs equal image sizes, got {sorted(sizes)[:4]}")
            patch = sizes.pop()
        self.shape: tuple[int, ...] = tuple(int(n) for n in patch)

    @property
    def height(self) -> int:
        return self.shape[-2]

    @property
    def width(self) -> int:
        return self.shape[-1]

    def epoch_order(self, steps: int, batch_size: int, generator: torch.Generator) -> list[int]:
        """Image indices for an epoch: shuffled passes over the data, as many as the steps need."""
        needed = steps * batch_size
        order: list[int] = []
        while len(order) < needed:
            order += torch.randperm(len(self.data), generator=generator).tolist()
        return order[:needed]

    def _corner(self, i: int, generator: torch.Generator) -> list[int]:
        """The patch's first pixel in image `i`: uniform, or (oversampling) around a valid foreground pixel."""
        sizes, patch = tuple(self.data.images[i].shape[1:]), self.shape
        corner = [
            int(torch.randint(max(n, p) - p + 1, (1,), generator=generator)) for n, p in zip(sizes, patch, strict=True)
        ]
        if self.oversample > 0:  # drawn for every patch, so the stream does not depend on the data
            pick, where = torch.rand(2, generator=generator).tolist()
            pixels = self.foreground[i]
            if pick < self.oversample and pixels.numel():
                flat = int(pixels[min(int(where * pixels.numel()), pixels.numel() - 1)])
                centre = np.unravel_index(flat, sizes)
                corner = [
                    min(max(int(c) - p // 2, 0), max(n - p, 0)) for c, n, p in zip(centre, sizes, patch, strict=True)
                ]
        return corner

    def batch(
        self, indices: list[int], generator: torch.Generator, rows: slice | None = None
    ) -> dict[str, torch.Tensor]:
        """Random crops of the images at `indices`: `image (B, C, *P)`, `target` (when the data has
        targets), `valid`[, `weight`][, `distance`] `(B, *P)` for the patch shape `P`.

        With `rows`, crop positions are drawn for all `indices` (same generator state on every process)
        and only the crops of `indices[rows]` are cut: a process's share of a batch split across
        processes, each patch the same as in the unsplit batch.
        """
        crops: dict[str, list[torch.Tensor]] = {"image": [], "target": [], "valid": []}
        if not self.data.targets:
            del crops["target"]
        if self.data.weights is not None:
            crops["weight"] = []
        if self.data.distances is not None:
            crops["distance"] = []
        shape = self.shape
        mine = set(range(len(indices))[rows]) if rows is not None else None
        for n, i in enumerate(indices):
            corner = self._corner(i, generator)
            if mine is not None and n not in mine:
                continue
            window = tuple(slice(c, c + p) for c, p in zip(corner, shape, strict=True))
            image = _pad_to(self.data.images[i], shape, mode="reflect")
            crops["image"].append(image[(slice(None), *window)])
            crops["valid"].append(_pad_to(self.data.valid[i], shape, mode="constant", value=False)[window])
            if self.data.targets:
                crops["target"].append(_pad_to(self.data.targets[i], shape, mode="constant")[window])
            if self.data.weights is not None:
                crops["weight"].append(_pad_to(self.data.weights[i], shape, mode="constant", value=1.0)[window])
            if self.data.distances is not None:
                crops["distance"].append(_pad_to(self.data.distances[i], shape, mode="constant")[window])
        return {k: torch.stack(v) for k, v in crops.items()}


def per_axis(value: int | Sequence[int], dims: int, name: str) -> tuple[int, ...]:
    """`value` (one int for every axis, or one per axis) as `dims` ints."""
    if isinstance(value, int):
        return (int(value),) * dims
    sides = tuple(int(v) for v in value)
    if len(sides) != dims:
        raise ValueError(f"`{name}` must give one side or {dims} (one per spatial axis), got {list(sides)}")
    return sides


def steps_for_epoch(steps_per_epoch: int, num_images: int, batch_size: int) -> int:
    """`steps_per_epoch`, or one pass over the images when it is 0."""
    return steps_per_epoch or max(1, math.ceil(num_images / batch_size))
