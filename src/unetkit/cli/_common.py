"""Argument types shared by subcommands."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path
from typing import Any

__all__ = ["check_device", "checkpoint_inputs", "instances_flag", "model_options", "parse_option", "parse_shape"]


def checkpoint_inputs(path: str | Path) -> list[Path]:
    """What a command reads of a checkpoint argument, for `unetkit._fs.check_outputs`: the argument itself
    and, for a run or checkpoint directory, the checkpoint folder it resolves to and that folder's files."""
    from unetkit.models.checkpoint import resolve_checkpoint

    path = Path(path)
    found = [path]
    if path.is_dir():
        try:
            folder = resolve_checkpoint(path)
        except ValueError:  # not a checkpoint: loading it later says so
            return found
        found += [folder, *(p for p in folder.iterdir() if p.is_file())]
    return found


def parse_shape(text: str) -> tuple[int, ...]:
    """`"1x1x572x572"` -> `(1, 1, 572, 572)`; a volume `"1x3x132x132x116"` (BxCxDxHxW) too."""
    try:
        shape = tuple(int(part) for part in text.lower().replace(",", "x").split("x"))
    except ValueError:
        shape = ()
    if len(shape) not in (4, 5) or min(shape) < 1:
        raise argparse.ArgumentTypeError(
            f"expected BxCxHxW (or BxCxDxHxW for volumes) with positive integers, e.g. 1x1x572x572, got {text!r}"
        )
    return shape


def parse_option(text: str) -> tuple[str, Any]:
    """`"upsample=bilinear"` -> `("upsample", "bilinear")`; values are Python literals where they parse,
    `true` / `false` / `null` as in YAML, else text."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, e.g. upsample=bilinear, got {text!r}")
    words = {"true": True, "false": False, "null": None, "none": None}  # YAML's spelling, as in config files
    if raw.strip().lower() in words:
        return key.strip().replace("-", "_"), words[raw.strip().lower()]
    try:
        value = ast.literal_eval(raw)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        value = raw
    return key.strip().replace("-", "_"), value


def model_options(parser: argparse.ArgumentParser) -> None:
    """Add the repeated `-o/--option KEY=VALUE` flag that sets model arguments."""
    parser.add_argument(
        "-o",
        "--option",
        dest="options",
        action="append",
        type=parse_option,
        default=[],
        metavar="KEY=VALUE",
        help="model argument, repeatable: -o upsample=bilinear -o base_channels=32",
    )


def check_device(text: str, flag: str = "--device") -> str:
    """`text` if it names a device this machine has (`cpu`, `cuda`, `cuda:N`, `mps`), else `ValueError`."""
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"`{flag}` must be auto, cpu, cuda or cuda:N, got {text!r}") from err
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index is not None and device.index >= count):
            raise ValueError(f"`{flag}` {text}: this machine has {count} CUDA device(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"`{flag}` {text}: MPS is not available here")
    return text


def instances_flag(parser: argparse.ArgumentParser, help: str) -> None:
    """`--instances [auto|components|watershed|distance]` (`auto` when given bare: the method training chose on
    its validation split, else `distance` for a model with the separation head, else `watershed`), as predict
    and serve take it."""
    parser.add_argument(
        "--instances",
        nargs="?",
        const="auto",
        default=None,
        choices=("auto", "components", "watershed", "distance"),
        help=help,
    )
