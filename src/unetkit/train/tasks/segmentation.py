"""Segmentation: a folder of images and masks or `synthetic:NAME`, random patches augmented on the training
device, BCE / CE / Dice / weighted CE, validation Dice and IoU on whole images, prediction overlays."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from unetkit import viz
from unetkit.data.augment import AugmentConfig, augment_batch
from unetkit.losses import SegmentationLoss, SeparationLoss, compute_pos_weight
from unetkit.metrics import PixelMeter
from unetkit.train.data import check_fit, check_spatial_dims, prepare_data, to_tensors
from unetkit.train.distributed import World
from unetkit.train.step import channels_last_format
from unetkit.train.tasks.base import Forward, PatchTask, Validation, epoch_seed, model_defaults, output_key

if TYPE_CHECKING:
    from unetkit.train.config import TrainConfig

__all__ = ["BCE_FAMILY", "SegmentationTask", "resolve_separation"]

logger = logging.getLogger(__name__)
# losses that train one sigmoid channel on binary masks; `auto` trains two softmax channels with CE, which
# learned in one epoch where a sigmoid head sat at "everything foreground" (README, "BCE")
BCE_FAMILY = ("bce", "dice", "dice_bce")


def _slice_of(
    image: np.ndarray, pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What an overlay draws: the image, prediction, target and valid pixels; of a volume `(C, D, H, W)` the
    slice along D with the most target foreground (the middle one when it has none)."""
    if image.ndim == 3:
        return image, pred.cpu().numpy(), target.cpu().numpy(), valid.cpu().numpy()
    counts = ((target > 0) & valid).flatten(1).sum(1)  # (D,)
    k = int(counts.argmax()) if int(counts.max()) > 0 else image.shape[1] // 2
    return image[:, k], pred[k].cpu().numpy(), target[k].cpu().numpy(), valid[k].cpu().numpy()


