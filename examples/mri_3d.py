"""3D against 2-D slice-wise U-Nets on the same held-out slab of a real T1 MRI, scored as one volume (Dice per class
over pooled voxels, HD95 in mm). Three tasks, with the data of the 2-D recipes:

- `tissue`: grey / white matter on the MNI152 1 mm template with nilearn's tissue masks (`examples/mri_tissue.py`
  for the data, its licence and the classes; `pip install -e ".[examples]"`). Split along the inferior-superior
  axis z with 10-slice gaps: train z 0-69, val z 80-89 (picks the best epoch), test z 100-154.
- `brain`: brain extraction from the raw `ch2` head scan of Debian's mricron-data (`--templates`, unpacked as
  `examples/mri_ch2.py` shows; the brain is `ch2bet > 0`), split as mri_ch2.py: train z 20-99, val z 110-119,
  test z 130-164.
- `lobes`: the AAL atlas' 116 regions grouped into 7 lobes (`examples/mri_ch2.py`) on the skull-stripped `ch2`
  scan, split as `brain`.

The 3D run is `unetkit train` on a folder of two NIfTI slabs (`train/`, `val/`) with a padded `unet` in
`spatial_dims: 3` (instance norm, as nnU-Net's 3D networks; random 64 x 64 x 32 patches, a third centred on
foreground, 3D augmentation, per-image normalisation); the test slab is predicted in one pass (`unetkit.predict`
with one tile of the slab's size; `--tiled` for tiles of the training patch, which scores lower here: see the
README).
The 2-D run is the 2-D recipe's training (`mri_brain.run_recipe`: `unet` base 16, depth 3, 128-px patches of the
axial slices of the same train / val slabs); its axial predictions are stacked back into the test volume and
scored the same way.

    python examples/mri_3d.py --task tissue --out runs/mri_3d_tissue
    python examples/mri_3d.py --task lobes --templates /tmp/mricron/usr/share/mricron/templates --out runs/mri_3d_lobes

Writes (and, with `--skip-2d` / `--skip-3d`, updates) `results.json` under `--out`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from mri_brain import SPLITS, load_t1, run_recipe

import unetkit
from unetkit.metrics.confusion import class_scores, stat_scores
from unetkit.metrics.surface import surface_scores

SPACING = (1.0, 1.0, 1.0)  # the template's 1 mm grid


def write_slabs(root: Path, image: np.ndarray, labels: np.ndarray) -> None:
    """`root/{train,val}/images|masks/slab.nii.gz`: the slabs of `SPLITS` as NIfTI volumes on a 1 mm grid."""
    for split in ("train", "val"):
        zs = SPLITS[split]
        for sub, array in (("images", image.astype(np.float32)), ("masks", labels.astype(np.uint8))):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
            slab = np.ascontiguousarray(array[:, :, zs.start : zs.stop])
            nib.save(nib.Nifti1Image(slab, np.diag([*SPACING, 1.0])), root / split / sub / "slab.nii.gz")


CLASSES: tuple[str, ...] = ()  # of the task, set by `load_task`


def load_task(task: str, templates: Path | None) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """The image `(X, Y, Z)` in [0, 1], its labels and class names; sets the splits of the task."""
    if task == "tissue":
        from mri_tissue import CLASSES as TISSUES
        from mri_tissue import load_tissue

        return load_t1()[0], load_tissue(), TISSUES
    import mri_ch2

    if templates is None:
        raise SystemExit(f"--task {task} needs --templates (mricron-data's templates folder; see mri_ch2.py)")
    SPLITS.clear()
    SPLITS.update(mri_ch2.SPLITS)  # mri_brain's split, which run_recipe and write_slabs read
    if task == "brain":
        head = mri_ch2._load(templates, "ch2.nii.gz").astype(np.float32)
        labels = (mri_ch2._load(templates, "ch2bet.nii.gz") > 0).astype(np.uint8)
        return np.clip(head / np.percentile(head[head > 0], 99), 0, 1), labels, ("background", "brain")
    brain = mri_ch2._load(templates, "ch2bet.nii.gz").astype(np.float32)
    image = np.clip(brain / np.percentile(brain[brain > 0], 99), 0, 1)
    return image, mri_ch2.lobe_labels(templates), mri_ch2.LOBES


def scores(pred: np.ndarray, target: np.ndarray) -> dict[str, Any]:
    """Dice per class over the pooled voxels of the test slab and HD95 (mm) per class, for the classes present
    in the test slab's ground truth or prediction; the means over the classes of the ground truth."""
    _, per_class = class_scores(stat_scores(pred, target, len(CLASSES)))
    _, surface = surface_scores(pred, target, len(CLASSES), spacing=SPACING)
    out: dict[str, Any] = {}
    for k, name in enumerate(CLASSES[1:], start=1):
        if per_class[str(k)]["dice"] is not None:  # None: absent from both sides
            out[name] = {"dice": per_class[str(k)]["dice"], "hd95_mm": surface[str(k)]["hd95"]}
    present = [CLASSES[k] for k in range(1, len(CLASSES)) if (target == k).any()]
    out["mean_dice"] = float(np.mean([out[name]["dice"] for name in present]))
    hd95 = [out[name]["hd95_mm"] for name in present if out[name]["hd95_mm"] is not None]
    out["mean_hd95_mm"] = float(np.mean(hd95)) if hd95 else None
    out["classes_in_test"] = present
    return out


