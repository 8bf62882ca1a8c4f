"""`unetkit models`: the model zoo with parameter counts and a one-line description each."""

from __future__ import annotations

import argparse
from typing import Any

import torch

from unetkit.models import create_model, get_model_entry, list_models

__all__ = ["add_parser", "zoo_table"]


def zoo_table(pattern: str | None = None) -> list[dict[str, Any]]:
    """One row per registered model: name, parameters at defaults, example input, description.

    Models are built on the `meta` device, so no memory is allocated for weights.
    """
    rows = []
    for name in list_models(pattern):
        entry = get_model_entry(name)
        with torch.device("meta"):
            model = create_model(name)
        params = sum(p.numel() for p in model.parameters())
        shape = "x".join(str(n) for n in (model.in_channels, *entry.example_shape))
        rows.append(dict(name=name, params=params, input=shape, description=entry.description))
    return rows


def _run(args: argparse.Namespace) -> int:
    rows = zoo_table(args.pattern)
    if not rows:
        raise ValueError(f"no model matches {args.pattern!r} (available: {', '.join(list_models())})")
    name_w = max(len("model"), *(len(r["name"]) for r in rows))
    input_w = max(len("input"), *(len(r["input"]) for r in rows))
    print(f"{'model':<{name_w}}  {'params':>12}  {'input':>{input_w}}  description")
    for r in rows:
        print(f"{r['name']:<{name_w}}  {r['params']:>12,}  {r['input']:>{input_w}}  {r['description']}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "models",
        help="list models with parameter counts",
        description="List the registered models with their parameter counts at default settings.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("pattern", nargs="?", default=None, help="shell wildcard filter, e.g. 'unet*'")
    parser.set_defaults(func=_run)
