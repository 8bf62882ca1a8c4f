"""`unetkit predict CKPT INPUT... --out DIR`: masks (segmentation) or restored images (denoise, superres) for
images of any size, tile by tile."""

from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path
from typing import Any

from unetkit._fs import check_outputs
from unetkit.cli._common import check_device, checkpoint_inputs, instances_flag

__all__ = ["add_parser", "collect_inputs"]


def collect_inputs(items: list[str]) -> list[Path]:
    """Files, folders (their image files, sorted) and glob patterns -> image paths, checked to exist."""
    from unetkit.data.io import IMAGE_SUFFIXES
    from unetkit.data.volume import is_volume_file, volume_stem

    def zarr(p: Path) -> bool:
        return p.is_dir() and p.suffix.lower() == ".zarr"

    def listed(p: Path) -> bool:
        return (p.is_file() and (p.suffix.lower() in IMAGE_SUFFIXES or is_volume_file(p))) or zarr(p)

    found: list[Path] = []
    for item in items:
        path = Path(item)
        if zarr(path):
            found.append(path)
        elif path.is_dir():
            files = sorted(p for p in path.iterdir() if listed(p))
            if not files:
                images = ", ".join(IMAGE_SUFFIXES)
                raise FileNotFoundError(
                    f"{path}: folder holds no image files ({images}), volumes (.nii, .nii.gz, .nrrd, TIFF stacks) "
                    "nor zarr stores (.zarr)"
                )
            found += files
        elif path.is_file():
            found.append(path)
        elif any(c in item for c in "*?["):
            matches = sorted(Path(p) for p in glob.glob(item) if Path(p).is_file() or zarr(Path(p)))
            if not matches:
                raise FileNotFoundError(f"{item}: pattern matches no files")
            found += matches
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    stems: dict[str, Path] = {}
    for path in found:
        stem = volume_stem(path)
        if stem in stems and stems[stem] != path:
            raise ValueError(f"{path} and {stems[stem]}: two inputs named {stem!r} would write one output")
        stems[stem] = path
    return found


def _run(args: argparse.Namespace) -> int:
    from unetkit.infer.predictor import Predictor

    if not 0.0 <= args.overlap < 1.0:
        raise ValueError(f"`--overlap` must be in [0, 1), got {args.overlap}")
    if args.tile is not None and min((args.tile,) if isinstance(args.tile, int) else args.tile) < 1:
        raise ValueError(f"`--tile` must be a positive integer (or three, for volumes), got {args.tile}")
    if args.batch_size < 1:
        raise ValueError(f"`--batch-size` must be >= 1, got {args.batch_size}")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise NotADirectoryError(f"{args.out}: is a file; `--out` must be a folder")
    inputs = collect_inputs(args.inputs)
    folders = [Path(p) for p in args.inputs if Path(p).is_dir()]
    check_outputs(folders={"--out": args.out}, inputs=[*inputs, *folders, *checkpoint_inputs(args.checkpoint)])
    from unetkit.infer.memory import return_freed_memory

    return_freed_memory()
    device = None if args.device == "auto" else check_device(args.device)
    from unetkit.export import prediction_model
    from unetkit.infer.engine import image_pixels

    pixels = image_pixels(inputs) if args.engine == "auto" else 0
    engine = "torch" if args.engine == "auto" and _is_3d_checkpoint(args.checkpoint) else args.engine
    loaded = prediction_model(args.checkpoint, engine=engine, device=device, pixels=pixels)
    model: Any = loaded.model
    if loaded.task in ("denoise", "superres"):  # image-to-image: restored images of any size, tile by tile
        return _restore(args, model, inputs, device)
    if loaded.task != "segmentation":  # diffusion: unetkit sample
        raise ValueError(
            f"{args.checkpoint}: a {loaded.task} checkpoint; `unetkit predict` needs a segmentation, denoise or "
            "superres checkpoint (diffusion models draw images with `unetkit sample`)"
        )
    predictor = Predictor(model, device=device, tta=args.tta)
    if args.instances == "distance" and not predictor.distance:  # before any input is read: name the checkpoint
        raise ValueError(
            f"`--instances distance` needs a model trained with separation 'distance' (its object distance output); "
            f"{args.checkpoint} has none: use --instances components or watershed"
        )
    return _predict_all(predictor, inputs, args)


def _predict_all(predictor: Any, inputs: list[Path], args: argparse.Namespace) -> int:
    """The batch: stale temporaries cleared, each input predicted (or skipped), a summary line; with
    `--skip-errors` a bad file is reported and passed over, and the run exits with status 2 at the end."""
    from unetkit._errors import one_line as _one_line
    from unetkit._fs import WriteError
    from unetkit.infer.files import predict_file, remove_dead_temps

    out = Path(args.out)
    remove_dead_temps(out)  # each one logged
    done, skipped, failed = 0, 0, []
    for i, path in enumerate(inputs, 1):
        asked = {"probs": args.probs, "overlay": args.overlay, "instances": args.instances is not None}
        try:
            volume = _is_volume_input(predictor, path, args)
            if args.skip_existing and _outputs_exist(out, path, volume, args.mask_format, asked):
                skipped += 1
                print(f"[{i}/{len(inputs)}] {path}: outputs exist in {out}, skipped")
                continue
            if volume:
                from unetkit.infer.volume_files import predict_volume_file

                tiling = {"tile": args.tile, "overlap": args.overlap, "blend": args.blend}
                written = predict_volume_file(
                    predictor, path, out, **tiling, batch_size=args.batch_size, probs=args.probs,
                    overlay=args.overlay, instances=args.instances, progress=True,
                )  # fmt: skip
            else:
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
        except (ValueError, OSError) as err:  # a bad file; a full disk or a read-only folder stops the batch
            if not args.skip_errors or isinstance(err, WriteError):
                raise
            failed.append(f"{path} ({_one_line(err)})")
            print(f"[{i}/{len(inputs)}] {path}: failed: {_one_line(err)}", file=sys.stderr)
            continue
        done += 1
        print(f"[{i}/{len(inputs)}] {path} -> {', '.join(str(p) for p in written.values())}")
    print(f"{done} done, {skipped} skipped (outputs existed), {len(failed)} failed")
    if failed:
        raise ValueError(f"{len(failed)} of {len(inputs)} input(s) failed: {'; '.join(failed)}")
    return 0


