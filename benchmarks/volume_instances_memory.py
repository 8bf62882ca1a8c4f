"""Peak memory of `unetkit predict --instances` on volumes: a large NIfTI of touching nuclei against a small one,
and the bound it should keep (the small volume's peak + the large one's slab).

    python benchmarks/volume_instances_memory.py                             # the README figures
    python benchmarks/volume_instances_memory.py --sizes 128x128x128 --instances components

Each volume is an uncompressed `.nii` (uint16) tiled from one generated scene of touching nuclei
(`unetkit.data.scenes.nuclei_scene`, 64 x 128 x 128 at 1 um isotropic), written slice range by slice range.
The model is an untrained padded 3D `unet` (base 4, depth 2) with the separation's object distance, whose head
biases are set so that about a quarter of the scene is foreground and a sixth of that seeds (memory depends on
how much foreground and how many objects the labelling sees, not on the weights otherwise). Each case runs
`unetkit predict CKPT VOLUME --instances METHOD` in a fresh process and reads its peak resident set
(`ru_maxrss`, `benchmarks/predict_memory.py`'s `measure`). The slab term is `unetkit.infer.grid.slab_bytes` of the
run's plan plus the foreground and distance the sink converts per slab (12 bytes a voxel of the slab); the block
term is `unetkit.infer.volume_files.instance_bytes`. Results: `benchmarks/results/volume-instances-memory.md|json`.
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

from unetkit import create_model, load_model, save_model
from unetkit.bench._measure import machine, versions

RESULTS = Path("benchmarks") / "results"
SIZES = ("128x128x128", "384x384x192")
TILE = "96,96,32"
OVERLAP = 0.25
SCENE = (64, 128, 128)


def _scene() -> np.ndarray:
    from unetkit.data.scenes import nuclei_scene

    return nuclei_scene(SCENE, seed=0, spacing=(1.0, 1.0, 1.0), radius=(3.0, 6.0)).image


def write_nuclei_nifti(path: Path, shape: tuple[int, int, int], scene: np.ndarray) -> Path:
    """An uncompressed uint16 NIfTI of `shape` (X, Y, Z), the scene tiled over it, written slice range by slice
    range (F order: k slowest)."""
    import nibabel

    header = nibabel.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.uint16)
    header.set_sform(np.diag([1.0, 1.0, 1.0, 1.0]), code=1)
    header.set_data_offset(352)
    x, y, _ = shape
    reps = (math.ceil(x / scene.shape[0]), math.ceil(y / scene.shape[1]))
    with open(path, "wb") as file:
        header.write_to(file)
        for k in range(shape[2]):
            plane = np.tile(scene[:, :, k % scene.shape[2]], reps)[:x, :y]  # (X, Y) of slice k
            file.write(np.ascontiguousarray(plane.T).astype(np.uint16).tobytes())  # F order: i fastest
    return path


def checkpoint(folder: Path, scene: np.ndarray) -> Path:
    from unetkit.infer import predict

    torch.manual_seed(0)
    model = create_model("unet", in_channels=1, num_classes=3, base_channels=4, depth=2, spatial_dims=3)
    path = folder / "ckpt3d-instances"
    extra = {
        "task": "segmentation",
        "preprocess": {"mean": [float(scene.mean()) / 65535], "std": [float(scene.std()) / 65535]},  # uint16 scaled
        "mask": {"mode": "instances", "num_classes": 2, "label_values": [0, 1]},
        "separation": "distance",
    }
    save_model(model, path, extra=extra)
    model = load_model(path)
    probs = predict(model, scene, tile=64, distance=True)  # uint16, as the NIfTI holds it
    head = [m for m in model.modules() if isinstance(m, torch.nn.Conv3d)][-1]
    with torch.no_grad():  # a quarter of the scene foreground, a sixth of that above the seed level
        head.bias[1] -= float(np.quantile(np.log(probs[1] / probs[0]), 0.75))
        head.bias[2] -= float(np.quantile(np.log(probs[2] / (1 - probs[2])), 0.96))
    save_model(model, path, extra=extra)
    return path


def terms_mib(shape: tuple[int, int, int], ckpt: Path) -> tuple[float, float]:
    """The slab term (`slab_bytes` + the sink's foreground and distance) and the block term, in MiB."""
    from unetkit.infer.grid import slab_bytes
    from unetkit.infer.predictor import Predictor
    from unetkit.infer.volume import plan_volume
    from unetkit.infer.volume_files import instance_bytes

    tile = tuple(int(t) for t in TILE.split(","))
    plan = plan_volume(Predictor(load_model(ckpt), device="cpu"), shape, tile, OVERLAP, "gaussian", (2, 0, 1))
    slab = slab_bytes(plan, 1, 2, 3) + 12 * plan.tile[0] * math.prod(plan.shape[1:])
    return slab / 2**20, instance_bytes() / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), help="volumes as XxYxZ")
    parser.add_argument("--instances", default="watershed", choices=("components", "watershed", "distance"))
    parser.add_argument("--work", default="/tmp/unetkit-volume-instances-memory", help="inputs, checkpoint, outputs")
    parser.add_argument("--name", default="", help="results file suffix")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    scene = _scene()
    ckpt = checkpoint(work, scene)
    rows = []
    for size in args.sizes:
        shape = tuple(int(n) for n in size.split("x"))
        assert len(shape) == 3
        volume = work / f"nuclei_{size}.nii"
        if not volume.is_file():
            write_nuclei_nifti(volume, shape, scene)  # type: ignore[arg-type]
        argv = [sys.executable, "-m", "unetkit", "predict", str(ckpt), str(volume), "--out", str(work / "out"),
                "--tile", TILE, "--overlap", str(OVERLAP), "--engine", "torch", "--device", "cpu",
                "--instances", args.instances]  # fmt: skip
        load = [round(v, 2) for v in os.getloadavg()]
        result = measure(argv)
        import nibabel

        objects = int(np.asarray(nibabel.load(work / "out" / f"nuclei_{size}_instances.nii").dataobj).max())
        slab, block = terms_mib(shape, ckpt)  # type: ignore[arg-type]
        row = {"size": size, "voxels": math.prod(shape), "objects": objects, "slab_mib": round(slab, 1),
               "block_mib": round(block, 1), **result, "load_before": load, "command": shlex.join(argv)}  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
        for output in (work / "out").iterdir():
            output.unlink()
    name = f"volume-instances-memory{'-' + args.name if args.name else ''}"
    info = {"machine": machine(torch.device("cpu")), "versions": versions("nibabel", "scipy", "skimage")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({**info, "rows": rows}, indent=1) + "\n")
    lines = [
        f"# Volume instances memory, {info['machine'].get('cpu', 'CPU')}",
        "",
        f"`python benchmarks/volume_instances_memory.py --sizes {' '.join(args.sizes)} --instances {args.instances}`: "
        f"`unetkit predict --instances {args.instances}` of an uncompressed uint16 NIfTI of tiled generated nuclei "
        f"with an untrained 3D `unet` (base 4, depth 2, separation head), `--tile {TILE} --overlap {OVERLAP}`, CPU, "
        "fresh process per volume; peak RSS = `ru_maxrss`. The machine is shared (load average before each run).",
        "",
        "| volume | voxels | objects | peak RSS | slab term | block term | wall time | load before |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['size']} | {row['voxels'] / 1e6:.0f} M | {row['objects']} | {row['peak_rss_mib']:.0f} MiB "
            f"| {row['slab_mib']:.0f} MiB | {row['block_mib']:.0f} MiB | {row['seconds']:.0f} s "
            f"| {row['load_before']} |"
        )
    if len(rows) >= 2:
        small, large = rows[0], rows[-1]
        bound = small["peak_rss_mib"] + large["slab_mib"]
        verdict = "within" if large["peak_rss_mib"] <= bound else "ABOVE"
        lines += ["", f"Bound (small peak, which holds one labelling block, + the slab term of the large volume): "
                  f"{bound:.0f} MiB; measured {large['peak_rss_mib']:.0f} MiB: {verdict} it."]  # fmt: skip
    lines += ["", f"Versions: {', '.join(f'{k} {v}' for k, v in info['versions'].items())}."]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
