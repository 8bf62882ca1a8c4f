"""Files and faults for the bad-input catalogue (`test_bad_inputs.py`): small valid data sets and
checkpoints, damaged image bytes, and refusals of the system (no read or write permission, a full disk)
that work as root too, where file modes do not stop the process."""

from __future__ import annotations

import errno
import io
import os
import re
import struct
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unetkit import create_model, save_model
from unetkit.data import io as data_io
from unetkit.data import write_image

__all__ = [
    "ROOT_USER",
    "checkpoint",
    "fail_fsync_on",
    "fill_disk_on",
    "folder",
    "png_0x0",
    "png_bytes",
    "png_made",
    "read_only",
    "tree",
    "unreadable",
]

ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0


def folder(root: Path, n: int = 3, size: int = 40) -> Path:
    """A valid folder data set: `n` grey 8-bit images with 0/255 masks."""
    rng = np.random.default_rng(0)
    for i in range(n):
        write_image(root / "images" / f"img{i}.png", rng.integers(0, 255, (size, size), dtype=np.uint8))
        mask = np.zeros((size, size), np.uint8)
        mask[5:20, 5 + i : 25 + i] = 255
        write_image(root / "masks" / f"img{i}.png", mask)
    return root


def checkpoint(path: Path, model: str = "unet") -> Path:
    torch.manual_seed(0)
    options = {"base_channels": 4, "depth": 2, "num_classes": 1} if model == "unet" else {"base_channels": 4}
    extra = {
        "preprocess": {"mean": [0.5], "std": [0.25]},
        "mask": {"mode": "binary", "num_classes": 2, "label_values": [0, 255]},
    }
    return save_model(create_model(model, in_channels=1, **options), path, extra=extra)


def png_bytes(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def png_made(width: int, height: int, idat: bytes, *, colour_type: int = 0, interlace: int = 0) -> bytes:
    """A PNG of 8-bit samples with any header size and any IDAT content (valid signature and CRCs)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, interlace)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def png_0x0() -> bytes:
    """A PNG whose header says 0 x 0 pixels (valid signature and CRCs)."""
    return png_made(0, 0, zlib.compress(b""))


def unreadable(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No read permission on `path` (simulated at the reader's `open` when running as root)."""
    path.chmod(0)
    if ROOT_USER:
        import builtins

        def refusing_open(file: object, *args: object, **kwargs: object) -> object:
            if Path(str(file)) == path:
                raise PermissionError(errno.EACCES, "Permission denied", str(file))
            return builtins.open(file, *args, **kwargs)  # type: ignore[call-overload]

        monkeypatch.setattr(data_io, "open", refusing_open, raising=False)


def read_only(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No write permission in `folder` (simulated at `mkstemp` / `mkdtemp` when running as root)."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    if ROOT_USER:

        def inside(*args: object, dir: object = None, **kwargs: object) -> bool:
            return dir is not None and Path(str(dir)).resolve().is_relative_to(folder.resolve())

        for name in ("mkstemp", "mkdtemp"):
            real = getattr(tempfile, name)

            def refusing(*args: object, _real: Callable = real, **kwargs: object) -> object:
                if inside(*args, **kwargs):
                    raise PermissionError(errno.EACCES, "Permission denied", str(kwargs.get("dir")))
                return _real(*args, **kwargs)

            monkeypatch.setattr(tempfile, name, refusing)


def fill_disk_on(monkeypatch: pytest.MonkeyPatch, pattern: str, after: int = 0) -> None:
    """Writes of files whose name matches `pattern` fail with ENOSPC after `after` successful ones."""
    real = Path.write_bytes
    seen = {"n": 0}

    def write_bytes(self: Path, data: bytes) -> int:
        if re.search(pattern, self.name):
            seen["n"] += 1
            if seen["n"] > after:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)


def fail_fsync_on(monkeypatch: pytest.MonkeyPatch, pattern: str) -> None:
    """`fsync` of files whose name matches `pattern` fails with ENOSPC, as when delayed allocation finds the
    disk full (the data was accepted by `write`, the disk refuses it at the flush)."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to name the file of a descriptor")
    real = os.fsync

    def fsync(fd: int) -> None:
        if re.search(pattern, os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def tree(path: Path) -> dict[str, bytes]:
    """Every file under `path` with its bytes (an empty dict if there is nothing)."""
    if path.is_file():
        return {path.name: path.read_bytes()}
    if not path.is_dir():
        return {}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