def run_3d(
    image: np.ndarray, labels: np.ndarray, out: Path, epochs: int, steps: int, lr: float = 1e-3, norm: str = "instance",
    patch: tuple[int, int, int] = (64, 64, 32), depth: int = 3, normalize: str = "image", tiled: bool = False,
) -> dict[str, Any]:  # fmt: skip
    write_slabs(out / "data", image, labels)
    config = unetkit.TrainConfig(
        data=str(out / "data"), out=str(out / "run"), model="unet",
        model_options={"base_channels": 8, "depth": depth, "spatial_dims": 3, "norm": norm}, epochs=epochs,
        batch_size=2, patch_size=list(patch), steps_per_epoch=steps, lr=lr, loss="dice_ce", mask_mode="classes",
        foreground_oversample=0.33, normalize=normalize, plan="off", samples=0, seed=0,
    )  # fmt: skip
    start = time.perf_counter()
    unetkit.train(config)
    train_s = time.perf_counter() - start
    model = unetkit.load_model(out / "run").eval()
    zs = SPLITS["test"]
    slab = image[None, :, :, zs.start : zs.stop].astype(np.float32)  # (1, X, Y, Z)
    start = time.perf_counter()
    if tiled:  # `unetkit.predict`'s 3D tiling in tiles of the training patch (the checkpoint's normalisation applied)
        pred = unetkit.predict(model, slab, tile=list(patch)).argmax(0)
    else:  # one pass over the whole slab, as one tile of its size (the same numbers: tested on the tissue run)
        pred = unetkit.predict(model, slab, tile=[-(-n // 8) * 8 for n in slab.shape[1:]]).argmax(0)
    result = scores(pred, labels[:, :, zs.start : zs.stop].astype(np.int64))
    return result | {"train_seconds": round(train_s, 1), "predict_seconds": round(time.perf_counter() - start, 1)}


def run_2d(image: np.ndarray, labels: np.ndarray, out: Path, epochs: int) -> dict[str, Any]:
    start = time.perf_counter()
    run_recipe(image, labels, out, epochs, num_classes=len(CLASSES))  # trains and writes out/run
    zs = SPLITS["test"]
    pred = np.zeros(labels[:, :, zs.start : zs.stop].shape, np.int64)
    model = unetkit.load_model(out / "run")
    for i, z in enumerate(zs):  # every axial slice of the slab, background ones included, back to (X, Y)
        axial = np.ascontiguousarray(np.rot90(image[:, :, z]))
        pred[:, :, i] = np.rot90(unetkit.predict(model, axial).argmax(0), -1)
    result = scores(pred, labels[:, :, zs.start : zs.stop].astype(np.int64))
    return result | {"seconds_with_coronal_scoring": round(time.perf_counter() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=("tissue", "brain", "lobes"), default="tissue")
    parser.add_argument("--templates", type=Path, default=None, help="mricron-data's templates folder (brain, lobes)")
    parser.add_argument("--out", type=Path, default=None, help="default runs/mri_3d_TASK")
    parser.add_argument("--epochs", type=int, default=12, help="3D training epochs")
    parser.add_argument("--steps", type=int, default=16, help="3D steps per epoch")
    parser.add_argument("--lr", type=float, default=1e-3, help="3D learning rate")
    parser.add_argument("--norm", default="instance", choices=("instance", "batch"), help="3D norm layers")
    parser.add_argument("--patch", default="64x64x32", help="3D patch, XxYxZ voxels")
    parser.add_argument("--depth", type=int, default=3, help="3D U-Net depth (poolings)")
    parser.add_argument(
        "--normalize", default="image", choices=("image", "dataset"),
        help="3D intensity normalisation: `image` (each slab's own percentiles and z-score) or `dataset` (the "
        "training slab's rule)",
    )  # fmt: skip
    parser.add_argument(
        "--tiled", action="store_true", help="predict the 3D test slab in tiles of the patch, not in one pass"
    )
    parser.add_argument("--epochs-2d", type=int, default=30, help="2-D training epochs (16 steps each)")
    parser.add_argument("--skip-2d", action="store_true", help="only the 3D run")
    parser.add_argument("--skip-3d", action="store_true", help="only the 2-D run")
    args = parser.parse_args()
    global CLASSES
    image, labels, CLASSES = load_task(args.task, args.templates)
    out = args.out or Path(f"runs/mri_3d_{args.task}")
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "results.json"
    results: dict[str, Any] = json.loads(saved.read_text()) if saved.is_file() else {}
    results |= {"task": args.task, "splits": {k: [v.start, v.stop - 1] for k, v in SPLITS.items()}}
    if not args.skip_3d:
        patch = tuple(int(v) for v in args.patch.lower().split("x"))
        results["3d"] = run_3d(
            image, labels, out / "3d", args.epochs, args.steps, args.lr, args.norm, patch, args.depth, args.normalize,
            args.tiled,
        )  # fmt: skip
        results["3d"] |= {"epochs": args.epochs, "steps_per_epoch": args.steps, "lr": args.lr, "norm": args.norm}
        results["3d"] |= {"patch": list(patch), "depth": args.depth, "normalize": args.normalize}
        results["3d"] |= {"prediction": "tiled" if args.tiled else "whole"}
        saved.write_text(json.dumps(results, indent=2) + "\n")
    if not args.skip_2d:
        results["2d"] = run_2d(image, labels, out / "2d", args.epochs_2d) | {"epochs": args.epochs_2d}
        saved.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
