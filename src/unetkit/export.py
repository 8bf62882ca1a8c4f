"""Export a model to ONNX or `torch.export` (`.pt2`) with dynamic batch, height and width, checked
against PyTorch. `unetkit.infer.exported` runs the files (`load_exported`, re-exported here).

Legal input sides. A graph holds for the sides where the model's Python shape logic takes one path:
`minimum + k * step`, `k >= 0`, `step` the down-sampling factor.
- Padded models (`unet`, `sa_unet`, `basic_unet`) are exported for multiples of `step`, where their own
  `pad_to_multiple` is a no-op; the predictors pad (and crop back) the same way outside the graph, so
  any side works and matches eager.
- Unpadded models (`unet_classic`): `valid_input_size` lists exactly that progression (every pooled size
  even); it is stored as this formula, not by rebuilding the model.
- One-size models (`unet_dense_bottleneck`, whose MLP fixes 16x16): static H and W (`step = 0`).

The checkpoint config (preprocessing, label values), context margin, down-sampling factor, input
channels and legal sides travel in the file (ONNX `metadata_props`, `.pt2` extra files).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from unetkit._fs import atomic_file
from unetkit.infer.exported import (
    FORMATS,
    METADATA_KEY,
    PT2_EXTRA_FILE,
    InputSides,
    OnnxPredictor,
    TorchExportPredictor,
    load_exported,
    quiet_exporters,
    require,
)
from unetkit.models.inference import context_margin
from unetkit.version import __version__

__all__ = [
    "FORMATS",
    "ExportReport",
    "InputSides",
    "OnnxPredictor",
    "PredictionModel",
    "TorchExportPredictor",
    "cached_onnx",
    "export_model",
    "export_onnx",
    "export_torch",
    "load_exported",
    "prediction_model",
]

logger = logging.getLogger(__name__)

EXAMPLE_FACTORS = 6  # default example side: 6 down-sampling factors, so no feature map has side 1
CHECK_BATCHES = (1, 2)  # batch sizes of the two checked inputs (dynamic batch)
CHECK_WARN_DIFF = 1e-3  # log a warning when an export differs more than this from eager

Shapes = tuple[tuple[int, int, int, int], ...]


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote and how closely it matches eager PyTorch.

    Attributes:
        path: the file written.
        format: `onnx` or `torch`.
        max_abs_diff: largest `|exported - eager|` over the checked inputs (`None` when not checked).
        sizes: the checked input shapes `(B, C, H, W)`.
        seconds: wall time of the export and the check.
        opset: the ONNX opset (`None` for `torch`).
        dynamic: whether height and width are dynamic (the batch always is).
        note: why height and width are static, if they are.
    """

    path: Path
    format: str
    max_abs_diff: float | None
    sizes: Shapes
    seconds: float
    opset: int | None
    dynamic: bool
    note: str = ""


def _prepare(model: nn.Module | str | Path) -> nn.Module:
    """A CPU, eval-mode copy of `model` (or of the checkpoint at that path), so the caller's is untouched."""
    from unetkit.models.checkpoint import load_model, unwrap_model

    if isinstance(model, (str, Path)):
        return load_model(model)
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be an nn.Module or a checkpoint path, got {type(model).__name__}")
    model = unwrap_model(model)
    if getattr(model, "model_name", None) is None or getattr(model, "model_config", None) is None:
        raise ValueError("`model` must come from unetkit.create_model (it needs model_name and model_config)")
    return copy.deepcopy(model).cpu().eval()


def _input_sides(model: nn.Module) -> InputSides:
    """The legal sides of the exported graph (see the module docstring), from the model's size methods."""
    factor = int(getattr(model, "downsample_factor", 1) or 1)
    output_size, valid = getattr(model, "output_size", None), getattr(model, "valid_input_size", None)
    if not callable(output_size) or not callable(valid):
        return InputSides(factor, factor)
    margin = context_margin(model)
    first = int(valid(factor if margin == 0 else 1))
    regular = all(output_size(first + k * factor) is not None for k in (1, 2))
    if margin > 0:  # no legal side between two steps, so the formula equals `valid_input_size`
        regular = regular and int(valid(first + 1)) == first + factor
    return InputSides(first, factor if regular else 0)


