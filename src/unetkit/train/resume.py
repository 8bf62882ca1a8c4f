"""Resuming a run directory: its saved training state and config, what a killed save left behind, and
what `last/` still holds when a save fails. See `unetkit.train.interrupt` for what a run survives.
"""

from __future__ import annotations

import errno
import json
import logging
from pathlib import Path
from typing import Any

import torch

from unetkit._fs import remove_stale_temps
from unetkit.models.checkpoint import recover_dir
from unetkit.train.config import TrainConfig, config_from_dict, load_config

__all__ = ["STATE", "kept_checkpoint", "load_state", "resumed_config"]

logger = logging.getLogger(__name__)
STATE = "state.pt"  # in last/: optimiser, scheduler, scaler, history, config and, after Ctrl-C, the step


def load_state(path: Path, device: torch.device | str) -> dict[str, Any]:
    """`state.pt` of `last/` (tensors and plain data only: `weights_only`)."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except OSError as err:
        raise ValueError(f"{path}: cannot read training state ({err.strerror or err})") from err
    except Exception as err:  # a truncated zip, a bad pickle, ...: the file is damaged
        reason = (str(err).strip().splitlines() or [""])[0][:80]
        raise ValueError(f"{path}: corrupted training state ({type(err).__name__}: {reason})") from err
    if not isinstance(state, dict) or not isinstance(state.get("config"), dict) or "epoch" not in state:
        raise ValueError(f"{path}: not a unetkit training state")
    return state


def resumed_config(run: Path, config: TrainConfig | None) -> tuple[TrainConfig, bool]:
    """The saved config of the run directory `run` (epochs raised to `config.epochs` when larger), and
    whether it has a checkpoint to continue from (a run killed before its first save has none)."""
    recover_dir(run / "last")  # a save cut between its two renames leaves last/ as .last.old
    recover_dir(run / "best")
    remove_stale_temps(run)  # what a killed save left behind
    remove_stale_temps(run / "samples")
    state_file = run / "last" / STATE
    if state_file.is_file():
        saved, source, has_checkpoint = load_state(state_file, "cpu")["config"], str(state_file), True
    elif (run / "config.yaml").is_file():
        saved, source, has_checkpoint = load_config(run / "config.yaml").to_dict(), str(run / "config.yaml"), False
        logger.warning("%s: no checkpoint yet (stopped in the first epoch): starting from epoch 1", run)
    else:
        raise FileNotFoundError(f"{state_file}: no training state to resume from (is {run} a run directory?)")
    saved["epochs"] = max(saved["epochs"], config.epochs) if config is not None else saved["epochs"]
    saved["out"] = str(run)
    return config_from_dict(saved, source=source), has_checkpoint


def kept_checkpoint(run: Path, err: OSError) -> str:
    """What `last/` holds after a failed save, and how to go on."""
    try:
        saved = json.loads((run / "last" / "config.json").read_text())
    except (OSError, ValueError):
        return "no checkpoint saved yet"
    where = f"epoch {saved.get('epoch')}" + (f" step {saved['step']}" if "step" in saved else "")
    remedy = "free some space" if err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)) else "fix that"
    return f"{run / 'last'} still holds {where}; {remedy}, then: unetkit train --resume {run}"
