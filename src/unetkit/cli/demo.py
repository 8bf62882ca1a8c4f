"""`unetkit demo`: the README's main job. For now it tours the model zoo: parameter counts, a
forward pass of every model at its example size with timings and output shapes, and SA-UNet's
layer table in train and eval mode, written under `--out`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from unetkit.cli.models import zoo_table
from unetkit.models import create_model, get_model_entry
from unetkit.models.summary import summarize

__all__ = ["add_parser", "run_zoo_tour"]


def run_zoo_tour(out: Path, seed: int = 0) -> list[dict[str, object]]:
    """Build every model, run it once at its example size on the CPU and write `zoo.md` and summaries."""
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    rows = []
    for row in zoo_table():
        name = str(row["name"])
        model = create_model(name).eval()
        size = get_model_entry(name).example_size
        channels: int = model.in_channels  # type: ignore[assignment]
        x = torch.randn(1, channels, size, size)
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
        f"(torch {torch.__version__}). Command: `unetkit demo --out {out}`.",
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
    print("unetkit model zoo: building each model and running one forward pass")
    run_zoo_tour(out, seed=args.seed)
    print(f"wrote {out / 'zoo.md'}, {out / 'sa_unet_summary_train.txt'}, {out / 'sa_unet_summary_eval.txt'}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "demo",
        help="the main job on built-in data",
        description="Tour the model zoo: parameter counts, one forward pass per model, layer tables.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", default="results", help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.set_defaults(func=_run)
