"""Top-level parser and error policy: usage errors exit with status 2 and one line naming the
argument or file and what was expected; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from unetkit.cli import data, demo, evaluate, export, models, predict, sample, summary, train
from unetkit.version import __version__

__all__ = ["USER_ERRORS", "build_parser", "main"]

# the exceptions that mean bad input, not a bug: reported in one line, exit status 2
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
    ImportError,  # a missing optional dependency: the message says what to install
)

_COMMANDS = (models, summary, train, predict, evaluate, export, sample, data, demo)


def build_parser() -> argparse.ArgumentParser:
    """The full `unetkit` parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="unetkit",
        description="U-Net segmentation and image-to-image models: a model zoo, training, tiled prediction.",
    )
    parser.add_argument("--version", action="version", version=f"unetkit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in _COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format="%(message)s")
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as err:
        if args.debug:
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"unetkit {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"unetkit {args.command}: interrupted", file=sys.stderr)
        return 130
