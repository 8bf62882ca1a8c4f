"""3D against 2-D slice-wise U-Nets on the same held-out region of real volumes, scored as one volume (Dice per
class over pooled voxels, HD95 in mm). Four tasks, with the data of the 2-D recipes:

- `tissue`: grey / white matter on the MNI152 1 mm template with nilearn's tissue masks (`examples/mri_tissue.py`
  for the data, its licence and the classes; `pip install -e ".[examples]"`). Split along the inferior-superior
  axis z with 10-slice gaps: train z 0-69, val z 80-89 (picks the best epoch), test z 100-154.
- `brain`: brain extraction from the raw `ch2` head scan of Debian's mricron-data (`--templates`, unpacked as
  `examples/mri_ch2.py` shows; the brain is `ch2bet > 0`), split as mri_ch2.py: train z 20-99, val z 110-119,
  test z 130-164; or, with `--split x`, by hemisphere: train x 0-79, val x 80-89, test x 100-180 (the midline is
  x 90), so that the test region holds the anatomy of every level and no extrapolation along z is asked for.
- `lobes`: the AAL atlas' 116 regions grouped into 7 lobes (`examples/mri_ch2.py`) on the skull-stripped `ch2`
  scan, split as `brain` (`--split z|x`; the z split's test slab holds only frontal and parietal cortex).
- `lesion`: the lung tumours of pyradiomics' CT test data (`--radiomics`: the `data/` folder of the source
  tarball, which `pip install` does not ship: `pip download --no-deps --no-binary :all: pyradiomics==3.0.1`
  fetches it, or PyPI's file list; BSD-3-style licence; read with pynrrd). Train (and pick the epoch) on `lung2`
  (512 x 512 x 61, 0.63 x 0.63 x 5 mm, tumour of 24,644 voxels), test on `lung1` (512 x 512 x 48, 0.57 x 0.57 x
  5 mm, 837 voxels). One training volume: the task measures what a single annotated scan teaches; there is no
  held-out validation, so the best epoch is the one that fits the training scan best.

The 3D run is `unetkit train` on a folder of NIfTI volumes (`train/`, `val/`) with a padded `unet` in
`spatial_dims: 3` (instance norm, as nnU-Net's 3D networks; random 64 x 64 x 32 patches, a third centred on
foreground, 3D augmentation, per-image normalisation); for thick slices (lesion: 5 mm against 0.6 mm) the
kernels and poolings follow nnU-Net's rule (`unetkit.train.plan.volume_pools`: in-plane only until the
in-plane spacing has caught up). The test volume is predicted in one pass (`unetkit.predict` with one tile of its
size; `--tiled` for tiles of the training patch, which scores lower here: see the README).
The 2-D run is the 2-D recipes' training (`mri_brain.train_2d`: `unet` base 16, depth 3, 128-px patches of the
axial slices of the same train / val volumes, 30 epochs of 16 steps; for `lesion` with the 3D run's `dice_ce`
and foreground sampling); its axial predictions are stacked back into the test volume and scored the same way.

    python examples/mri_3d.py --task tissue --out runs/mri_3d_tissue
    python examples/mri_3d.py --task lobes --split x --templates /tmp/mricron/usr/share/mricron/templates
    python examples/mri_3d.py --task lesion --radiomics /tmp/pyradiomics-3.0.1/data --patch 96x96x16

Writes (and, with `--skip-2d` / `--skip-3d`, updates) `results.json` under `--out`.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mri_brain import SPLITS, axial, load_t1, train_2d, write_axial

import unetkit
from unetkit.data.errors import DataError
from unetkit.data.volume import read_volume, write_volume
from unetkit.metrics.confusion import class_scores, stat_scores
from unetkit.metrics.surface import surface_scores
from unetkit.train.plan import volume_pools

SPACING = (1.0, 1.0, 1.0)  # the templates' 1 mm grid
HEMISPHERES = {"train": range(0, 80), "val": range(80, 90), "test": range(100, 181)}  # x; ch2's midline is x 90
LESION = {"train": "lung2", "val": "lung2", "test": "lung1"}  # pyradiomics' two CT scans of lung tumours


@dataclass
class Case:
    """One volume of a split: the image `(X, Y, Z)` scaled to about [0, 1], its labels and voxel spacing (mm)."""

    name: str
    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float] = SPACING


CLASSES: tuple[str, ...] = ()  # of the task, set by `main`


def load_task(args: argparse.Namespace) -> tuple[dict[str, list[Case]], tuple[str, ...]]:
    """The train / val / test volumes of `args.task` and its class names."""
    if args.task == "lesion":
        return load_lesion(args.radiomics), ("background", "lesion")
    if args.task == "tissue":
        from mri_tissue import CLASSES as TISSUES
        from mri_tissue import load_tissue

        image, labels, classes = load_t1()[0], load_tissue(), TISSUES
    else:
        import mri_ch2

        if args.templates is None:
            raise SystemExit(f"--task {args.task} needs --templates (mricron-data's templates folder; see mri_ch2.py)")
        SPLITS.clear()
        SPLITS.update(mri_ch2.SPLITS)
        if args.task == "brain":
            head = mri_ch2._load(args.templates, "ch2.nii.gz").astype(np.float32)
            labels = (mri_ch2._load(args.templates, "ch2bet.nii.gz") > 0).astype(np.uint8)
            image, classes = np.clip(head / np.percentile(head[head > 0], 99), 0, 1), ("background", "brain")
        else:
            brain = mri_ch2._load(args.templates, "ch2bet.nii.gz").astype(np.float32)
            image = np.clip(brain / np.percentile(brain[brain > 0], 99), 0, 1)
            labels, classes = mri_ch2.lobe_labels(args.templates), mri_ch2.LOBES
    axis, ranges = (0, HEMISPHERES) if args.split == "x" else (2, SPLITS)
    cut = [slice(None)] * 3
    splits = {}
    for split, span in ranges.items():
        cut[axis] = slice(span.start, span.stop)
        splits[split] = [Case(f"{'xz'[axis // 2]}{span.start}-{span.stop - 1}", image[tuple(cut)], labels[tuple(cut)])]
    return splits, classes


def load_lesion(folder: Path | None) -> dict[str, list[Case]]:
    """`LESION`'s CT volumes from pyradiomics' test data (`--radiomics`: the `data/` folder of its source tarball,
    read by `unetkit.data.read_volume`), HU windowed to [-1000, 400] and scaled to [0, 1]."""
    if folder is None:
        raise SystemExit("--task lesion needs --radiomics (the data/ folder of pyradiomics-3.0.1.tar.gz)")

    def read(name: str) -> Case:
        volume = read_volume(folder / f"{name}_image.nrrd")  # the package's reader: array and spacing (mm)
        labels = read_volume(folder / f"{name}_label.nrrd").array > 0
        image = (np.clip(volume.array.astype(np.float32), -1000, 400) + 1000) / 1400
        return Case(name, image, labels.astype(np.uint8), volume.spacing)

    return {split: [read(name)] for split, name in LESION.items()}


def write_volumes(root: Path, splits: dict[str, list[Case]]) -> None:
    """`root/{train,val}/images|masks/NAME.nii.gz`, each on its voxel spacing (`unetkit.data.volume.write_volume`)."""
    for split in ("train", "val"):
        for case in splits[split]:
            for sub, array in (("images", case.image.astype(np.float32)), ("masks", case.labels.astype(np.uint8))):
                write_volume(root / split / sub / f"{case.name}.nii.gz", array, spacing=case.spacing)


def write_slices(root: Path, splits: dict[str, list[Case]]) -> None:
    """The axial slices of the train / val volumes as the 2-D recipes' folder (`mri_brain.write_axial`)."""
    for split in ("train", "val"):
        for case in splits[split]:
            zs = range(case.image.shape[2])
            write_axial(root / split, case.image, case.labels, zs, len(CLASSES) == 2, prefix=f"{case.name}_")


