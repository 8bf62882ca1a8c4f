"""`unetkit evaluate PRED GT`: score predicted masks against ground truth, as papers report it.

PRED and GT are folders (or single files) of masks matched by file stem; in PRED, the extra outputs of
`unetkit predict` (`<stem>_overlay.png`, `<stem>_probs.tif`, `<stem>_instances.tif`) are skipped, except that
with `--instances` a `<stem>_instances.*` file stands for `<stem>`'s prediction. Masks are read by the reader
`train` uses (`unetkit.data.masks`: palette PNGs as indices), and their values map to classes through the
label values of the run (`--checkpoint RUN`, as `predict` wrote them), `--label-values` or
`--num-classes`; without any, like `train` reads a folder: binary when both sides fit {0, 1} / {0, 255},
else the sorted values of the ground truth (and prediction) are the classes. `--ignore-index` (or the
run's) leaves those ground-truth pixels out of every count. Classes absent from both sides are reported as
absent, not scored. With `--instances` the values are instance labels.

Volumes (`.nii.gz`, `.nii`, `.nrrd`, and TIFF stacks of 2-D pages, as `unetkit predict` writes them for 3D
checkpoints) are scored the same way, in 3D, and also by their surface distances in mm (HD95, average
surface distance, normalised surface Dice at `--tolerance` mm) through the ground truth's voxel spacing;
`--surface` adds the distances (in pixels) for images.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from unetkit._fs import atomic_write_bytes, check_outputs

__all__ = ["add_parser", "collect_masks"]

_EXTRA_SUFFIXES = ("_overlay", "_probs", "_instances")  # stems of predict's side outputs, skipped in PRED
_INSTANCES = "_instances"  # with --instances, `<stem>_instances.tif` (from predict --instances) is the prediction
_MAX_ROWS = 20  # per-image rows printed up to this many images
_COLUMNS = (
    ("accuracy", "Acc"),
    ("sensitivity", "Sen"),
    ("specificity", "Spe"),
    ("precision", "Prec"),
    ("dice", "Dice/F1"),
    ("iou", "IoU"),
    ("mcc", "MCC"),
    ("auc", "AUC"),
    ("pixel_error", "PixErr"),
    ("rand_error", "RandErr"),
    ("instance_f1", "InstF1"),
    ("mean_ap", "mAP"),
    ("hd95", "HD95"),
    ("asd", "ASD"),
    ("nsd", "NSD"),
)


def _listing(items: list[str], limit: int = 10) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def _stem(file: Path) -> str | None:
    """The stem that pairs a mask file (`case.nii.gz` -> `case`), or None for a file that is no mask."""
    from unetkit.data.io import IMAGE_SUFFIXES
    from unetkit.data.volume import volume_stem
    from unetkit.data.volume_folder import MEDICAL_SUFFIXES

    if file.name.lower().endswith(MEDICAL_SUFFIXES):
        return volume_stem(file)
    return file.stem if file.suffix.lower() in IMAGE_SUFFIXES else None


def _suffixes() -> str:
    from unetkit.data.io import IMAGE_SUFFIXES
    from unetkit.data.volume_folder import MEDICAL_SUFFIXES

    return ", ".join((*IMAGE_SUFFIXES, *MEDICAL_SUFFIXES))


def collect_masks(path: Path, *, skip_extras: bool = False, instances: bool = False) -> dict[str, Path]:
    """A file or a folder's mask files (images and volumes) -> `{stem: path}`; two files with one stem are an
    error. With `instances`, `<stem>_instances.*` files replace `<stem>`'s mask."""
    if path.is_file():
        return {_stem(path) or path.stem: path}
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder")
    found: dict[str, Path] = {}
    for file in sorted(path.iterdir()):
        stem = _stem(file) if file.is_file() else None
        if stem is None:
            continue
        if instances and stem.endswith(_INSTANCES):
            found[stem] = file  # takes its mask's place below
            continue
        if skip_extras and stem.endswith(_EXTRA_SUFFIXES):
            continue
        if stem in found:
            raise ValueError(f"{found[stem]} and {file}: two masks named {stem!r} in one folder")
        found[stem] = file
    for stem in [s for s in found if instances and s.endswith(_INSTANCES)]:
        found[stem[: -len(_INSTANCES)]] = found.pop(stem)
    if not found:
        raise FileNotFoundError(f"{path}: folder holds no mask files ({_suffixes()})")
    return found


