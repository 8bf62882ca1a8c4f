"""Touching objects on generated instance sets, through the CLI as a user runs it: unetkit's default (no flag) against
manual recipes, a plain SA-UNet, today's separation (the mask's watershed, `--separation none`) and, with `--peer
nnunet`, nnU-Net v2 (`benchmarks/nnunet_peer.py`) in the same wall-clock budget.

Sets (`unetkit.data.realistic`, each held-out test images apart from training):

- `tiles`: 256^2 tiles of one large generated nuclei scene (`unetkit.data.scenes`, a generator apart from the
  `cells` one the rules were first tuned on), masks keeping the scene's ids; 12 training tiles, 4 held out.
- `nuclei`: the `cells` generator's nuclei as uint16 TIFFs with 1..N instance masks; 24 training images, 8 test
  images of another seed.
- `stacks`: 3-D stacks of 32 x 96 x 96 voxels (1.25 x 0.5 x 0.5 um) cut from one generated scene, NIfTI; 6
  training stacks, 2 held out.

- `stardist2d` (real data, `--stardist DIR`): the annotated fluorescence nuclei crop that StarDist ships
  (`stardist/data/images/img2d.tif` + `mask2d.tif`, 512^2 uint16, 125 nuclei, ids up to 183; from the DSB 2018
  data): its left half cut into 8 tiles of 128^2 that keep the ids (a user's training set), its right half
  (512 x 256) the test image. Get it without installing StarDist (which pulls TensorFlow):
  `pip download --no-deps stardist==0.9.2 && unzip stardist-*.whl 'stardist/data/*'`, then `--stardist
  stardist/data/images`.

Every recipe trains with `unetkit train --data DIR --out RUN` plus its flags and the same `--time-budget` (none for
the default at the plan's default budget), then `unetkit predict RUN TEST/images --out PRED --instances` (the
method the run fitted on its validation split; `--methods` adds others on the same model), scored with unetkit's
metrics: foreground Dice pooled over the test pixels and instance F1 at IoU 0.5 (one-to-one matching).
`--together` trains a set's recipes (and the peer) at the same time, so that on a shared machine each sees the
same load; the load average is recorded either way. Writes `benchmarks/results/instances-<device>[-NAME].json|md`.

    python benchmarks/instances.py --sets tiles,nuclei --recipes default,none,sa_unet --budget 3m --together
    python benchmarks/instances.py --sets tiles --recipes default --budget 10m --peer nnunet --together --name peer10
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

# recipes: flags after `unetkit train --data DIR --out RUN` (the budget is added to each)
RECIPES: dict[str, list[str]] = {
    "default": [],
    "none": ["--separation", "none"],  # the mask alone, instances by the fitted watershed / components
    "distance": ["--separation", "distance"],  # the object-distance output asked for (volumes: not the default)
    "sa_unet": ["--model", "sa_unet", "--separation", "none"],  # a plain SA-UNet, the plan filling the rest
    "sa_unet_distance": ["--model", "sa_unet"],  # SA-UNet with the distance output
    "no_weight_map": ["--set", "weight_map=false"],
    "wide": ["-m", "base_channels=32"],
    "wide16": ["-m", "base_channels=16"],  # twice the plan's CPU width for volumes (8)
    "patch256": ["--patch-size", "256"],
    "ce": ["--loss", "ce"],
}
SETS = {"tiles": 12, "nuclei": 24, "stacks": 6, "stardist2d": 8}


def _unetkit(args: list[str], log: Path | None = None) -> subprocess.Popen[str]:
    out = open(log, "w") if log is not None else subprocess.DEVNULL  # noqa: SIM115 (closed with the process)
    return subprocess.Popen([sys.executable, "-m", "unetkit", *args], stdout=out, stderr=subprocess.STDOUT, text=True)


def _peer(command: list[str], log: Path) -> subprocess.Popen[str]:
    out = open(log, "w")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, text=True)


def _wait(process: subprocess.Popen[str], what: str, log: Path | None) -> None:
    if process.wait():
        tail = log.read_text()[-3000:] if log is not None and log.is_file() else ""
        raise RuntimeError(f"{what} failed (exit {process.returncode}):\n{tail}")


def _stardist2d(source: Path, data: Path) -> None:
    """StarDist's annotated crop: the left half as 8 tiles of 128^2 keeping the ids, the right half as the test."""
    import tifffile

    from unetkit.data.io import write_image

    image = tifffile.imread(source / "img2d.tif")
    labels = tifffile.imread(source / "mask2d.tif")
    for y in range(0, 512, 128):
        for x in range(0, 256, 128):
            name = f"crop_y{y}_x{x}"
            write_image(data / "train" / "images" / f"{name}.tif", image[y : y + 128, x : x + 128])
            write_image(data / "train" / "masks" / f"{name}.tif", labels[y : y + 128, x : x + 128])
    write_image(data / "test" / "images" / "right.tif", image[:, 256:])
    write_image(data / "test" / "masks" / "right.tif", labels[:, 256:])


