"""Grey / white matter segmentation on 2-D slices of a real T1 MRI: the MNI152 (ICBM 2009a, symmetric) 1 mm
template with nilearn's grey- and white-matter masks, all bundled with nilearn and loaded offline
(`pip install -e ".[examples]"`).

Data: `nilearn.datasets.load_mni152_template(resolution=1)`, `load_mni152_gm_mask(resolution=1)` and
`load_mni152_wm_mask(resolution=1)` (the tissue probability maps thresholded at 0.2 and closed twice; all on
the template's 197 x 233 x 189 grid, so nothing is resampled). Licences: nilearn is BSD-3; nilearn's
description of the template (`nilearn/datasets/description/icbm152_2009.rst`) lists its licence as "unknown"
and points to http://www.bic.mni.mcgill.ca/ServicesAtlases/ICBM152NLin2009. Nothing is copied into this
repository.

Classes: 0 background, 1 grey matter, 2 white matter. The two masks overlap on about 0.6 M voxels (a 0.2
threshold on each probability map); a voxel in both goes to the tissue with the higher probability in
`load_mni152_gm_template` / `load_mni152_wm_template` (grey matter on a tie).

Split: as `examples/mri_brain.py` (from which the data path, training and scoring are shared): train on axial
slices z 0-69, validate on z 80-89, test on the superior slab z 100-154 as axial slices and as coronal
sections, an orientation the network never saw. The `intensity thresholds` row is a baseline: the two
intensity cuts that maximise the mean Dice on the training slices.

    python examples/mri_tissue.py --out runs/mri_tissue

About 3 minutes on two CPU cores. Writes `results.json` and the run under `--out`, the figure to
`OUT/overlay.png` (or `--figure`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from mri_brain import SPLITS, axial, load_t1, run_recipe, save_figure

from unetkit.metrics.evaluate import evaluate_dataset

CLASSES = ("background", "grey matter", "white matter")
THRESHOLD_GRID = np.linspace(0.05, 0.95, 19)  # candidate intensity cuts of the baseline


def load_tissue() -> np.ndarray:
    """Class indices `(X, Y, Z)` uint8: 0 background, 1 grey matter, 2 white matter (overlaps by probability)."""
    from nilearn import datasets

    gm, wm = (
        np.asanyarray(f(resolution=1).dataobj) > 0 for f in (datasets.load_mni152_gm_mask, datasets.load_mni152_wm_mask)
    )
    gm_p, wm_p = (
        np.asanyarray(f(resolution=1).dataobj)
        for f in (datasets.load_mni152_gm_template, datasets.load_mni152_wm_template)
    )
    labels = np.zeros(gm.shape, np.uint8)
    labels[gm] = 1
    labels[wm & ~(gm & (gm_p >= wm_p))] = 2  # overlap: the likelier tissue, grey matter on a tie
    return labels


def thresholds(image: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The cuts `lo < hi` (background < lo <= grey matter < hi <= white matter) with the best mean Dice over
    the training slices."""
    zs = SPLITS["train"]
    x, y = np.concatenate([a.ravel() for a in axial(image, zs)]), np.concatenate([a.ravel() for a in axial(labels, zs)])
    best, cuts = -1.0, (0.0, 0.0)
    for lo in THRESHOLD_GRID:
        for hi in THRESHOLD_GRID[lo < THRESHOLD_GRID]:
            pred = np.digitize(x, [lo, hi])
            dice = np.mean([2 * np.sum((pred == k) & (y == k)) / (np.sum(pred == k) + np.sum(y == k)) for k in (1, 2)])
            if dice > best:
                best, cuts = float(dice), (float(lo), float(hi))
    return cuts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/mri_tissue", help="folder for the data, the run and results.json")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs (16 steps each)")
    parser.add_argument("--figure", default=None, help="overlay figure to write (default OUT/overlay.png)")
    args = parser.parse_args()
    start = time.perf_counter()
    out = Path(args.out)
    image, _ = load_t1()
    labels = load_tissue()
    results, views = run_recipe(image, labels, out, args.epochs, num_classes=len(CLASSES))
    lo, hi = thresholds(image, labels)
    results["threshold_cuts"] = [lo, hi]
    print("| test view | images | method | Dice GM | Dice WM | mean Dice | mean IoU |")
    print("|---|---|---|---|---|---|---|")
    for view in ("axial", "coronal"):
        preds = [np.digitize(img, [lo, hi]) for img in views[f"{view}_images"]]
        results[view]["threshold"] = evaluate_dataset(preds, views[f"{view}_targets"], num_classes=len(CLASSES))
        for method, scores in (
            ("U-Net", results[view]),
            (f"intensity thresholds {lo:.2f} / {hi:.2f}", results[view]["threshold"]),
        ):
            micro, per = scores["micro"], scores["micro"]["per_class"]
            print(
                f"| {view} | {len(preds)} | {method} | {per['1']['dice']:.4f} | {per['2']['dice']:.4f} "
                f"| {micro['dice']:.4f} | {micro['iou']:.4f} |"
            )
    results["seconds"] = round(time.perf_counter() - start, 1)
    results["epochs"] = args.epochs
    results["splits"] = {k: [v.start, v.stop - 1] for k, v in SPLITS.items()}
    print(
        f"\nScores pooled over the test pixels; mean = over GM and WM; {args.epochs} epochs, {results['seconds']:.0f} s"
    )
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"figure: {save_figure(views, Path(args.figure) if args.figure else out / 'overlay.png', classes=(1, 2))}")


if __name__ == "__main__":
    main()