def _check_output(path: str | Path, fmt: str) -> Path:
    path = Path(path)
    suffix = FORMATS[fmt]
    if path.suffix.lower() != suffix:
        raise ValueError(f"`path` must end in {suffix} for the {fmt} format, got {path}")
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; expected a file path ending in {suffix}")
    parent = path.parent
    if not parent.exists():
        raise ValueError(f"{path}: cannot write: folder {parent} does not exist")
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise ValueError(f"{path}: cannot write: {parent} is not a writable folder")
    return path


def _example_sides(sides: InputSides, example_size: int | None) -> list[tuple[int, int]]:
    """Two different legal `(H, W)`: the export example and a second one (one when static)."""
    if example_size is not None and (not isinstance(example_size, int) or example_size < 1):
        raise ValueError(f"`example_size` must be a positive integer, got {example_size!r}")
    if sides.step == 0:
        side = sides.at_least(example_size or 1)
        return [(side, side)]
    f = sides.step
    side = sides.at_least(example_size or max(EXAMPLE_FACTORS * f, sides.minimum + 2 * f))
    return [(side, side), (side + 4 * f, side + 2 * f)]


def _export_program(model: nn.Module, sides: InputSides, hw: tuple[int, int]) -> tuple[Any, InputSides, str]:
    """`torch.export` with a dynamic batch, and dynamic H and W when `sides` allows; static H and W
    (and a note saying why) if torch.export cannot make them dynamic."""
    from torch.export import Dim

    # batch 2: torch.export specialises dimensions of size 1
    x = torch.randn(2, int(getattr(model, "in_channels", 1)), *hw, generator=torch.Generator().manual_seed(0))
    # Plain `Dim.DYNAMIC` per axis, not derived dims (`16 * k + 12`): with derived dims the copy-and-crop
    # slices of `unet_classic` get unbacked sizes and export fails; plain dims export every zoo model, the
    # size checks in `forward` become runtime asserts, and `InputSides` states the rule they enforce.
    spatial = {2: Dim.DYNAMIC, 3: Dim.DYNAMIC} if sides.step else {}
    try:
        program = torch.export.export(model, (x,), dynamic_shapes=({0: Dim.DYNAMIC, **spatial},))
    except Exception as err:  # torch.export raises many types; retry static, then let the second error out
        if not spatial:
            raise
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        note = f"static {hw[0]}x{hw[1]} input: torch.export could not make H and W dynamic ({reason})"
        logger.warning("%s", note)
        program = torch.export.export(model, (x,), dynamic_shapes=({0: Dim.DYNAMIC},))
        return program, InputSides(hw[0], 0), note
    if spatial:  # torch.export may have found a larger smallest side than the model's formula
        lower = _lower_bound(program)
        if lower is not None and lower > sides.minimum:
            sides = InputSides(sides.at_least(lower), sides.step)
    return program, sides, ""


def _lower_bound(program: Any) -> int | None:
    """The smallest height the exported program accepts, from its range constraints (None if unknown)."""
    try:
        name = program.graph_signature.user_inputs[0]
        node = next(n for n in program.graph.nodes if n.name == name)
        side = node.meta["val"].shape[2]
        return int(program.range_constraints[side.node.expr].lower)
    except Exception:  # internals of torch.export; the formula's minimum stands
        return None


def _metadata(model: nn.Module, sides: InputSides) -> dict[str, str]:
    config = getattr(model, "checkpoint_config", None) or {
        "model": model.model_name,
        "model_config": model.model_config,
    }
    return {
        METADATA_KEY: json.dumps(config),
        "context_margin": str(context_margin(model)),
        "downsample_factor": str(int(getattr(model, "downsample_factor", 1) or 1)),
        "in_channels": str(int(getattr(model, "in_channels", 1))),
        "input_sides": json.dumps({"minimum": sides.minimum, "step": sides.step}),
        "unetkit_version": __version__,
    }


