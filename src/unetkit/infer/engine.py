"""Which engine runs a checkpoint's forward passes on a CPU: eager PyTorch or ONNX Runtime.

Measured with `python benchmarks/cpu_inference.py` (results in benchmarks/results/cpu-inference.md: 2 shared AMD
EPYC cores, PyTorch 2.13 CPU build, fp32, 4 x 256²): ONNX Runtime ran `unet` (base 16) in 0.57 s against 1.02 s
channels-last (the Predictor's PyTorch path), 1.09 s eager NCHW and 0.79 s `torch.compile` + channels-last (after 9
s of compiling); `sa_unet` 0.47 s against 0.88 / 1.29 / 0.92 s. An earlier run on busier cores gave unet 0.65 vs
1.76 s. ONNX Runtime is the fastest CPU engine, but exporting costs 10-20 s once, so `auto` uses it when an export
of the checkpoint is already cached, or when the inputs are large enough (>= `AUTO_PIXELS`) for the saved time to
repay the export. Exports are cached by the checkpoint's content under `$UNETKIT_CACHE` (default
`~/.cache/unetkit`). Exporting is `unetkit.export`'s (`cached_onnx`, `prediction_model`), which imports this
module; this module imports no export code.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import torch

from unetkit.models.checkpoint import resolve_checkpoint

__all__ = ["AUTO_PIXELS", "ENGINES", "choose_engine", "image_pixels", "onnx_cache_path"]

ENGINES = ("auto", "torch", "onnxruntime")
AUTO_PIXELS = 4_000_000  # ~1.1 s saved per 0.26 MP (unet base 16) repays a ~17 s export after ~4 MP


def onnx_cache_path(checkpoint: str | Path) -> Path:
    """Where the ONNX export of a checkpoint directory is cached: keyed by its weights and config."""
    folder = resolve_checkpoint(checkpoint)
    digest = hashlib.sha256()
    for name in sorted(p.name for p in folder.iterdir() if p.suffix in (".json", ".safetensors")):
        digest.update(name.encode())
        with open(folder / name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    root = Path(os.environ.get("UNETKIT_CACHE") or Path.home() / ".cache" / "unetkit")
    return root / "onnx" / f"{digest.hexdigest()[:32]}-torch{torch.__version__.split('+')[0]}.onnx"


def image_pixels(paths: list[Path]) -> int:
    """Total pixels of image files, read from their headers (unreadable files count 0: reading them later
    gives the error that names them)."""
    total = 0
    for path in paths:
        try:
            if path.suffix.lower() in (".tif", ".tiff"):
                import tifffile

                with tifffile.TiffFile(path) as tif:
                    shape = tif.pages[0].shape
                    total += int(shape[0]) * int(shape[1])
            else:
                from PIL import Image

                with Image.open(path) as image:
                    total += image.width * image.height
        except Exception:
            continue
    return total


def _onnx_available() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxscript", "onnxruntime"))


def choose_engine(engine: str, device: torch.device, checkpoint: Path, pixels: int) -> str:
    """Resolve `engine` (`auto`, `torch`, `onnxruntime`) for a checkpoint directory on `device`."""
    if engine not in ENGINES:
        raise ValueError(f"`engine` must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "onnxruntime" and device.type != "cpu":
        raise ValueError(f"`engine` onnxruntime runs on the CPU here, but `device` is {device}")
    if engine != "auto":
        return engine
    if device.type != "cpu" or not _onnx_available():
        return "torch"
    cached = onnx_cache_path(checkpoint).is_file()
    return "onnxruntime" if cached or pixels >= AUTO_PIXELS else "torch"
