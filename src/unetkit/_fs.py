"""File-system helpers shared by every atomic writer.

`tempfile.mkstemp` / `mkdtemp` create private files (0600) and folders (0700); an output renamed into
place from them would stay private. `public_mode` gives it the permissions a plain `open()` or
`mkdir()` would have had under the process umask. `atomic_file` is the one way files are written: a
temporary file beside the target, fsynced, published and renamed over it, or removed on failure.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_file", "atomic_write_bytes", "public_mode"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def public_mode(path: str | Path) -> None:
    """Set `path` (a file or a folder, not recursive) to 0666 / 0777 less the umask."""
    path = Path(path)
    base = 0o777 if path.is_dir() else 0o666
    os.chmod(path, base & ~_umask())


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix, so writers that go by it work); when the block
    succeeds it is fsynced, given public permissions and renamed to `path`, otherwise removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as file:
            os.fsync(file.fileno())
        public_mode(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` through `atomic_file`."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)
