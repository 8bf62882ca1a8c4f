"""`unetkit bench`: training throughput against the device's measured peak and the peer libraries, end-to-end
training with the real input pipeline, and tiled prediction, in one run; JSON + markdown."""

from __future__ import annotations

import argparse
from pathlib import Path

from unetkit._fs import check_outputs

__all__ = ["add_parser"]

MODELS = ("unet", "unet_classic", "sa_unet", "monai_unet", "monai_basicunet", "smp_unet_resnet34")


def _run(args: argparse.Namespace) -> int:
    from unetkit._device import resolve_device
    from unetkit.bench.run import markdown, run_bench

    device = resolve_device(args.device, flag="--device")
    for name in args.models or ():
        if name not in MODELS:
            raise ValueError(f"--models: unknown case {name!r}; expected some of {', '.join(MODELS)}")
    for flag in ("steps", "warmup"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ValueError(f"--{flag} must be >= 1, got {value}")
    out = args.out or Path("benchmarks") / "results" / f"bench-{device.type}{'-quick' * args.quick}.json"
    check_outputs(files={"--out": out, "--out's .md": out.with_suffix(".md")})
    out.parent.mkdir(parents=True, exist_ok=True)
    report = run_bench(
        device,
        quick=args.quick,
        steps=args.steps,
        warmup=args.warmup,
        models=args.models,
        tiling=not args.no_tiling,
        out=out,
    )
    print(markdown(report))
    print(f"written: {out} and {out.with_suffix('.md')}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "bench",
        help="measure training and prediction speed against the device peak and the peers",
        description="Trains unet 512² b16, unet_classic 572² b8, sa_unet 592² b8 and the peers (MONAI UNet, "
        "BasicUNet, segmentation_models_pytorch Unet(resnet34); `pip install 'unetkit[bench]'`) for a fixed "
        "number of steps in eager fp32 and in the project's default path; on a CPU at reduced sizes. "
        "--quick: tiny sizes, under a minute on a CPU.",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and 2 steps: the smoke test's form")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per case (default 15 CUDA, 3 CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3 CUDA, 1 CPU)")
    parser.add_argument("--models", nargs="+", default=None, metavar="NAME", help=f"cases: {', '.join(MODELS)}")
    parser.add_argument("--no-tiling", action="store_true", help="skip the tiled-prediction comparison")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (markdown beside it)")
    parser.set_defaults(func=_run)
