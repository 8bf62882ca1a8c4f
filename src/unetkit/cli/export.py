"""`unetkit export CKPT --out FILE [--format onnx|torch]`: an ONNX or torch.export file, checked against PyTorch."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from unetkit._fs import check_outputs
from unetkit.cli._common import checkpoint_inputs

if TYPE_CHECKING:
    from unetkit.export import ExportReport

__all__ = ["add_parser", "describe"]


def describe(report: ExportReport) -> str:
    """One line for an export report: the file, the format and the largest difference against PyTorch."""
    kind = f"onnx, opset {report.opset}" if report.format == "onnx" else "torch.export"
    line = f"wrote {report.path} ({kind})"
    if report.max_abs_diff is None:
        line += "; not checked"
    else:
        label = "onnx - torch" if report.format == "onnx" else "exported - eager"
        sizes = " and ".join("x".join(map(str, shape)) for shape in report.sizes)
        line += f"; max |{label}| = {report.max_abs_diff:.1e} on {sizes}"
    if not report.dynamic:
        line += f"; {report.note or 'height and width are static (the model takes one input size)'}"
    return line


def _run(args: argparse.Namespace) -> int:
    from unetkit.export import FORMATS, export_model

    fmt = args.format
    if fmt is None:  # from the suffix of --out
        by_suffix = {suffix: name for name, suffix in FORMATS.items()}
        fmt = by_suffix.get(Path(args.out).suffix.lower())
        if fmt is None:
            raise ValueError(f"`--out` {args.out}: cannot tell the format from its suffix; pass --format onnx|torch")
    elif fmt not in FORMATS:
        raise ValueError(f"`--format` must be one of {', '.join(FORMATS)}, got {fmt!r}")
    elif Path(args.out).suffix.lower() != FORMATS[fmt]:
        raise ValueError(f"`--out` must end in {FORMATS[fmt]} for --format {fmt}, got {args.out}")
    if args.opset is not None and args.opset < 1:
        raise ValueError(f"`--opset` must be a positive integer, got {args.opset}")
    check_outputs(files={"--out": args.out}, inputs=checkpoint_inputs(args.checkpoint))
    report = export_model(
        args.checkpoint, args.out, format=fmt, opset=args.opset, check=not args.no_check, example_size=args.example_size
    )
    print(describe(report))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "export",
        help="export a checkpoint to ONNX or torch.export",
        description="Export a checkpoint (a run directory or a checkpoint directory) to ONNX (.onnx) or "
        "torch.export (.pt2) with dynamic batch, height and width, and compare it with PyTorch on random "
        "inputs of two sizes. The file carries the preprocessing and label values; `unetkit predict` "
        "accepts it in place of the checkpoint.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("checkpoint", help="run directory (uses best/) or checkpoint directory")
    parser.add_argument(
        "--out", required=True, metavar="FILE", help="output file, .onnx or .pt2; its folder must exist"
    )
    parser.add_argument("--format", metavar="{onnx,torch}", help="export format; unset: from the suffix of --out")
    parser.add_argument("--opset", type=int, metavar="N", help="ONNX opset; unset: the exporter's (20 with torch 2.13)")
    parser.add_argument("--no-check", action="store_true", help="skip the comparison with PyTorch")
    parser.add_argument(
        "--example-size", type=int, metavar="N", help="example input side; unset: 6 x the down-sampling factor"
    )
    parser.set_defaults(func=_run)
