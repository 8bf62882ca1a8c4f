"""A layer table for any model, in the spirit of torchsummary: each module called in a forward pass,
its output shape and its own parameters. Modules that pass their input through unchanged in the
current mode (DropBlock in `eval()`) are left out of the table and counted in a footnote.

The pass runs on PyTorch's `meta` device by default: shapes and byte counts without memory or arithmetic,
so any input size is summarised in a moment. On a real device the same pass on `meta` first estimates the
memory (parameters, plus twice the leaf outputs for forward and backward) and an input that would not fit
in the device's free memory is refused before anything is allocated.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["LayerRow", "ModelSummary", "free_memory", "summarize"]


@dataclass
class LayerRow:
    """One called module: dotted name, type, output shape(s), own parameter count, nesting depth."""

    name: str
    type: str
    output: str
    params: int
    depth: int
    leaf: bool
    activation_bytes: int = 0


@dataclass
class ModelSummary:
    """The result of `summarize`; `str()` renders the table."""

    model_name: str
    input_shape: tuple[int, ...]
    training: bool
    rows: list[LayerRow] = field(default_factory=list)
    hidden: dict[str, int] = field(default_factory=dict)
    total_params: int = 0
    trainable_params: int = 0
    output_shape: str = ""

    @property
    def activation_bytes(self) -> int:
        """Bytes of the leaf modules' outputs, twice (kept for the backward pass)."""
        return 2 * sum(r.activation_bytes for r in self.rows if r.leaf)

    @property
    def memory_bytes(self) -> int:
        """Estimated memory of one forward and backward pass: fp32 parameters and the activations."""
        return self.total_params * 4 + self.activation_bytes

    def __str__(self) -> str:
        name_w = max([len("Layer (type)")] + [2 * r.depth + len(r.name) + len(r.type) + 3 for r in self.rows])
        out_w = max([len("Output Shape")] + [len(r.output) for r in self.rows])
        width = name_w + out_w + 16
        mode = "train" if self.training else "eval"
        lines = [
            f"{self.model_name} in {mode} mode, input {list(self.input_shape)}",
            "-" * width,
            f"{'Layer (type)':<{name_w}}  {'Output Shape':>{out_w}}  {'Param #':>12}",
            "=" * width,
        ]
        for r in self.rows:
            label = "  " * r.depth + f"{r.name} ({r.type})"
            lines.append(f"{label:<{name_w}}  {r.output:>{out_w}}  {r.params:>12,}")
        act_mb = self.activation_bytes / 2**20
        param_mb = self.total_params * 4 / 2**20
        lines += [
            "=" * width,
            f"Total params: {self.total_params:,}",
            f"Trainable params: {self.trainable_params:,}",
            f"Non-trainable params: {self.total_params - self.trainable_params:,}",
            f"Output shape: {self.output_shape}",
            f"Forward/backward activations (MB, leaf outputs x2): {act_mb:,.2f}",
            f"Params size (MB, fp32): {param_mb:,.2f}",
        ]
        if self.hidden:
            what = ", ".join(f"{n} {t}" for t, n in sorted(self.hidden.items()))
            lines.append(f"Pass-through in {mode} mode, not listed: {what}")
        lines.append("-" * width)
        return "\n".join(lines)


def _describe(output: object) -> tuple[str, int]:
    if isinstance(output, torch.Tensor):
        return str(list(output.shape)), output.numel() * output.element_size()
    if isinstance(output, (list, tuple)):
        parts = [_describe(o) for o in output]
        size = sum(p[1] for p in parts)
        if len(parts) > 2:
            return f"{len(parts)} x: {parts[0][0]} .. {parts[-1][0]}", size
        return "[" + ", ".join(p[0] for p in parts) + "]", size
    return type(output).__name__, 0


def free_memory(device: torch.device) -> int | None:
    """Free bytes on `device` (CUDA: the driver's count; CPU: available physical memory), None if unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "cpu" and hasattr(os, "sysconf"):
        try:
            return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError):
            return None
    return None


def summarize(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    training: bool = True,
    device: str | torch.device = "meta",
    model_name: str | None = None,
) -> ModelSummary:
    """Run one forward pass on a copy of `model` and tabulate every module it calls.

    Args:
        model: any module (on any device, `meta` included); it is copied, so its weights and BatchNorm
            statistics are not touched.
        input_shape: `(B, C, H, W)` of the random input.
        training: summarise in train mode (DropBlock active) or eval mode.
        device: where to run the pass; `meta` (the default) needs no memory at any size.
        model_name: title of the table (default: `model.model_name` or the class name).

    Raises:
        ValueError: an `input_shape` that is not positive, or that needs more memory than `device` has free.
    """
    if len(input_shape) < 2 or any(int(s) < 1 for s in input_shape):
        raise ValueError(f"`input_shape` must list positive sizes such as (1, 1, 572, 572), got {input_shape}")
    device = torch.device(device)
    if device.type != "meta":
        estimate = summarize(model, input_shape, training=training, model_name=model_name)
        free = free_memory(device)
        if free is not None and estimate.memory_bytes > free:
            raise ValueError(
                f"`input_shape` {list(input_shape)}: one pass of {estimate.model_name} needs about "
                f"{estimate.memory_bytes / 2**30:,.1f} GiB, more than the {free / 2**30:,.1f} GiB free on {device}; "
                "summarise on the meta device (the default) or give a smaller input"
            )
    work = copy.deepcopy(model).to(device)
    work.train(training)
    title = model_name or getattr(model, "model_name", None) or type(model).__name__
    summary = ModelSummary(title, tuple(int(s) for s in input_shape), training)
    names = {m: n for n, m in work.named_modules()}
    containers = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
    pending: list[tuple[LayerRow, nn.Module, int]] = []

    def pre_hook(module: nn.Module, args: tuple[object, ...]) -> None:
        name = names[module]
        row = LayerRow(
            name=name,
            type=type(module).__name__,
            output="",
            params=sum(p.numel() for p in module.parameters(recurse=False)),
            depth=name.count("."),
            leaf=not any(True for _ in module.children()),
        )
        summary.rows.append(row)
        first = args[0] if args else None
        version = first._version if isinstance(first, torch.Tensor) else -1
        pending.append((row, module, version))

    def post_hook(module: nn.Module, args: tuple[object, ...], output: object) -> None:
        row, version = next((r, v) for r, m, v in reversed(pending) if m is module and not r.output)
        first = args[0] if args else None
        if isinstance(first, torch.Tensor) and output is first and first._version == version:
            # returned its input untouched (an in-place op would bump the version): inactive here
            summary.rows.remove(row)
            summary.hidden[row.type] = summary.hidden.get(row.type, 0) + 1
            return
        row.output, row.activation_bytes = _describe(output)

    handles = []
    for module, name in names.items():
        if name and not (isinstance(module, containers) and type(module) in containers):
            handles.append(module.register_forward_pre_hook(pre_hook))
            handles.append(module.register_forward_hook(post_hook))
    try:
        with torch.no_grad():
            out = work(torch.randn(*input_shape, device=device))
    finally:
        for h in handles:
            h.remove()
    summary.output_shape = _describe(out)[0]
    summary.total_params = sum(p.numel() for p in model.parameters())
    summary.trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return summary