def _compare(
    model: nn.Module, exported: Callable[[torch.Tensor], torch.Tensor], sizes: list[tuple[int, int]]
) -> tuple[float, Shapes]:
    """Largest `|exported - eager|` on random inputs of the given sides (batch 1, then batch 2)."""
    generator = torch.Generator().manual_seed(1)
    channels = int(getattr(model, "in_channels", 1))
    worst, shapes = 0.0, []
    for batch, (h, w) in zip(CHECK_BATCHES, sizes, strict=True):
        x = torch.randn(batch, channels, h, w, generator=generator)
        with torch.inference_mode():
            expected, got = model(x), exported(x)
        if got.shape != expected.shape:
            raise ValueError(f"exported model returned {tuple(got.shape)}, eager {tuple(expected.shape)}")
        worst = max(worst, float((got.float() - expected.float()).abs().max()))
        shapes.append((batch, channels, h, w))
    if worst > CHECK_WARN_DIFF:
        logger.warning("exported model differs from eager PyTorch by up to %.3g", worst)
    return worst, tuple(shapes)


def _trace(
    model: nn.Module | str | Path, example_size: int | None
) -> tuple[nn.Module, Any, InputSides, str, list[tuple[int, int]]]:
    """The prepared model, its `torch.export` program, the legal sides, why H and W are static (if they
    are) and the two check sizes."""
    model = _prepare(model)
    sides = _input_sides(model)
    sizes = _example_sides(sides, example_size)
    with quiet_exporters():
        program, sides, note = _export_program(model, sides, sizes[0])
    return model, program, sides, note, sizes if sides.step else sizes[:1] * 2


def export_onnx(
    model: nn.Module | str | Path,
    path: str | Path,
    *,
    opset: int | None = None,
    check: bool = True,
    example_size: int | None = None,
) -> ExportReport:
    """Export to ONNX with dynamic batch, height and width (see the module docstring for legal sides).

    Args:
        model: a model from `create_model` / `load_model`, or a checkpoint (or run) directory.
        path: the `.onnx` file to write (atomically); its folder must exist.
        opset: ONNX opset (default: the exporter's, 20 with torch 2.13).
        check: run the file in onnxruntime at two legal sizes and report the largest difference.
        example_size: side of the export example (rounded up to a legal side); default: 6 down-sampling factors.
    """
    start = time.perf_counter()
    if opset is not None and (not isinstance(opset, int) or isinstance(opset, bool) or opset < 1):
        raise ValueError(f"`opset` must be a positive integer, got {opset!r}")
    path = _check_output(path, "onnx")
    for name in ("onnx", "onnxscript", *(["onnxruntime"] if check else [])):
        require(name)
    model, program, sides, note, sizes = _trace(model, example_size)
    # The dynamo exporter (torch's default since 2.9) on the program `_export_program` made, so that
    # `.onnx` and `.pt2` share one trace and its `dynamic_shapes`. Not the TorchScript tracer with
    # `dynamic_axes` (`dynamo=False`): it is deprecated, and it bakes Python branches such as
    # `pad_to_multiple`'s into the graph silently, where torch.export turns them into checked guards.
    with quiet_exporters():
        onnx_program = torch.onnx.export(
            program, opset_version=opset, input_names=["image"], output_names=["logits"], verbose=False
        )
    assert onnx_program is not None  # always a program with dynamo
    produced = next(o.version for o in onnx_program.model_proto.opset_import if o.domain in ("", "ai.onnx"))
    if opset is not None and produced != opset:
        raise ValueError(f"`opset` {opset} is not supported: the exporter could not convert to it (it made {produced})")
    dims = onnx_program.model.graph.inputs[0].shape or ()
    onnx_program.rename_axes(
        {
            str(dims[i]): label
            for i, label in ((0, "batch"), (2, "height"), (3, "width"))
            if not isinstance(dims[i], int)
        }
    )
    onnx_program.model.metadata_props.update(_metadata(model, sides))
    diff, shapes = None, cast(Shapes, ())
    with atomic_file(path) as tmp:
        onnx_program.save(tmp, external_data=False)
        if check:
            diff, shapes = _compare(model, OnnxPredictor(tmp), sizes)
    return ExportReport(path, "onnx", diff, shapes, time.perf_counter() - start, produced, sides.step > 0, note)


