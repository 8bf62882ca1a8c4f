"""The self-configuring default: from a folder's fingerprint (`unetkit.data.fingerprint`) and the device,
the settings a user did not give, fitted to a wall-clock `time_budget` (`train --plan auto`, the default
for folders). Our own rules, after nnU-Net's experiment planner (Isensee et al. 2021,
`nnunetv2/experiment_planning/`):

- patch: the median image size (nnU-Net starts from it), capped per device (`PATCH_CAP`) and rounded to
  the network's down-sampling factor; smaller only while the budget would allow fewer than `MIN_STEPS`
  steps (on the CT-like set, 168 steps of 64^2 x 4 reached Dice 0.48 where 78 of 128^2 x 8 reached 0.91).
- volumes (a folder of NIfTI / NRRD / TIFF stacks, nnU-Net's raw layout): the patch shape from the median
  volume shape and voxel spacing within `PATCH_VOXELS`, shortest along the coarse axis (`volume_patch`), batch
  `BATCH_3D`, width `WIDTH_3D`, the model with `spatial_dims` 3; for thick slices, kernels of 1 and no pooling
  along the coarse axis until the others have caught up with its spacing (`volume_pools`, nnU-Net's rule).
- depth: down-samplings while the deepest feature map keeps at least `MIN_EDGE` pixels (nnU-Net: 4), at
  most `MAX_DEPTH`; width: `base_channels` per device (nnU-Net: 32 on a GPU).
- batch: per device, at most the patches that cover `COVERAGE` of the data set's pixels per step
  (nnU-Net: 5%), at least `MIN_BATCH` (BatchNorm needs a few samples).
- loss: Dice + cross-entropy on a softmax output (nnU-Net's default; two channels for binary masks,
  which also learns faster than a single sigmoid channel, see README "BCE"); for instance masks, one more
  output learns each object's normalised distance to its outline (`separation: distance`), whose valleys split
  touching objects; with `separation: none` and touching objects, the U-Net paper's border weight map on the
  cross-entropy part instead.
- normalisation: the fingerprint's choice; foreground oversampling 1/3 (nnU-Net).
- steps: a short timed trial of the planned step on this device, then epochs x steps that fill the
  budget with validation included; instance post-processing fitted on the validation split.

Every choice can be overridden: a setting given on the command line, in `--config` or (Python API) one
that differs from the `TrainConfig` default is kept. The plan is logged, written as `RUN/plan.json`, and
the resolved settings are the run's `config.yaml` (with `plan: off`, so that file re-creates the run).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from unetkit._device import resolve_device
from unetkit.train.config import TrainConfig, parse_duration
from unetkit.train.data import per_axis
from unetkit.train.tasks.base import model_defaults

__all__ = ["DEFAULT_BUDGET", "Plan", "make_plan", "resolve_plan", "volume_patch", "volume_pools"]

logger = logging.getLogger(__name__)

DEFAULT_BUDGET = "3m"
PATCH_CAP = {"cpu": 128, "cuda": 384}
WIDTH = {"cpu": 16, "cuda": 32}
BATCH = {"cpu": 8, "cuda": 16}
MIN_BATCH = 8
MIN_EDGE = 8
MAX_DEPTH = 4
MIN_PATCH = 64
MIN_STEPS = 60  # shrink the patch only when the budget allows fewer steps (larger patches learned more)
COVERAGE = 0.05
OVERSAMPLE = 1 / 3
TOUCHING = 0.15  # objects touching another above this share: the border weight map
BUDGET_USE = 0.85  # of the budget for training steps + validation; the rest for start-up and saving
EPOCH_OVERHEAD_S = 1.5  # checkpoints, curves, overlays per epoch
STEPS_PER_EPOCH = (25, 200)
TRIAL_STEPS = 3
# volumes (nnU-Net's 3D configuration: batch 2, >= 4 voxels per axis in the deepest map); voxels per patch
PATCH_VOXELS = {"cpu": 48**3, "cuda": 128**3}
WIDTH_3D = {"cpu": 8, "cuda": 32}
BATCH_3D = 2
MIN_EDGE_3D = 4


@dataclass
class Plan:
    """The planned settings, why each was chosen, and what they were chosen from."""

    settings: dict[str, Any]
    reasons: dict[str, str]
    fingerprint: dict[str, Any]
    measured: dict[str, float] = field(default_factory=dict)

    def lines(self) -> list[str]:
        lines = [f"plan: {key} = {self.settings[key]!r} ({self.reasons.get(key, '')})" for key in self.settings]
        return lines + [f"plan: {key}: {why}" for key, why in self.reasons.items() if key not in self.settings]

    def to_dict(self) -> dict[str, Any]:
        return {"settings": self.settings, "reasons": self.reasons, "measured": self.measured,
                "fingerprint": self.fingerprint}  # fmt: skip

    def save(self, path: Path) -> None:
        from unetkit._fs import atomic_write_bytes

        atomic_write_bytes(path, (json.dumps(self.to_dict(), indent=2, default=str) + "\n").encode())


def _depth(patch: int) -> int:
    depth = 0
    while depth < MAX_DEPTH and patch // 2 ** (depth + 1) >= MIN_EDGE:
        depth += 1
    return depth


def volume_patch(
    shape: list[int], spacing: list[float] | None, voxels: int
) -> tuple[list[int], list[list[int]], list[list[int]]]:
    """A patch shape for volumes of median `shape` and `spacing` within `voxels`, with the conv kernels per level
    and the pooling strides per down-sampling it allows (`volume_pools`).

    After nnU-Net's planner: start from the median shape and, while the patch holds too many voxels, shorten the
    axis of the largest physical extent by 10%; anisotropic data thus gets fewer voxels along its coarse axis, and
    the patch covers a region of similar size in millimetres on every axis. Each side is then rounded to a multiple
    of its axis' pooling factor (the nearest, or down where that exceeds `voxels`).
    """
    patch, step = [int(n) for n in shape], spacing or [1.0] * len(shape)
    while math.prod(patch) > voxels and max(patch) > MIN_EDGE_3D:
        extent = [n * s for n, s in zip(patch, step, strict=True)]
        axis = max(range(len(patch)), key=lambda a: (extent[a], patch[a]))
        patch[axis] = max(MIN_EDGE_3D, int(patch[axis] * 0.9))
    kernels, pools = volume_pools(patch, step)
    units = [math.prod(p[axis] for p in pools) for axis in range(len(patch))]
    nearest = [max(u, round(n / u) * u) for n, u in zip(patch, units, strict=True)]
    if math.prod(nearest) > voxels:
        nearest = [max(u, n // u * u) for n, u in zip(patch, units, strict=True)]
    return nearest, kernels, pools


def volume_pools(patch: list[int], spacing: list[float] | None) -> tuple[list[list[int]], list[list[int]]]:
    """Conv kernels per level and pooling strides per down-sampling for `patch` at `spacing`, after nnU-Net's
    planner (Isensee et al. 2021, Nat. Methods 18:203): at each level an axis is pooled while its current spacing
    is at most twice the finest and it keeps `MIN_EDGE_3D` voxels; an axis coarser than that (thick slices) gets
    kernel 1 and no pooling until the pooling of the others has brought them within that factor of it (a kernel
    of 3, once reached, is kept where an axis stops pooling for want of voxels). At most
    `MAX_DEPTH` down-samplings; none once no axis can be pooled. Isotropic cubes get 3 and 2 everywhere."""
    step, size = list(spacing or [1.0] * len(patch)), [int(n) for n in patch]
    kernels: list[list[int]] = []
    pools: list[list[int]] = []
    while True:
        fine = min(step)
        last = kernels[-1] if kernels else [1] * len(step)  # an axis with kernel 3 keeps it (nnU-Net)
        kernels.append([3 if s <= 2 * fine or k == 3 else 1 for s, k in zip(step, last, strict=True)])
        pool = [2 if s <= 2 * fine and n // 2 >= MIN_EDGE_3D else 1 for s, n in zip(step, size, strict=True)]
        if len(pools) == MAX_DEPTH or 2 not in pool:
            return kernels, pools
        pools.append(pool)
        step = [s * p for s, p in zip(step, pool, strict=True)]
        size = [n // p for n, p in zip(size, pool, strict=True)]


def _trial_seconds(config: TrainConfig, channels: int, classes: int, device: torch.device, dims: int = 2) -> float:
    """Seconds of one training step (augmentation, forward, backward, update) of `config`'s model on patches of
    `dims` spatial axes, timed."""
    from unetkit.data.augment import AugmentConfig, augment_batch
    from unetkit.losses import SegmentationLoss
    from unetkit.models import create_model
    from unetkit.train.step import channels_last_format

    torch.manual_seed(0)
    options = {**config.model_options, "in_channels": channels, "num_classes": classes}  # the data decides these
    if dims == 3 and "spatial_dims" in model_defaults(config.model):  # volumes, whatever model options were given
        options.setdefault("spatial_dims", 3)
    patch = list(per_axis(config.patch_size, dims, "patch_size"))
    shape = (config.batch_size, channels, *patch)
    layout = channels_last_format(len(shape))
    model = create_model(config.model, **options).to(device).to(memory_format=layout)  # type: ignore[call-overload]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = SegmentationLoss("dice_ce", classes).to(device)
    generator = torch.Generator(device=device).manual_seed(0)
    times = []
    for step in range(TRIAL_STEPS + 1):
        start = time.perf_counter()
        x = torch.randn(shape, device=device)
        y = torch.randint(0, classes, (shape[0], *shape[2:]), device=device)
        x, y, _ = augment_batch(x, y, config=AugmentConfig(), generator=generator)
        loss = loss_fn(model(x.contiguous(memory_format=layout)), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step:  # the first step warms up
            times.append(time.perf_counter() - start)
    return float(sorted(times)[len(times) // 2])


def make_plan(
    config: TrainConfig, fingerprint: dict[str, Any], *, given: set[str], measure: bool = True
) -> tuple[TrainConfig, Plan]:
    """The planned config: `config` with every setting not in `given` chosen from `fingerprint`."""
    device = resolve_device(config.device)
    kind = "cuda" if device.type == "cuda" else "cpu"
    budget = parse_duration(config.time_budget or DEFAULT_BUDGET)
    settings: dict[str, Any] = {}
    reasons: dict[str, str] = {}

    def choose(name: str, value: Any, why: str) -> None:
        if name not in given:
            settings[name], reasons[name] = value, why

    height, width = (int(v) for v in (fingerprint["sizes"]["height"][1], fingerprint["sizes"]["width"][1]))
    mask = fingerprint["mask"]
    classes = int(mask["num_classes"])
    channels = int(fingerprint["channels"])
    shape: list[int] = [int(n) for n in fingerprint.get("shape") or []]  # volumes: the median shape per axis
    volumes = bool(shape)
    options = dict(config.model_options) if "model_options" in given else {}
    if volumes:
        planned_patch, kernels, pools = volume_patch(shape, fingerprint.get("spacing"), PATCH_VOXELS[kind])
        depth = 0  # without per-axis pooling: the down-samplings every axis of the planned patch allows
        while depth < MAX_DEPTH and min(planned_patch) // 2 ** (depth + 1) >= MIN_EDGE_3D:
            depth += 1
        patch: int | list[int] = config.patch_size if "patch_size" in given else planned_patch
        spacing = "x".join(f"{v:g}" for v in fingerprint.get("spacing") or [1.0] * len(shape))
        choose("patch_size", patch, f"median volume {'x'.join(map(str, shape))} at spacing {spacing}, at most "
               f"{PATCH_VOXELS[kind]} voxels on {kind}, fewest voxels along the coarsest axis (nnU-Net)")  # fmt: skip
        choose("batch_size", BATCH_3D, f"{BATCH_3D} volume patches per step, as nnU-Net's 3D configuration")
        choose("model", "unet", "padded convolutions: any volume shape (spatial_dims 3)")
        options.setdefault("base_channels", WIDTH_3D[kind])
        anisotropic = ""
        accepts = {"kernel_size", "pool"} <= set(model_defaults(settings.get("model", config.model)))
        uniform = all(k == 3 for row in kernels for k in row) and all(p == 2 for row in pools for p in row)
        if accepts and not uniform and not {"depth", "kernel_size", "pool"} & set(options) and patch == planned_patch:
            depth = len(pools)  # thick slices (or a flat patch): in-plane first, per axis (nnU-Net)
            options |= {"depth": depth, "kernel_size": kernels, "pool": pools}
            anisotropic = f"; kernels {kernels}, pooling {pools} for the spacing"
        options.setdefault("depth", depth)
        if "spatial_dims" in model_defaults(settings.get("model", config.model)):  # a 2-D-only model: training says so
            options.setdefault("spatial_dims", 3)
        at = "x".join(map(str, planned_patch))
        choose("model_options", options, f"width {WIDTH_3D[kind]} on {kind}; {depth} down-samplings keep the deepest "
               f"map >= {MIN_EDGE_3D} voxels per axis at patch {at}{anisotropic}")  # fmt: skip
    else:
        side = int(config.patch_side) if "patch_size" in given else min(height, width, PATCH_CAP[kind])
        depth = _depth(side)
        patch = side = max(2**depth, side // 2**depth * 2**depth)
        train_pixels = fingerprint["counts"].get("train", 1) * height * width
        batch = BATCH[kind] if "batch_size" not in given else config.batch_size
        batch = (
            max(MIN_BATCH, min(batch, math.ceil(COVERAGE * train_pixels / side**2)))
            if "batch_size" not in given
            else batch
        )
        choose("model", "unet", "padded convolutions: any image size")
        options.setdefault("base_channels", WIDTH[kind])
        options.setdefault("depth", depth)
        choose("model_options", options, f"width {WIDTH[kind]} on {kind}; {depth} down-samplings keep the deepest map "
               f">= {MIN_EDGE} px at patch {patch}")  # fmt: skip
        choose("patch_size", patch, f"median image {height}x{width}, at most {PATCH_CAP[kind]} on {kind}")
        choose("batch_size", batch, f"{BATCH[kind]} on {kind}, at most {COVERAGE:.0%} of the training pixels per "
               f"step, at least {MIN_BATCH}")  # fmt: skip
    choose("loss", "dice_ce", "Dice + cross-entropy on a softmax output, as nnU-Net")
    choose("out_channels", classes, f"{classes} classes, softmax (two channels for binary masks)")
    touching = float((fingerprint.get("objects") or {}).get("touching", 0.0))
    instances = mask["mode"] == "instances"
    if volumes:
        choose("weight_map", False, "the U-Net paper's border weight map is 2-D")
    elif instances and config.separation != "none":
        choose("weight_map", False, f"{touching:.0%} of the objects touch another: the object-distance output "
               "separates them (beside it the border weight map lowered instance F1 on 2 sets of 3)")  # fmt: skip
    else:
        choose("weight_map", instances and touching >= TOUCHING,
               f"{touching:.0%} of the objects touch another (border weight map from {TOUCHING:.0%})")  # fmt: skip
    if instances and volumes:
        choose("separation", "none", "instance volumes: watershed on the foreground (a distance output lowered "
               "3-D instance F1 at short budgets: 0.58 against 0.74 in 3 min on `data realistic stacks`)")  # fmt: skip
    elif instances:
        choose("separation", "distance", "instance masks: one more output learns each object's distance to its "
               "outline, whose valleys split touching objects (StarDist's object probability)")  # fmt: skip
    if instances and not fingerprint["counts"].get("val", 0):
        choose("tune_instances", False, "no validation images to fit the instance post-processing on: "
               "`predict --instances` uses the method's defaults")  # fmt: skip
    elif instances:
        choose("tune_instances", True, "instance masks: choose and fit the instance post-processing "
               "(components, watershed, distance seeds; min_size) on the validation split")  # fmt: skip
    else:
        choose("tune_instances", False, "the masks are not instance labels")
    choose("normalize", fingerprint["normalization"]["scheme"], fingerprint["normalization"].get("reason", ""))
    choose("foreground_oversample", round(OVERSAMPLE, 3), "a third of the patches centred on foreground (nnU-Net)")
    choose("mask_mode", mask["mode"], mask.get("reason", ""))
    if mask.get("ignore_index") is not None:  # e.g. VOC's void border, recognised in palette masks
        choose("ignore_index", mask["ignore_index"], "the masks' ignore value (no loss, metric or prediction)")
    planned = dataclasses.replace(config, **settings)
    planned.validate()
    measured: dict[str, float] = {"budget_s": budget}
    largest = max(int(fingerprint["sizes"]["height"][2]), int(fingerprint["sizes"]["width"][2]))
    sides = per_axis(planned.patch_size, 3 if volumes else 2, "patch_size")
    if max(sides) > 2 * largest or min(sides) == 0:  # a patch training refuses, or whole images: no trial
        measure = False
    if not measure:
        reasons["epochs"] = "not planned: no timed trial (--no-timing, or several processes that must plan alike)"
    elif "steps_per_epoch" not in given:
        seconds = _trial_seconds(planned, channels, max(classes, 2), device, 3 if volumes else 2)
        if measure and device.type == "cpu" and "threads" not in given and torch.get_num_threads() > 1:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # a loaded machine runs one thread faster than several competing ones
            try:
                single = _trial_seconds(planned, channels, max(classes, 2), device, 3 if volumes else 2)
            finally:
                torch.set_num_threads(threads)
            if single < seconds:
                planned.threads = settings["threads"] = 1
                reasons["threads"] = (
                    f"1 thread {single * 1000:.0f} ms vs {threads} threads {seconds * 1000:.0f} ms a step"
                )
                seconds = single
                torch.set_num_threads(1)
        while (
            not volumes  # a volume's patch is already fitted to a voxel budget
            and "patch_size" not in given
            and planned.patch_side > MIN_PATCH
            and (budget * BUDGET_USE / seconds < MIN_STEPS)
        ):
            smaller = max(MIN_PATCH, planned.patch_side * 3 // 4 // 2**depth * 2**depth)
            if smaller == planned.patch_side:
                break
            planned.patch_size = settings["patch_size"] = smaller
            if "smaller" not in reasons["patch_size"]:
                reasons["patch_size"] += f"; smaller to allow {MIN_STEPS} steps in the budget"
            seconds = _trial_seconds(planned, channels, max(classes, 2), device, 3 if volumes else 2)
        sides = per_axis(planned.patch_size, 3 if volumes else 2, "patch_size")
        val_pixels = fingerprint["counts"].get("val", 0) * (math.prod(shape) if volumes else height * width)
        val_seconds = seconds / 3 * val_pixels / (planned.batch_size * math.prod(sides))  # forward only
        if "epochs" in given:  # the user's epochs, each long enough that together they fill the budget
            epochs = planned.epochs
            steps = max(1, int((budget * BUDGET_USE - epochs * (val_seconds + EPOCH_OVERHEAD_S)) / seconds))
            one_pass = math.ceil(fingerprint["counts"].get("train", 1) / planned.batch_size)
            per_epoch = max(one_pass, steps // epochs, 1)
            settings["steps_per_epoch"] = planned.steps_per_epoch = per_epoch
            reasons["steps_per_epoch"] = (
                f"--epochs {epochs} given: {seconds * 1000:.0f} ms per step measured on {kind}, so each epoch is "
                f"{per_epoch} steps of {planned.batch_size} patches and the {epochs} epochs fill {budget:.0f} s "
                f"(one pass over the {fingerprint['counts'].get('train', 1)} training images would be {one_pass} "
                "step(s): an epoch here is a number of steps, as nnU-Net's 250)"
            )
        else:
            # validation and per-epoch overhead come out of the steps: as many epochs (2 to 40) as fit with at
            # least STEPS_PER_EPOCH[0] steps each, then the steps that fill the rest
            overhead = val_seconds + EPOCH_OVERHEAD_S
            epochs = min(40, max(2, int(budget * BUDGET_USE / (STEPS_PER_EPOCH[0] * seconds + overhead))))
            steps = max(epochs, int((budget * BUDGET_USE - epochs * overhead) / seconds))
            per_epoch = max(1, min(STEPS_PER_EPOCH[1], steps // epochs))
            epochs = max(2, steps // per_epoch)
            settings["epochs"], settings["steps_per_epoch"] = epochs, per_epoch
            planned.epochs, planned.steps_per_epoch = epochs, per_epoch
            why = (
                f"{seconds * 1000:.0f} ms per step measured on {kind}: {epochs} x {per_epoch} steps fit {budget:.0f} s"
            )
            reasons["epochs"] = reasons["steps_per_epoch"] = why
        if not planned.time_budget:  # the engine stops at an epoch boundary once the budget is spent
            settings["time_budget"] = planned.time_budget = DEFAULT_BUDGET
            reasons["time_budget"] = "the plan's default; training stops at an epoch boundary once it is spent"
        measured |= {"seconds_per_step": seconds, "validation_seconds": val_seconds}
        if planned.threads == 1 and "threads" in settings:
            torch.set_num_threads(threads)
    planned.plan = "off"
    return planned, Plan(settings, reasons, fingerprint, measured)


def _given(config: TrainConfig) -> set[str]:
    """The fields that differ from `TrainConfig`'s defaults (what a Python caller set)."""
    default = TrainConfig()
    return {f.name for f in dataclasses.fields(TrainConfig) if getattr(config, f.name) != getattr(default, f.name)}


def resolve_plan(config: TrainConfig, given: set[str] | None = None) -> tuple[TrainConfig, Plan | None]:
    """`config` planned when `config.plan` is `auto` and `config.data` is a folder; else unchanged.

    Args:
        config: the validated settings.
        given: the fields the user set (command line, YAML); None: those that differ from the defaults.
    """
    from unetkit.data.fingerprint import fingerprint_folder

    if config.plan != "auto" or config.task != "segmentation" or config.data.startswith("synthetic:"):
        return config, None
    given = _given(config) if given is None else set(given)
    fingerprint, _, _ = fingerprint_folder(
        config.data,
        mask_mode=config.mask_mode,
        ignore_index=config.ignore_index,
        val_fraction=config.val_fraction,
        seed=config.seed,
        normalize=config.normalize,
    )
    import os

    several = int(os.environ.get("WORLD_SIZE", "1") or 1) > 1  # every process must plan alike: no timed trial
    planned, plan = make_plan(config, fingerprint.to_dict(), given=given, measure=not several)
    for line in plan.lines():
        logger.info("%s", line)
    return planned, plan
