"""`unetkit demo`: the README's main job. It trains a U-Net on `synthetic:cells`, predicts images that
training never saw, prints a metrics table and writes pictures and a short `README.md` under `--out`.
`--zoo` instead tours the model zoo (parameter counts, one forward pass per model, layer tables).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unetkit._fs import atomic_write_bytes
from unetkit.cli.models import zoo_table
from unetkit.models import create_model, get_model_entry
from unetkit.models.summary import summarize

__all__ = ["DemoSettings", "add_parser", "run_demo", "run_zoo_tour"]


@dataclass(frozen=True)
class DemoSettings:
    """The demo's budget. The defaults train for about half a minute on 2 CPU cores."""

    epochs: int = 12
    train_images: int = 96
    val_images: int = 16
    test_images: int = 16
    size: int = 128
    base_channels: int = 16
    depth: int = 3
    lr: float = 2e-3
    seed: int = 0


QUICK = DemoSettings(epochs=2, train_images=8, val_images=2, test_images=2, size=64, base_channels=4, depth=2)


DEMO_SCORES = ("dice", "iou", "precision", "sensitivity", "specificity", "accuracy")


def _binary_scores(tp: float, fp: float, tn: float, fn: float) -> dict[str, float | None]:
    """The pixel measures papers report, from one confusion matrix, under the package's one empty-mask
    rule (`unetkit.metrics.confusion`: None where a ratio is undefined)."""
    from unetkit.metrics.confusion import scores_from_counts

    scores = scores_from_counts(int(tp), int(fp), int(tn), int(fn))
    return {key: scores[key] for key in DEMO_SCORES}


def _cell(value: float | None) -> str:
    return f"{'-':>12}" if value is None else f"{value:>12.4f}"


def _prepare_out(out: Path) -> Path:
    """The demo owns `OUT/run`: a previous demo run there is replaced, anything else is refused."""
    run = out / "run"
    if run.exists():
        if not (run / "config.yaml").is_file():
            raise FileExistsError(f"{run}: exists and is not a previous demo run; choose another --out")
        shutil.rmtree(run)
    out.mkdir(parents=True, exist_ok=True)
    return run


