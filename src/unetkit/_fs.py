"""File-system helpers shared by every atomic writer.

`tempfile.mkstemp` / `mkdtemp` create private files (0600) and folders (0700); an output renamed into
place from them would stay private. `public_mode` gives it the permissions a plain `open()` or
`mkdir()` would have had under the process umask. `atomic_file` is the one way files are written: a
temporary file beside the target, fsynced, published and renamed over it (then the folder is
fsynced, so the rename itself survives a power cut), or removed on failure.

A write that fails because of the machine, not the program (a full disk, a quota, a read-only or
unwritable folder) raises `WriteError`: an `OSError` whose one-line message names the file.

`check_outputs` is the one rule every writing command applies before it writes: no output may be one of
its inputs, a folder that outputs are written into by name may not hold an input file, and nothing may be
written inside (or replace a folder holding) an input that is read as a whole tree.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "WRITE_ERRNOS",
    "OutputOverInput",
    "WriteError",
    "atomic_file",
    "atomic_write_bytes",
    "check_outputs",
    "check_writable",
    "fsync_dir",
    "preallocate",
    "public_mode",
    "remove_stale_temps",
    "write_error",
]

# errors of the machine, not of the program: reported as `WriteError` naming the file
WRITE_ERRNOS = frozenset(
    code
    for code in (
        errno.ENOSPC,  # no space left on device
        getattr(errno, "EDQUOT", None),  # disk quota exceeded
        errno.EFBIG,  # file too large (also RLIMIT_FSIZE)
        errno.EROFS,  # read-only file system
        errno.EACCES,
        errno.EPERM,
        errno.EIO,
        errno.ENOTDIR,  # a path component is a file
        errno.EISDIR,  # a folder where the file goes
        errno.ENAMETOOLONG,
    )
    if code is not None
)
# the names every temporary file and folder of this package has: `.NAME.tmpXXXX` / `.STEM.tmp-PID-XXXX.SUFFIX`
TEMP_GLOB = ".*.tmp*"


class WriteError(OSError):
    """A file or folder could not be written (disk full, quota, read-only, no permission); `note` may
    add what was kept and how to go on."""

    note = ""

    def __str__(self) -> str:
        text = f"{self.filename}: cannot write ({self.strerror})"
        return f"{text}; {self.note}" if self.note else text


def write_error(err: OSError, path: str | Path) -> OSError:
    """`err` as a `WriteError` naming `path` when it is an error of the machine, else `err` unchanged.
    Callers name what the user asked for (a checkpoint folder, an output file), not its temporary name."""
    if err.errno not in WRITE_ERRNOS:
        return err
    reason = "a folder is in the way of the file" if err.errno == errno.EISDIR else err.strerror
    return WriteError(err.errno, reason or os.strerror(err.errno or 0), str(path))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def public_mode(path: str | Path) -> None:
    """Set `path` (a file or a folder, not recursive) to 0666 / 0777 less the umask."""
    path = Path(path)
    base = 0o777 if path.is_dir() else 0o666
    os.chmod(path, base & ~_umask())


def fsync_dir(path: str | Path) -> None:
    """Flush a folder's entries (renames, new files) to disk; a no-op where folders cannot be opened."""
    try:
        handle = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:  # some file systems refuse fsync on folders
        pass
    finally:
        os.close(handle)


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix, so writers that go by it work); when the block
    succeeds it is fsynced, given public permissions and renamed to `path`, otherwise removed.

    Raises:
        WriteError: the folder cannot be written or the disk fills up; `path` is left as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # `.STEM.tmp-PID-XXXX.SUFFIX`: the process that owns it is known, so a later run can remove it once that
        # process is gone (`unetkit.infer.files.remove_dead_temps`); the suffix stays for writers that go by it
        prefix = f".{path.stem}.tmp-{os.getpid()}-"
        handle, name = tempfile.mkstemp(prefix=prefix, suffix=path.suffix, dir=path.parent)
    except FileExistsError as err:  # a file where a folder of the path should be
        raise WriteError(errno.ENOTDIR, "a file is in the way of its folder", str(path)) from err
    except OSError as err:
        raise write_error(err, path) from err
    os.close(handle)
    tmp = Path(name)
    try:
        try:
            yield tmp
            with open(tmp, "rb") as file:
                os.fsync(file.fileno())
            public_mode(tmp)
            os.replace(tmp, path)
        except OSError as err:
            raise write_error(err, path) from err
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` through `atomic_file`."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def preallocate(path: str | Path, size: int) -> None:
    """Reserve `size` bytes for the file at `path`, so that a full disk fails here with `WriteError`, not
    later with SIGBUS while a memory map of the file is written. A no-op where the file system cannot."""
    if not hasattr(os, "posix_fallocate") or size <= 0:
        return
    handle = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(handle, 0, size)
    except OSError as err:
        if err.errno in (errno.EOPNOTSUPP, errno.EINVAL, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)):
            return
        raise write_error(err, path) from err
    finally:
        os.close(handle)


def check_writable(path: str | Path) -> None:
    """Fail early, before any long work, when the folder `path` could not be created or written: the
    nearest existing folder on its way must take a new file (a probe, removed at once).

    Raises:
        WriteError: naming `path` (a file in the way, no permission, a read-only file system).
    """
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise WriteError(errno.ENOTDIR, f"{existing} is a file, expected a folder", str(path))
    try:
        handle, name = tempfile.mkstemp(prefix=".probe.", suffix=".tmp", dir=existing)
    except OSError as err:
        raise WriteError(err.errno, err.strerror or str(err), str(path)) from err
    os.close(handle)
    os.unlink(name)


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Remove the temporary files and folders a killed writer left in `folder` (not recursive); returns them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in sorted(folder.glob(TEMP_GLOB)):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


class OutputOverInput(ValueError):
    """An output of a command would write over one of its inputs."""


def _real(path: str | Path) -> Path:
    return Path(os.path.realpath(os.path.abspath(path)))


def _same(a: Path, b: Path) -> bool:
    """One file or folder: the same resolved path, or the same inode (hard links, case-insensitive or
    bind-mounted file systems)."""
    if _real(a) == _real(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _within(path: Path, folder: Path) -> bool:
    """`path` is `folder` or lies below it (through links too)."""
    return any(_same(p, folder) for p in (_real(path), *_real(path).parents) if p.exists()) or _real(
        path
    ).is_relative_to(_real(folder))


STORE_SUFFIXES = (".zarr",)  # folders read as one image: an output folder may not hold them


def check_outputs(
    *,
    files: Mapping[str, str | Path] | None = None,
    folders: Mapping[str, str | Path] | None = None,
    inputs: Sequence[str | Path] = (),
    trees: Sequence[str | Path] = (),
) -> None:
    """Refuse, before anything is written, outputs that would write over the command's inputs.

    Args:
        files: output files by the flag that names them (`{"--json": path}`).
        folders: output folders that files are written into by name (`{"--out": path}`).
        inputs: files and folders the command reads.
        trees: folders read as a whole (a data set, a run): nothing may be written inside them, and no output
            folder may contain them.

    Raises:
        OutputOverInput: naming the flag, the output and the input: an output that is an input (or another
            output), an output folder that holds an input file (its files are written by name) or is the
            folder of one, an output inside a tree, or an output folder holding a tree.
    """
    outputs = [(flag, Path(p), False) for flag, p in (files or {}).items()]
    outputs += [(flag, Path(p), True) for flag, p in (folders or {}).items()]
    sources = [Path(p) for p in (*inputs, *trees)]
    for i, (flag, out, is_folder) in enumerate(outputs):
        for other_flag, other, _ in outputs[:i]:
            if _same(out, other):
                raise OutputOverInput(f"`{flag}` {out} is also `{other_flag}`; give each output its own path")
        for source in sources:
            if _same(out, source):
                alias = f" ({source})" if str(source) != str(out) else ""
                raise OutputOverInput(f"`{flag}` {out} is one of the inputs{alias}; refusing to write over it")
        for source in sources:
            single = not source.is_dir() or source.suffix.lower() in STORE_SUFFIXES  # a zarr store is one input
            if is_folder and single and (_same(out, source.parent) or _same(out, _real(source).parent)):
                raise OutputOverInput(
                    f"`{flag}` {out} holds the input {source}; writing there could replace it; choose another folder"
                )
        for tree in map(Path, trees):
            if _within(out, tree):
                raise OutputOverInput(f"`{flag}` {out} is inside the input {tree}; choose a folder outside it")
            if is_folder and _within(tree, out):
                raise OutputOverInput(f"`{flag}` {out} contains the input {tree}; choose a folder outside it")