def scores(pred: np.ndarray, target: np.ndarray, spacing: tuple[float, ...]) -> dict[str, Any]:
    """Dice per class over the pooled voxels of the test volume and HD95 (mm) per class, for the classes present
    in the test volume's ground truth or prediction; the means over the classes of the ground truth."""
    _, per_class = class_scores(stat_scores(pred, target, len(CLASSES)))
    _, surface = surface_scores(pred, target, len(CLASSES), spacing=spacing)
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


def anisotropic(patch: list[int], spacing: tuple[float, ...], depth: int) -> dict[str, Any]:
    """The planner's kernels and poolings for thick slices (`unetkit.train.plan.volume_pools`, nnU-Net's rule) for
    the first `depth` down-samplings; empty where they are 3 and 2 everywhere."""
    kernels, pools = volume_pools(patch, list(spacing))
    kernels, pools = kernels[: depth + 1], pools[:depth]
    uniform = all(k == 3 for row in kernels for k in row) and all(p == 2 for row in pools for p in row)
    if uniform or len(pools) < depth:
        return {}
    return {"kernel_size": kernels, "pool": pools}


def coarser(case: Case, factor: int) -> Case:
    """`case` on a grid `factor` times coarser, as nnU-Net's `3d_lowres` configuration: image voxels averaged over
    `factor`^3 blocks, each label block given its most frequent class (the volume edge-padded to whole blocks)."""
    pad = [(0, -n % factor) for n in case.image.shape]
    blocks = [(n + (-n % factor)) // factor for n in case.image.shape]
    shape = [v for n in blocks for v in (n, factor)]  # (X/f, f, Y/f, f, Z/f, f)
    image = np.pad(case.image, pad, mode="edge").reshape(shape).mean(axis=(1, 3, 5))
    labels = np.pad(case.labels, pad, mode="edge")
    counts = [(labels == k).reshape(shape).sum(axis=(1, 3, 5)) for k in range(len(CLASSES))]
    spacing = tuple(s * factor for s in case.spacing)
    return Case(case.name, image.astype(np.float32), np.argmax(counts, axis=0).astype(np.uint8), spacing)  # type: ignore[arg-type]


def finer(probs: np.ndarray, factor: int, shape: tuple[int, ...]) -> np.ndarray:
    """Class probabilities `(K, *coarse)` -> labels on the original grid `shape`: trilinear up-sampling (the block
    centres of `coarser` are where `align_corners=False` puts them), cropped, argmax."""
    up = torch.nn.functional.interpolate(torch.from_numpy(probs)[None], scale_factor=factor, mode="trilinear")
    return up[0, :, : shape[0], : shape[1], : shape[2]].argmax(0).numpy()


def run_3d(splits: dict[str, list[Case]], out: Path, args: argparse.Namespace) -> dict[str, Any]:
    test = splits["test"][0]
    if args.coarse > 1:  # train and predict on the coarse grid, score on the original one
        splits = {k: [coarser(c, args.coarse) for c in v] for k, v in splits.items()}
    write_volumes(out / "data", splits)
    patch = [int(v) for v in args.patch.lower().split("x")]
    options = {"base_channels": 8, "depth": args.depth, "spatial_dims": 3, "norm": args.norm}
    options |= anisotropic(patch, splits["train"][0].spacing, args.depth)
    config = unetkit.TrainConfig(
        data=str(out / "data"), out=str(out / "run"), model="unet", model_options=options, epochs=args.epochs,
        batch_size=2, patch_size=patch, steps_per_epoch=args.steps, lr=args.lr, loss="dice_ce", mask_mode="classes",
        foreground_oversample=0.33, normalize=args.normalize, plan="off", samples=0, seed=0,
    )  # fmt: skip
    start = time.perf_counter()
    unetkit.train(config)
    train_s = time.perf_counter() - start
    model = unetkit.load_model(out / "run").eval()
    (case,) = splits["test"]
    volume = case.image[None].astype(np.float32)  # (1, X, Y, Z)
    start = time.perf_counter()
    if args.tiled:  # `unetkit.predict`'s 3D tiling in tiles of the training patch (the checkpoint's normalisation)
        probs = unetkit.predict(model, volume, tile=patch)
    else:  # one pass over the whole volume, as one tile of its size (padded to the model's multiples)
        multiples = model.downsample_factors
        probs = unetkit.predict(
            model, volume, tile=[-(-n // m) * m for n, m in zip(volume.shape[1:], multiples, strict=True)]
        )
    pred = finer(probs, args.coarse, test.labels.shape) if args.coarse > 1 else probs.argmax(0)
    result = scores(pred, test.labels.astype(np.int64), test.spacing)
    result |= {"train_seconds": round(train_s, 1), "predict_seconds": round(time.perf_counter() - start, 1)}
    return result | {"model_options": options}


def run_2d(splits: dict[str, list[Case]], out: Path, args: argparse.Namespace) -> dict[str, Any]:
    write_slices(out / "data", splits)
    options: dict[str, Any] = {}
    if args.task == "lesion":  # no 2-D recipe of its own: the 3D run's loss and foreground sampling
        options = {"loss": "dice_ce", "foreground_oversample": 0.33}
    start = time.perf_counter()
    model = train_2d(out, args.epochs_2d, len(CLASSES), **options)
    train_s = time.perf_counter() - start
    (case,) = splits["test"]
    pred = np.zeros(case.labels.shape, np.int64)
    start = time.perf_counter()
    for z in range(case.image.shape[2]):  # every axial slice, background ones included, back to (X, Y)
        pred[:, :, z] = np.rot90(unetkit.predict(model, axial(case.image, [z])[0]).argmax(0), -1)
    result = scores(pred, case.labels.astype(np.int64), case.spacing)
    return result | {"train_seconds": round(train_s, 1), "predict_seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=("tissue", "brain", "lobes", "lesion"), default="tissue")
    parser.add_argument("--templates", type=Path, default=None, help="mricron-data's templates folder (brain, lobes)")
    parser.add_argument("--radiomics", type=Path, default=None, help="pyradiomics' data/ folder (lesion)")
    parser.add_argument(
        "--split", default="z", choices=("z", "x"),
        help="held-out region: `z` slabs along the inferior-superior axis or `x` hemispheres (ch2 tasks)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="default runs/mri_3d_TASK")
    parser.add_argument("--epochs", type=int, default=12, help="3D training epochs")
    parser.add_argument("--steps", type=int, default=16, help="3D steps per epoch")
    parser.add_argument("--lr", type=float, default=1e-3, help="3D learning rate")
    parser.add_argument("--norm", default="instance", choices=("instance", "batch"), help="3D norm layers")
    parser.add_argument("--patch", default="64x64x32", help="3D patch, XxYxZ voxels")
    parser.add_argument("--depth", type=int, default=3, help="3D U-Net depth (poolings)")
    parser.add_argument(
        "--coarse", type=int, default=1,
        help="3D on a grid this many times coarser (nnU-Net's 3d_lowres: more context per patch), scored at 1x",
    )  # fmt: skip
    parser.add_argument(
        "--normalize", default="image", choices=("image", "dataset"),
        help="3D intensity normalisation: `image` (each volume's own percentiles and z-score) or `dataset` (the "
        "training volumes' rule)",
    )  # fmt: skip
    parser.add_argument(
        "--tiled", action="store_true", help="predict the 3D test volume in tiles of the patch, not in one pass"
    )
    parser.add_argument("--epochs-2d", type=int, default=30, help="2-D training epochs (16 steps each)")
    parser.add_argument("--skip-2d", action="store_true", help="only the 3D run")
    parser.add_argument("--skip-3d", action="store_true", help="only the 2-D run")
    args = parser.parse_args()
    if args.split == "x" and args.task not in ("brain", "lobes"):
        raise SystemExit(f"--split x: hemispheres are defined for ch2 (--task brain|lobes), not --task {args.task}")
    global CLASSES
    try:
        splits, CLASSES = load_task(args)
    except DataError as err:  # a missing or unreadable volume: one line naming the file
        raise SystemExit(f"mri_3d.py: {err}") from None
    out = args.out or Path(f"runs/mri_3d_{args.task}" + ("_x" if args.split == "x" else ""))
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "results.json"
    results: dict[str, Any] = json.loads(saved.read_text()) if saved.is_file() else {}
    results |= {"task": args.task, "split": args.split}
    results["volumes"] = {k: [[c.name, list(c.image.shape), list(c.spacing)] for c in v] for k, v in splits.items()}
    if not args.skip_3d:
        results["3d"] = run_3d(splits, out / "3d", args)
        results["3d"] |= {"epochs": args.epochs, "steps_per_epoch": args.steps, "lr": args.lr, "patch": args.patch}
        results["3d"] |= {"normalize": args.normalize, "prediction": "tiled" if args.tiled else "whole"}
        results["3d"] |= {"coarse": args.coarse}
        saved.write_text(json.dumps(results, indent=2) + "\n")
    if not args.skip_2d:
        results["2d"] = run_2d(splits, out / "2d", args) | {"epochs": args.epochs_2d}
        saved.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
