"""Exported models (from `unetkit.export`) as predictors: an `.onnx` file in onnxruntime or a `.pt2`
file from `torch.export`, callable like the model and carrying what `Predictor` and the tiler read
from one (checkpoint config, context margin, legal input sides, down-sampling factor, input channels),
so that `unetkit.predict(load_exported(path), image)` tiles with the exported model.

The metadata and the rule for legal sides are written by `unetkit.export`; see its module docstring.
Each file is read once, checked by `unetkit.infer.export_check` (no pickles, no code, no external data:
docs/security.md) and the checked bytes are what onnxruntime or torch then load.
"""

from __future__ import annotations

import importlib
import io
import json
import logging
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from unetkit._deps import MissingDependency
from unetkit.infer.export_check import check_onnx, check_pt2
from unetkit.layers import pad_to_multiple, unpad

__all__ = [
    "FORMATS",
    "InputSides",
    "OnnxPredictor",
    "TorchExportPredictor",
    "load_exported",
    "quiet_exporters",
    "require",
]

FORMATS = {"onnx": ".onnx", "torch": ".pt2"}
METADATA_KEY = "unetkit"  # ONNX metadata_props key of the checkpoint config (JSON)
PT2_EXTRA_FILE = "unetkit.json"  # `.pt2` extra file holding the same metadata
_INSTALL_HINT = "pip install unetkit[export]"


def require(name: str) -> Any:
    """Import an optional export dependency, or raise an ImportError that says how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise MissingDependency(
            f"{name} is not installed; exporting and running exported models need it: {_INSTALL_HINT}"
        ) from err


@contextmanager
def quiet_exporters() -> Iterator[None]:
    """Silence the exporters' own logging (torch.onnx registry notes, onnxscript optimiser and version
    converter reports, tracebacks of failed conversions that end up in our own errors) and
    torch-internal deprecation warnings: library code must not write to the console."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript", "onnx_ir")]
    levels = [each.level for each in loggers]
    for each in loggers:
        each.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"(torch|copyreg|onnxscript)")
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(torch|onnxscript)")
            yield
    finally:
        for each, level in zip(loggers, levels, strict=True):
            each.setLevel(level)


