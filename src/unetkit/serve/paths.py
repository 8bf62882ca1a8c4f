"""Paths the page may read: only below the served directory, reached by names the server listed itself.

A request names a run and a file by plain names; `inside` refuses any name that is not one path component
(`..`, `.`, an empty name, a separator, a NUL, a hidden name) and any path whose real location (symbolic links
followed) leaves the root, so neither `../`, its encoded forms (decoded before routing) nor a link planted in
a run directory reaches a file outside.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["Refused", "inside", "plain_name"]


class Refused(LookupError):
    """A path outside the served directory, or a name that is not a plain file name: answered as not found."""


def plain_name(name: str) -> str:
    """`name` if it is one plain path component, else `Refused`."""
    if (
        not name
        or name in (".", "..")
        or name.startswith(".")
        or any(c in name for c in ("/", "\\", "\x00"))
        or len(name) > 255
    ):
        raise Refused(f"{name!r}: not a plain file name")
    return name


def inside(root: Path, *names: str) -> Path:
    """`root / names...` with its links resolved, refused unless it exists within `root`'s real path."""
    base = root.resolve()
    path = base.joinpath(*(plain_name(n) for n in names))
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError) as err:  # missing, a loop of links, unreadable
        raise Refused(f"{'/'.join(names)}: no such file") from err
    if not real.is_relative_to(base):
        raise Refused(f"{'/'.join(names)}: outside the served directory")
    return real
