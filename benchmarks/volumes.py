"""Volume figures for the README: the 3D U-Net of Çiçek et al. at the paper's tile, NIfTI / NRRD reading and
writing of a real MRI and its atlas, surface metrics on them, and one batch of 3D augmentation.

    python benchmarks/volumes.py [--repeats 2] [--out benchmarks/results/volumes-cpu.md]

Real data: Debian's mricron-data (`/usr/share/mricron/templates/ch2.nii.gz`, `ch2bet.nii.gz`, `aal.nii.gz`;
shared/DATA.md); the IO and metric rows are skipped without it. Times are the minimum of `--repeats` runs, on
whatever else the machine is doing (the load average is printed).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unetkit.bench._measure import machine, versions
from unetkit.data.augment import AugmentConfig, augment_batch
from unetkit.data.volume import read_volume, write_volume
from unetkit.metrics.surface import surface_scores
from unetkit.models import create_model

TEMPLATES = Path("/usr/share/mricron/templates")


def _best(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def _model_rows(repeats: int) -> list[str]:
    torch.manual_seed(0)
    model = create_model("unet_classic_3d").eval()
    x = torch.randn(1, 3, 132, 132, 116)
    with torch.inference_mode():
        seconds, y = _best(lambda: model(x), repeats)
    params = sum(p.numel() for p in model.parameters())
    return [
        f"| `unet_classic_3d` forward, eval, 1x3x132x132x116 | {seconds:.1f} s | {params:,} parameters, output "
        f"{'x'.join(map(str, y.shape))} |"
    ]


def _io_rows(repeats: int) -> list[str]:
    rows = []
    for name in ("ch2.nii.gz", "aal.nii.gz"):
        seconds, volume = _best(lambda name=name: read_volume(TEMPLATES / name), repeats)
        rows.append(
            f"| read `{name}` | {seconds:.2f} s | {volume.shape} {volume.array.dtype}, spacing {volume.spacing} |"
        )
    ch2, aal = read_volume(TEMPLATES / "ch2.nii.gz"), read_volume(TEMPLATES / "aal.nii.gz")
    labels = aal.array.astype(np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        for suffix in (".nii.gz", ".nrrd", ".tif"):
            path = Path(tmp) / f"pred{suffix}"
            seconds, _ = _best(lambda path=path: write_volume(path, labels, like=ch2), repeats)
            size = path.stat().st_size / 2**20
            rows.append(f"| write 117-label prediction `like=ch2` as `{suffix}` | {seconds:.2f} s | {size:.2f} MiB |")
    return rows


def _metric_rows(repeats: int) -> list[str]:
    brain = read_volume(TEMPLATES / "ch2bet.nii.gz").array > 0
    moved = np.roll(brain, 2, axis=0)  # 2 voxels = 2 mm along x
    spacing = read_volume(TEMPLATES / "ch2bet.nii.gz").spacing
    seconds, (scores, _) = _best(lambda: surface_scores(moved, brain, 2, spacing=spacing, tolerance=1.0), repeats)
    rows = [
        f"| brain mask vs itself moved 2 mm: HD95, ASD, NSD at 1 mm | {seconds:.2f} s | HD95 {scores['hd95']:.2f} mm, "
        f"ASD {scores['asd']:.2f} mm, NSD {scores['nsd']:.3f} |"
    ]
    aal = read_volume(TEMPLATES / "aal.nii.gz").array.astype(np.int64)
    moved = np.roll(aal, 1, axis=2)
    seconds, (scores, _) = _best(lambda: surface_scores(moved, aal, 117, spacing=spacing, tolerance=1.0), 1)
    rows.append(
        f"| AAL atlas vs itself moved 1 mm, 116 classes | {seconds:.2f} s | mean HD95 {scores['hd95']:.2f} mm, "
        f"mean NSD {scores['nsd']:.3f} |"
    )
    return rows


def _augment_rows(repeats: int) -> list[str]:
    image, target = torch.randn(2, 1, 96, 96, 96), torch.zeros(2, 96, 96, 96, dtype=torch.long)
    config = AugmentConfig(elastic_sigma=4.0, rotate_out_of_plane_deg=15.0)
    seconds, _ = _best(
        lambda: augment_batch(image, target, config=config, generator=torch.Generator().manual_seed(0)), repeats
    )
    return [f"| 3D augmentation (elastic, affine, flips, intensity), 2x1x96³ batch | {seconds:.2f} s | CPU |"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/volumes-cpu.md"))
    args = parser.parse_args()
    load = [round(v, 2) for v in os.getloadavg()]
    lines = [
        f"# Volumes, {machine(torch.device('cpu'))['name']}",
        "",
        f"`python benchmarks/volumes.py --repeats {args.repeats}` — minimum of {args.repeats} runs; load average "
        f"at the start {load} (the machine is shared: other work slows these figures).",
        "",
        "| what | time | result |",
        "|---|---:|---|",
    ]
    lines += _model_rows(args.repeats) + _augment_rows(args.repeats)
    if (TEMPLATES / "ch2.nii.gz").exists():
        lines += _io_rows(args.repeats) + _metric_rows(args.repeats)
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()) + "."]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