def run_demo(out: Path, settings: DemoSettings = DemoSettings(), *, progress: bool = True) -> dict[str, Any]:
    """Train on `synthetic:cells`, evaluate on held-out images and write the report under `out`.

    Returns the metrics written to `out/metrics.json`.
    """
    from torchmetrics.functional.classification import binary_stat_scores

    from unetkit import viz
    from unetkit.data.synthetic import make_synthetic
    from unetkit.infer import predict
    from unetkit.metrics.confusion import mean_defined
    from unetkit.models.checkpoint import load_model
    from unetkit.train.config import TrainConfig
    from unetkit.train.engine import train

    s = settings
    run = _prepare_out(out)
    config = TrainConfig(
        data="synthetic:cells",
        out=str(run),
        model="unet",
        model_options={"base_channels": s.base_channels, "depth": s.depth},
        epochs=s.epochs,
        batch_size=8,
        patch_size=min(96, s.size),
        synthetic_train=s.train_images,
        synthetic_val=s.val_images,
        synthetic_size=s.size,
        lr=s.lr,
        seed=s.seed,
    )
    print(
        f"1/3 training `unet` (base_channels {s.base_channels}, depth {s.depth}) on synthetic:cells: "
        f"{s.train_images} training and {s.val_images} validation images of {s.size}x{s.size}, {s.epochs} epochs, "
        f"{torch.get_num_threads()} CPU threads"
    )
    start = time.perf_counter()
    result = train(config, progress=progress)
    train_seconds = time.perf_counter() - start

    # held-out images: the synthetic set is a deterministic sequence, and training used its first
    # train+val images; these come after them and were never seen
    first = s.train_images + s.val_images
    full, _ = make_synthetic("cells", first + s.test_images, s.size, seed=0)
    test = full.subset(list(range(first, first + s.test_images)))
    model = load_model(run)  # best/ of the run
    print(f"2/3 predicting {s.test_images} held-out images with the best checkpoint (epoch {result.best_epoch})")
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    overlays = []
    totals = torch.zeros(4, dtype=torch.float64)
    for i in range(len(test)):
        labels = torch.from_numpy(predict(model, test.images[i]).argmax(axis=0))
        target = torch.from_numpy(test.targets[i]).long()
        tp, fp, tn, fn, _ = binary_stat_scores(labels, target).double().tolist()
        totals += torch.tensor([tp, fp, tn, fn], dtype=torch.float64)
        rows.append({"image": test.names[i], **_binary_scores(tp, fp, tn, fn)})
        overlays.append(viz.overlay(test.images[i], labels.numpy(), test.targets[i]))
    predict_seconds = time.perf_counter() - start
    pooled = _binary_scores(*totals.tolist())
    mean = {k: mean_defined([r[k] for r in rows]) for k in pooled}

    keys = list(pooled)
    print(f"3/3 held-out metrics ({s.test_images} images, {s.size}x{s.size}):")
    print("  " + f"{'':<22}" + "".join(f"{k:>12}" for k in keys))
    print("  " + f"{'all pixels pooled':<22}" + "".join(_cell(pooled[k]) for k in keys))
    print("  " + f"{'mean over images':<22}" + "".join(_cell(mean[k]) for k in keys))
    print(f"  training {train_seconds:.1f} s, prediction {predict_seconds:.1f} s")

    columns = 4 if len(overlays) >= 4 else len(overlays)
    shown = overlays[: columns * max(1, min(2, len(overlays) // max(columns, 1)))]
    grid_rows = [np.concatenate(shown[r : r + columns], axis=1) for r in range(0, len(shown), columns)]
    viz.save_png(np.concatenate(grid_rows, axis=0), out / "held_out_overlays.png")
    shutil.copyfile(run / "curves.png", out / "curves.png")
    if (run / "samples" / "progress.gif").is_file():
        shutil.copyfile(run / "samples" / "progress.gif", out / "progress.gif")
    metrics = {
        "pooled": pooled,
        "mean_over_images": mean,
        "per_image": rows,
        "best_epoch": result.best_epoch,
        "validation": result.history[result.best_epoch - 1] if result.history else {},
        "train_seconds": train_seconds,
        "predict_seconds": predict_seconds,
        "settings": s.__dict__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    atomic_write_bytes(out / "metrics.json", (json.dumps(metrics, indent=2) + "\n").encode())
    _write_readme(out, metrics, keys)
    print(f"wrote {out}/README.md, held_out_overlays.png, curves.png, progress.gif, metrics.json; the run is in {run}")
    return metrics


def _write_readme(out: Path, metrics: dict[str, Any], keys: list[str]) -> None:
    s = metrics["settings"]
    pooled, mean = metrics["pooled"], metrics["mean_over_images"]
    lines = [
        "# unetkit demo",
        "",
        f"A `unet` (base_channels {s['base_channels']}, depth {s['depth']}) trained for {s['epochs']} epochs on "
        f"{s['train_images']} images of `synthetic:cells` ({s['size']}x{s['size']}, touching cells under uneven "
        f"light and noise), with the paper's elastic deformation, flips, rotations and intensity changes. "
        f"The best epoch on {s['val_images']} validation images was {metrics['best_epoch']}; the table scores "
        f"{s['test_images']} further images that training never saw.",
        "",
        "| | " + " | ".join(keys) + " |",
        "|---|" + "---:|" * len(keys),
        "| all pixels pooled | " + " | ".join(_cell(pooled[k]).strip() for k in keys) + " |",
        "| mean over images | " + " | ".join(_cell(mean[k]).strip() for k in keys) + " |",
        "",
        f"Training took {metrics['train_seconds']:.1f} s and prediction {metrics['predict_seconds']:.1f} s on "
        f"{metrics['threads']} CPU threads (torch {metrics['torch']}). Command: `make demo` "
        f"(or `unetkit demo --out {out}`).",
        "",
        "Held-out predictions (green: correct foreground, red: false positive, blue: missed):",
        "",
        "![held-out overlays](held_out_overlays.png)",
        "",
        "Training curves:",
        "",
        "![curves](curves.png)",
        "",
        "Validation predictions across epochs:",
        "",
        "![progress](progress.gif)",
        "",
    ]
    atomic_write_bytes(out / "README.md", "\n".join(lines).encode())


def run_zoo_tour(out: Path, seed: int = 0) -> list[dict[str, object]]:
    """Build every model, run it once at its example size on the CPU and write `zoo.md` and summaries."""
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    rows = []
    for row in zoo_table():
        name = str(row["name"])
        model = create_model(name).eval()
        channels: int = model.in_channels  # type: ignore[assignment]
        x = torch.randn(1, channels, *get_model_entry(name).example_shape)  # (H, W) or, for 3D models, (D, H, W)
        with torch.inference_mode():
            start = time.perf_counter()
            y = model(x)
            seconds = time.perf_counter() - start
        rows.append({**row, "output": "x".join(map(str, y.shape[1:])), "seconds": seconds})
        print(
            f"  {name:<22} {row['params']:>12,} params  {row['input']:>10} -> {rows[-1]['output']:<10} "
            f"{seconds:6.2f} s (CPU forward)"
        )
    lines = [
        "# unetkit model zoo",
        "",
        f"One forward pass per model, batch 1, eval mode, on {torch.get_num_threads()} CPU threads "
        f"(torch {torch.__version__}). Command: `unetkit demo --zoo --out {out}`.",
        "",
        "| model | parameters | input (CxHxW) | output | forward (s) | description |",
        "|---|---:|---|---|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| `{r['name']}` | {r['params']:,} | {r['input']} | {r['output']} | "
            f"{r['seconds']:.2f} | {r['description']} |"
        )
    (out / "zoo.md").write_text("\n".join(lines) + "\n")
    model = create_model("sa_unet")
    for training, mode in ((True, "train"), (False, "eval")):
        text = str(summarize(model, (1, 1, 224, 224), training=training, model_name="sa_unet"))
        (out / f"sa_unet_summary_{mode}.txt").write_text(text + "\n")
    return rows


def _run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.zoo:
        print("unetkit model zoo: building each model and running one forward pass")
        run_zoo_tour(out, seed=args.seed)
        print(f"wrote {out / 'zoo.md'}, {out / 'sa_unet_summary_train.txt'}, {out / 'sa_unet_summary_eval.txt'}")
        return 0
    settings = QUICK if args.quick else DemoSettings()
    if args.epochs is not None:
        if args.epochs < 1:
            raise ValueError(f"`--epochs` must be >= 1, got {args.epochs}")
        settings = DemoSettings(**{**settings.__dict__, "epochs": args.epochs})
    settings = DemoSettings(**{**settings.__dict__, "seed": args.seed})
    run_demo(out, settings, progress=not args.no_progress)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "demo",
        help="the main job on built-in data: train, predict held-out images, evaluate, draw",
        description="Train a U-Net on synthetic:cells, predict held-out images, print metrics and write "
        "pictures and a README under --out.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", default="results", help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--epochs", type=int, default=None, help="override the number of epochs")
    parser.add_argument("--quick", action="store_true", help="a tiny run (seconds) to check the pipeline")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--zoo", action="store_true", help="tour the model zoo instead of training")
    parser.set_defaults(func=_run)
