"""Brain extraction and atlas regions on a real single-subject T1 MRI: Colin Holmes' "ch2" scan (27 averaged
scans of one man, 1 mm, MNI space) with its skull-stripped version and the AAL atlas, from Debian's
`mricron-data` package, unpacked without root:

    apt-get download mricron-data && dpkg-deb -x mricron-data_*.deb /tmp/mricron
    python examples/mri_ch2.py --templates /tmp/mricron/usr/share/mricron/templates --task brain
    python examples/mri_ch2.py --templates /tmp/mricron/usr/share/mricron/templates --task lobes

Data (all on one 181 x 217 x 181 grid, read with nibabel): `ch2.nii.gz` (the head, uint8, skull and scalp
included), `ch2bet.nii.gz` (FSL BET's brain extraction of it; brain = `> 0`), `aal.nii.gz` (Tzourio-Mazoyer et
al. 2002: 116 regions drawn on this very scan). Licences: Debian's copyright file for mricron-data puts the
package under BSD-3 (Chris Rorden); the AAL atlas has its own upstream terms (cite the paper), so only the
brain-extraction figure is committed to the repository.

Tasks:
- `brain`: 2 classes, brain vs everything else (skull, scalp, background) on the raw head scan. Baseline: the
  single intensity cut that maximises Dice on the training slices.
- `lobes`: 8 classes, AAL's 116 regions grouped into the lobes of the AAL paper's table (frontal incl.
  central region, temporal, parietal, occipital, limbic incl. insula, deep grey nuclei, cerebellum incl.
  vermis) on the skull-stripped scan. Intensity cannot separate lobes: no threshold baseline applies.

Split by the inferior-superior position (axial slice z) with 10-slice gaps: train z 20-99, validate z 110-119,
test z 130-164 (the superior brain), scored as axial slices and as coronal sections, an orientation never
seen in training. Writes `results.json`, the run and `overlay.png` under `--out`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import mri_brain
import numpy as np
from mri_brain import run_recipe, save_figure

from unetkit.metrics.evaluate import evaluate_dataset

SPLITS = {"train": range(20, 100), "val": range(110, 120), "test": range(130, 165)}
LOBES = ("background", "frontal", "temporal", "parietal", "occipital", "limbic", "deep grey", "cerebellum")
# AAL label-name prefixes per lobe (AAL paper, table 2; the central region and insula joined to frontal / limbic)
PREFIXES = {
    1: ("Precentral", "Frontal", "Rolandic", "Supp_Motor", "Olfactory", "Rectus", "Paracentral"),
    2: ("Temporal", "Heschl"),
    3: ("Postcentral", "Parietal", "SupraMarginal", "Angular", "Precuneus"),
    4: ("Calcarine", "Cuneus", "Lingual", "Occipital", "Fusiform"),
    5: ("Insula", "Cingulum", "Hippocampus", "ParaHippocampal", "Amygdala"),
    6: ("Caudate", "Putamen", "Pallidum", "Thalamus"),
    7: ("Cerebelum", "Vermis"),
}


def _load(folder: Path, name: str) -> np.ndarray:
    import nibabel

    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; unpack mricron-data as this script's docstring shows")
    return np.asanyarray(nibabel.load(path).dataobj)


def lobe_labels(folder: Path) -> np.ndarray:
    """AAL regions -> lobe classes 0-7, by the region names in `aal.nii.txt`."""
    aal = _load(folder, "aal.nii.gz").astype(np.int64)
    lookup = np.zeros(int(aal.max()) + 1, np.uint8)
    for line in (folder / "aal.nii.txt").read_text().splitlines():
        if not line.strip():
            continue
        index, name = line.split()[:2]
        lobe = next((k for k, prefixes in PREFIXES.items() if name.startswith(prefixes)), None)
        if lobe is None:
            raise ValueError(f"aal.nii.txt: region {name!r} fits no lobe")
        lookup[int(index)] = lobe
    return lookup[aal]


def best_threshold(image: np.ndarray, labels: np.ndarray) -> float:
    zs = SPLITS["train"]
    x, y = image[:, :, zs.start : zs.stop].ravel(), labels[:, :, zs.start : zs.stop].ravel() > 0
    scores = {t: 2 * np.sum((x > t) & y) / (np.sum(x > t) + np.sum(y)) for t in np.linspace(0.02, 0.98, 49)}
    return float(max(scores, key=scores.__getitem__))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--templates", required=True, type=Path, help="mricron-data's templates folder")
    parser.add_argument("--task", choices=("brain", "lobes"), default="brain")
    parser.add_argument("--out", default=None, help="folder for data, run, results (default runs/mri_ch2_TASK)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs of 16 steps (brain 12, lobes 40)")
    parser.add_argument("--figure", default=None, help="overlay figure (default OUT/overlay.png)")
    args = parser.parse_args()
    start = time.perf_counter()
    mri_brain.SPLITS.clear()
    mri_brain.SPLITS.update(SPLITS)  # run_recipe cuts the slices by these ranges
    out = Path(args.out or f"runs/mri_ch2_{args.task}")
    if args.task == "brain":
        head = _load(args.templates, "ch2.nii.gz").astype(np.float32)
        image = np.clip(head / np.percentile(head[head > 0], 99), 0, 1)
        labels, classes = (_load(args.templates, "ch2bet.nii.gz") > 0).astype(np.uint8), ("background", "brain")
    else:
        brain = _load(args.templates, "ch2bet.nii.gz").astype(np.float32)
        image = np.clip(brain / np.percentile(brain[brain > 0], 99), 0, 1)
        labels, classes = lobe_labels(args.templates), LOBES
    epochs = args.epochs or (12 if args.task == "brain" else 40)
    results, views = run_recipe(image, labels, out, epochs, num_classes=len(classes))
    if args.task == "brain":
        cut = best_threshold(image, labels)
        results["threshold"] = cut
        for view in ("axial", "coronal"):
            preds = [(img > cut).astype(np.int64) for img in views[f"{view}_images"]]
            results[view]["threshold_baseline"] = evaluate_dataset(preds, views[f"{view}_targets"], num_classes=2)
    print("| test view | images | method | Dice | IoU |" + (" per-lobe Dice |" if args.task == "lobes" else ""))
    print("|---|---|---|---|---|" + ("---|" if args.task == "lobes" else ""))
    for view in ("axial", "coronal"):
        n = len(views[f"{view}_images"])
        rows = [("U-Net", results[view]["micro"])]
        if args.task == "brain":
            rows.append((f"threshold {results['threshold']:.2f}", results[view]["threshold_baseline"]["micro"]))
        for method, micro in rows:
            extra = ""
            if args.task == "lobes":
                per = micro["per_class"]
                extra = " " + ", ".join(f"{LOBES[int(k)]} {v['dice']:.3f}" for k, v in per.items()) + " |"
            print(f"| {view} | {n} | {method} | {micro['dice']:.4f} | {micro['iou']:.4f} |{extra}")
    results.update(seconds=round(time.perf_counter() - start, 1), epochs=epochs, task=args.task)
    results["splits"] = {k: [v.start, v.stop - 1] for k, v in SPLITS.items()}
    print(
        f"\nscores pooled over the test pixels (lobes: mean over the 7 lobes); {epochs} epochs, "
        f"{results['seconds']:.0f} s in all"
    )
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    shown = (1,) if args.task == "brain" else (1, 3)
    print(f"figure: {save_figure(views, Path(args.figure) if args.figure else out / 'overlay.png', classes=shown)}")


if __name__ == "__main__":
    main()
