"""Top-level parser and error policy: bad input (a file, a folder, an argument, a config), errors of
the machine (a full disk, a read-only or unwritable folder), a missing optional package and a run directory
in use exit with status 2 and one line naming the argument or file and what was expected; `--debug` shows
the traceback instead. Ctrl-C exits with status 130 and SIGTERM with 143 (training first saves a checkpoint
it can resume from exactly). Anything else (a `TypeError`, an `ImportError` that is not a missing optional
package, ...) is a bug in unetkit: its traceback is shown with a line asking for a report, exit status 1.
docs/errors.md lists the cases, each with its test.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

from unetkit._errors import BUG_REPORT, USER_ERRORS
from unetkit._errors import one_line as _one_line
from unetkit._options import close_matches
from unetkit.cli import bench, data, demo, evaluate, export, models, predict, sample, serve, summary, train
from unetkit.train.interrupt import TrainingInterrupted, exit_status
from unetkit.version import __version__

__all__ = ["BUG_REPORT", "USER_ERRORS", "build_parser", "main"]

_COMMANDS = (models, summary, train, predict, evaluate, export, sample, data, demo, bench, serve)


class _Parser(argparse.ArgumentParser):
    """argparse with the package's error policy: one line (no usage block), status 2, close matches
    for a mistyped flag."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments: "):
            hints = [self._hint(arg.split("=")[0]) for arg in message.split(": ", 1)[1].split() if arg.startswith("-")]
            if any(hints):
                message += f"; did you mean {', '.join(h for h in hints if h)}?"
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def _hint(self, flag: str) -> str | None:
        """The flag (or `--set KEY=...`) meant by a mistyped or foreign one, e.g. `--learning-rate` -> `--lr`."""
        from unetkit.train.config import ALIASES

        flags = [a for a in self._option_string_actions if a.startswith("--")]
        key = flag.lstrip("-").replace("-", "_")
        if key in ALIASES and "--set" in flags:
            target = "--" + ALIASES[key].replace("_", "-")
            return target if target in flags else f"--set {ALIASES[key]}=..."
        found = close_matches(flag, flags, 1)
        return found[0] if found else None

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:  # reported by the subcommand that was given them, with its flags as hints
            parser: argparse.ArgumentParser = self
            while True:
                action = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
                name = getattr(namespace, action.dest, None) if action is not None else None
                if action is None or name not in action.choices:
                    break
                parser = action.choices[name]
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace


def build_parser() -> argparse.ArgumentParser:
    """The full `unetkit` parser with every subcommand."""
    parser = _Parser(
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
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:  # --help, --version and usage errors (already printed): their status
        return exit.code if isinstance(exit.code, int) else int(exit.code is not None)
    args.argv = list(argv) if argv is not None else sys.argv[1:]  # `train --devices N` relaunches with it
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format="%(message)s")
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as err:
        if args.debug:
            raise
        _close_progress_bars()
        print(f"unetkit {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # training saves first (unetkit.train.interrupt) and says where
        if args.debug:
            raise
        _close_progress_bars()
        print(f"unetkit {args.command}: {_one_line(err) if str(err) else 'interrupted'}", file=sys.stderr)
        return exit_status(err.signum) if isinstance(err, TrainingInterrupted) else 130
    except Exception as err:  # anything else is ours to fix: a TypeError, an ImportError of ours, ...
        if args.debug:
            raise
        _close_progress_bars()
        traceback.print_exc()
        print(f"unetkit {args.command}: internal error ({type(err).__name__}): {BUG_REPORT}", file=sys.stderr)
        return 1


def _close_progress_bars() -> None:
    """Clear the bars a failure left open, so that the error gets a line of its own."""
    tqdm_std = sys.modules.get("tqdm.std")
    if tqdm_std is not None:
        for bar in list(getattr(tqdm_std.tqdm, "_instances", ())):
            bar.close()
