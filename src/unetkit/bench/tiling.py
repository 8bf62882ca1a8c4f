"""Tiled prediction on a large image: `unetkit.predict` against MONAI's `sliding_window_inference` and one
untiled forward pass, on the same model and the same image, in one process.

Run from the repository root (MONAI comes with `pip install -e ".[bench]"`)::

    python -m unetkit.bench.tiling                # CUDA when available: 4096², base_channels 64, bf16 autocast
    python -m unetkit.bench.tiling --device cpu   # 1024², base_channels 16, float32
    python -m unetkit.bench.tiling --quick        # a few seconds: the smoke test's form

Both tilers get the same tile (roi) side, overlap 0.25, gaussian blending (sigma = 1/8 of the tile, weights
floored at 1e-3), the same batch size, the same dtype (bf16 autocast on CUDA, float32 on CPU) and return
softmax probabilities as a host array, from a host image. The untiled reference is one forward pass over
the whole image, run when it fits (CUDA: tried, and skipped with the error when it fails; CPU: run when an
estimate of its activations fits in half the available memory).

Timing: one warm-up call per method, one call to measure memory, then `--repeats` timed calls in turn (so
that a busy machine slows them alike); the median is reported as MP/s. Peak memory: on CUDA
`max_memory_allocated` after `reset_peak_memory_stats`; on Linux CPUs the growth of the resident set
(`malloc_trim`, `/proc/self/clear_refs`, then `VmHWM` after minus `VmRSS` before). The stand-in rows run both
tilers with a model that does no arithmetic (`x -> [x, -x]`): what is left is the tilers' own cost.

The model: a `unet` with random weights (seeded) whose BatchNorm statistics are estimated on crops of the
image and whose head bias splits the pixels evenly between the two classes. Left as initialised, a random
U-Net gives every pixel the same label, and label agreement would be 1.0 whatever the tiler did.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from unetkit._device import resolve_device
from unetkit.bench._measure import cpu_ticks, machine, others_share, peak, proc_kib, reset_peak, sync, versions
from unetkit.infer import Predictor, plan_tiles, predict
from unetkit.models import create_model
from unetkit.models.inference import forward_whole

RESULTS = Path("benchmarks") / "results"  # relative to the working directory
SEED = 0
OVERLAP = 0.25
BLEND = "gaussian"
CALIBRATION_BATCHES = 4  # batches of 2 crops for the BatchNorm statistics
UNTILED_BYTES = 10 * 4  # CPU estimate of an untiled pass: 10 float32 maps of base_channels per pixel
DEFAULTS = {  # size, base_channels, tile, batch_size, repeats
    "cuda": (4096, 64, 512, 16, 5),
    "cpu": (1024, 16, 512, 4, 3),
    "quick": (384, 8, 256, 4, 1),
}


@dataclass
class BenchConfig:
    """What one run measures; unset fields take the device's defaults (`DEFAULTS`)."""

    device: str
    size: int
    base_channels: int
    tile: int
    batch_size: int
    repeats: int
    channels_last: bool
    quick: bool
    threads: int
    dtype: str = ""
    overlap: float = OVERLAP
    blend: str = BLEND
    seed: int = SEED


# --- model and image -------------------------------------------------------------------------------


def make_image(size: int, seed: int) -> np.ndarray:
    """A grey `(size, size)` float32 image in [0, 1]: smoothed noise (blobs about 20 px across) plus fine noise."""
    rng = np.random.default_rng(seed)
    blobs = ndimage.gaussian_filter(rng.standard_normal((size, size), dtype=np.float32), sigma=8)
    blobs = (blobs - blobs.min()) / max(float(blobs.max() - blobs.min()), 1e-12)
    return (0.8 * blobs + 0.2 * rng.random((size, size), dtype=np.float32)).astype(np.float32)


