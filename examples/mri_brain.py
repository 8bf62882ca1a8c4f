"""Brain extraction on 2-D slices of a real T1 MRI: the MNI152 (ICBM 2009a, symmetric) 1 mm template and
its brain mask, both bundled with nilearn and loaded offline (`pip install -e ".[examples]"`).

Data: `nilearn.datasets.load_mni152_template(resolution=1)` (197 x 233 x 189 voxels, skull-stripped) and
`load_mni152_brain_mask(resolution=1)`. Licences: nilearn is BSD-3; nilearn's own description of the
template (`nilearn/datasets/description/icbm152_2009.rst`) lists its licence as "unknown" and points to
http://www.bic.mni.mcgill.ca/ServicesAtlases/ICBM152NLin2009 (Collins 1999; Fonov 2009, 2011). Nothing is
copied into this repository; the data are read from the installed package.

Caveat: nilearn defines the brain mask as `template > 0.2`, so one threshold reproduces it exactly (the
`threshold` row of the table). The recipe shows the data path and the held-out protocol on real anatomy;
`examples/mri_tissue.py` is the harder task.

Split, by position along the inferior-superior axis (1 mm axial slice index z), so that no held-out pixel was
ever seen in training, with 10-slice (10 mm) gaps so no neighbouring slice leaks across:

    train  z 0-69     axial slices, inferior brain (cerebellum, temporal lobes, basal ganglia)
    val    z 80-89    axial slices, picks the best epoch
    test   z 100-154  the superior brain, scored twice: as its 55 axial slices and as coronal sections of
                      the same slab, an orientation the network never saw

    python examples/mri_brain.py --out runs/mri_brain

About 1 minute on two CPU cores. Writes `results.json` and the run under `--out`, the figure to
`OUT/overlay.png` (or `--figure`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import unetkit
from unetkit import viz
from unetkit.data import write_image
from unetkit.metrics.evaluate import evaluate_dataset

SPLITS = {"train": range(0, 70), "val": range(80, 90), "test": range(100, 155)}
CORONAL_STEP = 2  # every 2nd coronal section of the test slab
NILEARN_THRESHOLD = 0.2  # `load_mni152_brain_mask`'s definition, on the template scaled to max 1
FIGURE_SLICES = (("axial", 20), ("coronal", 45))  # (view, index into that view's test images)


def load_t1() -> tuple[np.ndarray, float]:
    """The MNI152 1 mm T1 template `(X, Y, Z)` float32, divided by its 99th percentile of non-zero voxels and
    clipped to [0, 1] (an image-only statistic; no mask is used), and that divisor."""
    from nilearn.datasets import load_mni152_template

    t1 = np.asanyarray(load_mni152_template(resolution=1).dataobj).astype(np.float32)
    p99 = float(np.percentile(t1[t1 > 0], 99))
    return np.clip(t1 / p99, 0, 1), p99


def axial(volume: np.ndarray, zs: range) -> list[np.ndarray]:
    """Axial slices `(Y, X)`, anterior up."""
    return [np.ascontiguousarray(np.rot90(volume[:, :, z])) for z in zs]


def coronal(volume: np.ndarray, zs: range) -> list[np.ndarray]:
    """Coronal sections `(Z, X)` of the slab `zs`, superior up, through every `CORONAL_STEP`-th y."""
    slab = volume[:, :, zs.start : zs.stop]
    return [np.ascontiguousarray(np.rot90(slab[:, y, :])) for y in range(0, volume.shape[1], CORONAL_STEP)]


def write_axial(root: Path, image: np.ndarray, labels: np.ndarray, zs: range, binary: bool, prefix: str = "") -> None:
    """The axial slices `zs` of a volume as `root/images/PREFIXzNNN.tif` (float32) + `root/masks/PREFIXzNNN.png`."""
    for z, img, lab in zip(zs, axial(image, zs), axial(labels, zs), strict=True):
        write_image(root / "images" / f"{prefix}z{z:03d}.tif", img.astype(np.float32))
        write_image(root / "masks" / f"{prefix}z{z:03d}.png", lab.astype(np.uint8) * (255 if binary else 1))


def write_folder(root: Path, image: np.ndarray, labels: np.ndarray, binary: bool) -> None:
    """The train / val splits as a unetkit folder data set: float32 TIFF images, PNG masks."""
    for split in ("train", "val"):
        write_axial(root / split, image, labels, SPLITS[split], binary)


def train_2d(out: Path, epochs: int, num_classes: int, **options: Any) -> torch.nn.Module:
    """The 2-D recipes' training on the slices of `out/data` (`unet` base 16, depth 3, 128-px patches, 16 steps of
    8 per epoch); `options` override TrainConfig fields. The run goes to `out/run`; returns its best model."""
    binary = num_classes == 2
    config = unetkit.TrainConfig(
        data=str(out / "data"), out=str(out / "run"), model="unet", model_options={"base_channels": 16, "depth": 3},
        epochs=epochs, batch_size=8, patch_size=128, steps_per_epoch=16, lr=2e-3,
        mask_mode="binary" if binary else "classes", samples=0, seed=0,
    )  # fmt: skip
    unetkit.train(dataclasses.replace(config, **options))
    return unetkit.load_model(out / "run")


def run_recipe(
    image: np.ndarray, labels: np.ndarray, out: Path, epochs: int, num_classes: int
) -> tuple[dict[str, Any], dict[str, list[np.ndarray]]]:
    """Train on the axial train slices, then score the test slab as axial and as coronal images.

    Returns the `evaluate_dataset` results per view (with the timing) and the images, targets and
    predictions of each view, for the figure.
    """
    write_folder(out / "data", image, labels, num_classes == 2)
    start = time.perf_counter()
    model = train_2d(out, epochs, num_classes)
    train_s = time.perf_counter() - start
    results: dict[str, Any] = {"train_seconds": round(train_s, 1)}
    views: dict[str, list[np.ndarray]] = {}
    for view, cut in (("axial", axial), ("coronal", coronal)):
        images, targets = cut(image, SPLITS["test"]), cut(labels, SPLITS["test"])
        keep = [i for i, t in enumerate(targets) if t.any()]  # sections that hold brain
        images, targets = [images[i] for i in keep], [targets[i].astype(np.int64) for i in keep]
        preds = [unetkit.predict(model, img).argmax(0) for img in images]  # (H, W) class indices
        results[view] = evaluate_dataset(preds, targets, num_classes=num_classes)
        views[f"{view}_images"], views[f"{view}_targets"], views[f"{view}_preds"] = images, targets, preds
    return results, views


def save_figure(views: dict[str, list[np.ndarray]], path: Path, classes: tuple[int, ...] = (1,)) -> Path:
    """Test overlays of `FIGURE_SLICES`, one panel per view and class (TP green, FP red, FN blue)."""
    panels = []
    for view, i in FIGURE_SLICES:
        img, target, pred = (views[f"{view}_{k}"][i] for k in ("images", "targets", "preds"))
        panels += [viz.overlay(img[None], pred == k, target == k) for k in classes]
    height = max(p.shape[0] for p in panels)
    # black below the shorter (coronal) panels, a white 4-pixel rule between panels
    padded = [np.pad(p, ((0, height - p.shape[0]), (0, 0), (0, 0))) for p in panels]
    padded = [np.pad(p, ((0, 0), (0, 4), (0, 0)), constant_values=255) for p in padded]
    return viz.save_png(np.concatenate(padded, axis=1), path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/mri_brain", help="folder for the data, the run and results.json")
    parser.add_argument("--epochs", type=int, default=12, help="training epochs (16 steps each)")
    parser.add_argument("--figure", default=None, help="overlay figure to write (default OUT/overlay.png)")
    args = parser.parse_args()
    from nilearn.datasets import load_mni152_brain_mask

    start = time.perf_counter()
    out = Path(args.out)
    image, p99 = load_t1()
    brain = np.asanyarray(load_mni152_brain_mask(resolution=1).dataobj) > 0
    results, views = run_recipe(image, brain, out, args.epochs, num_classes=2)
    print("| test view | images | method | Dice | IoU |")
    print("|---|---|---|---|---|")
    for view in ("axial", "coronal"):
        n, micro = len(views[f"{view}_images"]), results[view]["micro"]
        print(f"| {view} | {n} | U-Net | {micro['dice']:.4f} | {micro['iou']:.4f} |")
        # the mask's own definition, mapped to this recipe's intensity scale
        level = NILEARN_THRESHOLD / p99
        preds = [(img > level).astype(np.int64) for img in views[f"{view}_images"]]
        base = evaluate_dataset(preds, views[f"{view}_targets"], num_classes=2)["micro"]
        results[view]["threshold"] = base
        print(f"| {view} | {n} | threshold (nilearn's mask definition) | {base['dice']:.4f} | {base['iou']:.4f} |")
    results["seconds"] = round(time.perf_counter() - start, 1)
    results["epochs"] = args.epochs
    results["splits"] = {k: [v.start, v.stop - 1] for k, v in SPLITS.items()}
    print(f"\nDice and IoU pooled over the test pixels; {args.epochs} epochs, {results['seconds']:.0f} s in all")
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"figure: {save_figure(views, Path(args.figure) if args.figure else out / 'overlay.png')}")


if __name__ == "__main__":
    main()
