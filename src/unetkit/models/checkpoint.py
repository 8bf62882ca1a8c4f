"""Checkpoint directories that rebuild a model by themselves (after nanoGPT / nnU-Net / torchvision):

    CKPT/model.safetensors   weights, with DDP (`module.`) and torch.compile (`_orig_mod.`) prefixes stripped
    CKPT/config.json         format version, package version, model name and arguments, preprocessing,
                             mask label values, metrics

Writes are atomic: everything goes to a temporary sibling folder (files fsynced) that replaces the old
one by rename, so a crash leaves either the previous checkpoint or the new one, never half of each; a
rename cut short leaves the previous one as `.NAME.old`, which `recover_dir` (called by every reader)
moves back. Files are serialised in memory and written by Python, so a full disk raises `WriteError`
naming the checkpoint (the C++ / Rust writers of torch and safetensors report it as opaque errors).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unetkit._fs import fsync_dir, public_mode, write_error
from unetkit.models._registry import create_model
from unetkit.version import __version__

__all__ = [
    "CHECKPOINT_FORMAT",
    "FORMAT_VERSION",
    "load_model",
    "read_checkpoint_config",
    "resolve_checkpoint",
    "save_model",
    "recover_dir",
    "replace_dir",
    "unwrap_model",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "unetkit-checkpoint"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip `torch.compile` and DDP wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod  # type: ignore[assignment]
        elif isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        else:
            return model


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    fsync_dir(folder)


def replace_dir(tmp: Path, target: Path) -> None:
    """Move the finished folder `tmp` to `target`, keeping the old one until the new one is in place."""
    _fsync_tree(tmp)
    old = target.with_name(f".{target.name}.old")
    if old.exists():
        if not target.exists():  # an earlier replace was cut between its renames: the copy is the checkpoint
            os.replace(old, target)
        else:
            shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    public_mode(tmp)
    os.replace(tmp, target)
    fsync_dir(target.parent)
    if old.exists():
        shutil.rmtree(old)


def recover_dir(target: Path) -> bool:
    """Finish a `replace_dir` that was cut between its two renames: if `target` is missing and its
    `.NAME.old` copy exists, move the copy back. Returns True when it did."""
    old = target.with_name(f".{target.name}.old")
    if not target.exists() and old.is_dir():
        try:
            os.replace(old, target)
        except OSError:
            if target.is_dir():  # another process of the same job restored it first
                return False
            raise
        logger.warning("%s: restored from %s (a save was interrupted)", target, old)
        return True
    return False


def save_model(
    model: nn.Module,
    path: str | Path,
    *,
    extra: dict[str, Any] | None = None,
    files: dict[str, bytes] | None = None,
) -> Path:
    """Write `model` as a checkpoint directory at `path` (atomically).

    Args:
        model: a model from `create_model` (it carries `model_name` and `model_config`); wrappers are removed.
        path: the checkpoint directory.
        extra: more JSON-serialisable entries for `config.json` (preprocessing, label values, metrics).
        files: more files for the directory, name -> content (e.g. the training state beside `last/`'s weights),
            written and replaced together with the weights.
    """
    from safetensors.torch import save

    model = unwrap_model(model)
    name = getattr(model, "model_name", None)
    model_config = getattr(model, "model_config", None)
    if name is None or model_config is None:
        raise ValueError("`model` must come from unetkit.create_model (it needs model_name and model_config)")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp", dir=path.parent))
    except OSError as err:
        raise write_error(err, path) from err
    try:
        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        weights = save(state, metadata={"format": CHECKPOINT_FORMAT})  # bytes: written below by Python
        config = {
            "format": CHECKPOINT_FORMAT,
            "format_version": FORMAT_VERSION,
            "unetkit_version": __version__,
            "model": name,
            "model_config": model_config,
            **(extra or {}),
        }
        (tmp / WEIGHTS).write_bytes(weights)
        (tmp / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=False) + "\n")
        for name, content in (files or {}).items():
            (tmp / name).write_bytes(content)
        replace_dir(tmp, path)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise write_error(err, path) from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory from a checkpoint or run directory (`RUN/best`, else `RUN/last`)."""
    path = Path(path)
    recover_dir(path)
    for sub in ("best", "last"):
        if path.is_dir():
            recover_dir(path / sub)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint or run directory")
    if path.is_file():
        if path.name in (CONFIG, WEIGHTS):
            return path.parent
        raise ValueError(f"{path}: expected a checkpoint directory (with {CONFIG} and {WEIGHTS}) or a run directory")
    if (path / CONFIG).is_file():
        return path
    for sub in ("best", "last"):
        if (path / sub / CONFIG).is_file():
            return path / sub
    raise ValueError(f"{path}: not a checkpoint: no {CONFIG} here nor in best/ or last/")


def read_checkpoint_config(path: str | Path) -> dict[str, Any]:
    """The validated `config.json` of a checkpoint directory."""
    folder = resolve_checkpoint(path)
    file = folder / CONFIG
    try:
        config = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:  # nested past the parser
        raise ValueError(f"{file}: corrupted checkpoint config ({type(err).__name__})") from None
    if not isinstance(config, dict) or config.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{file}: not a unetkit checkpoint config")
    version = config.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"{file}: `format_version` must be an integer >= 1, got {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{file}: checkpoint format version {version} is newer than this unetkit ({__version__}) reads "
            f"(<= {FORMAT_VERSION}); upgrade unetkit"
        )
    if not isinstance(config.get("model"), str) or not isinstance(config.get("model_config", {}), dict):
        raise ValueError(f"{file}: corrupted checkpoint config (expected a model name and a model_config mapping)")
    _check_entries(config, file)
    return config


