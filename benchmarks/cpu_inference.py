"""Which engine runs forward passes fastest on a CPU: eager PyTorch (NCHW), channels-last (the Predictor's torch
path), `torch.compile` + channels-last, and ONNX Runtime on the file `unetkit.export.export_onnx` writes.

    python benchmarks/cpu_inference.py [--size 256] [--batch 4] [--repeats 5]

Each engine is called once to warm up, then `--repeats` times in turn (engine after engine, so a busy machine
slows them alike); the minimum is reported. Writes benchmarks/results/cpu-inference.md. The result chose
`unetkit predict --engine auto` (see `unetkit.infer.engine`).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from unetkit.bench._measure import machine, versions
from unetkit.export import export_onnx
from unetkit.infer.exported import OnnxPredictor
from unetkit.models import create_model

CASES = {
    "unet (base 16)": ("unet", {"in_channels": 1, "num_classes": 2, "base_channels": 16}),
    "sa_unet": ("sa_unet", {"in_channels": 3}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cpu-inference.md"))
    args = parser.parse_args()
    device = torch.device("cpu")
    lines = [
        f"# CPU inference engines, {machine(device)['name']}",
        "",
        f"`python benchmarks/cpu_inference.py --size {args.size} --batch {args.batch} --repeats {args.repeats}`"
        f" — seconds per forward of {args.batch} x {args.size}², min of {args.repeats} interleaved calls; "
        f"load average at the start {[round(v, 2) for v in os.getloadavg()]}.",
        "",
        "| model | eager NCHW | channels-last | compile + channels-last (compile s) | ONNX Runtime | max diff ORT |",
        "|---|---|---|---|---|---|",
    ]
    for label, (name, options) in CASES.items():
        torch.manual_seed(0)
        model = create_model(name, **options).eval()
        x = torch.randn(args.batch, options["in_channels"], args.size, args.size)
        last = create_model(name, **options).eval()
        last.load_state_dict(model.state_dict())
        last = last.to(memory_format=torch.channels_last)
        x_last = x.contiguous(memory_format=torch.channels_last)
        start = time.perf_counter()
        compiled = torch.compile(last)
        with torch.inference_mode():
            compiled(x_last)
        compile_s = time.perf_counter() - start
        with tempfile.TemporaryDirectory() as tmp:
            export_onnx(model, Path(tmp) / "m.onnx", check=False)
            onnx = OnnxPredictor(Path(tmp) / "m.onnx")
            engines = {"eager": (model, x), "last": (last, x_last), "compile": (compiled, x_last), "ort": (onnx, x)}
            times: dict[str, list[float]] = {k: [] for k in engines}
            with torch.inference_mode():
                diff = (onnx(x) - model(x)).abs().max().item()
                for _ in range(args.repeats):
                    for key, (engine, data) in engines.items():
                        start = time.perf_counter()
                        engine(data)
                        times[key].append(time.perf_counter() - start)
        best = {k: min(v) for k, v in times.items()}
        lines.append(
            f"| {label} | {best['eager']:.3f} | {best['last']:.3f} | {best['compile']:.3f} ({compile_s:.0f}) "
            f"| {best['ort']:.3f} | {diff:.1e} |"
        )
        print(lines[-1], flush=True)
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in versions("onnxruntime").items()) + ".", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
