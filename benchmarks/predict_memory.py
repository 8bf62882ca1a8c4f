"""Peak memory of `unetkit predict` as the image grows in height, width or both, for each output.

    python benchmarks/predict_memory.py        # the README table: 1k², 4k², 16k², 1000x16000, 16000x1000
    python benchmarks/predict_memory.py --sizes 40000x40000 --outputs masks instances --name gigapixel

Each case runs `unetkit predict` in a fresh process and reads its peak resident set (`ru_maxrss` from `wait4`:
anonymous and file-backed pages alike, the stricter figure) and wall time. Inputs are tiled (256²), zlib-
compressed TIFFs of a synthetic cell image (bright discs on a dark, noisy background: 16 tiles of cells laid
out by a hash of the tile position), written tile by tile with tifffile so that making them needs no more
memory than reading them. The model is a `unet` with base_channels 4 and depth 2 trained for 3 epochs on
`synthetic:cells` (made on first use, under the work folder). Results: `benchmarks/results/predict-
memory[-NAME].json|.md`, with the command, the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path("benchmarks") / "results"
SIZES = ("1000x1000", "4000x4000", "16000x16000", "1000x16000", "16000x1000")
OUTPUTS = {
    "masks": [],
    "probs": ["--probs"],
    "overlay": ["--overlay"],
    "instances": ["--instances"],  # the watershed
    "components": ["--instances", "components"],
}
TILE = 256  # TIFF tile side of the inputs
CELL_GRID = 24  # cells per tile: 0.8 per CELL_GRID² square, radius 4-10 px
BANK = 16  # distinct tiles, laid out by a hash of the tile position


def _tile_bank() -> list[np.ndarray]:
    """`BANK` tiles of cells: bright discs (radius 4-10 px, some touching) on a dark, noisy background,
    each disc inside its tile, so that tiles can be laid in any order."""
    bank = []
    yy, xx = np.mgrid[:TILE, :TILE]
    for k in range(BANK):
        rng = np.random.default_rng(k)
        inside = np.zeros((TILE, TILE), bool)
        for _ in range(int((TILE / CELL_GRID) ** 2 * 0.8)):
            r = rng.uniform(4, 10)
            cy, cx = rng.uniform(r + 1, TILE - r - 1, 2)
            inside |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        noise = rng.normal(0, 18, (TILE, TILE))
        bank.append(np.clip(np.where(inside, 190, 50) + noise, 0, 255).astype(np.uint8))
    return bank


def write_cells_tiff(path: Path, height: int, width: int) -> Path:
    """A tiled, compressed (Big)TIFF of the cell image, written tile by tile."""
    import tifffile

    if path.is_file():
        return path

    bank = _tile_bank()

    def tiles():  # type: ignore[no-untyped-def]
        for ty in range(-(-height // TILE)):
            for tx in range(-(-width // TILE)):
                yield bank[(ty * 7919 + tx * 104729 + (ty * tx) % 13) % BANK]

    tmp = path.with_name(path.name + ".part")
    tifffile.imwrite(
        tmp, data=tiles(), shape=(height, width), dtype=np.uint8, tile=(TILE, TILE), compression="zlib",
        bigtiff=height * width > 2**31,
    )  # fmt: skip
    os.replace(tmp, path)
    return path


def tiny_checkpoint(work: Path) -> Path:
    """A `unet` (base 4, depth 2) trained 3 epochs on synthetic:cells; made once."""
    run = work / "tiny-unet"
    if not (run / "best" / "config.json").is_file():
        subprocess.run(
            [sys.executable, "-m", "unetkit", "train", "--data", "synthetic:cells", "--model", "unet",
             "-m", "base_channels=4", "-m", "depth=2", "-m", "in_channels=1", "--epochs", "3", "--out", str(run)],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    return run


# Linux keeps the largest resident set a process ever had across exec, and a child made by fork (or vfork, as
# subprocess does) starts from its parent's: launched from a parent holding torch and a model, `ru_maxrss` would
# report at least the parent's size. A small interpreter forks the command instead and reports its `wait4`.
_RUNNER = """
import json, os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(json.dumps({"code": os.waitstatus_to_exitcode(status), "maxrss_kib": usage.ru_maxrss}))
"""


def measure(argv: list[str]) -> dict[str, float]:
    """Run `argv`; its peak RSS (MiB, its own: not its launcher's) and wall time (s). Its stderr (progress bars)
    goes to a file: a pipe read only at the end would fill and stop it."""
    import tempfile

    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", _RUNNER, *argv], stdout=subprocess.PIPE, stderr=err, check=True, text=True
        )
        seconds = time.perf_counter() - start
        report = json.loads(done.stdout.strip().splitlines()[-1])
        if report["code"] != 0:
            err.seek(0)
            last = err.read().decode(errors="replace").strip().splitlines()[-1:]
            raise RuntimeError(f"{shlex.join(argv)} failed: {last}")
    return {"peak_rss_mib": round(report["maxrss_kib"] / 1024, 1), "seconds": round(seconds, 1)}


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), help="HxW of each input")
    parser.add_argument("--outputs", nargs="+", default=list(OUTPUTS), choices=list(OUTPUTS))
    parser.add_argument("--work", default="bench-work", help="inputs, model and outputs (deleted per case)")
    parser.add_argument("--engine", default="torch", choices=("torch", "onnxruntime", "auto"))
    parser.add_argument("--name", default="", help="suffix of the result files")
    parser.add_argument("--extra", default="", help="more `unetkit predict` flags, e.g. '--tile 1024'")
    parser.add_argument("--keep", action="store_true", help="keep each case's outputs (for checking them)")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    checkpoint = tiny_checkpoint(work)
    rows = []
    for size in args.sizes:
        height, width = (int(v) for v in size.lower().split("x"))
        image = write_cells_tiff(work / f"cells-{height}x{width}.tif", height, width)
        for output in args.outputs:
            out = work / f"out-{height}x{width}-{output}"
            argv = [sys.executable, "-m", "unetkit", "predict", str(checkpoint), str(image), "--out", str(out),
                    "--engine", args.engine, *OUTPUTS[output], *shlex.split(args.extra)]  # fmt: skip
            load = _load()
            row = {"size": f"{height}x{width}", "output": output, **measure(argv), "load_before": load}
            files = {f.name: f.stat().st_size for f in out.rglob("*") if f.is_file()}
            row.update(load_after=_load(), input_mib=round(image.stat().st_size / 2**20, 1), outputs=files)
            rows.append(row)
            print(json.dumps(row), flush=True)
            if not args.keep:
                subprocess.run(["rm", "-rf", str(out)], check=True)
    command = shlex.join([sys.executable, *sys.argv])
    payload = {"command": command, "cpu": _cpu(), "cores": os.cpu_count(), "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / ("predict-memory" + (f"-{args.name}" if args.name else ""))
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    head = f"{payload['cpu']}, {os.cpu_count()} cores (shared: load averages before/after each case in the JSON)"
    lines = [f"# Peak RSS of unetkit predict\n\n`{command}`\n\n{head}\n", "| size | output | peak RSS MiB | s |"]
    lines.append("|---|---|---:|---:|")
    lines += [f"| {r['size']} | {r['output']} | {r['peak_rss_mib']} | {r['seconds']} |" for r in rows]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            return next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        return "CPU"


if __name__ == "__main__":
    main()
