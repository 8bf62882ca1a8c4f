"""`unetkit sample CKPT -n 64 --out grid.png`: images from a diffusion checkpoint, as a grid."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from unetkit._fs import check_outputs
from unetkit.cli._common import checkpoint_inputs

__all__ = ["add_parser"]


def _zoomed(grid: np.ndarray, zoom: int) -> np.ndarray:
    return grid.repeat(zoom, axis=0).repeat(zoom, axis=1) if zoom > 1 else grid


def _run(args: argparse.Namespace) -> int:
    from unetkit import viz
    from unetkit._device import resolve_device
    from unetkit.diffusion import load_diffusion_model, sample

    for name, flag in (("n", "-n"), ("zoom", "--zoom"), ("columns", "--columns"), ("batch_size", "--batch-size")):
        if getattr(args, name) < 1:
            raise ValueError(f"{flag} must be >= 1, got {getattr(args, name)}")
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out must name a .png file, got {out}")
    written = {"--out": out, **({"--trajectory": args.trajectory} if args.trajectory else {})}
    check_outputs(files=written, inputs=checkpoint_inputs(args.checkpoint))
    device = resolve_device(args.device, flag="--device")
    model, schedule, shape = load_diffusion_model(args.checkpoint, device=device)
    steps = args.steps if args.steps is not None else (schedule.steps if args.sampler == "ddpm" else 50)
    if not 1 <= steps <= schedule.steps:
        raise ValueError(f"--steps must be in [1, {schedule.steps}] for this checkpoint, got {steps}")
    record = args.frames if args.trajectory else 0
    drawn = sample(
        model,
        schedule,
        args.n,
        shape,
        sampler=args.sampler,
        steps=steps,
        eta=args.eta,
        seed=args.seed,
        batch_size=args.batch_size,
        record=record,
        device=device,
    )
    viz.save_png(_zoomed(viz.image_grid(drawn.images.numpy(), columns=args.columns), args.zoom), out)
    print(f"{args.n} samples ({args.sampler}, {steps} steps, seed {args.seed}) written to {out}")
    if args.trajectory:
        rows = min(args.n, args.columns)
        frames = [*drawn.frames, drawn.images]  # x_t at the recorded timesteps, then the sample
        table = np.stack([f[:rows].numpy() for f in frames], axis=1).reshape(-1, *shape)  # row = one sample
        grid = viz.image_grid(table, columns=len(frames))
        viz.save_png(_zoomed(grid, args.zoom), Path(args.trajectory))
        shown = ", ".join(str(t) for t in drawn.timesteps)
        print(f"refinement steps (x_t at t = {shown}, then the sample) written to {args.trajectory}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "sample",
        help="draw images from a diffusion checkpoint",
        description="Draw images from a checkpoint of `unetkit train --task diffusion` (DDPM ancestral or DDIM "
        "sampling) and write them as a grid; the same seed gives the same images.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("checkpoint", metavar="CKPT", help="run directory or checkpoint directory")
    parser.add_argument("-n", type=int, default=64, help="number of images")
    parser.add_argument("--out", required=True, help="grid picture to write (.png)")
    parser.add_argument(
        "--steps", type=int, default=None, help="sampling steps (default: all timesteps for ddpm, 50 for ddim)"
    )
    parser.add_argument("--sampler", choices=("ddpm", "ddim"), default="ddim", help="sampler")
    parser.add_argument("--eta", type=float, default=0.0, help="DDIM noise scale (0 = deterministic)")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--columns", type=int, default=8, help="grid columns")
    parser.add_argument("--zoom", type=int, default=1, help="integer magnification of the picture")
    parser.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument(
        "--trajectory", default=None, metavar="FILE.png", help="also write the refinement steps of the first images"
    )
    parser.add_argument("--frames", type=int, default=10, help="intermediate steps shown by --trajectory")
    parser.set_defaults(func=_run)
