"""Segmentation: a folder of images and masks or `synthetic:NAME`, random patches augmented on the training
device, BCE / CE / Dice / weighted CE, validation Dice and IoU on whole images, prediction overlays."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from unetkit import viz
from unetkit.data.augment import AugmentConfig, augment_batch
from unetkit.losses import SegmentationLoss, compute_pos_weight
from unetkit.metrics import PixelMeter
from unetkit.train.data import check_fit, prepare_data, to_tensors
from unetkit.train.distributed import World
from unetkit.train.tasks.base import Forward, PatchTask, Validation, output_key

if TYPE_CHECKING:
    from unetkit.train.config import TrainConfig

__all__ = ["BCE_FAMILY", "SegmentationTask"]

BCE_FAMILY = ("auto", "bce", "dice", "dice_bce")  # losses that train binary targets on one output channel


def _predict(logits: torch.Tensor) -> torch.Tensor:
    return (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(dim=1)


class SegmentationTask(PatchTask):
    """Reads the data (fails before anything is written when it or the settings do not fit) and serves the engine."""

    name = "segmentation"
    curve_metrics = ("dice", "iou")

    def __init__(self, config: TrainConfig, device: torch.device) -> None:
        self.config = config
        self.device = device
        self.monitor = "dice" if config.monitor == "auto" else config.monitor
        prepared = prepare_data(
            config.data,
            mask_mode=config.mask_mode,
            val_fraction=config.val_fraction,
            seed=config.seed,
            synthetic_train=config.synthetic_train,
            synthetic_val=config.synthetic_val,
            synthetic_size=config.synthetic_size,
            separate_touching=config.separate_touching,
        )
        self.prepared = prepared
        binary = prepared.mask.num_classes == 2
        self.out_key = output_key(config.model)
        self.out_channels = config.out_channels or (
            1 if binary and config.loss in BCE_FAMILY else prepared.mask.num_classes
        )
        wmap = {"w0": config.w0, "sigma": config.sigma} if config.weight_map else None
        super().__init__(
            to_tensors(prepared.train, prepared.mean, prepared.std, device, weight_map=wmap), config.patch_size
        )
        self.val_set = to_tensors(prepared.val, prepared.mean, prepared.std, device)
        check_fit(config, prepared, self.out_channels, self.out_key)
        self.train_size = len(self.train_set)
        self.augment = (
            None
            if config.augment.get("enabled", True) is False
            else AugmentConfig(**{k: v for k, v in config.augment.items() if k != "enabled"})
        )
        self.loss_fn = self._make_loss()

    def model_options(self) -> dict[str, Any]:
        return {"in_channels": self.prepared.in_channels, self.out_key: self.out_channels}

    def loss(self) -> nn.Module:
        return self.loss_fn

    def _make_loss(self) -> SegmentationLoss:
        config, prepared = self.config, self.prepared
        pos_weight = config.pos_weight
        if pos_weight == "auto":
            pos_weight = compute_pos_weight(prepared.train.targets, prepared.train.fov)
        class_weights: list[float] | None = None
        if config.class_weights == "balanced":
            from unetkit.data.weightmap import class_balance_weights

            flat = np.concatenate([t.ravel() for t in prepared.train.targets])
            class_weights = class_balance_weights(flat, prepared.mask.num_classes).tolist()
        elif isinstance(config.class_weights, list):
            class_weights = [float(w) for w in config.class_weights]
        loss_name = "weighted_ce" if config.weight_map and config.loss == "auto" else config.loss
        return SegmentationLoss(
            loss_name,
            self.out_channels,
            pos_weight=float(pos_weight) if pos_weight is not None else None,
            class_weights=class_weights,
        ).to(self.device)

    def batch(
        self, indices: list[int], generator: torch.Generator, augment: torch.Generator, rows: slice
    ) -> dict[str, torch.Tensor]:
        batch = self._sampler().batch(indices, generator, rows)
        if self.augment is None:
            return batch
        extras = {k: v for k, v in batch.items() if k in ("valid", "weight")}
        image, target, extras = augment_batch(
            batch["image"],
            batch["target"],
            config=self.augment,
            generator=augment,
            extras=extras,
            shard=(rows.start, len(indices)),
        )
        return {"image": image, "target": target, **extras}

    @torch.no_grad()
    def validate(self, model: nn.Module, forward: Forward, world: World) -> Validation:
        meter = PixelMeter(max(self.prepared.mask.num_classes, 2), self.device)
        losses, overlays = [], []
        for i in world.shard(len(self.val_set)):
            logits = forward(model, self.val_set.images[i][None])
            target, valid = self.val_set.targets[i][None], self.val_set.valid[i][None]
            weight = None
            if self.val_set.weights is not None:
                weight = self.val_set.weights[i][None]
            elif self.loss_fn.name == "weighted_ce":  # no weight map on validation images: plain CE
                weight = torch.ones_like(target, dtype=torch.float32)
            losses.append(self.loss_fn(logits, target, valid=valid, weight=weight))
            pred = _predict(logits)
            meter.update(pred, target, valid)
            if i < self.config.samples:
                overlays.append(
                    viz.overlay(
                        self.prepared.val.images[i],
                        pred[0].cpu().numpy(),
                        target[0].cpu().numpy(),
                        valid[0].cpu().numpy(),
                    )
                )
        metrics: dict[str, float] = {}
        if len(self.val_set):
            metrics["val_loss"] = world.average(losses, len(self.val_set)).item()
            world.sum_(meter.counts)
            metrics.update(meter.compute())
        shown = [s for part in world.gather(overlays) for s in part]  # on rank 0
        return Validation(metrics, viz.picture_row(shown) if shown else None)

    def extra(self) -> dict[str, Any]:
        mask, prepared = self.prepared.mask, self.prepared
        return {
            "task": "segmentation",
            "preprocess": {"scale": "integer images / dtype max", "mean": prepared.mean, "std": prepared.std},
            "mask": {"mode": mask.mode, "num_classes": mask.num_classes, "label_values": mask.label_values},
            "output": "sigmoid" if self.out_channels == 1 else "softmax",
        }