@torch.no_grad()
def make_model(cfg: BenchConfig, image: np.ndarray, device: torch.device) -> nn.Module:
    """A seeded `unet` with BatchNorm statistics from crops of `image` and classes split evenly."""
    torch.manual_seed(cfg.seed)
    model = create_model("unet", in_channels=1, num_classes=2, base_channels=cfg.base_channels).to(device)
    side = min(cfg.tile, cfg.size)
    x = torch.from_numpy(image)[None]
    generator = torch.Generator().manual_seed(cfg.seed)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a plain mean over the calibration batches
    model.train()
    for _ in range(CALIBRATION_BATCHES):
        starts = torch.randint(0, cfg.size - side + 1, (2, 2), generator=generator).tolist()
        crops = torch.stack([x[:, y : y + side, s : s + side] for y, s in starts]).to(device)  # (2, 1, side, side)
        logits = model(crops)
    model.eval()
    logits = model(crops)
    shift = (logits[:, 1] - logits[:, 0]).median()  # even split: the median pixel sits on the boundary
    bias: torch.Tensor = model.head.bias  # type: ignore[assignment, union-attr]
    bias[1] -= shift / 2
    bias[0] += shift / 2
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model


class StandIn(nn.Module):
    """A model without arithmetic, `(B, 1, h, w) -> (B, 2, h, w)`: times the tiler alone."""

    in_channels = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, -x], dim=1)


# --- methods ---------------------------------------------------------------------------------------


def methods(
    model: nn.Module, image: np.ndarray, cfg: BenchConfig, device: torch.device
) -> dict[str, Callable[[], np.ndarray]]:
    """The three ways to predict `image`; each takes a host image and returns host `(2, H, W)` probabilities."""
    from monai.inferers import sliding_window_inference

    amp = device.type == "cuda"
    ours = Predictor(model, device=device, amp=amp)
    host = torch.from_numpy(image)[None, None]  # (1, 1, H, W)

    def autocast() -> Any:
        return torch.autocast("cuda", dtype=torch.bfloat16) if amp else nullcontext()

    def probabilities(x: torch.Tensor) -> torch.Tensor:
        with autocast():
            out = model(x)
        return torch.softmax(out.float(), dim=1)  # as `Predictor`: float32 softmax

    def run_ours() -> np.ndarray:
        return predict(ours, image, tile=cfg.tile, overlap=cfg.overlap, blend=cfg.blend, batch_size=cfg.batch_size)

    @torch.inference_mode()
    def run_monai() -> np.ndarray:
        out = sliding_window_inference(
            host.to(device), cfg.tile, cfg.batch_size, probabilities, overlap=cfg.overlap, mode=cfg.blend
        )
        return out[0].cpu().numpy()

    @torch.inference_mode()
    def run_untiled() -> np.ndarray:
        with autocast():
            out = forward_whole(model, host.to(device))
        return torch.softmax(out.float(), dim=1)[0].cpu().numpy()

    return {"unetkit": run_ours, "monai": run_monai, "untiled": run_untiled}


def untiled_skip_reason(cfg: BenchConfig, device: torch.device) -> str | None:
    """Why the untiled pass is not run on the CPU (None: run it; on CUDA it is tried)."""
    if device.type == "cuda":
        return None
    need = UNTILED_BYTES * cfg.base_channels * cfg.size**2
    try:
        available = proc_kib("MemAvailable", "/proc/meminfo")
    except OSError:
        return None
    if need > available / 2:
        return f"needs about {need / 2**30:.1f} GiB, {available / 2**30:.1f} GiB available"
    return None


def measure(
    runs: dict[str, Callable[[], np.ndarray]], cfg: BenchConfig, device: torch.device, pixels: int
) -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray]]:
    """Warm up, measure peak memory, then time `cfg.repeats` calls of each method in turn."""
    results: dict[str, dict[str, Any]] = {}
    outputs: dict[str, np.ndarray] = {}
    for name, run in list(runs.items()):
        try:
            run()
            baseline = reset_peak(device)
            outputs[name] = run()
            sync(device)
            results[name] = {"peak_memory_bytes": peak(device, baseline), "seconds": []}
        except RuntimeError as err:  # out of memory, or past a kernel's 2**31-element limit
            if name != "untiled":
                raise
            outputs.pop(name, None)
            runs.pop(name)
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            results[name] = {"skipped": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}
    for _ in range(cfg.repeats):
        for name, run in runs.items():
            sync(device)
            start = time.perf_counter()
            run()
            sync(device)
            results[name]["seconds"].append(time.perf_counter() - start)
    for result in results.values():
        if "seconds" in result:
            result["median_s"] = statistics.median(result["seconds"])
            result["min_s"] = min(result["seconds"])
            result["mp_per_s"] = pixels / 1e6 / result["median_s"]
    return results, outputs