PREPROCESS_SCHEMES = ("image", "dataset", "none")  # unetkit.data.normalize's (models/ does not import data/)
MASK_VALUE_LIMIT = 65535  # predicted masks are written as uint8 or uint16


def _numbers(value: Any) -> bool:
    return isinstance(value, list) and all(_number(v) for v in value)


# what a checkpoint's entries may hold (models/ does not import data/ or train/: their names are repeated here and
# `tests/models/test_checkpoint_entries.py` checks them against the lists they come from)
CHECKPOINT_TASKS = ("segmentation", "denoise", "superres", "diffusion")
CHECKPOINT_OUTPUTS = ("softmax", "sigmoid", "identity", "residual")
MASK_MODES = ("binary", "classes", "instances")
INSTANCE_METHODS = ("components", "watershed", "distance")
PREPROCESS_KEYS = (
    "scheme",
    "joint",
    "percentiles",
    "center",
    "low",
    "high",
    "mean",
    "std",
    "reason",
    "units",
    "range",
    "note",
    "scale",
)  # scale: written by checkpoints of before the normalisation schemes
MASK_KEYS = ("mode", "num_classes", "label_values", "ignore_index")
INSTANCE_KEYS = ("method", "min_size", "h", "seed", "f1", "summary", "tried", "tuned_on")  # fit_instances' record
MAPPINGS = ("preprocess", "mask", "instances", "metrics", "train_config", "image", "model_config")


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _unknown(entry: dict[str, Any], known: tuple[str, ...], name: str, file: Path) -> None:
    extra = sorted(set(entry) - set(known))
    if extra:
        raise ValueError(f"{file}: unknown entry `{name}.{extra[0]}`; `{name}` holds {', '.join(known)}")


