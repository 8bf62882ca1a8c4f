"""`unetkit predict CKPT INPUT... --out DIR`: masks (segmentation) or restored images (denoise, superres) for
images of any size, tile by tile."""

from __future__ import annotations

import argparse
import glob
from pathlib import Path
from typing import Any

from unetkit.cli._common import check_device

__all__ = ["add_parser", "collect_inputs"]


def collect_inputs(items: list[str]) -> list[Path]:
    """Files, folders (their image files, sorted) and glob patterns -> image paths, checked to exist."""
    from unetkit.data.io import IMAGE_SUFFIXES

    found: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise FileNotFoundError(f"{path}: folder holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            found += files
        elif path.is_file():
            found.append(path)
        elif any(c in item for c in "*?["):
            matches = sorted(Path(p) for p in glob.glob(item) if Path(p).is_file())
            if not matches:
                raise FileNotFoundError(f"{item}: pattern matches no files")
            found += matches
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    stems: dict[str, Path] = {}
    for path in found:
        if path.stem in stems and stems[path.stem] != path:
            raise ValueError(f"{path} and {stems[path.stem]}: two inputs named {path.stem!r} would write one output")
        stems[path.stem] = path
    return found


def _run(args: argparse.Namespace) -> int:
    from unetkit.infer.predictor import Predictor, predict_file

    if not 0.0 <= args.overlap < 1.0:
        raise ValueError(f"`--overlap` must be in [0, 1), got {args.overlap}")
    if args.tile is not None and args.tile < 1:
        raise ValueError(f"`--tile` must be a positive integer, got {args.tile}")
    if args.batch_size < 1:
        raise ValueError(f"`--batch-size` must be >= 1, got {args.batch_size}")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise NotADirectoryError(f"{args.out}: is a file; `--out` must be a folder")
    inputs = collect_inputs(args.inputs)
    device = None if args.device == "auto" else check_device(args.device)
    from unetkit.export import prediction_model
    from unetkit.infer.engine import image_pixels

    pixels = image_pixels(inputs) if args.engine == "auto" else 0
    loaded = prediction_model(args.checkpoint, engine=args.engine, device=device, pixels=pixels)
    model: Any = loaded.model
    if loaded.task in ("denoise", "superres"):  # image-to-image: restored images of any size, tile by tile
        return _restore(args, model, inputs, device)
    if loaded.task != "segmentation":  # diffusion: unetkit sample
        raise ValueError(
            f"{args.checkpoint}: a {loaded.task} checkpoint; `unetkit predict` needs a segmentation, denoise or "
            "superres checkpoint (diffusion models draw images with `unetkit sample`)"
        )
    predictor = Predictor(model, device=device, tta=args.tta)
    out = Path(args.out)
    for i, path in enumerate(inputs, 1):
        written = predict_file(
            predictor,
            path,
            out,
            tile=args.tile,
            overlap=args.overlap,
            blend=args.blend,
            batch_size=args.batch_size,
            probs=args.probs,
            overlay=args.overlay,
            mask_format=args.mask_format,
            instances=args.instances,
            progress=True,
        )
        print(f"[{i}/{len(inputs)}] {path} -> {', '.join(str(p) for p in written.values())}")
    return 0


def _restore(args: argparse.Namespace, model: Any, inputs: list[Path], device: str | None) -> int:
    """`unetkit predict` of a denoise / superres checkpoint: one restored image per input."""
    from unetkit.infer.restore import restore_file

    given = [flag for flag, on in (("--probs", args.probs), ("--overlay", args.overlay)) if on]
    given += ["--instances"] * (args.instances is not None) + ["--mask-format"] * (args.mask_format != "auto")
    if given:
        raise ValueError(f"{', '.join(given)}: for segmentation checkpoints; {args.checkpoint} restores images")
    tiling = {"tile": args.tile, "overlap": args.overlap, "blend": args.blend, "batch_size": args.batch_size}
    for i, path in enumerate(inputs, 1):
        written = restore_file(model, path, args.out, **tiling, tta=args.tta, device=device)
        print(f"[{i}/{len(inputs)}] {path} -> {written}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "predict",
        help="masks (or restored images) for images of any size (tiled)",
        description="Predict masks with a checkpoint (a run directory or a checkpoint directory) for image "
        "files, folders or glob patterns; a denoise or superres checkpoint writes restored images instead (superres: "
        "up-sampled by its scale factor). Unpadded models use the paper's overlap-tile strategy (seamless); "
        "padded ones overlapping tiles blended by weights.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "checkpoint", help="run directory (uses best/), checkpoint directory, or .onnx / .pt2 file from unetkit export"
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--tile", type=int, default=None, help="tile side (default 512; 388 output for unet_classic)")
    parser.add_argument("--overlap", type=float, default=0.25, help="overlap of neighbouring tiles, in [0, 1)")
    parser.add_argument("--blend", default="gaussian", choices=("gaussian", "constant", "center"), help="tile blending")
    parser.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument(
        "--engine",
        default="auto",
        choices=("auto", "torch", "onnxruntime"),
        help="forward passes in PyTorch or ONNX Runtime (CPU; ~2.7x faster for unet, exported once and cached); "
        "auto: ONNX Runtime on a CPU when installed and the export is cached or the inputs total >= 4 MP",
    )
    parser.add_argument("--tta", action="store_true", help="average the 8 flips and quarter turns")
    parser.add_argument("--probs", action="store_true", help="also write probabilities as float32 TIFF")
    parser.add_argument("--overlay", action="store_true", help="also write an overlay PNG")
    parser.add_argument(
        "--mask-format", default="auto", choices=("auto", "png", "tif"), help="auto: PNG, TIFF above 64 MP"
    )
    parser.add_argument(
        "--instances",
        nargs="?",
        const="watershed",
        default=None,
        choices=("components", "watershed"),
        help="also write object labels as <stem>_instances.tif: connected components, or touching objects "
        "separated by a distance-transform watershed (the method when the flag is given bare)",
    )
    parser.set_defaults(func=_run)
