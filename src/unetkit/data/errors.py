"""The data error: bad input files or folders, reported in one line that names them."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """A data file or folder is missing, unreadable or inconsistent; the message names it."""
