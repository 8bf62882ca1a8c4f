"""`unetkit bench`: the device's peak and bandwidth, the training cases on each path, end-to-end training with the
real input pipeline against on-device synthetic input, and the tiled-prediction comparison, in one process;
written as JSON and a markdown table."""

from __future__ import annotations

import datetime
import json
import os
import shlex
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unetkit._fs import atomic_write_bytes
from unetkit.bench._measure import machine, sync, versions
from unetkit.bench.device import copy_bandwidth, matmul_peak
from unetkit.bench.training import CASES, QUICK_WIDTH, Case, count_flops, run_case

__all__ = ["end_to_end", "markdown", "run_bench"]

PEERS = ("monai_unet", "monai_basicunet", "smp_unet_resnet34")


def _profile(device: torch.device, quick: bool) -> str:
    return "quick" if quick else ("full" if device.type == "cuda" else "cpu")


def _write_folder(root: Path, n: int, size: int) -> None:
    from unetkit.data.io import write_image
    from unetkit.data.synthetic import make_synthetic

    data, _ = make_synthetic("shapes", n, size, seed=0)  # RGB pictures, binary masks
    for i in range(n):
        picture = (np.clip(data.images[i].transpose(1, 2, 0), 0, 1) * 255).round().astype(np.uint8)
        write_image(root / "images" / f"{i:03d}.png", picture)
        write_image(root / "masks" / f"{i:03d}.png", (data.targets[i] > 0).astype(np.uint8) * 255)