def _check_types(config: dict[str, Any], file: Path) -> None:
    """The shape of every entry prediction reads, as a user's config is checked (a `mask` that was a string, a
    `preprocess` that was null ended in tracebacks; unknown keys in them were ignored)."""
    for key in MAPPINGS:
        if key in config and not isinstance(config[key], dict):
            raise ValueError(f"{file}: `{key}` must be a mapping, got {type(config[key]).__name__}")
    for key, allowed in (("task", CHECKPOINT_TASKS), ("output", CHECKPOINT_OUTPUTS)):
        if key in config and config[key] not in allowed:
            raise ValueError(f"{file}: `{key}` must be one of {', '.join(allowed)}, got {config[key]!r}")
    if "unetkit_version" in config and not isinstance(config["unetkit_version"], str):
        raise ValueError(f"{file}: `unetkit_version` must be a string, got {config['unetkit_version']!r}")
    if "spatial_dims" in config and config["spatial_dims"] not in (2, 3):
        raise ValueError(f"{file}: `spatial_dims` must be 2 or 3, got {config['spatial_dims']!r}")
    if "spacing" in config and not (_numbers(config["spacing"]) and all(v > 0 for v in config["spacing"])):
        raise ValueError(f"{file}: `spacing` must be a list of positive numbers, got {config['spacing']!r}")
    if "epoch" in config and not (_integer(config["epoch"]) and config["epoch"] >= 0):
        raise ValueError(f"{file}: `epoch` must be an integer >= 0, got {config['epoch']!r}")
    pre = config.get("preprocess", {})
    _unknown(pre, PREPROCESS_KEYS, "preprocess", file)
    if "joint" in pre and not isinstance(pre["joint"], bool):
        raise ValueError(f"{file}: `preprocess.joint` must be true or false, got {pre['joint']!r}")
    if "scale" in pre and not (_number(pre["scale"]) and pre["scale"] > 0):
        raise ValueError(f"{file}: `preprocess.scale` must be a number > 0, got {pre['scale']!r}")
    for key in ("reason", "units", "note"):
        if key in pre and not isinstance(pre[key], str):
            raise ValueError(f"{file}: `preprocess.{key}` must be text, got {pre[key]!r}")
    if "center" in pre and pre["center"] not in ("mean", "median"):
        raise ValueError(f"{file}: `preprocess.center` must be mean or median, got {pre['center']!r}")
    for key in ("percentiles", "range"):
        value = pre.get(key, [0, 1])
        if not (_numbers(value) and len(value) == 2 and value[0] < value[1]):
            raise ValueError(f"{file}: `preprocess.{key}` must be two increasing numbers, got {value!r}")
    if "percentiles" in pre and not 0 <= pre["percentiles"][0] < pre["percentiles"][1] <= 100:
        raise ValueError(f"{file}: `preprocess.percentiles` must lie in [0, 100], got {pre['percentiles']!r}")
    mask = config.get("mask", {})
    _unknown(mask, MASK_KEYS, "mask", file)
    if "mode" in mask and mask["mode"] not in MASK_MODES:
        raise ValueError(f"{file}: `mask.mode` must be one of {', '.join(MASK_MODES)}, got {mask['mode']!r}")
    if "num_classes" in mask and not (
        _integer(mask["num_classes"]) and 1 <= mask["num_classes"] <= 1 + MASK_VALUE_LIMIT
    ):
        raise ValueError(f"{file}: `mask.num_classes` must be an integer in [1, {1 + MASK_VALUE_LIMIT}], "
                         f"got {mask['num_classes']!r}")  # fmt: skip
    values, classes = mask.get("label_values"), mask.get("num_classes")
    if isinstance(values, list) and _integer(classes) and classes > 1 and len(values) != classes:
        raise ValueError(f"{file}: `mask.label_values` must hold one value per class ({classes}), got {values!r}")
    ignore = mask.get("ignore_index")
    if ignore is not None and not (_integer(ignore) and 0 <= ignore <= MASK_VALUE_LIMIT):
        raise ValueError(f"{file}: `mask.ignore_index` must be null or an integer in [0, {MASK_VALUE_LIMIT}], "
                         f"got {ignore!r}")  # fmt: skip
    fitted = config.get("instances", {})
    _unknown(fitted, INSTANCE_KEYS, "instances", file)
    for key in ("f1", "h"):
        if key in fitted and not (_number(fitted[key]) and fitted[key] >= 0):
            raise ValueError(f"{file}: `instances.{key}` must be a number >= 0, got {fitted[key]!r}")
    for key in ("summary", "tuned_on"):
        if key in fitted and not isinstance(fitted[key], str):
            raise ValueError(f"{file}: `instances.{key}` must be text, got {fitted[key]!r}")
    if "tried" in fitted and not isinstance(fitted["tried"], dict):
        raise ValueError(f"{file}: `instances.tried` must be a mapping, got {fitted['tried']!r}")
    if "method" in fitted and fitted["method"] not in INSTANCE_METHODS:
        raise ValueError(f"{file}: `instances.method` must be one of {', '.join(INSTANCE_METHODS)}, "
                         f"got {fitted['method']!r}")  # fmt: skip
    if "min_size" in fitted and not (_integer(fitted["min_size"]) and fitted["min_size"] >= 0):
        raise ValueError(f"{file}: `instances.min_size` must be an integer >= 0, got {fitted['min_size']!r}")
    if "seed" in fitted and not (_number(fitted["seed"]) and 0 < fitted["seed"] < 1):
        raise ValueError(f"{file}: `instances.seed` must be a number in (0, 1), got {fitted['seed']!r}")


