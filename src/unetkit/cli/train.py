"""`unetkit train`: every TrainConfig field from `--config FILE.yaml`, common ones as flags, the rest by `--set`.

`--devices N` starts N processes through PyTorch's elastic launcher, each running this same command without
`--devices`, exactly as `torchrun --standalone --nproc-per-node N -m unetkit train ...` would. A process that
fails on bad input writes its one-line error to a folder the launcher gives it (`RANK_ERRORS`) instead of
printing it; the launcher prints one of them once (rank 0's, else the lowest rank's), and keeps the
elastic launcher's own log lines out of the way.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from unetkit._fs import check_outputs
from unetkit.cli._common import parse_option
from unetkit.train.config import TrainConfig, config_from_dict, load_config

__all__ = ["add_parser", "config_from_args"]


def parse_patch(text: str) -> int | list[int]:
    """`--patch-size 64` (every axis) or `--patch-size 32x64x64` (one side per spatial axis)."""
    try:
        sides = [int(part) for part in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a side such as 64 or one per axis such as 32x64x64, got {text!r}"
        ) from None
    return sides[0] if len(sides) == 1 else sides


# flag -> TrainConfig field; unset flags (None) keep the YAML or default value
FLAGS: dict[str, tuple[str, Callable[[str], Any], str]] = {
    "--task": ("task", str, "segmentation (default), denoise, superres or diffusion"),
    "--data": (
        "data",
        str,
        "folder with images/ and masks/, or synthetic:cells|vessels|shapes; image-to-image tasks: a folder of "
        "images, synthetic:digits, mnist or synthetic:NAME",
    ),
    "--model": ("model", str, "model name (see `unetkit models`)"),
    "--epochs": ("epochs", int, "training epochs"),
    "--out": ("out", str, "run directory to write"),
    "--batch-size": ("batch_size", int, "patches per step, all processes together (the global batch)"),
    "--patch-size": ("patch_size", parse_patch, "training patch side (0 = whole images), or one per axis: 32x64x64"),
    "--lr": ("lr", float, "peak learning rate"),
    "--optimizer": ("optimizer", str, "adam, adamw or sgd"),
    "--loss": ("loss", str, "auto, bce, ce, dice, dice_bce, dice_ce or weighted_ce; image-to-image: mse or l1"),
    "--amp": ("amp", str, "auto, bf16, fp16 or off"),
    "--device": ("device", str, "auto, cpu, cuda, cuda:N"),
    "--seed": ("seed", int, "random seed"),
    "--early-stopping": ("early_stopping", int, "patience in epochs (0 = off)"),
    "--mask-mode": ("mask_mode", str, "auto (decided from the masks, reason logged), binary, classes or instances"),
    "--ignore-index": ("ignore_index", int, "mask value no loss, metric or prediction uses, e.g. 255 (VOC borders)"),
    "--normalize": ("normalize", str, "auto (the data set's fingerprint decides), image, dataset or none"),
    "--plan": ("plan", str, "auto (default: a folder's unset settings from its fingerprint and the device) or off"),
    "--time-budget": (
        "time_budget",
        str,
        "training time the plan fits its steps to, e.g. 10m, 90s, 1h; training stops at an epoch boundary once spent",
    ),
    "--separation": (
        "separation",
        str,
        "touching objects: auto (distance for 2-D instance masks), distance (an extra output learns each object's "
        "distance to its outline) or none",
    ),
}

SWITCHES = ("deterministic", "weight_map", "separate_touching", "sync_batchnorm", "grad_checkpointing")
RANK_ERRORS = "UNETKIT_RANK_ERRORS"  # environment: the folder where launched processes leave their error line


def given_fields(args: argparse.Namespace) -> set[str]:
    """The config fields the user set: flags, switches, `--set`, `-m`, and the keys of `--config`'s YAML."""
    from unetkit.train.config import parse_yaml

    given = {
        name for flag, (name, _, _) in FLAGS.items() if getattr(args, flag.lstrip("-").replace("-", "_")) is not None
    }
    given |= {flag for flag in SWITCHES if getattr(args, flag)} | {key for key, _ in args.set}
    given |= {"model_options"} if args.model_option else set()
    given |= {"compile"} if args.compile is not None else set()
    if args.config:
        from pathlib import Path

        values = parse_yaml(Path(args.config).read_bytes(), source=args.config) or {}
        given |= set(values) if isinstance(values, dict) else set()
    return given


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults < `--config` YAML < flags < `--set` overrides."""
    overrides: dict[str, Any] = {}
    for flag, (name, _, _) in FLAGS.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            overrides[name] = value
    if args.compile is not None:
        overrides["compile"] = args.compile
    for flag in SWITCHES:
        if getattr(args, flag):
            overrides[flag] = True
    for key, value in args.set:
        overrides[key] = value
    if args.model_option:
        overrides["model_options"] = dict(args.model_option)
    if args.config:
        return load_config(args.config, overrides)
    return config_from_dict({**dataclasses.asdict(TrainConfig()), **overrides}, source="command line")


def _without_devices(argv: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--devices":
            skip = True
        elif not arg.startswith("--devices="):
            out.append(arg)
    return out


def _run(args: argparse.Namespace) -> int:
    from unetkit.train import distributed
    from unetkit.train.engine import TrainingDiverged, train
    from unetkit.train.interrupt import TrainingInterrupted, exit_status

    config = None
    user_set: set[str] | None = None  # the fields the user gave, which the plan keeps
    if args.resume:  # the run's saved config; only --epochs may change (an exact continuation)
        given = [flag for flag in FLAGS if flag != "--epochs" and getattr(args, flag[2:].replace("-", "_")) is not None]
        given += [f"--{name.replace('_', '-')}" for name in SWITCHES if getattr(args, name)]
        given += ["--compile"] * (args.compile is not None)
        given += ["--config"] * bool(args.config) + ["--set"] * bool(args.set) + ["-m"] * bool(args.model_option)
        if given:
            raise ValueError(
                f"`--resume` continues {args.resume} with its saved config; only --epochs may be given with it, "
                f"got {', '.join(given)}"
            )
        if args.epochs is not None:
            config = TrainConfig(epochs=args.epochs)
    else:
        config = config_from_args(args)
        user_set = given_fields(args)
        data = [config.data] if Path(config.data).exists() else []  # not synthetic:NAME or mnist
        check_outputs(folders={"--out": config.out}, trees=data, inputs=[args.config] if args.config else [])
    if args.devices is not None and args.devices < 1:
        raise ValueError(f"`--devices` must be >= 1, got {args.devices}")
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "0") or 0)
    if args.devices is not None and local_world and args.devices != local_world:
        raise ValueError(
            f"`--devices` {args.devices} inside a torchrun job of {local_world} processes per machine: "
            "leave --devices out (torchrun's --nproc-per-node sets the count)"
        )
    if args.devices is not None and args.devices > 1 and not local_world:
        return _launch(args, distributed)
    main = distributed.env_rank() == 0
    if not main:  # rank 0 alone reports
        logging.getLogger().setLevel(logging.WARNING)
    try:
        result = train(config, resume=args.resume, progress=True, given=user_set)
    except TrainingDiverged as err:
        if main:
            print(f"unetkit train: error: {err}", file=sys.stderr)
        return 1
    except TrainingInterrupted as err:
        if main:
            raise  # the top level prints where the run was saved
        return exit_status(err.signum)
    except _user_errors() as err:
        folder = os.environ.get(RANK_ERRORS)
        if args.debug or not folder:
            raise
        from unetkit._errors import one_line as _one_line

        Path(folder, f"rank{distributed.env_rank():05d}").write_text(_one_line(err))  # the launcher prints it
        return 2
    if not main:
        return 0
    best = result.history[result.best_epoch - 1] if result.history else {}
    keys: list[str] = [k for k in ("dice", "iou", "psnr", "ssim") if k in best] or ["val_loss"]
    shown = ", ".join(f"{k} {best[k]:.4f}" for k in keys if k in best) or "no validation images"
    print(f"best epoch {result.best_epoch}: {shown}; run written to {result.run_dir}")
    return 0


def _user_errors() -> tuple[type[BaseException], ...]:
    from unetkit._errors import USER_ERRORS

    return USER_ERRORS


def _launch(args: argparse.Namespace, distributed: Any) -> int:
    """`--devices N`: run the command in N processes; a failure is reported in one line, once."""
    errors = Path(tempfile.mkdtemp(prefix="unetkit-rank-errors-"))
    os.environ[RANK_ERRORS] = str(errors)  # inherited by the processes
    try:
        with _quiet_launcher():
            distributed.launch(_without_devices(args.argv), args.devices)
    except distributed.LaunchFailed as err:
        lines = [path.read_text() for path in sorted(errors.iterdir())]  # rank 0 first
        print(f"unetkit train: error: {lines[0] if lines else err}", file=sys.stderr)
        return 2 if lines else int(err.exitcode)
    finally:
        os.environ.pop(RANK_ERRORS, None)
        shutil.rmtree(errors, ignore_errors=True)
    return 0


@contextlib.contextmanager
def _quiet_launcher() -> Iterator[None]:
    """Silence the elastic launcher's log lines (closing signals, failed ranks): the failure is reported once."""
    import importlib

    for name in ("torch.distributed.run", "torch.distributed.elastic.multiprocessing.api"):
        importlib.import_module(name)  # creates the loggers to silence

    loggers = [logging.getLogger(n) for n in list(logging.root.manager.loggerDict) if n.startswith("torch.distributed")]
    levels = [each.level for each in loggers]
    for each in loggers:
        each.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for each, level in zip(loggers, levels, strict=True):
            each.setLevel(level)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "train",
        help="train a model; writes a run directory",
        description="Train on a folder (images/ + masks/) or built-in synthetic data; --task denoise, superres "
        "or diffusion train image-to-image models on a folder of images (any size, grey or RGB) or built-in ones. "
        "Every setting can come from --config FILE.yaml (see RUN/config.yaml of any run); flags and --set "
        "override it. Ctrl-C or SIGTERM saves RUN/last at the next step (exit status 130 / 143); --resume RUN "
        "continues exactly. A run directory in use by another training process is refused.",
    )
    for flag, (_, kind, text) in FLAGS.items():
        parser.add_argument(flag, type=kind, default=None, help=text)
    parser.add_argument("--config", default=None, help="YAML config (e.g. a previous RUN/config.yaml)")
    parser.add_argument("--resume", default=None, metavar="RUN", help="continue RUN exactly from RUN/last")
    parser.add_argument(
        "--devices",
        type=int,
        default=None,
        metavar="N",
        help="train in N processes on this machine (one per GPU, or N CPU processes with --device cpu) "
        "through torchrun's launcher; --batch-size stays the global batch",
    )
    parser.add_argument(
        "--sync-batchnorm", action="store_true", help="BatchNorm statistics over all processes' batches"
    )
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the model (default: on CUDA only; --no-compile turns it off)",
    )
    parser.add_argument("--deterministic", action="store_true", help="deterministic algorithms (bitwise on CPU)")
    parser.add_argument(
        "--grad-checkpointing",
        action="store_true",
        help="recompute activations in the backward pass: less memory, more compute",
    )
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
