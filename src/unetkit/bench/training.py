"""Training throughput: the zoo's models and the peers (MONAI `UNet`, `BasicUNet`, segmentation_models_pytorch
`Unet("resnet34")`) in one loop, in eager fp32 and in the project's default path, against the device's peak.

Every case runs the same `unetkit.train.step.TrainStep` on a batch of random inputs already on the device,
with AdamW and the loss the trainer would use (BCE for one output channel, CE otherwise). Paths:

- `eager_fp32`: NCHW, float32 (TF32 off), no compile, foreach AdamW, the loss read on the host after every
  step, as a typical hand-written loop does;
- `bf16_compile` (CUDA only): bf16 autocast + `torch.compile`, NCHW, foreach AdamW, the loss read every
  step: the "plain" baseline of shared/BENCH.md, for the memory comparison;
- `default`: what `unetkit train` does on the device: `amp: auto`, channels-last, `compile: auto`, fused
  AdamW on CUDA, cuDNN autotuning, the loss read once per log interval.

FLOPs (forward + backward, per image) are counted with `torch.utils.flop_counter.FlopCounterMode` on the
meta device. Memory traffic (bytes per image) is an op-level model: every aten operator of forward + backward
reads its inputs and writes its outputs once (views excluded), counted on the real device in the path's
dtype; fused kernels move less, so bytes/s against the copy bandwidth reads as "what the measured rate
would need without fusion".
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from unetkit._deps import MissingDependency
from unetkit.bench._measure import peak, reset_peak, sync
from unetkit.losses import SegmentationLoss
from unetkit.models import create_model
from unetkit.train.step import TrainStep, resolve_amp, resolve_compile, set_fast_backends

__all__ = ["CASES", "Case", "build_model", "count_bytes", "count_flops", "run_case"]


@dataclass(frozen=True)
class Case:
    """One model at one input size and batch."""

    model: str  # a zoo name, or monai_unet / monai_basicunet / smp_unet_resnet34
    size: int
    batch: int
    in_channels: int
    out_channels: int

    @property
    def label(self) -> str:
        return f"{self.model} {self.size}² b{self.batch}"


# the cases (shared/BENCH.md) and the peers at unet's size; CPU and --quick scale them down
CASES = {
    "full": [
        Case("unet", 512, 16, 3, 2),
        Case("unet_classic", 572, 8, 1, 2),
        Case("sa_unet", 592, 8, 3, 1),
        Case("monai_unet", 512, 16, 3, 2),
        Case("monai_basicunet", 512, 16, 3, 2),
        Case("smp_unet_resnet34", 512, 16, 3, 2),
    ],
    "cpu": [
        Case("unet", 128, 4, 3, 2),
        Case("unet_classic", 316, 1, 1, 2),
        Case("sa_unet", 128, 4, 3, 1),
        Case("monai_unet", 128, 4, 3, 2),
        Case("monai_basicunet", 128, 4, 3, 2),
        Case("smp_unet_resnet34", 128, 4, 3, 2),
    ],
    "quick": [
        Case("unet", 64, 2, 3, 2),
        Case("unet_classic", 252, 1, 1, 2),
        Case("sa_unet", 64, 2, 3, 1),
        Case("monai_unet", 64, 2, 3, 2),
        Case("monai_basicunet", 64, 2, 3, 2),
        Case("smp_unet_resnet34", 64, 2, 3, 2),
    ],
}
QUICK_WIDTH = {"unet": {"base_channels": 8}, "unet_classic": {"base_channels": 8}}


def build_model(case: Case, quick: bool = False) -> nn.Module:
    """The case's network with random weights. Peers come from their packages (ImportError names the extra)."""
    if case.model == "monai_unet":
        from monai.networks.nets import UNet

        channels = (8, 16, 32, 64, 128) if quick else (64, 128, 256, 512, 1024)  # the zoo unet's widths
        return UNet(2, case.in_channels, case.out_channels, channels=channels, strides=(2, 2, 2, 2), num_res_units=2)
    if case.model == "monai_basicunet":
        from monai.networks.nets import BasicUNet

        features = (8, 8, 16, 32, 64, 8) if quick else (32, 32, 64, 128, 256, 32)  # MONAI's default
        return BasicUNet(2, case.in_channels, case.out_channels, features=features)
    if case.model == "smp_unet_resnet34":
        try:
            import segmentation_models_pytorch as smp
        except ImportError as err:
            raise MissingDependency(
                f"segmentation_models_pytorch does not import ({err}); it needs timm and a torchvision built for "
                "this torch (pip install segmentation-models-pytorch where torchvision matches)"
            ) from err
        return smp.Unet("resnet34", encoder_weights=None, in_channels=case.in_channels, classes=case.out_channels)
    key = "num_classes"
    options = {
        "in_channels": case.in_channels,
        key: case.out_channels,
        **(QUICK_WIDTH.get(case.model, {}) if quick else {}),
    }
    return create_model(case.model, **options)


