"""`unetkit summary MODEL --input 1x1x572x572 [--eval]`: a layer table with output shapes."""

from __future__ import annotations

import argparse

from unetkit.cli._common import model_options, parse_shape
from unetkit.models import create_model, get_model_entry
from unetkit.models.summary import summarize

__all__ = ["add_parser"]


def _run(args: argparse.Namespace) -> int:
    import torch

    with torch.device("meta"):  # shapes only: no memory for the weights (any -o base_channels) or the pass
        model = create_model(args.model, **dict(args.options))
    shape = args.input
    if shape is None:
        shape = (1, model.in_channels, *get_model_entry(args.model).example_shape)
    print(summarize(model, shape, training=not args.eval, model_name=args.model))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "summary",
        help="layer table of a model: output shapes and parameters",
        description="Run one forward pass and list every layer with its output shape and parameters. "
        "DropBlock layers show in train mode (the default) and not in eval mode.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("model", help="registered model name (see `unetkit models`)")
    parser.add_argument(
        "--input",
        type=parse_shape,
        default=None,
        metavar="BxCxHxW",
        help="input shape, e.g. 1x1x572x572, or BxCxDxHxW for a 3D model, e.g. 1x3x132x132x116 "
        "(default: the model's example size)",
    )
    parser.add_argument("--eval", action="store_true", help="summarise in eval mode")
    model_options(parser)
    parser.set_defaults(func=_run)