def _check_entries(config: dict[str, Any], file: Path) -> None:
    """The entries prediction acts on, checked as a user's config is: their types and names (`_check_types`), a
    preprocessing spec that would divide by 0, hold NaN or clip above below, label values a mask cannot hold, an
    unknown separation; each a ValueError naming `file` and the entry (they predicted an all-zero or wrapped mask
    without a word)."""
    _check_types(config, file)
    pre = config.get("preprocess")
    if pre is not None:
        if "scheme" in pre and pre["scheme"] not in PREPROCESS_SCHEMES:
            raise ValueError(f"{file}: `preprocess.scheme` must be one of {', '.join(PREPROCESS_SCHEMES)}, "
                             f"got {pre['scheme']!r}")  # fmt: skip
        for key in ("low", "high", "mean", "std"):
            if key in pre and not _numbers(pre[key]):
                raise ValueError(f"{file}: `preprocess.{key}` must be a list of finite numbers, got {pre[key]!r}")
        if "std" in pre and any(v <= 0 for v in pre["std"]):
            raise ValueError(f"{file}: `preprocess.std` must be > 0 (it divides the image), got {pre['std']!r}")
        if "low" in pre and "high" in pre and any(lo > hi for lo, hi in zip(pre["low"], pre["high"], strict=False)):
            raise ValueError(f"{file}: `preprocess.low` must not exceed `preprocess.high`, got {pre['low']!r} > "
                             f"{pre['high']!r}")  # fmt: skip
    values = (config.get("mask") or {}).get("label_values") if isinstance(config.get("mask"), dict) else None
    if values is not None and not (
        isinstance(values, list)
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MASK_VALUE_LIMIT for v in values)
    ):
        raise ValueError(f"{file}: `mask.label_values` must be integers in [0, {MASK_VALUE_LIMIT}] (a mask is written "
                         f"as 8 or 16 bits), got {values!r}")  # fmt: skip
    if config.get("separation") not in (None, "distance", "none"):
        raise ValueError(f"{file}: `separation` must be 'distance' or absent, got {config['separation']!r}")


def load_model(path: str | Path, *, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model of a checkpoint (or run) directory, in eval mode.

    The model gets `checkpoint_config`: the checkpoint's `config.json` (preprocessing, label values).

    Raises:
        FileNotFoundError: no such path.
        ValueError: not a checkpoint, corrupted files, a newer format, or weights of another model.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = resolve_checkpoint(path)
    config = read_checkpoint_config(folder)
    try:  # first on the meta device: a config.json asking for a huge model costs no memory before the check
        with torch.device("meta"):
            skeleton = create_model(config["model"], **config.get("model_config", {}))
    except (ValueError, TypeError) as err:  # a model this unetkit does not have, or options it does not take
        raise ValueError(f"{folder / CONFIG}: {err}") from err
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise ValueError(f"{weights}: missing weights file")
    try:
        state = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ValueError(f"{weights}: corrupted weights file ({err})") from err
    expected = skeleton.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong))
            if keys
        )
        raise ValueError(f"{weights}: weights do not fit model {config['model']!r} ({detail})")
    model = create_model(config["model"], **config.get("model_config", {}))  # the weights fit: as large as they are
    model.load_state_dict(state)
    model.to(map_location).eval()
    model.checkpoint_config = config  # type: ignore[assignment]
    return model
