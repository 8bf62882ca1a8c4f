"""File-system helpers shared by every atomic writer.

`tempfile.mkstemp` / `mkdtemp` create private files (0600) and folders (0700); an output renamed into
place from them would stay private. `public_mode` gives it the permissions a plain `open()` or
`mkdir()` would have had under the process umask.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["public_mode"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def public_mode(path: str | Path) -> None:
    """Set `path` (a file or a folder, not recursive) to 0666 / 0777 less the umask."""
    path = Path(path)
    base = 0o777 if path.is_dir() else 0o666
    os.chmod(path, base & ~_umask())
