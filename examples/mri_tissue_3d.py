"""Grey / white matter in 3D against the 2-D slice-wise recipe, on the same held-out slab of a real T1 MRI: the
MNI152 1 mm template with nilearn's tissue masks (`examples/mri_tissue.py` for the data, its licence and the
classes; `pip install -e ".[examples]"`).

Split, as the 2-D recipes, by position along the inferior-superior axis z, with 10-slice gaps:

    train  z 0-69     one slab volume (197 x 233 x 70 voxels)
    val    z 80-89    one slab volume, picks the best epoch
    test   z 100-154  scored as one volume: Dice per class (pooled voxels) and HD95 in mm (metrics/surface.py)

The 3D run is `unetkit train` on a folder of two NIfTI slabs (`train/`, `val/`) with a padded `unet` in
`spatial_dims: 3` (random 64 x 64 x 32 patches, a third centred on foreground, 3D augmentation); the test slab
is predicted whole (`forward_whole`). The 2-D run is `examples/mri_tissue.py`'s training on the axial slices of
the same train / val slabs; its axial predictions are stacked back into the test volume and scored the same way.

    python examples/mri_tissue_3d.py --out runs/mri_tissue_3d

Writes `results.json` under `--out`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from mri_brain import SPLITS, load_t1, run_recipe
from mri_tissue import CLASSES, load_tissue

import unetkit
from unetkit.data.normalize import Normalization
from unetkit.metrics.confusion import class_scores, stat_scores
from unetkit.metrics.surface import surface_scores
from unetkit.models.inference import forward_whole

SPACING = (1.0, 1.0, 1.0)  # the template's 1 mm grid


def write_slabs(root: Path, image: np.ndarray, labels: np.ndarray) -> None:
    """`root/{train,val}/images|masks/slab.nii.gz`: the slabs of `SPLITS` as NIfTI volumes on a 1 mm grid."""
    for split in ("train", "val"):
        zs = SPLITS[split]
        for sub, array in (("images", image.astype(np.float32)), ("masks", labels.astype(np.uint8))):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
            slab = np.ascontiguousarray(array[:, :, zs.start : zs.stop])
            nib.save(nib.Nifti1Image(slab, np.diag([*SPACING, 1.0])), root / split / sub / "slab.nii.gz")


def scores(pred: np.ndarray, target: np.ndarray) -> dict[str, Any]:
    """Dice per tissue over the pooled voxels of the test slab, their mean, and HD95 (mm) per tissue."""
    _, per_class = class_scores(stat_scores(pred, target, len(CLASSES)))
    _, surface = surface_scores(pred, target, len(CLASSES), spacing=SPACING)
    out: dict[str, Any] = {}
    for k, name in enumerate(CLASSES[1:], start=1):
        out[name] = {"dice": per_class[str(k)]["dice"], "hd95_mm": surface[str(k)]["hd95"]}
    out["mean_dice"] = float(np.mean([out[name]["dice"] for name in CLASSES[1:]]))
    return out


def run_3d(image: np.ndarray, labels: np.ndarray, out: Path, epochs: int, steps: int) -> dict[str, Any]:
    write_slabs(out / "data", image, labels)
    config = unetkit.TrainConfig(
        data=str(out / "data"), out=str(out / "run"), model="unet",
        model_options={"base_channels": 8, "depth": 3, "spatial_dims": 3}, epochs=epochs, batch_size=2,
        patch_size=[64, 64, 32], steps_per_epoch=steps, lr=3e-3, loss="dice_ce", mask_mode="classes",
        foreground_oversample=0.33, normalize="image", plan="off", samples=0, seed=0,
    )  # fmt: skip
    start = time.perf_counter()
    unetkit.train(config)
    train_s = time.perf_counter() - start
    model = unetkit.load_model(out / "run").eval()
    spec = json.loads((out / "run" / "best" / "config.json").read_text())["preprocess"]
    zs = SPLITS["test"]
    slab = image[None, :, :, zs.start : zs.stop].astype(np.float32)  # (1, X, Y, Z)
    start = time.perf_counter()
    with torch.no_grad():
        logits = forward_whole(model, torch.from_numpy(Normalization.from_dict(spec).apply(slab))[None])
    pred = logits.argmax(1)[0].numpy()
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
    parser.add_argument("--out", type=Path, default=Path("runs/mri_tissue_3d"))
    parser.add_argument("--epochs", type=int, default=12, help="3D training epochs")
    parser.add_argument("--steps", type=int, default=16, help="3D steps per epoch")
    parser.add_argument("--epochs-2d", type=int, default=30, help="2-D training epochs (16 steps each)")
    parser.add_argument("--skip-2d", action="store_true", help="only the 3D run")
    args = parser.parse_args()
    image, _ = load_t1()
    labels = load_tissue()
    results: dict[str, Any] = {"3d": run_3d(image, labels, args.out / "3d", args.epochs, args.steps)}
    results["3d"] |= {"epochs": args.epochs, "steps_per_epoch": args.steps}
    if not args.skip_2d:
        results["2d"] = run_2d(image, labels, args.out / "2d", args.epochs_2d) | {"epochs": args.epochs_2d}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
