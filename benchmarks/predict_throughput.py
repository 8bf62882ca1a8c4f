"""Throughput of the whole file path of `unetkit predict` against the bare model on the same tiles, in one
process.

    python benchmarks/predict_throughput.py                    # 4000² and 16000², the tiny model
    python benchmarks/predict_throughput.py --sizes 4000x4000 --repeats 5 --base-channels 16 --depth 4

- **bare model**: the `Predictor` (normalisation, forward pass, softmax / sigmoid) on batches of the plan's
  own input tiles, stacked in memory beforehand: what the model costs per tile, nothing else. For large
  images it runs on the tiles of the first `--bands` bands and is projected to the plan's tile count.
- **file path**: `predict_file` on the tiled, compressed TIFF, masks written (PNG up to 64 MP, tiled
  BigTIFF above): reading and decoding, the tiler (batching, blending, stitching), the class decision and
  encoding, with the reader and writer threads.

ratio = bare seconds (projected to every tile) / file-path seconds; >= 0.9 is the goal. The two are
measured in turn, `--repeats` times each (so that a busy machine slows them alike), and the medians are
compared; the load average before and after each run and the share of CPU time other processes took
are recorded. Results: benchmarks/results/predict-throughput[-NAME].json|.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predict_memory import _cpu, tiny_checkpoint, write_cells_tiff

from unetkit import create_model, load_model
from unetkit.bench._measure import cpu_ticks, others_share
from unetkit.infer import Predictor
from unetkit.infer.files import predict_file
from unetkit.infer.predictor import _make_plan
from unetkit.infer.readers import open_source
from unetkit.infer.tiling import reflect_indices

RESULTS = Path("benchmarks") / "results"


def bare_tiles(source, plan, bands: int) -> list[torch.Tensor]:  # type: ignore[no-untyped-def]
    """The plan's input tiles of the first `bands` bands, float32 and scaled, as the tiler makes them."""
    m, th, tw = plan.margin, plan.tile_h, plan.tile_w
    cols = reflect_indices(-m, max(plan.xs) + tw + m, plan.width)
    tiles = []
    for y in plan.ys[:bands]:
        band = source.read(reflect_indices(y - m, y + th + m, plan.height), cols)
        tiles += [band[:, :, x : x + tw + 2 * m].float() * source.scale for x in plan.xs]
    return tiles


def time_bare(predictor: Predictor, tiles: list[torch.Tensor], batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(tiles), batch):
        predictor(torch.stack(tiles[i : i + batch]))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["4000x4000", "16000x16000"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bands", type=int, default=3, help="bands of tiles the bare model runs on (large images)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--base-channels", type=int, default=0, help="0: the tiny trained model of predict_memory")
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--work", default="bench-work")
    parser.add_argument("--name", default="", help="suffix of the result files")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    if args.base_channels:
        model = create_model("unet", in_channels=1, num_classes=1, base_channels=args.base_channels, depth=args.depth)
        name = f"unet base {args.base_channels} depth {args.depth} (random)"
    else:
        model = load_model(tiny_checkpoint(work))
        name = "unet base 4 depth 2 (trained 3 epochs on synthetic:cells)"
    predictor = Predictor(model, device="cpu")
    rows = []
    for size in args.sizes:
        height, width = (int(v) for v in size.lower().split("x"))
        image = write_cells_tiff(work / f"cells-{height}x{width}.tif", height, width)
        with open_source(image, 1) as source:
            plan = _make_plan(predictor, height, width, None, 0.25, "gaussian")
            bands = min(args.bands, len(plan.ys)) if height * width > 2**24 else len(plan.ys)
            tiles = bare_tiles(source, plan, bands)
        time_bare(predictor, tiles[: args.batch_size], args.batch_size)  # warm-up
        bare, path, loads, others = [], [], [], []
        for _ in range(args.repeats):
            ticks, load = cpu_ticks(), os.getloadavg()[0]
            bare.append(time_bare(predictor, tiles, args.batch_size) * plan.num_tiles / len(tiles))
            out = work / f"throughput-out-{os.getpid()}"  # runs sharing `--work` do not remove each other's
            start = time.perf_counter()
            predict_file(predictor, image, out, batch_size=args.batch_size)
            path.append(time.perf_counter() - start)
            shutil.rmtree(out)
            loads.append([round(load, 2), round(os.getloadavg()[0], 2)])
            others.append(others_share(ticks))
        row = {
            "size": f"{height}x{width}",
            "tiles": plan.num_tiles,
            "bare_tiles_timed": len(tiles),
            "bare_s": [round(v, 2) for v in bare],
            "file_s": [round(v, 2) for v in path],
            "bare_median_s": round(statistics.median(bare), 2),
            "file_median_s": round(statistics.median(path), 2),
            "ratio": round(statistics.median(bare) / statistics.median(path), 3),
            "file_mp_per_s": round(height * width / 1e6 / statistics.median(path), 3),
            "load_1min_before_after": loads,
            "others_cpu_share": others,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        del tiles
    command = shlex.join([sys.executable, *sys.argv])
    payload = {"command": command, "model": name, "cpu": _cpu(), "cores": os.cpu_count(),
               "torch_threads": torch.get_num_threads(), "rows": rows}  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / ("predict-throughput" + (f"-{args.name}" if args.name else ""))
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    lines = [
        f"# File path vs bare model\n\n`{command}`\n\n{name}; {payload['cpu']}, {os.cpu_count()} shared cores\n",
        "| size | tiles | bare s (median) | file path s (median) | ratio | image MP/s | others' CPU share |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    lines += [
        f"| {r['size']} | {r['tiles']} | {r['bare_median_s']} | {r['file_median_s']} | {r['ratio']} | "
        f"{r['file_mp_per_s']} | {r['others_cpu_share']} |"
        for r in rows
    ]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
