"""Optional dependencies: `MissingDependency` is the one `ImportError` that means "install this", raised by
unetkit itself with the package and the extra to install; the CLI reports it in one line (exit status 2).
Any other `ImportError` under a command is a bug and is shown as one."""

from __future__ import annotations

__all__ = ["MissingDependency"]


class MissingDependency(ImportError):
    """An optional package a feature needs is not installed; the message says what to install."""
