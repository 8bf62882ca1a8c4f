"""Argument types shared by subcommands."""

from __future__ import annotations

import argparse
import ast
from typing import Any

__all__ = ["model_options", "parse_option", "parse_shape"]


def parse_shape(text: str) -> tuple[int, ...]:
    """`"1x1x572x572"` -> `(1, 1, 572, 572)`."""
    try:
        shape = tuple(int(part) for part in text.lower().replace(",", "x").split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 4 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected BxCxHxW with positive integers, e.g. 1x1x572x572, got {text!r}")
    return shape


def parse_option(text: str) -> tuple[str, Any]:
    """`"upsample=bilinear"` -> `("upsample", "bilinear")`; values are Python literals where they parse."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, e.g. upsample=bilinear, got {text!r}")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
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
