"""Peak memory of `unetkit predict` on volumes: a 1024x1024x512 uint8 NIfTI against a 256x256x128 one, with a
tiny 3D model, and the bound it should keep (the small volume's peak + one slab).

    python benchmarks/volume_memory.py                       # both sizes, the README figures
    python benchmarks/volume_memory.py --sizes 256x256x128   # the small one only

Each volume is an uncompressed `.nii` of uint8 noise, written slab by slab (making it needs no more memory than
reading it). The model is an untrained padded `unet` with `spatial_dims=3`, base_channels 4, depth 2 (memory
does not depend on the weights). Each case runs `unetkit predict` in a fresh process and reads its peak
resident set (`ru_maxrss` from `wait4`, file-backed pages included; `benchmarks/predict_memory.py`'s
`measure`). The slab term is `unetkit.infer.grid.slab_bytes` of the plan the run uses. Results:
`benchmarks/results/volume-memory.json|.md`, with the command, the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from predict_memory import measure

from unetkit import create_model, save_model
from unetkit.bench._measure import machine, versions

RESULTS = Path("benchmarks") / "results"
SIZES = ("256x256x128", "1024x1024x512")
TILE = "96,96,32"  # thin slabs along the file's slowest axis (NIfTI: the last)
OVERLAP = 0.25


def write_noise_nifti(path: Path, shape: tuple[int, int, int]) -> Path:
    """An uncompressed NIfTI of uint8 noise, written slice range by slice range (F order: k slowest)."""
    import nibabel

    header = nibabel.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.uint8)
    header.set_sform(np.diag([0.5, 0.5, 1.0, 1.0]), code=1)
    header.set_data_offset(352)
    rng = np.random.default_rng(0)
    with open(path, "wb") as file:
        header.write_to(file)
        for k in range(0, shape[2], 16):
            slab = rng.integers(0, 256, (min(16, shape[2] - k), shape[1], shape[0]), dtype=np.uint8)  # (k, j, i)
            file.write(slab.tobytes())
    return path


def checkpoint(folder: Path) -> Path:
    torch.manual_seed(0)
    model = create_model("unet", in_channels=1, num_classes=2, base_channels=4, depth=2, spatial_dims=3)
    path = folder / "ckpt3d"
    extra = {"preprocess": {"mean": [0.5], "std": [0.25]}, "mask": {"mode": "binary", "num_classes": 2}}
    save_model(model, path, extra=extra)
    return path


def slab_mib(shape: tuple[int, int, int], ckpt: Path) -> float:
    """The slab term of the run's plan (`slab_bytes`), in MiB."""
    from unetkit import load_model
    from unetkit.infer.grid import slab_bytes
    from unetkit.infer.predictor import Predictor
    from unetkit.infer.volume import plan_volume

    tile = tuple(int(t) for t in TILE.split(","))
    plan = plan_volume(Predictor(load_model(ckpt), device="cpu"), shape, tile, OVERLAP, "gaussian", (2, 0, 1))
    return slab_bytes(plan, 1, 1, 2) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), help="volumes as XxYxZ")
    parser.add_argument("--work", default="/tmp/unetkit-volume-memory", help="inputs, checkpoint and outputs")
    parser.add_argument("--name", default="", help="results file suffix")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ckpt = checkpoint(work)
    params = sum(p.numel() for p in create_model("unet", in_channels=1, num_classes=2, base_channels=4, depth=2,
                                                 spatial_dims=3).parameters())  # fmt: skip
    rows = []
    for size in args.sizes:
        shape = tuple(int(n) for n in size.split("x"))
        assert len(shape) == 3
        volume = work / f"noise_{size}.nii"
        if not volume.is_file():
            write_noise_nifti(volume, shape)  # type: ignore[arg-type]
        argv = [sys.executable, "-m", "unetkit", "predict", str(ckpt), str(volume), "--out", str(work / "out"),
                "--tile", TILE, "--overlap", str(OVERLAP), "--engine", "torch", "--device", "cpu"]  # fmt: skip
        load = [round(v, 2) for v in os.getloadavg()]
        result = measure(argv)
        row = {"size": size, "voxels": math.prod(shape), "slab_mib": round(slab_mib(shape, ckpt), 1),  # type: ignore[arg-type]
               **result, "load_before": load, "command": shlex.join(argv)}  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
        (work / "out" / volume.name).unlink(missing_ok=True)
    name = f"volume-memory{'-' + args.name if args.name else ''}"
    info = {"machine": machine(torch.device("cpu")), "versions": versions("nibabel"), "model_parameters": params}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({**info, "rows": rows}, indent=1) + "\n")
    lines = [
        f"# Volume prediction memory, {info['machine'].get('cpu', 'CPU')}",
        "",
        f"`python benchmarks/volume_memory.py --sizes {' '.join(args.sizes)}`: `unetkit predict` of an uncompressed "
        f"uint8 NIfTI with an untrained 3D `unet` (base 4, depth 2, {params:,} parameters), `--tile {TILE} "
        f"--overlap {OVERLAP}`, CPU, fresh process per volume; peak RSS = `ru_maxrss`. The machine is shared "
        "(load average before each run in the table).",
        "",
        "| volume | voxels | peak RSS | slab term (`slab_bytes`) | wall time | load before |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['size']} | {row['voxels'] / 1e6:.0f} M | {row['peak_rss_mib']:.0f} MiB "
            f"| {row['slab_mib']:.0f} MiB | {row['seconds']:.0f} s | {row['load_before']} |"
        )
    if len(rows) >= 2:
        small, large = rows[0], rows[-1]
        bound = small["peak_rss_mib"] + large["slab_mib"]
        verdict = "within" if large["peak_rss_mib"] <= bound else "ABOVE"
        lines += ["", f"Bound (small peak + one slab of the large volume): {bound:.0f} MiB; measured "
                  f"{large['peak_rss_mib']:.0f} MiB: {verdict} it."]  # fmt: skip
    lines += ["", f"Versions: {', '.join(f'{k} {v}' for k, v in info['versions'].items())}."]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