def export_torch(
    model: nn.Module | str | Path, path: str | Path, *, check: bool = True, example_size: int | None = None
) -> ExportReport:
    """Export with `torch.export` to a `.pt2` file, dynamic batch, height and width where the model permits.

    Args:
        model: a model from `create_model` / `load_model`, or a checkpoint (or run) directory.
        path: the `.pt2` file to write (atomically); its folder must exist.
        check: reload the file and compare it with eager PyTorch at two legal sizes.
        example_size: as in `export_onnx`.
    """
    start = time.perf_counter()
    path = _check_output(path, "torch")
    model, program, sides, note, sizes = _trace(model, example_size)
    diff, shapes = None, cast(Shapes, ())
    with atomic_file(path) as tmp:
        torch.export.save(program, tmp, extra_files={PT2_EXTRA_FILE: json.dumps(_metadata(model, sides))})
        if check:
            diff, shapes = _compare(model, TorchExportPredictor(tmp), sizes)
    return ExportReport(path, "torch", diff, shapes, time.perf_counter() - start, None, sides.step > 0, note)


def export_model(
    model: nn.Module | str | Path,
    path: str | Path,
    *,
    format: str = "onnx",
    opset: int | None = None,
    check: bool = True,
    example_size: int | None = None,
) -> ExportReport:
    """`export_onnx` or `export_torch` by `format` (`onnx` or `torch`); `opset` applies to ONNX only."""
    if format not in FORMATS:
        raise ValueError(f"`format` must be one of {', '.join(FORMATS)}, got {format!r}")
    if format == "torch":
        if opset is not None:
            raise ValueError(f"`opset` applies to the onnx format only, got opset {opset} with format torch")
        return export_torch(model, path, check=check, example_size=example_size)
    return export_onnx(model, path, opset=opset, check=check, example_size=example_size)


def cached_onnx(checkpoint: str | Path) -> OnnxPredictor:
    """An `OnnxPredictor` for a checkpoint directory, exporting (with the parity check) on first use into the
    cache of `unetkit.infer.engine.onnx_cache_path`."""
    from unetkit.infer.engine import onnx_cache_path
    from unetkit.models.checkpoint import resolve_checkpoint

    path = onnx_cache_path(checkpoint)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        report = export_onnx(resolve_checkpoint(checkpoint), path)
        logger.info(
            "exported %s for ONNX Runtime in %.1f s (max |diff| %.2g): %s",
            checkpoint,
            report.seconds,
            report.max_abs_diff or 0.0,
            path,
        )
    return OnnxPredictor(path)


@dataclass(frozen=True)
class PredictionModel:
    """What `prediction_model` returns.

    Attributes:
        model: the module or exported-model predictor to run (it carries the checkpoint config).
        task: the checkpoint's task (`segmentation`, `denoise`, `superres`, `diffusion`).
        engine: `torch`, `onnxruntime` or `exported` (an `.onnx` / `.pt2` file given directly).
    """

    model: Any
    task: str
    engine: str


def prediction_model(
    checkpoint: str | Path, *, engine: str = "auto", device: str | torch.device | None = None, pixels: int = 0
) -> PredictionModel:
    """The model `unetkit predict` runs: an `.onnx` / `.pt2` file from `unetkit export`, or a checkpoint (or run)
    directory in PyTorch or, on a CPU, in ONNX Runtime (exported and cached on first use) as
    `unetkit.infer.engine.choose_engine` decides for `pixels` input pixels.

    Args:
        checkpoint: a run directory, checkpoint directory or exported file.
        engine: `auto`, `torch` or `onnxruntime`.
        device: where the model runs (default: CUDA when available, else the CPU).
        pixels: the total pixels to predict (the `auto` engine exports only when it pays).
    """
    from unetkit._device import resolve_device
    from unetkit.infer.engine import choose_engine
    from unetkit.models.checkpoint import load_model, read_checkpoint_config

    path = Path(checkpoint)
    if path.is_file() and path.suffix.lower() in FORMATS.values():
        model = load_exported(path)
        config = getattr(model, "checkpoint_config", None) or {}
        return PredictionModel(model, str(config.get("task", "segmentation")), "exported")
    task = str(read_checkpoint_config(path).get("task", "segmentation"))
    target = resolve_device(device, flag="--device")
    chosen = choose_engine(engine, target, path, pixels)
    if chosen == "onnxruntime":
        return PredictionModel(cached_onnx(path), task, chosen)
    return PredictionModel(load_model(path, map_location=target), task, chosen)
