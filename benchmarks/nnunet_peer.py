"""nnU-Net v2 as a peer: its own pipeline on a unetkit folder data set within a wall-clock training budget, scored on
held-out test images with unetkit's metrics, to set beside `unetkit train --time-budget` on the same data.

    python benchmarks/nnunet_peer.py --data DIR --test DIR --budget 10m --work WORK --out RESULT.json \\
        [--nnunet-venv /work/nnunet-venv] [--config auto|2d|3d_fullres] [--fold all|0..4] [--checkpoint final|best]

nnU-Net's environment, once (outside the repository; `pip install nnunetv2` pulls the newest torch and torchvision
from the registry, CUDA builds, so torch 2.13.0 CPU is installed first and forced back after):

    python3 -m venv /work/nnunet-venv
    /work/nnunet-venv/bin/pip install torch==2.13.0
    /work/nnunet-venv/bin/pip install nnunetv2            # 2.8.1 when written
    /work/nnunet-venv/bin/pip install torch==2.13.0 'torchvision==0.28.*'

That torchvision (a CUDA build) does not import beside the CPU torch; nnU-Net's default trainer, planner and
predictor never import it (its trainer search would, through `variants/` that import timm, for a trainer it does
not find at the top of its trainer package: hence where ours is written).

DIR and the test DIR are unetkit folder data sets (`images/NAME.*`, `masks/NAME.*`): 2-D images (PNG, TIFF, ...)
with instance (or 0/1) masks, or volumes (NIfTI, NRRD, TIFF stacks ZYX). nnU-Net is never imported here: it runs
in its own virtual environment through its entry points (`nnUNetv2_plan_and_preprocess`, `nnUNetv2_train`,
`nnUNetv2_predict`), with `nnUNet_raw` / `nnUNet_preprocessed` / `nnUNet_results` under WORK. The steps:

1. Convert both sets to nnU-Net's raw layout (`Dataset990_unetkit/imagesTr/NAME_0000.png`, `labelsTr/NAME.png`,
   `imagesTs/`, `dataset.json`). Masks are binarised (0 background, 1 any object): nnU-Net segments semantically.
   2-D: PNG (TIFF for other than 8/16-bit) through nnU-Net's `NaturalImage2DIO`; 3-D: NIfTI through
   `SimpleITKIO`, with each volume's affine (so its spacing) kept.
2. `nnUNetv2_plan_and_preprocess -c 2d` (or `3d_fullres`), timed apart from training.
3. `nnUNetv2_train ... -device cpu` with `nnUNetTrainer_unetkitBudget` (`benchmarks/nnunet_budget_trainer.py`,
   copied into the venv's trainer package, where nnU-Net finds trainers by class name): nnU-Net's default
   trainer (plans, network, loss, augmentation, SGD, poly schedule) with shorter epochs and a budget. The first
   epoch has 5 steps and measures the step; after it, the steps per epoch are fitted so that about 20 epochs fill
   what is left (5 to 250 steps, nnU-Net's own epoch being 250), the validation steps are a fifth of them
   (nnU-Net's 50 / 250), and after every epoch the poly learning-rate schedule is refitted to the epochs the
   budget still allows, so that it ends as nnU-Net's does when the budget ends (as unetkit's plan fits its steps
   to `--time-budget`). The budget counts from the start of the `nnUNetv2_train` process (imports, reading the
   plans, unpacking the data and starting the data loaders included); no step starts after it. nnU-Net's final
   validation (a sliding-window pass over the validation cases, which changes no weight) is skipped.
   Augmentation runs in the training process (`nnUNet_n_proc_DA=0`): on two cores a worker would take a core
   from the network, and loading plus augmenting measured 1-3% of the training time (`train_data_s`).
4. `nnUNetv2_predict` on the test images (test-time mirroring on, nnU-Net's default), then unetkit's
   `evaluate_dataset(..., instances=True)`: foreground Dice pooled over all test pixels and mean over images, and
   instance F1 at IoU 0.5 of the connected components (4-connectivity in 2-D, 6 in 3-D, as `unetkit evaluate
   --instances`) of nnU-Net's binary mask against the test instance labels; beside it the same F1 of the true
   mask's own components, the ceiling of any semantic mask under this scoring (touching objects merge).

Default `--fold all`: nnU-Net trains on every image (its own choice for a final model without cross-validation);
its default checkpoint (`checkpoint_final.pth`) never looks at a validation fold, so holding 20% out (`--fold 0`,
unetkit's default split) would only take images away from training. `--fold 0 --checkpoint best` is the like for
like with unetkit's keep-the-best-epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import time
from pathlib import Path

import numpy as np

TRAINER = "nnUNetTrainer_unetkitBudget"
DATASET_NAME = "unetkit"
PLANS = "nnUNetPlans"
TRAINER_FILE = Path(__file__).with_name("nnunet_budget_trainer.py")  # copied into nnU-Net's trainer package
MEDICAL = (".nii.gz", ".nii", ".nrrd")


def _volume_file(path: Path) -> bool:
    """Whether an image file is a volume: NIfTI / NRRD, or a TIFF with more than one page and no colour samples."""
    name = path.name.lower()
    if name.endswith(MEDICAL):
        return True
    if not name.endswith((".tif", ".tiff")):
        return False
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        return len(series.shape) >= 3 and not {"S", "C"} & set(series.axes)


def _stem(path: Path) -> str:
    lower = path.name.lower()
    suffix = next((s for s in MEDICAL if lower.endswith(s)), path.suffix)
    return path.name[: -len(suffix)]


def scan_folder(root: Path) -> list[tuple[str, Path, Path]]:
    """`(name, image, mask)` of a unetkit folder data set, by name; ValueError naming what is missing."""
    for sub in ("images", "masks"):
        if not (root / sub).is_dir():
            raise ValueError(f"`{root}` must hold images/ and masks/ sub-folders; {sub}/ is missing")
    files = {}
    for sub in ("images", "masks"):
        files[sub] = {_stem(p): p for p in sorted((root / sub).iterdir()) if p.is_file() and p.name[0] != "."}
    missing = sorted(set(files["images"]) ^ set(files["masks"]))
    if missing:
        raise ValueError(f"`{root}`: images and masks must pair by name; unpaired: {', '.join(missing[:5])}")
    if not files["images"]:
        raise ValueError(f"`{root}/images` holds no image")
    return [(name, files["images"][name], files["masks"][name]) for name in sorted(files["images"])]


def _read_2d(image: Path, mask: Path | None) -> tuple[list[np.ndarray], np.ndarray | None]:
    from unetkit.data.io import read_image
    from unetkit.data.masks import read_mask

    array = read_image(image)
    channels = [array] if array.ndim == 2 else [array[..., c] for c in range(array.shape[-1])]
    labels = None if mask is None else read_mask(mask)
    if labels is not None and labels.shape != array.shape[:2]:
        raise ValueError(f"`{mask}` is {labels.shape} but its image is {array.shape[:2]}")
    return channels, labels


def write_raw(data: Path, test: Path, raw: Path, dataset_id: int, channel_name: str = "image") -> dict:
    """Write `data` (training) and `test` (images only) as nnU-Net raw data set `raw/Dataset{id}_unetkit`.

    Returns:
        `{"folder", "dims", "file_ending", "reader", "channels", "train", "test"}` (names in order).
    """
    from unetkit.data.io import write_image

    train_cases, test_cases = scan_folder(data), scan_folder(test)
    kinds = {_volume_file(p) for _, p, _ in train_cases + test_cases}
    if len(kinds) != 1:
        raise ValueError(f"`{data}` and `{test}` must hold only 2-D images or only volumes, got both")
    volumes = kinds.pop()
    folder = raw / f"Dataset{dataset_id:03d}_{DATASET_NAME}"
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    if volumes:
        from unetkit.data.volume import read_volume, write_volume
        from unetkit.data.volume_folder import read_labels

        ending, reader = ".nii.gz", "SimpleITKIO"
    else:
        dtypes = {_read_2d(p, None)[0][0].dtype for _, p, _ in train_cases + test_cases}
        ending = ".png" if dtypes <= {np.dtype(np.uint8), np.dtype(np.uint16)} else ".tif"
        reader = "NaturalImage2DIO"
    n_channels = set()
    for cases, images, labels in ((train_cases, "imagesTr", "labelsTr"), (test_cases, "imagesTs", None)):
        for name, image, mask in cases:
            if volumes:
                vol = read_volume(image)
                arrays = [vol.array] if vol.array.ndim == 3 else [vol.array[..., c] for c in range(vol.channels)]
                for c, array in enumerate(arrays):
                    write_volume(folder / images / f"{name}_{c:04d}{ending}", array, like=vol)
                if labels:
                    binary = (read_labels(mask, shape=vol.shape)[0] > 0).astype(np.uint8)
                    write_volume(folder / labels / f"{name}{ending}", binary, like=vol)
            else:
                arrays, instance = _read_2d(image, mask if labels else None)
                for c, array in enumerate(arrays):
                    write_image(folder / images / f"{name}_{c:04d}{ending}", array)
                if labels and instance is not None:
                    write_image(folder / labels / f"{name}{ending}", (instance > 0).astype(np.uint8))
            n_channels.add(len(arrays))
    if len(n_channels) != 1:
        raise ValueError(f"every image must have one number of channels, got {sorted(n_channels)}")
    n = n_channels.pop()
    meta = {
        "channel_names": {str(c): channel_name if n == 1 else f"{channel_name}{c}" for c in range(n)},
        "labels": {"background": 0, "foreground": 1},
        "numTraining": len(train_cases),
        "file_ending": ending,
        "overwrite_image_reader_writer": reader,
        "name": DATASET_NAME,
        "description": f"written by unetkit benchmarks/nnunet_peer.py from {data} (train) and {test} (imagesTs)",
    }
    (folder / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    return {
        "folder": str(folder),
        "dims": 3 if volumes else 2,
        "file_ending": ending,
        "reader": reader,
        "channels": n,
        "train": [c[0] for c in train_cases],
        "test": [c[0] for c in test_cases],
    }


def score(pred: Path, test: Path, ending: str, dims: int) -> dict:
    """unetkit's scores of nnU-Net's binary predictions in `pred` against the instance masks of `test`."""
    from unetkit.data.masks import read_mask
    from unetkit.data.volume_folder import read_labels
    from unetkit.metrics import evaluate_dataset

    names, preds, gts = [], [], []
    for name, _, mask in scan_folder(test):
        names.append(name)
        read = read_mask if dims == 2 else (lambda p: read_labels(p)[0])
        preds.append(read(pred / f"{name}{ending}"))
        gts.append(read(mask))
    result = evaluate_dataset(preds, gts, names=names, instances=True, iou_threshold=0.5)
    micro, macro = result["micro"], result["macro"]
    # the ceiling of any semantic mask under this scoring: the true foreground's own connected components
    oracle = evaluate_dataset([g > 0 for g in gts], gts, instances=True, iou_threshold=0.5)["micro"]
    return {
        "dice_pooled": micro["dice"],
        "dice_mean": macro["dice"],
        "instance_f1_050": micro["instance_f1"],
        "instance_f1_050_mean": macro["instance_f1"],
        "instance_precision_050": micro["instance_precision"],
        "instance_recall_050": micro["instance_recall"],
        "objects_true": micro["n_true"],
        "objects_predicted": micro["n_pred"],
        "instance_f1_050_true_mask_components": oracle["instance_f1"],
        "per_image": [{k: r[k] for k in ("name", "dice", "instance_f1")} for r in result["images"]],
    }


def _cpu_seconds() -> tuple[float, float, float] | None:
    """CPU seconds since boot (all cores, all cores busy) and of this process's finished children; None off Linux."""
    try:
        with open("/proc/stat") as handle:
            ticks = [int(v) for v in handle.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    except OSError:
        return None
    hz, own = os.sysconf("SC_CLK_TCK"), os.times()
    return sum(ticks) / hz, (sum(ticks) - ticks[3] - ticks[4]) / hz, own.children_user + own.children_system


def _run(
    command: list[str], env: dict[str, str], log: Path, extra_env: dict[str, str] | None = None
) -> tuple[float, float | None]:
    """Run an nnU-Net command, its output into `log`; its wall seconds and the share of the machine's CPU time that
    other processes took meanwhile (None off Linux). RuntimeError with the log's tail."""
    start, cpu = time.time(), _cpu_seconds()
    with log.open("w") as out:
        done = subprocess.run(command, env={**env, **(extra_env or {})}, stdout=out, stderr=subprocess.STDOUT)
    seconds, cpu_end = time.time() - start, _cpu_seconds()
    if done.returncode:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise RuntimeError(f"{shlex.join(command)} failed (exit {done.returncode}); {log}:\n{tail}")
    others = None
    if cpu is not None and cpu_end is not None and cpu_end[0] > cpu[0]:
        others = round(((cpu_end[1] - cpu[1]) - (cpu_end[2] - cpu[2])) / (cpu_end[0] - cpu[0]), 3)
    return seconds, others


def _nnunet_info(python: Path) -> dict:
    """nnunetv2 and torch versions and the trainer package folder of the nnU-Net environment."""
    code = (
        "import importlib.metadata as m, json, os, nnunetv2, torch; "
        "print(json.dumps({'nnunetv2': m.version('nnunetv2'), 'torch': torch.__version__, "
        "'trainers': os.path.join(nnunetv2.__path__[0], 'training', 'nnUNetTrainer')}))"
    )
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cpu() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or "unknown CPU"
    return f"cpu: {model}, {os.cpu_count()} logical cores"


def main() -> None:
    from unetkit.train.config_rules import parse_duration
    from unetkit.version import __version__ as unetkit_version

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="unetkit folder data set to train on")
    parser.add_argument("--test", type=Path, required=True, help="unetkit folder data set to score on")
    parser.add_argument("--budget", default="10m", help="training wall-clock budget: 10m, 90s, 1h (default 10m)")
    parser.add_argument("--work", type=Path, required=True, help="new or empty folder for nnU-Net's files")
    parser.add_argument("--out", type=Path, required=True, help="result JSON to write")
    parser.add_argument("--nnunet-venv", type=Path, default=Path("/work/nnunet-venv"))
    parser.add_argument("--config", default="auto", choices=("auto", "2d", "3d_fullres"), help="auto: by dims")
    parser.add_argument("--fold", default="all", choices=("all", "0", "1", "2", "3", "4"))
    parser.add_argument("--checkpoint", default="final", choices=("final", "best"))
    parser.add_argument(
        "--iters-per-epoch", type=int, default=0, help="steps per epoch (nnU-Net: 250); 0: fitted to the budget"
    )
    parser.add_argument("--val-iters", type=int, default=0, help="validation steps per epoch; 0: a fifth of the above")
    parser.add_argument("--da-procs", type=int, default=0, help="nnUNet_n_proc_DA: 0 augments in the main process")
    parser.add_argument("--processes", type=int, default=1, help="processes for preprocessing and export")
    parser.add_argument("--no-tta", action="store_true", help="predict without test-time mirroring")
    parser.add_argument("--final-validation", action="store_true", help="run nnU-Net's final validation")
    parser.add_argument("--channel-name", default="image", help="dataset.json channel name; CT: CT normalisation")
    parser.add_argument("--dataset-id", type=int, default=990)
    args = parser.parse_args()
    try:
        budget = parse_duration(args.budget, "--budget")
    except ValueError as err:
        raise SystemExit(str(err)) from None
    for flag, value in (("--iters-per-epoch", args.iters_per_epoch), ("--val-iters", args.val_iters)):
        if value < 0:
            raise SystemExit(f"`{flag}` must be >= 0, got {value}")
    bin_dir = args.nnunet_venv / "bin"
    if not (bin_dir / "nnUNetv2_train").is_file():
        raise SystemExit(f"no nnU-Net in {args.nnunet_venv}: expected {bin_dir / 'nnUNetv2_train'} (see the docstring)")
    if args.work.exists() and any(args.work.iterdir()):
        raise SystemExit(f"`--work` must be a new or empty folder, got {args.work}")
    load_start = os.getloadavg()
    info = _nnunet_info(bin_dir / "python")
    trainer_file = Path(info["trainers"]) / f"{TRAINER}.py"
    trainer_file.write_text(TRAINER_FILE.read_text())

    work = args.work.resolve()
    logs = work / "logs"
    logs.mkdir(parents=True)
    raw = write_raw(args.data, args.test, work / "nnUNet_raw", args.dataset_id, args.channel_name)
    config = args.config if args.config != "auto" else ("3d_fullres" if raw["dims"] == 3 else "2d")
    procs = str(args.processes)
    env = {
        **os.environ,
        "nnUNet_raw": str(work / "nnUNet_raw"),
        "nnUNet_preprocessed": str(work / "nnUNet_preprocessed"),
        "nnUNet_results": str(work / "nnUNet_results"),
        "nnUNet_n_proc_DA": str(args.da_procs),
        "nnUNet_def_n_proc": procs,
        "nnUNet_compile": "f",  # nnU-Net never compiles on a CPU; said anyway
    }
    did = str(args.dataset_id)
    chk = f"checkpoint_{args.checkpoint}.pth"
    commands = {
        "plan_and_preprocess": [str(bin_dir / "nnUNetv2_plan_and_preprocess"), "-d", did, "-c", config,
                                "-np", procs, "-npfp", procs, "--verify_dataset_integrity", "--no_pbar"],
        "train": [str(bin_dir / "nnUNetv2_train"), did, config, args.fold, "-tr", TRAINER, "-device", "cpu"],
        "predict": [str(bin_dir / "nnUNetv2_predict"), "-i", str(Path(raw["folder"]) / "imagesTs"),
                    "-o", str(work / "predictions"), "-d", did, "-c", config, "-f", args.fold, "-tr", TRAINER,
                    "-chk", chk, "-device", "cpu", "-npp", procs, "-nps", procs, "--disable_progress_bar",
                    *(["--disable_tta"] if args.no_tta else [])],
    }  # fmt: skip
    print(f"nnU-Net {info['nnunetv2']} (torch {info['torch']}), {config}, fold {args.fold}, budget {budget:.0f} s")
    # the planner sets torch's threads to nnUNet_n_proc_DA, which must then be >= 1
    plan_env = {"nnUNet_n_proc_DA": str(max(1, args.da_procs))}
    preprocess_s, _ = _run(commands["plan_and_preprocess"], env, logs / "plan_and_preprocess.log", plan_env)
    print(f"plan and preprocess: {preprocess_s:.1f} s")
    budget_env = {
        "UNETKIT_NNUNET_BUDGET_S": str(budget),
        "UNETKIT_NNUNET_START": repr(time.time()),
        "UNETKIT_NNUNET_ITERS": str(args.iters_per_epoch),
        "UNETKIT_NNUNET_VAL_ITERS": str(args.val_iters),
        "UNETKIT_NNUNET_FINAL_VAL": "1" if args.final_validation else "0",
    }
    train_s, others = _run(commands["train"], env, logs / "train.log", budget_env)
    run_dir = work / "nnUNet_results" / Path(raw["folder"]).name / f"{TRAINER}__{PLANS}__{config}"
    fold_dir = run_dir / f"fold_{args.fold}"
    training = json.loads((fold_dir / "unetkit_budget.json").read_text())
    print(f"training: {train_s:.1f} s, {training['epochs']} epochs, {training['train_iterations']} steps")
    predict_s, _ = _run(commands["predict"], env, logs / "predict.log")
    print(f"prediction: {predict_s:.1f} s")
    scores = score(work / "predictions", args.test, raw["file_ending"], raw["dims"])
    plans = json.loads((run_dir / "plans.json").read_text())["configurations"][config]
    arch = plans.get("architecture", {}).get("arch_kwargs", {})
    result = {
        "tool": "nnU-Net v2",
        "version": info["nnunetv2"],
        "config": config,
        "fold": args.fold,
        "checkpoint": chk,
        "trainer": TRAINER,
        "tta": not args.no_tta,
        "budget_s": budget,
        "train_wall_s": round(train_s, 1),
        "preprocess_s": round(preprocess_s, 1),
        "predict_s": round(predict_s, 1),
        "epochs": training["epochs"],
        "iterations": training["train_iterations"],
        "training": training,
        "plans": {
            "batch_size": plans.get("batch_size"),
            "patch_size": plans.get("patch_size"),
            "spacing": plans.get("spacing"),
            "normalization": plans.get("normalization_schemes"),
            "n_stages": arch.get("n_stages"),
            "features_per_stage": arch.get("features_per_stage"),
        },
        **{k: v for k, v in scores.items() if k != "per_image"},
        "test_images": len(raw["test"]),
        "train_images": len(raw["train"]),
        "data": str(args.data),
        "test": str(args.test),
        "device": _cpu(),
        "torch": info["torch"],
        "unetkit": unetkit_version,
        "python": platform.python_version(),
        "loadavg_start": [round(x, 2) for x in load_start],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "other_processes_cpu_share_during_training": others,
        "env": {k: v for k, v in env.items() if k.startswith("nnUNet_")}
        | {k: v for k, v in budget_env.items() if k != "UNETKIT_NNUNET_START"},
        "commands": {k: shlex.join(v) for k, v in commands.items()},
        "per_image": scores["per_image"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    f1 = scores["instance_f1_050"]
    print(
        f"test ({len(raw['test'])} images): Dice pooled {scores['dice_pooled']:.4f}, mean {scores['dice_mean']:.4f}, "
        f"instance F1@0.5 {'-' if f1 is None else f'{f1:.4f}'}; wrote {args.out}"
    )


if __name__ == "__main__":
    main()