def _is_volume(path: Path) -> bool:
    """Whether a mask file is a volume: NIfTI / NRRD, or a TIFF stack (`unetkit.data.tiff_stack.tiff_kind`)."""
    from unetkit.data.tiff_stack import TIFF_SUFFIXES, tiff_kind
    from unetkit.data.volume_folder import MEDICAL_SUFFIXES

    name = path.name.lower()
    if name.endswith(MEDICAL_SUFFIXES):
        return True
    return name.endswith(TIFF_SUFFIXES) and tiff_kind(path).volume


def _read_side(path: Path) -> tuple[np.ndarray, tuple[float, ...] | None]:
    """A mask as int64 labels and, for a volume, its voxel spacing (mm); images give `(H, W)` and None."""
    from unetkit.data.masks import read_mask
    from unetkit.data.volume_folder import read_labels

    if _is_volume(path):
        labels, volume = read_labels(path)
        return labels, tuple(float(s) for s in volume.spacing)
    return read_mask(path), None


def _pair(pred: Path, gt: Path, instances: bool = False) -> tuple[list[str], dict[str, Path], dict[str, Path]]:
    preds, gts = collect_masks(pred, skip_extras=True, instances=instances), collect_masks(gt)
    if pred.is_file() and gt.is_file():  # two single files pair whatever their names
        stem = _stem(gt) or gt.stem
        return [stem], {stem: pred}, gts
    missing = [f"{gts[s]} (no prediction in {pred})" for s in sorted(set(gts) - set(preds))]
    missing += [f"{preds[s]} (no ground truth in {gt})" for s in sorted(set(preds) - set(gts))]
    if missing:
        raise ValueError(f"{len(missing)} file(s) without counterpart: {_listing(missing)}")
    return sorted(gts), preds, gts


def _read_fov(path: Path) -> np.ndarray:
    """A field of view as `train` reads it, an image's or a volume's: True where any channel is nonzero."""
    from unetkit.data import folder, volume_folder

    return volume_folder.read_fov(path) if _is_volume(path) else folder.read_fov(path)


