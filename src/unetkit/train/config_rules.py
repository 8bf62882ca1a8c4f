"""The rules `TrainConfig.validate` checks: which fields each task uses, the choices of the enum fields, the
ranges of the numbers, and model options typed by the model's own defaults (nanoGPT's configurator checks an
override against its default's type). Checking never changes the config; spelling is canonicalised once, when
a config is parsed (`canonical_choices`).

A field a task does not use must keep its default: `weight_map: true` on `denoise`, or `noise_amount` on
`segmentation`, is refused naming the field and the task, instead of being ignored.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

from unetkit._options import close_matches, quote
from unetkit.data.normalize import NORMALIZATIONS
from unetkit.losses import LOSSES as LOSS_NAMES

if TYPE_CHECKING:
    from unetkit.train.config import TrainConfig

__all__ = [
    "AMP_MODES",
    "CHOICES",
    "IMAGE_LOSSES",
    "IMAGE_TASKS",
    "LOSSES",
    "MONITORS",
    "OPTIMIZERS",
    "SCHEDULERS",
    "TASKS",
    "TASK_FIELDS",
    "canonical_choices",
    "check_config",
    "parse_duration",
]

TASKS = ("segmentation", "denoise", "superres", "diffusion")
IMAGE_TASKS = ("denoise", "superres", "diffusion")  # `unetkit.train.tasks.image2image` / `.diffusion`
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("cosine", "constant", "poly")
AMP_MODES = ("auto", "bf16", "fp16", "off")
LOSSES = ("auto", *LOSS_NAMES)
IMAGE_LOSSES = ("auto", "mse", "l1")
MONITORS = {  # the metrics that may pick `best/`, per task
    "segmentation": ("auto", "dice", "iou", "loss"),
    "denoise": ("auto", "psnr", "ssim", "loss"),
    "superres": ("auto", "psnr", "ssim", "loss"),
    "diffusion": ("auto", "loss"),
}
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CHOICES: dict[str, tuple[str, ...]] = {  # enum fields with the same choices for every task
    "task": TASKS,
    "optimizer": OPTIMIZERS,
    "scheduler": SCHEDULERS,
    "amp": AMP_MODES,
    "compile_mode": COMPILE_MODES,
    "mask_mode": ("auto", "binary", "classes", "instances"),
    "noise_type": ("uniform", "gaussian"),
    "beta_schedule": ("linear", "cosine"),
    "normalize": NORMALIZATIONS,
    "plan": ("auto", "off"),
    "head_init": ("prior", "default"),
    "separation": ("auto", "distance", "none"),
}
_SEGMENTATION = ("segmentation",)
# fields only some tasks use; every other field is common to all tasks
TASK_FIELDS: dict[str, tuple[str, ...]] = {
    "mask_mode": _SEGMENTATION,
    "pos_weight": _SEGMENTATION,
    "class_weights": _SEGMENTATION,
    "weight_map": _SEGMENTATION,
    "separate_touching": _SEGMENTATION,
    "w0": _SEGMENTATION,
    "sigma": _SEGMENTATION,
    "out_channels": _SEGMENTATION,
    "augment": _SEGMENTATION,
    "ignore_index": _SEGMENTATION,
    "normalize": _SEGMENTATION,
    "plan": _SEGMENTATION,
    "time_budget": _SEGMENTATION,
    "foreground_oversample": _SEGMENTATION,
    "tune_instances": _SEGMENTATION,
    "head_init": _SEGMENTATION,
    "bn_average_epochs": _SEGMENTATION,
    "separation": _SEGMENTATION,
    "digits_size": IMAGE_TASKS,
    "noise_amount": ("denoise",),
    "noise_type": ("denoise",),
    "scale_factor": ("superres",),
    "residual": ("denoise", "superres"),
    "diffusion_steps": ("diffusion",),
    "beta_schedule": ("diffusion",),
    "sample_steps": ("diffusion",),
    "time_embedding": ("diffusion",),
}
POSITIVE_INTS = ("epochs", "batch_size", "synthetic_train", "synthetic_val", "synthetic_size")
COUNTS = (
    "steps_per_epoch",
    "early_stopping",
    "samples",
    "threads",
    "out_channels",
    "seed",
    "log_every",
    "bn_average_epochs",
)
BOOLS = (
    "weight_map",
    "separate_touching",
    "channels_last",
    "deterministic",
    "sync_batchnorm",
    "grad_checkpointing",
    "residual",
    "tune_instances",
)
DIGIT_SIZES = (28, 32)
MAX_DURATION_S = 30 * 86400  # a time budget beyond a month is a typo (and 1e9 hours would plan billions of epochs)


def canonical_choices(values: dict[str, Any]) -> dict[str, Any]:
    """`values` with the enum fields spelled as their choices (`AdamW` -> `adamw`), unknown ones unchanged; a
    `time_budget` given as a number of seconds (`time_budget: 90` in YAML) as text (`90s`)."""
    out = dict(values)
    budget = out.get("time_budget")
    if isinstance(budget, (int, float)) and not isinstance(budget, bool):
        out["time_budget"] = f"{budget}s"
    for name, choices in CHOICES.items():
        if isinstance(out.get(name), str):
            lowered = {c.lower(): c for c in choices}
            out[name] = lowered.get(out[name].lower(), out[name])
    return out


def _check_patch_size(config: TrainConfig) -> None:
    """One side (`0` = whole images), or for segmentation one positive side per spatial axis (volumes: 3)."""
    value = config.patch_size
    if not isinstance(value, list):
        _check_int("patch_size", value, 0)
        return
    if config.task != "segmentation":
        raise ValueError(f"`patch_size` must be one side for task {config.task!r}, got {quote(value)}")
    if len(value) not in (2, 3) or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
        raise ValueError(
            f"`patch_size` must be one side or 2-3 positive sides (one per spatial axis), got {quote(value)}"
        )


def check_config(config: TrainConfig) -> None:
    """Every rule of the module docstring; `ValueError` naming the field, the rule and the value."""
    for name in ("data", "out", "model", "device"):
        if not isinstance(getattr(config, name), str) or not getattr(config, name).strip():
            raise ValueError(f"`{name}` must be a non-empty string, got {quote(getattr(config, name))}")
    for name, choices in CHOICES.items():
        _check_choice(name, getattr(config, name), choices)
    _check_task_fields(config)
    for name in POSITIVE_INTS:
        _check_int(name, getattr(config, name), 1)
    for name in COUNTS:
        _check_int(name, getattr(config, name), 0)
    _check_patch_size(config)
    if config.seed >= 2**63:
        raise ValueError(f"`seed` must be below 2**63, got {config.seed}")
    for name in BOOLS:
        if not isinstance(getattr(config, name), bool):
            raise ValueError(f"`{name}` must be true or false, got {quote(getattr(config, name))}")
    _check_real("val_fraction", config.val_fraction, 0.0, 1.0)
    for name in ("lr", "sigma", "dist_timeout"):
        _check_real(name, getattr(config, name), 0.0, math.inf, low_open=True)
    for name in ("weight_decay", "grad_clip", "warmup_epochs", "w0"):
        _check_real(name, getattr(config, name), 0.0, math.inf)
    _check_real("momentum", config.momentum, 0.0, 1.0)
    _check_real("ema_decay", config.ema_decay, 0.0, 1.0)
    if config.compile not in (True, False, "auto"):
        raise ValueError(f"`compile` must be true, false or 'auto', got {quote(config.compile)}")
    _check_choice("monitor", config.monitor, MONITORS[config.task], f" for task {config.task!r}")
    if config.task == "segmentation":
        _check_segmentation(config)
    else:
        _check_image_task(config)
    if config.device != "auto":
        import torch

        try:
            torch.device(config.device)
        except (RuntimeError, ValueError) as err:
            raise ValueError(f"`device` must be auto, cpu, cuda or cuda:N, got {quote(config.device)}") from err
    _check_model(config)


def _check_task_fields(config: TrainConfig) -> None:
    defaults = type(config)()
    for name, tasks in TASK_FIELDS.items():
        if config.task not in tasks and getattr(config, name) != getattr(defaults, name):
            used = ", ".join(tasks)
            raise ValueError(
                f"`{name}` is not used by task {config.task!r} (it applies to {used}); leave it out, got "
                f"{quote(getattr(config, name))}"
            )


def _check_segmentation(config: TrainConfig) -> None:
    _check_choice("loss", config.loss, LOSSES, " for task 'segmentation'")
    if isinstance(config.pos_weight, str):
        if config.pos_weight != "auto":
            raise ValueError(f"`pos_weight` must be a number, 'auto' or null, got {quote(config.pos_weight)}")
    elif config.pos_weight is not None:
        _check_real("pos_weight", config.pos_weight, 0.0, math.inf, low_open=True)
    weights = config.class_weights
    if isinstance(weights, str):
        if weights != "balanced":
            raise ValueError(f"`class_weights` must be a list, 'balanced' or null, got {quote(weights)}")
    elif weights is not None:
        if not isinstance(weights, list) or not weights:
            raise ValueError(f"`class_weights` must be a list, 'balanced' or null, got {quote(weights)}")
        for i, weight in enumerate(weights):
            _check_real(f"class_weights[{i}]", weight, 0.0, math.inf)
    _check_augment(config.augment)
    from unetkit.data.masks import check_ignore_index

    check_ignore_index(config.ignore_index)
    budget = config.time_budget
    if not isinstance(budget, str) or (budget and parse_duration(budget) <= 0):
        raise ValueError(f"`time_budget` must be a duration such as 10m, 90s or 1h, got {quote(budget)}")
    share = config.foreground_oversample
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 <= share <= 1.0:
        raise ValueError(f"`foreground_oversample` must be a number in [0, 1], got {quote(share)}")


def _check_image_task(config: TrainConfig) -> None:
    _check_choice("loss", config.loss, IMAGE_LOSSES, f" for task {config.task!r}")
    if config.digits_size not in DIGIT_SIZES:
        raise ValueError(f"`digits_size` must be one of {DIGIT_SIZES}, got {quote(config.digits_size)}")
    if config.task == "denoise" and not (
        isinstance(config.noise_amount, (int, float)) and 0 < config.noise_amount <= 1
    ):
        raise ValueError(f"`noise_amount` must be in (0, 1], got {quote(config.noise_amount)}")
    least = {"scale_factor": 2, "diffusion_steps": 2, "sample_steps": 1, "time_embedding": 2}
    for name, low in least.items():
        if config.task in TASK_FIELDS[name]:
            _check_int(name, getattr(config, name), low)
    if config.task == "diffusion" and config.sample_steps > config.diffusion_steps:
        raise ValueError(
            f"`sample_steps` must be <= `diffusion_steps` ({config.diffusion_steps}), got {config.sample_steps}"
        )


def _check_augment(augment: Any) -> None:
    from unetkit.data.augment import AugmentConfig

    if not isinstance(augment, dict):
        raise ValueError(f"`augment` must be a mapping (key: value), got {quote(augment)}")
    known = ["enabled", *(f.name for f in dataclasses.fields(AugmentConfig))]
    for key in augment:
        if key not in known:
            hint = close_matches(str(key), known)
            did_you_mean = f"; did you mean {', '.join(repr(h) for h in hint)}?" if hint else ""
            raise ValueError(f"`augment`: unknown key {quote(key)}{did_you_mean}")
    if not isinstance(augment.get("enabled", True), bool):
        raise ValueError(f"`augment.enabled` must be true or false, got {quote(augment['enabled'])}")
    try:
        AugmentConfig(**{k: v for k, v in augment.items() if k != "enabled"})
    except ValueError as err:
        raise ValueError(f"`augment`: {err}") from err


def _check_model(config: TrainConfig) -> None:
    """The model name and options: each option's type against the model's own default for it, then the
    constructor on the meta device (no memory, no data). The constructor's `ValueError` is prefixed with the
    field; anything else it raises is a bug and propagates."""
    import torch

    from unetkit.models import create_model, get_model_entry

    get_model_entry(config.model)  # unknown names fail here, before any data is read
    options = config.model_options
    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise ValueError(f"`model_options` must be a mapping of option names to values, got {quote(options)}")
    try:
        with torch.device("meta"):
            defaults: dict[str, Any] = create_model(config.model).model_config  # type: ignore[assignment]
            for key, value in options.items():
                if key in defaults:
                    _check_option_type(config.model, key, value, defaults[key])
            create_model(config.model, **options)
    except ValueError as err:  # the constructor's own check of a value
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"`model_options` for {config.model!r}: {text}") from err


PER_AXIS_OPTIONS = ("kernel_size", "pool")  # integer options that also take one value per axis and/or per level


def _all_ints(value: Any) -> bool:
    """Integers (not booleans), or lists / tuples of them, nested."""
    if isinstance(value, (list, tuple)):
        return len(value) > 0 and all(_all_ints(v) for v in value)
    return isinstance(value, int) and not isinstance(value, bool)


def _check_option_type(model: str, key: str, value: Any, default: Any) -> None:
    """`value` has the type of the model's default for `key` (ints for ints, numbers for floats, ...)."""
    if value is None or default is None:
        return
    if key in PER_AXIS_OPTIONS and isinstance(default, int) and isinstance(value, (list, tuple)):
        if _all_ints(value):  # one per axis or one per level (nnU-Net's plans); the constructor checks the shape
            return
        raise ValueError(f"option {key!r} of {model!r} must be an integer or lists of integers, got {quote(value)}")
    kinds: list[tuple[type | tuple[type, ...], str]] = [
        (bool, "true or false"),
        (int, "an integer"),
        (float, "a number"),
        (str, "text"),
        ((list, tuple), "a list"),
    ]
    for kind, words in kinds:
        if isinstance(default, kind):
            ok = isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)
            if kind is float:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not ok:
                raise ValueError(f"option {key!r} of {model!r} must be {words}, got {quote(value)}")
            return


