"""`unetkit train`: every TrainConfig field from `--config FILE.yaml`, common ones as flags, the rest by `--set`."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from unetkit.cli._common import parse_option
from unetkit.train.config import TrainConfig, config_from_dict, load_config

__all__ = ["add_parser", "config_from_args"]

# flag -> TrainConfig field; unset flags (None) keep the YAML or default value
FLAGS: dict[str, tuple[str, type, str]] = {
    "--task": ("task", str, "segmentation (default), denoise, superres or diffusion"),
    "--data": (
        "data",
        str,
        "folder with images/ and masks/, or synthetic:cells|vessels|shapes; digits tasks: synthetic:digits or mnist",
    ),
    "--model": ("model", str, "model name (see `unetkit models`)"),
    "--epochs": ("epochs", int, "training epochs"),
    "--out": ("out", str, "run directory to write"),
    "--batch-size": ("batch_size", int, "patches per step"),
    "--patch-size": ("patch_size", int, "training patch side (0 = whole images)"),
    "--lr": ("lr", float, "peak learning rate"),
    "--optimizer": ("optimizer", str, "adam, adamw or sgd"),
    "--loss": ("loss", str, "auto, bce, ce, dice, dice_bce, dice_ce or weighted_ce"),
    "--amp": ("amp", str, "auto, bf16, fp16 or off"),
    "--device": ("device", str, "auto, cpu, cuda, cuda:N"),
    "--seed": ("seed", int, "random seed"),
    "--early-stopping": ("early_stopping", int, "patience in epochs (0 = off)"),
}


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults < `--config` YAML < flags < `--set` overrides."""
    overrides: dict[str, Any] = {}
    for flag, (name, _, _) in FLAGS.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            overrides[name] = value
    for flag in ("compile", "deterministic", "weight_map", "separate_touching"):
        if getattr(args, flag):
            overrides[flag] = True
    for key, value in args.set:
        overrides[key] = value
    if args.model_option:
        overrides["model_options"] = dict(args.model_option)
    if args.config:
        return load_config(args.config, overrides)
    return config_from_dict({**dataclasses.asdict(TrainConfig()), **overrides}, source="command line")


def _run(args: argparse.Namespace) -> int:
    from unetkit.train.loop import TrainingDiverged, train

    config = None if args.resume and not args.config and args.epochs is None else config_from_args(args)
    try:
        result = train(config if config is not None else TrainConfig(), resume=args.resume, progress=True)
    except TrainingDiverged as err:
        print(f"unetkit train: error: {err}", file=sys.stderr)
        return 1
    best = result.history[result.best_epoch - 1] if result.history else {}
    keys: list[str] = [k for k in ("dice", "iou", "psnr", "ssim") if k in best] or ["val_loss"]
    shown = ", ".join(f"{k} {best[k]:.4f}" for k in keys if k in best)
    print(f"best epoch {result.best_epoch}: {shown}; run written to {result.run_dir}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "train",
        help="train a model; writes a run directory",
        description="Train on a folder (images/ + masks/) or built-in synthetic data; --task denoise, superres "
        "or diffusion train image-to-image models on digits. Every setting can come from --config FILE.yaml "
        "(see RUN/config.yaml of any run); flags and --set override it.",
    )
    for flag, (_, kind, text) in FLAGS.items():
        parser.add_argument(flag, type=kind, default=None, help=text)
    parser.add_argument("--config", default=None, help="YAML config (e.g. a previous RUN/config.yaml)")
    parser.add_argument("--resume", default=None, metavar="RUN", help="continue RUN exactly from RUN/last")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--deterministic", action="store_true", help="deterministic algorithms (bitwise on CPU)")
    parser.add_argument("--weight-map", action="store_true", help="the U-Net paper's border weight map")
    parser.add_argument(
        "--separate-touching",
        action="store_true",
        help="set pixels where two instances touch to background in the targets (needs instance masks)",
    )
    parser.add_argument(
        "-m",
        "--model-option",
        action="append",
        type=parse_option,
        default=[],
        metavar="KEY=VALUE",
        help="model argument, repeatable: -m base_channels=16",
    )
    parser.add_argument(
        "--set",
        action="append",
        type=parse_option,
        default=[],
        metavar="KEY=VALUE",
        help="any config field, repeatable: --set warmup_epochs=0.5",
    )
    parser.set_defaults(func=_run)