def _predict(logits: torch.Tensor) -> torch.Tensor:
    return (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(dim=1)


def resolve_separation(separation: str, mask_mode: str, source: str, volumes: bool = False) -> str:
    """`distance` or `none` for the `separation` setting (`auto`: `distance` for 2-D instance masks; for
    volumes `none`, as the plan chooses: see `unetkit.train.plan`).

    Raises:
        ValueError: `distance` for masks that are not instance labels.
    """
    if separation == "auto":
        return "distance" if mask_mode == "instances" and not volumes else "none"
    if separation == "distance" and mask_mode != "instances":
        raise ValueError(
            f"`separation` 'distance' needs instance labels, and the masks of {source} read as {mask_mode}; "
            "set mask_mode to 'instances' if they are instance labels, or separation to 'none'"
        )
    return separation


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
            ignore_index=config.ignore_index,
            normalize=config.normalize,
        )
        self.prepared = prepared
        binary = prepared.mask.num_classes == 2
        self.out_key = output_key(config.model)
        self.class_channels = config.out_channels or (
            1 if binary and config.loss in BCE_FAMILY else prepared.mask.num_classes
        )
        volumes = prepared.train.images[0].ndim == 4  # (C, D, H, W)
        self.separation = resolve_separation(config.separation, prepared.mask.mode, config.data, volumes)
        distance = self.separation == "distance"
        self.out_channels = self.class_channels + int(distance)  # the model's: class logits, then the distance
        wmap = {"w0": config.w0, "sigma": config.sigma} if config.weight_map else None
        spacing = prepared.spacing
        super().__init__(
            to_tensors(prepared.train, prepared.normalization, device, weight_map=wmap, distance=distance,
                       spacing=spacing),
            config.patch_size,
            config.foreground_oversample,
        )  # fmt: skip
        self.val_set = to_tensors(prepared.val, prepared.normalization, device, distance=distance, spacing=spacing)
        if config.tune_instances and (prepared.val.instances is None or not len(prepared.val)):
            raise ValueError(
                f"`tune_instances` needs instance masks and a validation split; {config.data} has "
                f"{'no validation images' if not len(prepared.val) else 'no instance masks'}"
            )
        dims = model_defaults(config.model).get("spatial_dims")
        self.spatial_dims = check_spatial_dims(config, prepared, None if dims is None else int(dims))
        check_fit(config, prepared, self.class_channels, self.out_key, extra=int(distance))
        self.dims_option = {"spatial_dims": self.spatial_dims} if dims is not None else {}
        self.train_size = len(self.train_set)
        self.bn_average_epochs = config.bn_average_epochs
        self.augment = (
            None
            if config.augment.get("enabled", True) is False
            else AugmentConfig(**{k: v for k, v in config.augment.items() if k != "enabled"})
        )
        self.loss_fn = self._make_loss()

    def attach(self, model: nn.Module) -> None:
        super().attach(model)
        if self.config.head_init == "prior":  # start at the class prior, not a random constant (train/head_init.py)
            from unetkit.train.head_init import class_priors, init_head_to_prior

            probe = torch.Generator().manual_seed(epoch_seed(self.config.seed, -1, 3))
            images = self._sampler().batch(self.epoch_order(1, self.config.batch_size, probe), probe)["image"]
            if self.config.channels_last:
                images = images.contiguous(memory_format=channels_last_format(images))
            classes = max(self.prepared.mask.num_classes, 2)
            priors = class_priors(self.train_set.targets, self.train_set.valid, classes)
            extra = []
            if self.train_set.distances is not None:  # the distance channel starts at the mean target
                extra = [float(torch.cat([d.flatten() for d in self.train_set.distances]).mean())]
            init_head_to_prior(model, images, priors, self.out_channels, sigmoid_priors=extra)

    def model_options(self) -> dict[str, Any]:
        return {"in_channels": self.prepared.in_channels, self.out_key: self.out_channels, **self.dims_option}

    def loss(self) -> nn.Module:
        return self.loss_fn

    def _make_loss(self) -> nn.Module:
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
        loss = SegmentationLoss(
            loss_name,
            self.class_channels,
            pos_weight=float(pos_weight) if pos_weight is not None else None,
            class_weights=class_weights,
        )
        return (SeparationLoss(loss) if self.separation == "distance" else loss).to(self.device)

    def batch(
        self, indices: list[int], generator: torch.Generator, augment: torch.Generator, rows: slice
    ) -> dict[str, torch.Tensor]:
        batch = self._sampler().batch(indices, generator, rows)
        if self.augment is None:
            return batch
        extras = {k: v for k, v in batch.items() if k in ("valid", "weight", "distance")}
        image, target, extras = augment_batch(
            batch["image"],
            batch["target"],
            config=self.augment,
            generator=augment,
            extras=extras,
            shard=(rows.start, len(indices)),
            spacing=self.prepared.spacing,  # volumes: rotations and elastic field in physical units
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
            extra = {} if self.val_set.distances is None else {"distance": self.val_set.distances[i][None]}
            losses.append(self.loss_fn(logits, target, valid=valid, weight=weight, **extra))
            pred = _predict(logits[:, : self.class_channels])
            meter.update(pred, target, valid)
            if i < self.config.samples:
                overlays.append(viz.overlay(*_slice_of(self.prepared.val.images[i], pred[0], target[0], valid[0])))
        metrics: dict[str, Any] = {}
        if len(self.val_set):
            metrics["val_loss"] = world.average(losses, len(self.val_set)).item()
            world.sum_(meter.counts)
            metrics.update(meter.compute())
        shown = [s for part in world.gather(overlays) for s in part]  # on rank 0
        return Validation(metrics, viz.picture_row(shown) if shown else None)

    def finish(self, run: Path) -> None:
        """With `tune_instances`: choose and fit the instance post-processing on the validation split with the
        best weights and add it to the checkpoints' config.json (`predict --instances` reads it)."""
        if not self.config.tune_instances:
            return
        import json

        from unetkit._fs import atomic_write_bytes
        from unetkit.models.checkpoint import load_model
        from unetkit.train.instance_tuning import tune_instances

        val = self.prepared.val
        assert val.instances is not None  # checked at the start
        best = load_model(run / "best", map_location=self.device)
        fitted = tune_instances(best, self.val_set.images, val.instances, self.class_channels)
        logger.info("instances: %s fitted on the validation split (instance F1 %.4f)", fitted["summary"], fitted["f1"])
        for sub in ("best", "last"):
            path = run / sub / "config.json"
            config = json.loads(path.read_text())
            config["instances"] = fitted
            atomic_write_bytes(path, (json.dumps(config, indent=2) + "\n").encode("utf-8"))

    def extra(self) -> dict[str, Any]:
        mask, prepared = self.prepared.mask, self.prepared
        return {
            "task": "segmentation",
            "preprocess": prepared.normalization.to_dict(),
            "mask": {
                "mode": mask.mode,
                "num_classes": mask.num_classes,
                "label_values": mask.label_values,
                "ignore_index": mask.ignore_index,
            },
            "output": "sigmoid" if self.class_channels == 1 else "softmax",
            **({"separation": "distance"} if self.separation == "distance" else {}),
            "spatial_dims": self.spatial_dims,
            **({"spacing": list(self.prepared.spacing)} if self.prepared.spacing is not None else {}),
        }