def end_to_end(device: torch.device, *, quick: bool, warmup: int, steps: int) -> dict[str, Any]:
    """`unet` trained by the real trainer on a folder of PNGs (read, normalised, held on the device, random
    patches, the default augmentation with elastic deformation) against the same trainer's step fed one
    fixed on-device batch of the same shape."""
    from unetkit.train import Engine, TrainConfig

    size, batch = {"quick": (64, 2), "cpu": (128, 4), "full": (512, 16)}[_profile(device, quick)]
    with tempfile.TemporaryDirectory(prefix="unetkit-bench-") as tmp:
        folder = Path(tmp) / "data"
        _write_folder(folder, 10 if quick else 40, size * 5 // 4)
        config = TrainConfig(
            data=str(folder),
            out=str(Path(tmp) / "run"),
            model="unet",
            model_options=dict(QUICK_WIDTH["unet"]) if quick else {},
            batch_size=batch,
            patch_size=size,
            epochs=2,
            steps_per_epoch=steps,
            loss="ce",
            samples=0,
            warmup_epochs=0.0,
            device=str(device),
        ).validate()
        engine = Engine(config, Path(tmp) / "run")
        engine.train_epoch(0, steps=warmup)  # compile and autotune outside the timing
        sync(device)
        start = time.perf_counter()
        engine.train_epoch(1, steps=steps)
        sync(device)
        pipeline_s = time.perf_counter() - start
        gen, aug_gen = torch.Generator().manual_seed(0), torch.Generator(device=device).manual_seed(0)
        drawn = engine.task.batch(list(range(batch)), gen, aug_gen, slice(0, batch))
        fixed = {k: v.clone() for k, v in drawn.items()}
        engine.step.read()
        start = time.perf_counter()
        for _ in range(steps):
            engine.step(fixed)
        engine.step.read()
        sync(device)
        synthetic_s = time.perf_counter() - start
    pipeline, synthetic = batch * steps / pipeline_s, batch * steps / synthetic_s
    return {
        "case": f"unet {size}² b{batch}, {config.augment or 'default'} augmentation",
        "pipeline_images_per_s": pipeline,
        "synthetic_images_per_s": synthetic,
        "ratio": pipeline / synthetic,
    }


def run_bench(
    device: torch.device,
    *,
    quick: bool = False,
    steps: int | None = None,
    warmup: int | None = None,
    models: list[str] | None = None,
    tiling: bool = True,
    out: Path | None = None,
) -> dict[str, Any]:
    """Measure everything `unetkit bench` reports; returns the report (and writes it when `out` is given)."""
    profile = _profile(device, quick)
    steps = steps or {"quick": 2, "cpu": 3, "full": 15}[profile]
    warmup = warmup or {"quick": 1, "cpu": 1, "full": 3}[profile]
    load_start = [round(v, 2) for v in os.getloadavg()]
    n, nbytes = {"quick": (512, 2**24), "cpu": (2048, 2**28), "full": (8192, 2**30)}[profile]
    peaks = {"bf16": matmul_peak(device, torch.bfloat16, n // (4 if device.type == "cpu" else 1))}
    peaks["fp32"] = matmul_peak(device, torch.float32, n)
    bandwidth = copy_bandwidth(device, nbytes)
    peak_key = "bf16" if device.type == "cuda" else "fp32"  # the dtype the default path computes in
    paths = ["eager_fp32", "bf16_compile", "default"] if device.type == "cuda" else ["eager_fp32", "default"]
    cases: list[Case] = [c for c in CASES[profile] if models is None or c.model in models]
    rows, skipped = [], {}
    for case in cases:
        try:
            flops = count_flops(case, quick)
        except ImportError as err:
            skipped[case.label] = str(err)
            continue
        for path in paths:
            row = run_case(case, path, device, warmup=warmup, steps=steps, quick=quick)
            row["flops_per_image"] = flops
            row["tflops"] = flops * row["images_per_s"] / 1e12
            row["fraction_of_peak"] = flops * row["images_per_s"] / peaks[peak_key]
            if "bytes_per_image" in row:
                row["fraction_of_copy_bandwidth"] = row["bytes_per_image"] * row["images_per_s"] / bandwidth
            rows.append(row)
            print(f"{row['case']:<32} {path:<13} {row['images_per_s']:9.2f} img/s", file=sys.stderr)
    e2e = end_to_end(device, quick=quick, warmup=warmup, steps=steps)
    tiling_report: dict[str, Any] | None = None
    if tiling:
        tiling_report = _tiling(device, quick, out)
    report = {
        "benchmark": "unetkit bench",
        "command": "unetkit " + shlex.join(sys.argv[1:]) if sys.argv[0].endswith("unetkit") else shlex.join(sys.argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(device),
        "versions": versions("monai", "segmentation_models_pytorch"),
        "profile": profile,
        "steps": steps,
        "warmup": warmup,
        "cases": [asdict(c) for c in cases],
        "peak_flops": peaks,
        "peak_dtype": peak_key,
        "copy_bandwidth_bytes_per_s": bandwidth,
        "load_average": {"start": load_start, "end": [round(v, 2) for v in os.getloadavg()]},
        "results": rows,
        "skipped": skipped,
        "end_to_end": e2e,
        "tiling": tiling_report,
    }
    if out is not None:
        atomic_write_bytes(out, (json.dumps(report, indent=2) + "\n").encode())
        atomic_write_bytes(out.with_suffix(".md"), markdown(report).encode())
    return report


def _tiling(device: torch.device, quick: bool, out: Path | None) -> dict[str, Any]:
    try:
        import monai  # noqa: F401
    except ImportError:
        return {"skipped": "MONAI is not installed: pip install 'unetkit[bench]'"}
    from unetkit.bench import tiling

    target = (out.parent if out else Path(tempfile.gettempdir())) / f"tiling-{device.type}{'-quick' * quick}.json"
    argv = ["--device", device.type, "--out", str(target)] + (["--quick"] if quick else [])
    report = tiling.main(argv)
    report["report_file"] = str(target)
    return report


def _gib(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 2**30:.2f} GiB"


def markdown(report: dict[str, Any]) -> str:
    """The report as a markdown document: device facts, the training table, end-to-end and tiling rows."""
    peak_key = report["peak_dtype"]
    cpu = report["machine"]["type"] == "cpu"
    lines = [
        f"# unetkit bench, {report['machine']['name']}",
        "",
        f"`{report['command']}` ({report['date']}; {report['steps']} timed steps after {report['warmup']} warm-up "
        f"steps; load average {report['load_average']['start']} → {report['load_average']['end']})",
        "",
        f"Measured peak: bf16 {report['peak_flops']['bf16'] / 1e12:.2f} TFLOP/s, fp32 "
        f"{report['peak_flops']['fp32'] / 1e12:.2f} TFLOP/s (matrix products); copy bandwidth "
        f"{report['copy_bandwidth_bytes_per_s'] / 1e9:.1f} GB/s. '% of peak' is against the {peak_key} figure.",
        "",
        "| case | path | img/s | vs eager fp32 | TFLOP/s | % of peak | bytes/s vs copy bw | peak memory |",
        "|---|---|---|---|---|---|---|---|",
    ]
    eager = {r["case"]: r["images_per_s"] for r in report["results"] if r["path"] == "eager_fp32"}
    for r in report["results"]:
        bw = f"{100 * r['fraction_of_copy_bandwidth']:.0f}%" if "fraction_of_copy_bandwidth" in r else ""
        memory = _gib(r["peak_memory_bytes"]) + (" (RSS growth)" if cpu and r["peak_memory_bytes"] is not None else "")
        lines.append(
            f"| {r['case']} | {r['path']} | {r['images_per_s']:.2f} | {r['images_per_s'] / eager[r['case']]:.2f} | "
            f"{r['tflops']:.3f} | {100 * r['fraction_of_peak']:.1f}% | {bw} | {memory} |"
        )
    for label, why in report["skipped"].items():
        lines.append(f"| {label} | skipped | {why} | | | | | |")
    e2e = report["end_to_end"]
    lines += [
        "",
        f"End-to-end ({e2e['case']}): real input pipeline {e2e['pipeline_images_per_s']:.2f} img/s, "
        f"on-device synthetic input {e2e['synthetic_images_per_s']:.2f} img/s: **{100 * e2e['ratio']:.0f}%**.",
    ]
    tiling = report.get("tiling")
    if tiling and "results" in tiling:
        res = tiling["results"]
        cfg = tiling["config"]
        lines += [
            "",
            f"Tiled prediction ({cfg['size']}², unet base {cfg['base_channels']}, tile {cfg['tile']}, overlap "
            f"{cfg['overlap']}, {cfg['dtype']}): unetkit {res['unetkit']['mp_per_s']:.3f} MP/s, MONAI "
            f"sliding_window_inference {res['monai']['mp_per_s']:.3f} MP/s (full table: {tiling['report_file']}).",
        ]
    elif tiling:
        lines += ["", f"Tiled prediction: skipped ({tiling.get('skipped')})."]
    versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items())
    lines += ["", f"Versions: {versions}.", ""]
    return "\n".join(lines)