def _read_probs(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    from unetkit.data.io import read_image

    probs = read_image(path).astype(np.float64)
    if probs.ndim == 3 and probs.shape[:2] == shape and probs.shape[1:] != shape:
        probs = np.moveaxis(probs, -1, 0)  # the reader gives pages as channels: (H, W, K) -> (K, H, W)
    if probs.shape[-2:] != shape:
        raise ValueError(f"{path}: probabilities of shape {probs.shape} do not match the mask size {shape}")
    return probs


def _counterparts(folder: Path, stems: list[str], suffix: str, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: no such folder (expected {what})")
    found = {_stem(p): p for p in sorted(folder.iterdir()) if p.is_file() and _stem(p) is not None}
    missing = [f"{folder / (s + suffix)}.*" for s in stems if s + suffix not in found]
    if missing:
        raise ValueError(f"{folder}: {len(missing)} {what} file(s) missing: {_listing(missing)}")
    return {s: found[s + suffix] for s in stems}


def _mask_info(args: argparse.Namespace, preds: list[np.ndarray], gts: list[np.ndarray]) -> tuple[Any, str]:
    """How mask values map to classes, and where that came from."""
    from unetkit.data.masks import BINARY_VALUE_SETS, check_ignore_index
    from unetkit.data.types import MaskInfo

    ignore = check_ignore_index(args.ignore_index, "--ignore-index")
    given = [flag for flag, value in (("--checkpoint", args.checkpoint), ("--label-values", args.label_values),
                                      ("--num-classes", args.num_classes)) if value is not None]  # fmt: skip
    if len(given) > 1:
        raise ValueError(f"give one of --checkpoint, --label-values, --num-classes, got {', '.join(given)}")
    if args.checkpoint is not None:
        from unetkit.models.checkpoint import read_checkpoint_config

        mask = read_checkpoint_config(args.checkpoint).get("mask") or {}
        if not isinstance(mask.get("label_values"), list) or mask.get("mode") not in ("binary", "classes", "instances"):
            raise ValueError(f"{args.checkpoint}: the checkpoint holds no mask label values")
        ignore = ignore if ignore is not None else mask.get("ignore_index")
        mode = mask["mode"]  # instance labels: foreground = id > 0
        info = MaskInfo(mode, len(mask["label_values"]) if mode == "classes" else 2, mask["label_values"], ignore)
        return info, f"the label values of {args.checkpoint}"
    if args.label_values is not None:
        values = _parse_values(args.label_values)
        return MaskInfo("classes", len(values), values, ignore), "--label-values"
    if args.num_classes is not None:
        if args.num_classes < 2:
            raise ValueError(f"`--num-classes` must be >= 2, got {args.num_classes}")
        return MaskInfo("classes", args.num_classes, list(range(args.num_classes)), ignore), "--num-classes"
    sides = [np.unique(np.concatenate([np.unique(m) for m in masks])) for masks in (preds, gts)]
    if ignore is not None:
        sides[1] = sides[1][sides[1] != ignore]
    if all(any({int(v) for v in side} <= allowed for allowed in BINARY_VALUE_SETS) for side in sides):
        return MaskInfo("binary", 2, [0, 1], ignore), "binary: both sides hold values within {0, 1} or {0, 255}"
    values = [int(v) for v in np.union1d(*sides)]
    return MaskInfo("classes", len(values), values, ignore), (
        f"the {len(values)} values found in the masks; pass --label-values or --checkpoint to set them"
    )


def _parse_values(text: str) -> list[int]:
    try:
        values = sorted({int(part) for part in text.replace(" ", "").split(",") if part})
    except ValueError:
        values = []
    if len(values) < 2 or values[0] < 0:
        raise ValueError(f"`--label-values` must list two or more integers >= 0, e.g. 0,128,255, got {text!r}")
    return values


def _classes(masks: list[np.ndarray], files: list[Path], info: Any, *, ground_truth: bool) -> tuple[list, list]:
    """Class indices (and, for the ground truth, the valid pixels) of raw masks, through `info`."""
    from dataclasses import replace

    from unetkit.data.masks import class_targets

    targets, valids = [], []
    for mask, path in zip(masks, files, strict=True):
        if info.mode == "binary":
            values = mask if not ground_truth or info.ignore_index is None else mask[mask != info.ignore_index]
            if not ({int(v) for v in np.unique(values)} <= {0, 1} or {int(v) for v in np.unique(values)} <= {0, 255}):
                raise ValueError(f"{path}: binary mask must hold values within {{0, 1}} or {{0, 255}}")
        side = info if ground_truth else replace(info, ignore_index=None)
        target, valid = class_targets(mask, side, path)
        targets.append(target)
        valids.append(valid)
    return targets, valids


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


def _table(result: dict[str, Any]) -> str:
    first = result["images"][0]
    columns = [(key, head) for key, head in _COLUMNS if key in first]
    width = max(8, *(len(r["name"]) for r in result["images"]))
    lines = [f"{'image':<{width}} " + " ".join(f"{head:>8}" for _, head in columns)]
    rows = [(r["name"], r) for r in result["images"]] if len(result["images"]) <= _MAX_ROWS else []
    for name, row in [*rows, ("micro", result["micro"]), ("macro", result["macro"])]:
        lines.append(f"{name:<{width}} " + " ".join(f"{_fmt(row.get(key)):>8}" for key, _ in columns))
    if not rows:
        lines.insert(1, f"({len(result['images'])} images: per-image rows in --json / --csv)")
    return "\n".join(lines)


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k != "per_class"}
    for cls, scores in row.get("per_class", {}).items():
        out.update({f"{k}_class{cls}": v for k, v in scores.items()})
    return out


def _csv_text(result: dict[str, Any]) -> str:
    rows = [{"kind": "image", **_flat(r)} for r in result["images"]]
    rows += [{"kind": kind, "name": "", **_flat(result[kind])} for kind in ("micro", "macro")]
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows([{k: "" if v is None else v for k, v in row.items()} for row in rows])
    return buffer.getvalue()


def _spacings(
    stems: list[str],
    pred_files: dict[str, Path],
    gt_files: dict[str, Path],
    read: list[list[tuple[np.ndarray, tuple[float, ...] | None]]],
) -> list[tuple[float, ...] | None]:
    """Each pair's voxel spacing (the ground truth's), checked against the prediction's; None for images."""
    spacings, bad = [], []
    for stem, (_, pred_spacing), (_, gt_spacing) in zip(stems, *read, strict=True):
        if (pred_spacing is None) != (gt_spacing is None):
            pair = (pred_files[stem], gt_files[stem])
            volume, image = pair if gt_spacing is None else pair[::-1]
            raise ValueError(f"{volume} is a volume but {image} is an image; expected two masks of one kind")
        if gt_spacing is not None and not np.allclose(pred_spacing, gt_spacing, rtol=1e-3):
            bad.append(f"{pred_files[stem]} {pred_spacing} vs {gt_files[stem]} {gt_spacing}")
        spacings.append(gt_spacing)
    if bad:
        raise ValueError(
            f"{len(bad)} prediction(s) differ in voxel spacing (mm) from their ground truth: {_listing(bad, 5)}"
        )
    return spacings


def _run(args: argparse.Namespace) -> int:
    from unetkit.metrics import evaluate_dataset

    pred_root, gt_root = Path(args.pred), Path(args.gt)
    stems, pred_files, gt_files = _pair(pred_root, gt_root, args.instances)
    outputs = {flag: path for flag, path in (("--json", args.json), ("--csv", args.csv)) if path is not None}
    read = [pred_root, gt_root, *pred_files.values(), *gt_files.values()]
    read += [Path(folder) for folder in (args.fov, args.probs) if folder is not None]
    check_outputs(files=outputs, inputs=read)
    if args.tolerance <= 0:
        raise ValueError(f"`--tolerance` must be > 0 (mm for volumes, pixels for images), got {args.tolerance}")
    pred_read = [_read_side(pred_files[s]) for s in stems]
    gt_read = [_read_side(gt_files[s]) for s in stems]
    spacings = _spacings(stems, pred_files, gt_files, [pred_read, gt_read])
    volumes = any(s is not None for s in spacings)
    preds, gts = [m for m, _ in pred_read], [m for m, _ in gt_read]
    del pred_read, gt_read
    if volumes and args.probs is not None:
        raise ValueError("`--probs` scores AUC of 2-D masks only; these are volumes (leave --probs out)")
    bad = [f"{pred_files[s]} {p.shape} vs {gt_files[s]} {g.shape}" for s, p, g in zip(stems, preds, gts, strict=True)]
    bad = [b for b, p, g in zip(bad, preds, gts, strict=True) if p.shape != g.shape]
    if bad:
        raise ValueError(f"{len(bad)} prediction(s) differ in size from their ground truth: {_listing(bad, 5)}")
    num_classes = None
    valids: list[np.ndarray | None] = [None] * len(stems)
    if not args.instances:
        info, source = _mask_info(args, preds, gts)
        print(f"masks read as {info.mode} {{{', '.join(str(v) for v in info.label_values)}}} ({source})"
              + (f"; value {info.ignore_index} ignored" if info.ignore_index is not None else ""))  # fmt: skip
        preds, _ = _classes(preds, [pred_files[s] for s in stems], info, ground_truth=False)
        gts, valids = _classes(gts, [gt_files[s] for s in stems], info, ground_truth=True)
        num_classes = info.num_classes
    else:  # instance labels; a side of 0/255 masks is foreground > 0 (its objects: connected components)
        if args.ignore_index is not None:
            kept = [g != args.ignore_index for g in gts]
            gts = [np.where(v, g, 0) for v, g in zip(kept, gts, strict=True)]
            valids = list(kept)
        for masks in (preds, gts):
            values = np.unique(np.concatenate([np.unique(m) for m in masks]))
            if np.isin(values, (0, 255)).all():
                masks[:] = [(m > 0).astype(np.int64) for m in masks]
    fovs: list[np.ndarray | None] | None = None
    if args.fov is not None:
        fov_files = _counterparts(Path(args.fov), stems, "", "field-of-view")
        fov_read = [_read_fov(fov_files[s]) for s in stems]
        bad = [f"{fov_files[s]} {f.shape}" for s, f, g in zip(stems, fov_read, gts, strict=True) if f.shape != g.shape]
        fovs = list(fov_read)
        if bad:
            raise ValueError(f"{len(bad)} field-of-view file(s) differ in size from their masks: {_listing(bad, 5)}")
    if any(v is not None for v in valids):
        fovs = [v if f is None else (f if v is None else f & v) for f, v in zip(fovs or valids, valids, strict=True)]
    probs = None
    if args.probs is not None:
        prob_files = _counterparts(Path(args.probs), stems, "_probs", "probability")
        probs = [_read_probs(prob_files[s], g.shape) for s, g in zip(stems, gts, strict=True)]
    result = evaluate_dataset(
        preds,
        gts,
        probs=probs,
        fovs=fovs,
        names=stems,
        num_classes=num_classes,
        instances=args.instances,
        iou_threshold=args.iou_threshold,
        surface=volumes or args.surface,
        spacings=spacings,
        tolerance=args.tolerance,
    )
    if volumes or args.surface:
        unit = "mm" if volumes else "pixels"
        print(f"surface distances (HD95, ASD) in {unit}; NSD at a tolerance of {args.tolerance:g} {unit}; "
              "per image only (micro: -)")  # fmt: skip
    print(_table(result))
    absent = [c for c, scores in result["micro"].get("per_class", {}).items() if scores["dice"] is None]
    if absent:
        print(f"absent from prediction and ground truth (not scored, left out of the means): class(es) "
              f"{_listing(absent)}")  # fmt: skip
    if args.json is not None:
        payload = {"pred": str(pred_root), "gt": str(gt_root), **result}
        atomic_write_bytes(Path(args.json), (json.dumps(payload, indent=2) + "\n").encode("utf-8"))
        print(f"wrote {args.json}")
    if args.csv is not None:
        atomic_write_bytes(Path(args.csv), _csv_text(result).encode("utf-8"))
        print(f"wrote {args.csv}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "evaluate",
        help="score predicted masks against ground truth",
        description="Score predicted masks against ground truth matched by file stem: accuracy, sensitivity, "
        "specificity, precision, Dice/F1, IoU, MCC, AUC (with --probs), ISBI 2012 pixel and Rand error, and "
        "instance precision/recall/F1 and AP@[0.5:0.95] (with --instances); for volumes (NIfTI, NRRD, TIFF "
        "stacks) in 3D, with HD95, average surface distance and normalised surface Dice in mm (for images with "
        "--surface). Per image, micro (pooled pixels) and macro (mean over images).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("pred", metavar="PRED", help="folder (or file) of predicted masks, e.g. from unetkit predict")
    parser.add_argument("gt", metavar="GT", help="folder (or file) of ground-truth masks with the same stems")
    parser.add_argument("--fov", default=None, metavar="DIR", help="field-of-view masks by stem; 0 = ignored")
    parser.add_argument("--probs", default=None, metavar="DIR", help="<stem>_probs.tif probabilities for AUC")
    parser.add_argument("--instances", action="store_true", help="also match objects (instance metrics)")
    parser.add_argument(
        "--checkpoint", default=None, metavar="RUN", help="read mask values through this run's label values"
    )
    parser.add_argument(
        "--label-values", default=None, metavar="V,V,...", help="the mask value of each class, e.g. 0,128,255"
    )
    parser.add_argument("--num-classes", type=int, default=None, help="mask values are class indices 0..K-1")
    parser.add_argument(
        "--ignore-index", type=int, default=None, help="ground-truth value left out of every count, e.g. 255"
    )
    parser.add_argument(
        "--iou-threshold", type=float, default=0.5, help="IoU for instance precision/recall/F1 (0.5, 0.55, ... 0.95)"
    )
    parser.add_argument(
        "--surface", action="store_true", help="also HD95, ASD, NSD for images (always for volumes, in mm)"
    )
    parser.add_argument("--tolerance", type=float, default=1.0, help="NSD tolerance: mm for volumes, pixels for images")
    parser.add_argument("--json", default=None, metavar="FILE", help="write all results as JSON")
    parser.add_argument("--csv", default=None, metavar="FILE", help="write per-image rows and summaries as CSV")
    parser.set_defaults(func=_run)
