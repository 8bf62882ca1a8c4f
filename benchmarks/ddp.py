"""Data-parallel scaling: the same training (same global batch) in 1, 2, ... processes via `unetkit train
--devices N`; reports patches per second from the epochs after the first (which pays for start-up).

    python benchmarks/ddp.py --device cpu --devices 1 2          # CPU processes with gloo
    python benchmarks/ddp.py --device cuda --devices 1 2 4 8     # one GPU per process, nccl

On the CPU, `--threads` is the machine's thread budget: 1 process gets all of it, N processes
`threads / N` each, so the comparison is on equal hardware. Writes benchmarks/results/ddp-<device>.json|.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml

RESULTS = Path(__file__).parent / "results"


def _run(config: dict[str, object], devices: int, root: Path) -> list[float]:
    cfg = root / f"config-{devices}.yaml"
    cfg.write_text(yaml.safe_dump(config))
    out = root / f"run-{devices}"
    cmd = [sys.executable, "-m", "unetkit", "train", "--config", str(cfg), "--out", str(out)]
    if devices > 1:
        cmd += ["--devices", str(devices)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if result.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{result.stderr[-3000:]}")
    with (out / "metrics.csv").open() as handle:
        return [float(row["seconds"]) for row in csv.DictReader(handle)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2], help="process counts to compare")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads in all (CPU only)")
    parser.add_argument("--batch-size", type=int, default=8, help="global batch")
    parser.add_argument("--patch-size", type=int, default=128)
    parser.add_argument("--base-channels", type=int, default=16)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="steps per epoch")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--sync-batchnorm", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.devices:
            config = {
                "data": "synthetic:cells",
                "model": "unet",
                "model_options": {"base_channels": args.base_channels, "depth": args.depth},
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "patch_size": args.patch_size,
                "steps_per_epoch": args.steps,
                "synthetic_train": 64,
                "synthetic_val": 2,
                "synthetic_size": max(args.patch_size, 128),
                "samples": 0,
                "device": args.device,
                "sync_batchnorm": args.sync_batchnorm,
                "threads": max(args.threads // n, 1) if args.device == "cpu" else 0,
            }
            seconds = _run(config, n, Path(tmp))
            steady = seconds[1:] or seconds
            rate = args.steps * args.batch_size * len(steady) / sum(steady)
            rows.append({"processes": n, "epoch_seconds": seconds, "patches_per_s": rate})
            print(f"{n} process(es): {rate:.1f} patches/s (epochs: {', '.join(f'{s:.2f}' for s in seconds)} s)")
    base = rows[0]["patches_per_s"]
    report = {
        "device": args.device,
        "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "args": vars(args),
        "rows": [{**r, "speed_up": r["patches_per_s"] / base} for r in rows],
    }
    RESULTS.mkdir(exist_ok=True)
    name = "ddp-cuda" if args.device.startswith("cuda") else "ddp-cpu"
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["| processes | patches/s | speed-up |", "|---:|---:|---:|"]
    lines += [f"| {r['processes']} | {r['patches_per_s']:.1f} | {r['speed_up']:.2f}x |" for r in report["rows"]]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