def agreement(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Fraction of pixels with the same argmax label; largest and mean absolute probability difference."""
    diff = np.abs(a - b)
    return {
        "label_agreement": float((a.argmax(axis=0) == b.argmax(axis=0)).mean()),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
    }


# --- report ----------------------------------------------------------------------------------------


def _memory(result: dict[str, Any], device: torch.device) -> str:
    value = result.get("peak_memory_bytes")
    if value is None:
        return "-"
    return f"{value / 2**30:.2f} GiB" if device.type == "cuda" else f"{value / 2**20:.0f} MiB"


def markdown(report: dict[str, Any], device: torch.device) -> str:
    cfg, res, agree = report["config"], report["results"], report["agreement"]
    memory = "peak allocated" if device.type == "cuda" else "peak RSS growth"
    share = report["cpu_share_of_other_processes"]
    others = "an unknown share" if share is None else f"{share:.0%}"
    lines = [
        f"# Tiled prediction, {report['machine']['name']}",
        "",
        f"`{report['command']}`",
        "",
        f"{cfg['size']}x{cfg['size']} grey image, `unet` base_channels {cfg['base_channels']} "
        f"({report['model_parameters'] / 1e6:.2f} M parameters), tile {cfg['tile']}, overlap {cfg['overlap']}, "
        f"{cfg['blend']} blending, batch {cfg['batch_size']}, {cfg['dtype']}, "
        f"channels_last {cfg['channels_last']}, median of {cfg['repeats']} after a warm-up. "
        f"{report['tiles']} tiles. Load average {report['load_average']['start']} at the start, "
        f"{report['load_average']['end']} at the end; other processes took {others} of the CPU time meanwhile.",
        "",
        f"| method | median s | min s | MP/s (median) | {memory} | labels = untiled | max abs Δp vs untiled |",
        "|---|---|---|---|---|---|---|",
    ]
    names = {"unetkit": "unetkit.predict", "monai": "MONAI sliding_window_inference", "untiled": "untiled forward"}
    for key, name in names.items():
        result = res[key]
        if "skipped" in result:
            lines.append(f"| {name} | skipped: {result['skipped']} | | | | | |")
            continue
        vs = agree.get(f"{key}_vs_untiled")
        labels = f"{vs['label_agreement']:.5f}" if vs else "-"
        diff = f"{vs['max_abs_diff']:.2e}" if vs else "-"
        if key == "untiled":
            labels, diff = "(reference)", "(reference)"
        times = f"{result['median_s']:.3f} | {result['min_s']:.3f} | {result['mp_per_s']:.3f}"
        lines.append(f"| {name} | {times} | {_memory(result, device)} | {labels} | {diff} |")
    ours_monai = agree["unetkit_vs_monai"]
    lines += [
        "",
        f"unetkit vs MONAI: labels agree on {ours_monai['label_agreement']:.6f} of the pixels, "
        f"max abs Δp {ours_monai['max_abs_diff']:.2e}, mean {ours_monai['mean_abs_diff']:.2e}.",
        "",
        "Tilers alone (stand-in model `x -> [x, -x]`, no arithmetic):",
        "",
        f"| tiler | median s | min s | MP/s (median) | {memory} |",
        "|---|---|---|---|---|",
    ]
    for key in ("unetkit", "monai"):
        result = report["stand_in"][key]
        lines.append(
            f"| {names[key]} | {result['median_s']:.3f} | {result['min_s']:.3f} | {result['mp_per_s']:.2f} "
            f"| {_memory(result, device)} |"
        )
    lines += ["", f"Memory: {report['memory_method']}", ""]
    lines += [f"Versions: {', '.join(f'{k} {v}' for k, v in report['versions'].items())}.", ""]
    return "\n".join(lines)


# --- main ------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> tuple[BenchConfig, Path]:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: %(default)s")
    parser.add_argument("--size", type=int, help="image side; default 4096 on CUDA, 1024 on CPU")
    parser.add_argument("--base-channels", type=int, help="unet width; default 64 (the zoo's) on CUDA, 16 on CPU")
    parser.add_argument("--tile", type=int, help="tile = MONAI roi side; default 512")
    parser.add_argument("--batch-size", type=int, help="tiles per forward pass, both tilers; default 16 CUDA, 4 CPU")
    parser.add_argument("--repeats", type=int, help="timed calls per method; default 5 CUDA, 3 CPU")
    parser.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="model weights in channels_last for all methods (unetkit's Predictor converts the model anyway)",
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads; default torch's (one per core)")
    parser.add_argument("--out", type=Path, help="JSON path (markdown beside it); default benchmarks/results/")
    parser.add_argument("--quick", action="store_true", help="384², base_channels 8, tile 256, 1 repeat: seconds")
    args = parser.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device, flag="--device").type
    except ValueError as err:
        parser.error(str(err))
    size, base, tile, batch, repeats = DEFAULTS["quick" if args.quick else device]
    cfg = BenchConfig(
        device=device,
        size=args.size or size,
        base_channels=args.base_channels or base,
        tile=args.tile or tile,
        batch_size=args.batch_size or batch,
        repeats=args.repeats or repeats,
        channels_last=args.channels_last,
        quick=args.quick,
        threads=torch.get_num_threads(),
        dtype="bf16 autocast (softmax in float32)" if device == "cuda" else "float32",
    )
    for flag in ("size", "base_channels", "tile", "batch_size", "repeats"):
        if getattr(cfg, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(cfg, flag)}")
    return cfg, args.out or RESULTS / f"tiling-{device}{'-quick' if args.quick else ''}.json"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg, out = parse_args(argv)
    device = torch.device(cfg.device)
    load_start = [round(v, 2) for v in os.getloadavg()]
    ticks = cpu_ticks()
    image = make_image(cfg.size, cfg.seed)
    pixels = cfg.size**2
    model = make_model(cfg, image, device)
    runs = methods(model, image, cfg, device)
    untiled = {}
    reason = untiled_skip_reason(cfg, device)
    if reason is not None:
        runs.pop("untiled")
        untiled = {"untiled": {"skipped": reason}}
    results, outputs = measure(runs, cfg, device, pixels)
    results.update(untiled)
    stand_in_runs = methods(StandIn(), image, cfg, device)
    stand_in_runs.pop("untiled")
    stand_in, _ = measure(stand_in_runs, cfg, device, pixels)
    agree = {"unetkit_vs_monai": agreement(outputs["unetkit"], outputs["monai"])}
    if "untiled" in outputs:
        agree["unetkit_vs_untiled"] = agreement(outputs["unetkit"], outputs["untiled"])
        agree["monai_vs_untiled"] = agreement(outputs["monai"], outputs["untiled"])
    plan = plan_tiles(cfg.size, cfg.size, tile=cfg.tile, overlap=cfg.overlap, blend=cfg.blend)
    report = {
        "benchmark": "tiling",
        "command": "python " + shlex.join(sys.argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(device),
        "versions": versions("monai"),
        "config": asdict(cfg),
        "model_parameters": sum(p.numel() for p in model.parameters()),
        "tiles": plan.num_tiles,
        "load_average": {"start": load_start, "end": [round(v, 2) for v in os.getloadavg()]},
        "cpu_share_of_other_processes": others_share(ticks),
        "memory_method": (
            "torch.cuda.max_memory_allocated after reset_peak_memory_stats, minus memory_allocated before"
            if device.type == "cuda"
            else "resident set growth of this process: malloc_trim(0), /proc/self/clear_refs 5, then VmHWM "
            "after one call minus VmRSS before it (includes the returned (2, H, W) float32 output)"
        ),
        "results": results,
        "stand_in": stand_in,
        "agreement": agree,
    }
    text = markdown(report, device)
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(text)
    return report


if __name__ == "__main__":
    main()
