"""The model registry: `register_model`, `create_model`, `list_models` (after timm's `_registry`
and `_factory`). A registered variant is a function that fixes default arguments and calls its
family's builder; `create_model` records the name and the resolved arguments on the model so that a
checkpoint can rebuild it.
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from unetkit._options import close_matches

__all__ = ["ModelEntry", "build_model", "create_model", "get_model_entry", "list_models", "register_model"]


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its builder, a one-line description and an example input.

    Attributes:
        example_size: the first side of the example input.
        example_shape: the example's spatial shape, `(H, W)` or `(D, H, W)`.
    """

    name: str
    builder: Callable[..., nn.Module]
    description: str
    example_size: int
    example_shape: tuple[int, ...] = ()


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    *, example_size: int | tuple[int, ...]
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register the decorated builder under its function name; a duplicate name raises.

    Args:
        example_size: side of a square input the model accepts, or the spatial shape of one (`(D, H, W)`
            for a 3D model), used by summaries and demos.
    """
    shape = (example_size, example_size) if isinstance(example_size, int) else tuple(example_size)

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        doc = inspect.getdoc(fn) or ""
        _REGISTRY[name] = ModelEntry(name, fn, doc.splitlines()[0] if doc else "", shape[0], shape)
        return fn

    return decorator


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted; `pattern` filters them with shell wildcards (`"unet*"`)."""
    names = sorted(_REGISTRY)
    if pattern is not None:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    return names


def get_model_entry(name: str) -> ModelEntry:
    """The registry entry for `name`; an unknown name raises `ValueError` with close matches."""
    if name not in _REGISTRY:
        hint = close_matches(name, _REGISTRY)
        did_you_mean = f"; did you mean {', '.join(repr(h) for h in hint)}?" if hint else ""
        raise ValueError(f"unknown model {name!r}{did_you_mean} (available: {', '.join(list_models())})")
    return _REGISTRY[name]


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model `name`; `None` arguments are dropped so unset CLI flags keep defaults.

    Raises:
        ValueError: unknown model name or argument, with the closest matches.
    """
    entry = get_model_entry(name)
    model = entry.builder(**{k: v for k, v in kwargs.items() if v is not None})
    model.model_name = name  # type: ignore[assignment]
    return model


def build_model(cls: type[nn.Module], defaults: dict[str, Any], **kwargs: Any) -> nn.Module:
    """Instantiate a model family with a variant's `defaults` updated by `kwargs`.

    Unknown keys raise `ValueError` naming them and the accepted ones. The model gets
    `model_config`: every constructor argument, resolved, so that `create_model(name, **model_config)`
    rebuilds it.
    """
    signature = inspect.signature(cls.__init__)
    accepted = [p for p in signature.parameters if p != "self"]
    merged = {**defaults, **kwargs}
    for key in merged:
        if key not in accepted:
            hint = close_matches(key, accepted)
            did_you_mean = f"; did you mean {', '.join(repr(h) for h in hint)}?" if hint else ""
            raise ValueError(
                f"unknown option {key!r} for {cls.__name__}{did_you_mean} (accepted: {', '.join(accepted)})"
            )
    bound = signature.bind_partial(None, **merged)
    bound.apply_defaults()
    config = {k: v for k, v in bound.arguments.items() if k != "self"}
    model = cls(**config)
    model.model_config = {k: _plain(v) for k, v in config.items()}  # type: ignore[assignment]
    return model


def _plain(value: Any) -> Any:
    """Tuples (also nested, as per-level per-axis kernels) as lists, so that configs write to YAML and JSON."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value
