"""From a `TrainConfig` to tensors ready for training: load a folder or synthetic set, fit the intensity
normalisation (`unetkit.data.normalize`) on its training split and apply it to every image before
augmentation, compute weight maps, and draw random patches reproducibly from a seed. Ignored mask
pixels and the field of view arrive as `valid`, which every loss, metric and the sampler honour.
"""

from __future__ import annotations

import math
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
    """Load `data` (a folder, or `synthetic:NAME`) and fit the intensity normalisation on its training split
    (`normalize`: `auto`, `image`, `dataset` or `none`; `auto` is `image` for the synthetic sets and the
    fingerprint's choice for folders)."""
    from unetkit.data.folder import load_folder
    from unetkit.data.normalize import fit_normalization
    from unetkit.data.synthetic import make_synthetic

    if data.startswith(SYNTHETIC_PREFIX):
        name = data[len(SYNTHETIC_PREFIX) :]
        full, mask = make_synthetic(name, synthetic_train + synthetic_val, synthetic_size, seed=SYNTHETIC_DATA_SEED)
        train = full.subset(list(range(synthetic_train)))
        val = full.subset(list(range(synthetic_train, synthetic_train + synthetic_val)))
    else:
        splits, mask = load_folder(
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
    return PreparedData(train, val, mask, int(train.images[0].shape[0]), normalization)


def check_fit(config: TrainConfig, prepared: PreparedData, out_channels: int, out_key: str) -> None:
    """Settings that do not fit the data fail here, before anything is written, naming the setting.

    Args:
        config: the run's settings.
        prepared: its data.
        out_channels: the output channels training will use.
        out_key: the model's name for them (`num_classes` or `out_channels`).

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
    if given is not None and given != out_channels:
        raise ValueError(
            f"`model_options.{key}` {given!r} does not fit {config.data}: {classes} classes with loss "
            f"{config.loss!r} need {out_channels} output channel(s); set `out_channels` to change it"
        )
    largest = max((image.shape[-2:] for image in prepared.train.images), key=max, default=None)
    if largest is not None and config.patch_size > PATCH_SLACK * max(largest):
        raise ValueError(
            f"`patch_size` {config.patch_size} is more than {PATCH_SLACK}x the largest training image of {config.data} "
            f"({largest[0]}x{largest[1]}): its patches would be mostly padding; give at most "
            f"{PATCH_SLACK * max(largest)}, or 0 to train on whole images"
        )
    if config.patch_size == 0 and config.augment.get("enabled", True) is not False:
        for name, image in zip(prepared.train.names, prepared.train.images, strict=True):
            if min(image.shape[-2:]) < 2:  # flips and elastic deformation need 2x2
                raise ValueError(
                    f"{config.data}: image {name!r} is {image.shape[-2]}x{image.shape[-1]}; whole-image training "
                    "(`patch_size` 0) with augmentation needs at least 2x2: give a patch size"
                )


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
) -> TensorSet:
    """Normalise `data` (each whole image, as prediction does) and move it to `device`; with `weight_map`
    (`w0`, `sigma`) compute the U-Net paper's border weight map from the instance labels."""
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
    return TensorSet(images, targets, valid, weights, list(data.names))


def _pad_to(x: torch.Tensor, height: int, width: int, *, mode: str, value: float = 0.0) -> torch.Tensor:
    pad_h, pad_w = max(height - x.shape[-2], 0), max(width - x.shape[-1], 0)
    if pad_h == 0 and pad_w == 0:
        return x
    pad = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
    if mode == "constant":
        if x.dtype == torch.bool:
            return F.pad(x.to(torch.uint8), pad, value=int(value)).bool()
        return F.pad(x, pad, value=value)
    from unetkit.models.inference import mirror_pad

    return mirror_pad(x[None], pad)[0] if x.ndim == 3 else mirror_pad(x[None, None], pad)[0, 0]


def _pad_margin(data: TensorSet, margin: int) -> TensorSet:
    """Mirror the images by `margin` on every side; targets get 0 and `valid` False there."""
    from unetkit.models.inference import mirror_pad

    pad = (margin, margin, margin, margin)

    def constant(x: torch.Tensor, value: float) -> torch.Tensor:
        if x.dtype == torch.bool:
            return F.pad(x.to(torch.uint8), pad, value=int(value)).bool()
        return F.pad(x, pad, value=value)

    return TensorSet(
        [mirror_pad(x[None], pad)[0] for x in data.images],
        [constant(t, 0) for t in data.targets],
        [constant(v, False) for v in data.valid],
        None if data.weights is None else [constant(w, 1.0) for w in data.weights],
        list(data.names),
    )


class PatchSampler:
    """Draw batches of random patches; every draw comes from a `torch.Generator`, so an epoch is
    reproduced exactly from its seed (resume needs no sampler state).

    Images smaller than the patch are mirror-padded and the padding is marked invalid. With
    `foreground_oversample` p, each patch is, with probability p, centred on a random valid foreground
    pixel (nnU-Net's foreground oversampling, 1/3 there), so rare classes are seen; ignored pixels
    (`valid` False) are never such a centre and travel with their patch as invalid. For unpadded
    models (`margin > 0`) every image is first mirror-padded by the model's context margin, with the
    padding marked invalid, so that the output tiles (the input patch less the margin on each side)
    cover the whole image, borders included, as in the paper's overlap-tile strategy (Fig. 2).
    """

    def __init__(self, data: TensorSet, patch_size: int, margin: int = 0, foreground_oversample: float = 0.0) -> None:
        """
        Args:
            data: the training tensors.
            patch_size: input patch side; `0` uses whole images (which must then share one size).
            margin: context pixels an unpadded model loses on each side (0 for padded models).
            foreground_oversample: share of patches centred on a valid foreground pixel, in [0, 1].
        """
        if len(data) == 0:
            raise ValueError("no training images to sample from")
        if not 0.0 <= foreground_oversample <= 1.0:
            raise ValueError(f"`foreground_oversample` must be in [0, 1], got {foreground_oversample}")
        if margin:
            data = _pad_margin(data, margin)
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
        if patch_size == 0:
            sizes = {tuple(x.shape[-2:]) for x in data.images}
            if len(sizes) > 1:
                raise ValueError(f"`patch_size` 0 (whole images) needs equal image sizes, got {sorted(sizes)[:4]}")
            self.height, self.width = sizes.pop()
        else:
            self.height = self.width = patch_size

    def epoch_order(self, steps: int, batch_size: int, generator: torch.Generator) -> list[int]:
        """Image indices for an epoch: shuffled passes over the data, as many as the steps need."""
        needed = steps * batch_size
        order: list[int] = []
        while len(order) < needed:
            order += torch.randperm(len(self.data), generator=generator).tolist()
        return order[:needed]

    def batch(
        self, indices: list[int], generator: torch.Generator, rows: slice | None = None
    ) -> dict[str, torch.Tensor]:
        """Random crops of the images at `indices`: `image (B, C, h, w)`, `target` (when the data has
        targets), `valid`[, `weight`] `(B, h, w)`.

        With `rows`, crop positions are drawn for all `indices` (same generator state on every process)
        and only the crops of `indices[rows]` are cut: a process's share of a batch split across
        processes, each patch the same as in the unsplit batch.
        """
        crops: dict[str, list[torch.Tensor]] = {"image": [], "target": [], "valid": []}
        if not self.data.targets:
            del crops["target"]
        if self.data.weights is not None:
            crops["weight"] = []
        h, w = self.height, self.width
        mine = set(range(len(indices))[rows]) if rows is not None else None
        for n, i in enumerate(indices):
            height, width = self.data.images[i].shape[-2:]
            top = int(torch.randint(max(height, h) - h + 1, (1,), generator=generator))
            left = int(torch.randint(max(width, w) - w + 1, (1,), generator=generator))
            if self.oversample > 0:  # drawn for every patch, so the stream does not depend on the data
                pick, where = torch.rand(2, generator=generator).tolist()
                pixels = self.foreground[i]
                if pick < self.oversample and pixels.numel():
                    y, x = divmod(int(pixels[min(int(where * pixels.numel()), pixels.numel() - 1)]), int(width))
                    top = min(max(y - h // 2, 0), max(height - h, 0))
                    left = min(max(x - w // 2, 0), max(width - w, 0))
            if mine is not None and n not in mine:
                continue
            image = _pad_to(self.data.images[i], h, w, mode="reflect")
            valid = _pad_to(self.data.valid[i], h, w, mode="constant", value=False)
            window = (slice(top, top + h), slice(left, left + w))
            crops["image"].append(image[(slice(None), *window)])
            crops["valid"].append(valid[window])
            if self.data.targets:
                crops["target"].append(_pad_to(self.data.targets[i], h, w, mode="constant")[window])
            if self.data.weights is not None:
                crops["weight"].append(_pad_to(self.data.weights[i], h, w, mode="constant", value=1.0)[window])
        return {k: torch.stack(v) for k, v in crops.items()}


def steps_for_epoch(steps_per_epoch: int, num_images: int, batch_size: int) -> int:
    """`steps_per_epoch`, or one pass over the images when it is 0."""
    return steps_per_epoch or max(1, math.ceil(num_images / batch_size))