def count_flops(case: Case, quick: bool = False) -> float:
    """Forward + backward FLOPs per image, counted on the meta device (no arithmetic runs)."""
    with torch.device("meta"):
        model = build_model(case, quick)
        x = torch.empty(1, case.in_channels, case.size, case.size)
    with FlopCounterMode(display=False) as counter:
        model(x).float().sum().backward()
    return float(counter.get_total_flops())


class _Traffic(TorchDispatchMode):
    """Sum of input + output bytes of every non-view aten operator (each tensor once per operator)."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        if not func.is_view:
            seen = {id(t): t for t in tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)}
            self.bytes += sum(t.numel() * t.element_size() for t in seen.values())
        return out


def count_bytes(model: nn.Module, case: Case, amp_dtype: torch.dtype | None, channels_last: bool) -> int:
    """Op-level memory traffic of forward + backward for one image, on the model's device and dtype."""
    device = next(model.parameters()).device
    x = torch.randn(1, case.in_channels, case.size, case.size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    traffic = _Traffic()
    autocast = torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None)
    with traffic, autocast:
        model(x).float().sum().backward()
    model.zero_grad(set_to_none=True)
    return traffic.bytes


def _step_for(case: Case, path: str, device: torch.device, quick: bool) -> tuple[TrainStep, nn.Module]:
    torch.manual_seed(0)
    model = build_model(case, quick).to(device)
    default = path == "default"
    channels_last = default
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    amp = {"eager_fp32": None, "bf16_compile": torch.bfloat16}.get(path, resolve_amp("auto", device))
    compile = path == "bf16_compile" or (default and resolve_compile("auto", device))
    fused = True if default and device.type == "cuda" else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)
    loss = SegmentationLoss("bce" if case.out_channels == 1 else "ce", case.out_channels).to(device)
    step = TrainStep(model, loss, optimizer, amp_dtype=amp, channels_last=channels_last, compile=compile)
    return step, model


def _tf32(enabled: bool) -> None:
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


def run_case(
    case: Case,
    path: str,
    device: torch.device,
    *,
    warmup: int,
    steps: int,
    quick: bool = False,
    batch_fn: Callable[[], dict[str, torch.Tensor]] | None = None,
) -> dict[str, Any]:
    """Time `steps` training steps of `case` on `path` after `warmup` steps; images/s and peak memory."""
    gc.collect()
    _tf32(path != "eager_fp32")
    if path == "default":
        set_fast_backends(device)
    else:
        torch.backends.cudnn.benchmark = False
    baseline = reset_peak(device)
    step, model = _step_for(case, path, device, quick)
    generator = torch.Generator(device=device).manual_seed(0)
    shape = (case.batch, case.in_channels, case.size, case.size)
    image = torch.randn(shape, device=device, generator=generator)
    high = max(case.out_channels, 2)
    target = torch.randint(0, high, (case.batch, case.size, case.size), device=device, generator=generator)
    batch = {"image": image, "target": target}
    read_every_step = path != "default"
    timings = []
    for count in (warmup, steps):  # untimed warm-up (compile, autotuning), then the timed steps
        start = time.perf_counter()
        for _ in range(count):
            step(batch_fn() if batch_fn is not None else batch)
            if read_every_step:
                step.read()
        reading = step.read()  # the default path's one host read of the interval, inside the timing
        sync(device)
        timings.append(time.perf_counter() - start)
    warm_s, seconds = timings
    memory = peak(device, baseline)
    if device.type == "cuda":
        memory = torch.cuda.max_memory_allocated(device)  # absolute, as shared/BENCH.md reports it
    result = {
        "case": case.label,
        "path": path,
        "images_per_s": case.batch * steps / seconds,
        "step_s": seconds / steps,
        "warmup_s": warm_s,
        "peak_memory_bytes": memory,
        "loss_finite": reading.first_nonfinite is None,
        "amp": str(step.amp_dtype).replace("torch.", "") if step.amp_dtype else "float32",
        "channels_last": step.channels_last,
        "compiled": step.forward is not step.model,
    }
    if case.model == "sa_unet":
        result["bytes_per_image"] = count_bytes(model, case, step.amp_dtype, step.channels_last)
    del step, model, batch
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result