def prepare(name: str, work: Path, stardist: Path | None = None) -> tuple[Path, Path]:
    """The training folder and the test folder of a set."""
    from unetkit.data.realistic import write_realistic

    data = work / name / "data"
    if name == "stardist2d":
        if stardist is None or not (stardist / "img2d.tif").is_file():
            raise SystemExit("stardist2d needs --stardist DIR holding img2d.tif and mask2d.tif (see the docstring)")
        if not data.exists():
            _stardist2d(stardist, data)
        return data, data / "test"
    if name == "nuclei":
        if not data.exists():
            write_realistic(name, data, n=SETS[name], seed=0)
            write_realistic(name, work / name / "test", n=8, seed=1)
        return data, work / name / "test"
    if not data.exists():
        write_realistic(name, data, n=SETS[name], seed=0)
    return data, data / "test"


def score(run: Path, test: Path, work: Path, method: str) -> dict[str, float | None]:
    """`unetkit predict --instances METHOD` on the test images, scored: foreground Dice, instance F1@0.5."""
    from unetkit.data.masks import read_mask
    from unetkit.data.volume import volume_stem
    from unetkit.data.volume_folder import read_labels
    from unetkit.metrics import evaluate_dataset

    pred = work / f"pred_{run.name}_{method}"
    shutil.rmtree(pred, ignore_errors=True)
    log = work / f"predict_{run.name}_{method}.log"
    _wait(_unetkit(["predict", str(run), str(test / "images"), "--out", str(pred), "--instances", method], log),
          f"predict {run} --instances {method}", log)  # fmt: skip
    masks = sorted(p for p in (test / "masks").iterdir() if p.is_file())
    volumes = masks[0].name.endswith((".nii.gz", ".nii", ".nrrd"))
    preds, truths = [], []
    for mask in masks:
        stem = volume_stem(mask)
        if volumes:
            found = next(pred.glob(f"{stem}_instances.*"))
            preds.append(read_labels(found)[0])
            truths.append(read_labels(mask)[0])
        else:
            preds.append(read_mask(pred / f"{stem}_instances.tif"))
            truths.append(read_mask(mask))
    micro = evaluate_dataset(preds, truths, instances=True, iou_threshold=0.5)["micro"]
    return {"dice": micro["dice"], "instance_f1": micro["instance_f1"], "objects": micro["n_pred"],
            "objects_true": micro["n_true"]}  # fmt: skip


def _run_facts(run: Path) -> dict[str, object]:
    config = json.loads((run / "best" / "config.json").read_text())
    plan = json.loads((run / "plan.json").read_text()) if (run / "plan.json").is_file() else {}
    rows = (run / "metrics.csv").read_text().strip().splitlines()[1:]
    settings = plan.get("settings", {})
    steps = len(rows) * int(settings.get("steps_per_epoch") or 0) if settings.get("steps_per_epoch") else None
    return {
        "epochs_run": len(rows),
        "steps": steps,
        "fitted": (config.get("instances") or {}).get("summary"),
        "fitted_f1_val": (config.get("instances") or {}).get("f1"),
        "model": config.get("model_name", config.get("model")),
    }