def parse_duration(text: str, name: str = "time_budget") -> float:
    """`"10m"`, `"90s"`, `"1h"`, `"1h30m"` or `"45"` (seconds) -> seconds (> 0); `ValueError` naming `name`."""
    import re

    raw = str(text).strip().lower()
    parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m(?:in)?)?\s*(?:(\d+(?:\.\d+)?)s?)?", raw)
    if not raw or parts is None or not any(parts.groups()):
        raise ValueError(f"`{name}` must be a duration such as 10m, 90s, 1h or 1h30m, got {quote(text)}")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in parts.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if not total > 0:
        raise ValueError(f"`{name}` must be longer than 0 seconds, got {quote(text)}")
    if not total <= MAX_DURATION_S:  # also inf: 400 nines of hours
        raise ValueError(f"`{name}` must be at most {MAX_DURATION_S // 86400} days, got {quote(text[:40])}")
    return total


def _check_choice(name: str, value: Any, choices: tuple[str, ...], where: str = "") -> None:
    """`value` is one of `choices`, spelled exactly (`canonical_choices` fixes the case of parsed configs)."""
    if isinstance(value, str) and value in choices:
        return
    hint = close_matches(str(value), choices)
    did_you_mean = f"; did you mean {', '.join(repr(h) for h in hint)}?" if hint else ""
    shown = ", ".join(repr(c) for c in choices)
    raise ValueError(f"`{name}` must be one of {shown}{where}, got {quote(value)}{did_you_mean}")


def _check_int(name: str, value: Any, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"`{name}` must be an integer >= {low}, got {quote(value)}")


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
        raise ValueError(f"`{name}` must be a finite number {rule}, got {quote(value)}")
