"""What the safety checks of issue 16 cost on files users ship: `read_image` of PNGs with and without the
inflate-and-count truncation check (`unetkit.data.io._check_png_data`), and `check_pt2` against loading an
exported `.pt2` with torch.

    python benchmarks/read_checks.py                 # writes benchmarks/results/read-checks.md

Times are the best of `--repeat` runs on the CPU (the machine is shared: the best run is the least disturbed).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def _best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _picture(side: int, channels: int) -> np.ndarray:
    """A smooth gradient with noise: compresses as photographs and micrographs do (2-3x), not as noise."""
    rng = np.random.default_rng(0)
    base = (np.add.outer(np.arange(side), np.arange(side)) % 256).astype(np.uint8)
    planes = np.stack([base, base.T, base // 2], -1)[..., :channels]
    picture = planes + rng.integers(0, 8, planes.shape, dtype=np.uint8)
    return picture[..., 0] if channels == 1 else picture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "read-checks.md")
    args = parser.parse_args()

    from unetkit import create_model
    from unetkit.data import io as data_io
    from unetkit.data import write_image
    from unetkit.export import export_torch
    from unetkit.infer.export_check import check_pt2

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for side, channels in ((512, 1), (2048, 1), (4096, 3)):
            path = write_image(Path(tmp) / f"{side}.png", _picture(side, channels))
            checked = _best(lambda p=path: data_io.read_image(p), args.repeat)
            check = _best(lambda p=path: data_io._check_png_data(p), args.repeat)
            rows.append(
                f"| PNG {side}x{side}, {channels} channel(s), {path.stat().st_size / 2**20:.1f} MiB | "
                f"{checked * 1000:.1f} ms | {check * 1000:.1f} ms ({100 * check / checked:.0f} %) |"
            )
        torch.manual_seed(0)
        model = create_model("unet", in_channels=1, num_classes=1)
        pt2 = export_torch(model, Path(tmp) / "unet.pt2").path
        data = pt2.read_bytes()
        checked = _best(lambda: check_pt2(data, pt2), args.repeat)
        loaded = _best(lambda: torch.export.load(pt2).module(), max(1, args.repeat // 2))
        rows.append(
            f"| `.pt2` of unet (31 M parameters), {len(data) / 2**20:.0f} MiB | {loaded * 1000:.0f} ms (torch load) | "
            f"{checked * 1000:.1f} ms ({100 * checked / loaded:.1f} %) |"
        )
    text = "\n".join(
        [
            "# Cost of the read-time safety checks",
            "",
            f"`python benchmarks/read_checks.py` on {platform.processor() or platform.machine()}, "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, best of {args.repeat} "
            "(a machine shared with other jobs).",
            "",
            "| file | read (with the check) | the check alone |",
            "|---|---|---|",
            *rows,
            "",
        ]
    )
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