def main() -> None:
    import torch

    from unetkit.train.plan import DEFAULT_BUDGET

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="tiles,nuclei")
    parser.add_argument("--recipes", default="default,none,sa_unet", help=f"of {', '.join(RECIPES)}")
    parser.add_argument("--budget", default="3m")
    parser.add_argument("--methods", default="auto", help="instance methods scored on each run: auto,watershed,...")
    parser.add_argument("--peer", default="", choices=("", "nnunet"))
    parser.add_argument("--peer-venv", default="/work/nnunet-venv")
    parser.add_argument("--stardist", type=Path, default=None, help="folder of StarDist's img2d.tif / mask2d.tif")
    parser.add_argument("--work", default="/tmp/unetkit-instances")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--name", default="", help="suffix of the result files")
    parser.add_argument("--together", action="store_true", help="train a set's recipes (and the peer) at once")
    args = parser.parse_args()
    work = Path(args.work)
    rows: list[dict[str, object]] = []
    for name in args.sets.split(","):
        data, test = prepare(name, work, args.stardist)
        jobs = []
        for recipe in args.recipes.split(","):
            run = work / name / f"run_{recipe}_{args.budget}"
            shutil.rmtree(run, ignore_errors=True)
            plain = recipe == "default" and args.budget == DEFAULT_BUDGET  # literally no flag: the plan's budget
            flags = [*RECIPES[recipe], *([] if plain else ["--time-budget", args.budget])]
            command = ["train", "--data", str(data), "--out", str(run), *flags]
            jobs.append((recipe, run, command, work / name / f"train_{recipe}_{args.budget}.log"))
        peer = None
        if args.peer:
            peer_work = work / name / f"nnunet_{args.budget}"
            shutil.rmtree(peer_work, ignore_errors=True)
            peer_out = work / name / f"nnunet_{args.budget}.json"
            peer_data = data / "train" if (data / "train").is_dir() else data  # nnU-Net takes every training image
            peer = [sys.executable, str(Path(__file__).with_name("nnunet_peer.py")), "--data", str(peer_data), "--test",
                    str(test), "--budget", args.budget, "--work", str(peer_work), "--out", str(peer_out),
                    "--nnunet-venv", args.peer_venv]  # fmt: skip
        load = os.getloadavg()
        started: dict[str, float] = {}
        walls: dict[str, float] = {}
        if args.together:
            running = []
            for recipe, _, command, log in jobs:
                started[recipe] = time.perf_counter()
                running.append((recipe, _unetkit(command, log), log))
            if peer is not None:
                started["nnunet"] = time.perf_counter()
                peer_log = work / name / f"nnunet_{args.budget}.log"
                running.append(("nnunet", _peer(peer, peer_log), peer_log))
            for recipe, process, log in running:
                _wait(process, f"{recipe} on {name}", log)
                walls[recipe] = time.perf_counter() - started[recipe]
        else:
            for recipe, _, command, log in jobs:
                started[recipe] = time.perf_counter()
                _wait(_unetkit(command, log), f"{recipe} on {name}", log)
                walls[recipe] = time.perf_counter() - started[recipe]
            if peer is not None:
                start = time.perf_counter()
                peer_log = work / name / f"nnunet_{args.budget}.log"
                _wait(_peer(peer, peer_log), f"nnunet on {name}", peer_log)
                walls["nnunet"] = time.perf_counter() - start
        for recipe, run, command, _ in jobs:
            for method in args.methods.split(","):
                row = {
                    "set": name,
                    "recipe": recipe,
                    "method": method,
                    "budget": args.budget,
                    "train_wall_s": round(walls[recipe], 1),
                    **score(run, test, work / name, method),
                    **_run_facts(run),
                    "loadavg_start": [round(v, 2) for v in load],
                    "command": "unetkit " + " ".join(command).replace(str(work), "WORK"),
                }
                print(json.dumps(row), flush=True)
                rows.append(row)
        if peer is not None:
            result = json.loads(peer_out.read_text())
            row = {
                "set": name,
                "recipe": "nnU-Net v2 " + result["config"],
                "method": "components",
                "budget": args.budget,
                "train_wall_s": result["train_wall_s"],
                "dice": result["dice_pooled"],
                "instance_f1": result["instance_f1_050"],
                "objects": result["objects_predicted"],
                "objects_true": result["objects_true"],
                "epochs_run": result["epochs"],
                "steps": result["iterations"],
                "fitted": None,
                "loadavg_start": [round(v, 2) for v in load],
                "command": " ".join(peer).replace(str(work), "WORK"),
                "ceiling_components": result["instance_f1_050_true_mask_components"],
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"instances-{device}" + (f"-{args.name}" if args.name else "")
    how = "trained at the same time (same load)" if args.together else "trained back to back"
    meta = {"device": device, "cpus": os.cpu_count(), "torch": torch.__version__, "budget": args.budget, "how": how,
            "date": time.strftime("%Y-%m-%d")}  # fmt: skip
    (out / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    head = "| set | recipe | instances | test Dice | instance F1@0.5 | train wall s | epochs | post-processing fitted |"
    lines = [f"# Instances on generated sets ({device}, budget {args.budget}, {how}, {meta['date']})", "", head,
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        f1 = "-" if r["instance_f1"] is None else f"{r['instance_f1']:.4f}"
        lines.append(
            f"| {r['set']} | {r['recipe']} | {r['method']} | {r['dice']:.4f} | {f1} | {r['train_wall_s']:.0f} | "
            f"{r.get('epochs_run', '-')} | {r.get('fitted') or '-'} |"
        )
    lines += ["", "Commands (WORK = the --work folder):", ""] + [f"- `{r['command']}`" for r in rows]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
