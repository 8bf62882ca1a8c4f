"""The `unetkit` console script: one thin subcommand per verb over the library functions."""

from unetkit.cli.main import main

__all__ = ["main"]