@dataclass(frozen=True)
class InputSides:
    """The sides an exported graph accepts: `minimum + k * step` for `k >= 0`; only `minimum` if `step == 0`."""

    minimum: int
    step: int

    def is_legal(self, n: int) -> bool:
        """Whether the graph accepts side `n`."""
        return n == self.minimum if self.step == 0 else n >= self.minimum and (n - self.minimum) % self.step == 0

    def at_least(self, n: int) -> int:
        """The smallest legal side `>= n`."""
        if self.step == 0:
            if n > self.minimum:
                raise ValueError(f"this export takes only {self.minimum}x{self.minimum} inputs, got side {n}")
            return self.minimum
        return self.minimum + self.step * max(0, -(-(n - self.minimum) // self.step))  # ceil division


class _ExportedPredictor:
    """An exported model as a callable `(B, C, h, w) -> (B, K, h', w')` that carries what `Predictor`
    and the tiler read from a model: `checkpoint_config`, `context_margin()`, `valid_input_size(n)`,
    `downsample_factor` and `in_channels`. Tiles run on the CPU and come back on the input's device."""

    def __init__(self, path: Path, metadata: dict[str, str]) -> None:
        self.path = path
        try:
            self.checkpoint_config: dict[str, Any] = json.loads(metadata[METADATA_KEY])
            self.downsample_factor = int(metadata["downsample_factor"])
            self.in_channels = int(metadata["in_channels"])
            self._margin = int(metadata["context_margin"])
            sides = json.loads(metadata["input_sides"])
            self.sides = InputSides(int(sides["minimum"]), int(sides["step"]))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: not a unetkit export (missing or bad metadata: {err})") from err

    def context_margin(self) -> int:
        """Pixels of context lost on each side (0 for padded models)."""
        return self._margin

    def valid_input_size(self, n: int) -> int:
        """The smallest legal input side `>= n`."""
        return self.sides.at_least(max(int(n), 1))

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, in_channels, H, W) -> (B, K, H', W')` logits, as the model's `forward`."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        device = x.device
        x = x.detach().float().cpu()
        pad = None
        if self._margin == 0 and self.sides.step > 0:  # the padding the model does inside, done outside
            x, pad = pad_to_multiple(x, self.sides.step)
            x, pad = _pad_to_minimum(x, pad, self.sides.minimum)  # below the traced minimum: pad on
        for side, n in (("height", x.shape[-2]), ("width", x.shape[-1])):
            if not self.sides.is_legal(n):
                rule = f"{self.sides.minimum} + k * {self.sides.step}" if self.sides.step else str(self.sides.minimum)
                raise ValueError(f"{self.path}: input {side} {n} is not legal for this export (must be {rule})")
        out = self._run(x.contiguous())
        return (unpad(out, pad) if pad is not None else out).to(device)


def _pad_to_minimum(
    x: torch.Tensor, pad: tuple[int, int, int, int], minimum: int
) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Pad `(B, C, H, W)` further, split evenly and mirrored as `pad_to_multiple` does, until both sides are
    at least `minimum`; returns the tensor and the total padding `(left, right, top, bottom)` for `unpad`."""
    extra_h, extra_w = max(0, minimum - x.shape[-2]), max(0, minimum - x.shape[-1])
    if not extra_h and not extra_w:
        return x, pad
    more = (extra_w // 2, extra_w - extra_w // 2, extra_h // 2, extra_h - extra_h // 2)
    mode = "reflect" if max(more[:2]) < x.shape[-1] and max(more[2:]) < x.shape[-2] else "replicate"
    x = torch.nn.functional.pad(x, more, mode=mode)
    return x, (pad[0] + more[0], pad[1] + more[1], pad[2] + more[2], pad[3] + more[3])


class OnnxPredictor(_ExportedPredictor):
    """An exported `.onnx` file in an onnxruntime session (see `_ExportedPredictor`).

    Args:
        path: the `.onnx` file from `export_onnx`.
        providers: onnxruntime execution providers (default: CPU).
    """

    def __init__(self, path: str | Path, *, providers: list[str] | None = None) -> None:
        ort = require("onnxruntime")
        path = Path(path)
        data = _read(path, "ONNX")
        check_onnx(data, path)
        try:
            self.session = ort.InferenceSession(data, providers=providers or ["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types
            raise ValueError(f"{path}: not a readable ONNX model ({type(err).__name__})") from err
        super().__init__(path, dict(self.session.get_modelmeta().custom_metadata_map))
        self.input_name = self.session.get_inputs()[0].name

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {self.input_name: x.numpy()})[0])


class TorchExportPredictor(_ExportedPredictor):
    """An exported `.pt2` file (`torch.export`), run on the CPU (see `_ExportedPredictor`).

    Args:
        path: the `.pt2` file from `export_torch`.
    """

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        data = _read(path, ".pt2")
        check_pt2(data, path)  # before torch sees it: its loader unpickles and evals parts of the file
        extra = {PT2_EXTRA_FILE: ""}
        try:
            with quiet_exporters():  # torch.export logs a traceback before raising on a bad file
                program = torch.export.load(io.BytesIO(data), extra_files=extra)
            metadata = json.loads(extra[PT2_EXTRA_FILE] or "{}")
        except (RuntimeError, ValueError, KeyError, OSError, zipfile.BadZipFile) as err:
            raise ValueError(f"{path}: not a readable torch.export file ({type(err).__name__})") from err
        super().__init__(path, metadata)
        self.module = program.module()

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def _read(path: Path, kind: str) -> bytes:
    """The bytes of an exported file, read once: the check and the loader see the same content."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such {kind} file")
    try:
        return path.read_bytes()
    except OSError as err:
        raise ValueError(f"{path}: cannot read ({err.strerror or err})") from err


def load_exported(path: str | Path) -> OnnxPredictor | TorchExportPredictor:
    """The predictor for an exported file: `OnnxPredictor` for `.onnx`, `TorchExportPredictor` for `.pt2`."""
    path = Path(path)
    if path.suffix.lower() == FORMATS["onnx"]:
        return OnnxPredictor(path)
    if path.suffix.lower() == FORMATS["torch"]:
        return TorchExportPredictor(path)
    raise ValueError(f"{path}: an exported model must end in .onnx or .pt2, got {path.suffix or 'no suffix'!r}")