def _outputs_exist(out: Path, path: Path, volume: bool, mask_format: str, asked: dict[str, bool]) -> bool:
    """Whether every output asked for `path` is in `out` already (`--skip-existing`): a volume's outputs are
    named by its stem without the volume suffix (`case.nii.gz` -> `case.nii.gz`, `case_probs.nii.gz`,
    `case_instances.nii.gz`, ...)."""
    from unetkit.infer.files import existing_outputs

    if volume:
        from unetkit.infer.volume_files import volume_outputs_exist

        return volume_outputs_exist(out, path, asked)
    return existing_outputs(out, path.stem, mask_format, asked)


def _tile_arg(text: str) -> int | tuple[int, ...]:
    """`--tile N` or, for volumes, `--tile D,H,W`."""
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or three (D,H,W), got {text!r}") from None
    if len(sizes) not in (1, 3):
        raise argparse.ArgumentTypeError(f"expected an integer or three (D,H,W), got {text!r}")
    return sizes[0] if len(sizes) == 1 else sizes


def _is_3d_checkpoint(checkpoint: str) -> bool:
    """Whether a checkpoint directory holds a 3D model (the automatic engine then stays PyTorch: the ONNX path
    is 2D only)."""
    from unetkit.models.checkpoint import read_checkpoint_config

    path = Path(checkpoint)
    if path.is_file():
        return False
    try:
        config = read_checkpoint_config(path)
    except (OSError, ValueError):
        return False  # loading it reports the problem
    return int((config.get("model_config") or {}).get("spatial_dims", 2) or 2) == 3


def _is_volume_input(predictor: Any, path: Path, args: argparse.Namespace) -> bool:
    """Whether `path` goes to the volume path (a 3D model); a volume for a 2D model, or an image for a 3D one,
    is a one-line error naming both."""
    from unetkit.data.volume import volume_suffix

    suffix = volume_suffix(path)
    if getattr(predictor, "spatial_dims", 2) == 3:
        if suffix is None:
            raise ValueError(
                f"{path}: a 2-D image, and {args.checkpoint} holds a 3D model; give volumes (.nii, .nii.gz, .nrrd, "
                "TIFF stacks)"
            )
        if args.mask_format != "auto":
            raise ValueError(f"--mask-format: not available for volumes; the mask takes the input's format ({path})")
        return True
    if not isinstance(args.tile, (int, type(None))):
        raise ValueError(f"`--tile` {','.join(map(str, args.tile))}: three sides are for volumes; {path} is an image")
    if suffix in (".nii", ".nii.gz", ".nrrd"):
        raise ValueError(
            f"{path}: a volume, and {args.checkpoint} holds a 2D model; predict volumes with a 3D checkpoint"
        )
    return False


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
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="image files (or NAME.zarr stores), folders or glob patterns"
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--tile",
        type=_tile_arg,
        default=None,
        help="tile side (default 512; 388 output for unet_classic); volumes: one side or D,H,W in the file's axis "
        "order (default 96; 44,44,28 output for unet_classic_3d); slabs stream along the file's slowest axis",
    )
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
    parser.add_argument(
        "--probs",
        action="store_true",
        help="also write probabilities as float32 TIFF (volumes: <stem>_probs in the input's format, 4-D NIfTI "
        "(X, Y, Z, K), ImageJ hyperstack ZCYX, NRRD)",
    )
    parser.add_argument(
        "--overlay",
        action="store_true",
        help="also write an overlay PNG (volumes: three orthogonal planes through the centre, to scale)",
    )
    parser.add_argument(
        "--mask-format",
        default="auto",
        choices=("auto", "png", "tif", "zarr"),
        help="auto: PNG, TIFF above 64 MP (tiled, compressed BigTIFF); zarr: chunked zarr stores (unetkit[zarr])",
    )
    parser.add_argument(
        "--skip-errors",
        action="store_true",
        help="report a file that cannot be predicted and go on; exit with status 2 at the end, listing them",
    )
    parser.add_argument(
        "--skip-existing", action="store_true", help="skip inputs whose outputs are already in --out (resume a run)"
    )
    instances_flag(
        parser,
        "also write object labels as <stem>_instances.tif (volumes: <stem>_instances in the input's format, with its "
        "geometry): auto (bare flag) is the method training chose on its validation split, else distance for a "
        "model with the separation head, else watershed; components: "
        "connected components; watershed: touching objects split by a watershed of the mask's distance transform; "
        "distance: seeds where the model's object distance is high, grown over the mask",
    )
    parser.set_defaults(func=_run)
