"""BatchNorm whose statistics span every process of a data-parallel job (Ioffe & Szegedy 2015, arXiv:1502.03167,
computed over the global batch as in Peng et al. 2018, MegDet, arXiv:1711.07240).

`torch.nn.SyncBatchNorm` only runs on accelerators (CUDA, XPU, HPU); on the CPU it raises, and DDP refuses
it. `CPUSyncBatchNorm` does the same on the CPU (gloo): the per-process mean, variance and count are
gathered and combined exactly (Chan et al.'s parallel variance), and the backward pass all-reduces the two
per-channel sums the BatchNorm gradient needs. `convert_sync_batchnorm` picks torch's class on accelerators
and this one on the CPU. Outside training, or without an initialised process group of more than one
process, it is plain BatchNorm. Its state dict is that of `nn.BatchNorm2d`, so checkpoints load into the
unconverted model.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["CPUSyncBatchNorm", "convert_sync_batchnorm"]

_NATIVE = ("cuda", "hpu", "xpu")  # devices torch.nn.SyncBatchNorm supports itself


class _SyncBatchNormFunction(torch.autograd.Function):
    """BatchNorm over the union of every process's batch: `(B, C, ...)` -> `(B, C, ...)`."""

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        running_mean: Tensor | None,
        running_var: Tensor | None,
        eps: float,
        momentum: float,
        group: Any,
        world_size: int,
    ) -> Tensor:
        dims = [0, *range(2, x.ndim)]
        work = x.float()
        count = torch.tensor([x.numel() // x.shape[1]], dtype=torch.float32, device=x.device)
        local = torch.cat([work.mean(dims), work.var(dims, correction=0), count])  # (2C + 1,)
        gathered = [torch.empty_like(local) for _ in range(world_size)]
        dist.all_gather(gathered, local, group=group)
        stats = torch.stack(gathered)  # (P, 2C + 1): mean, biased variance, count per process
        channels = x.shape[1]
        means, variances, counts = stats[:, :channels], stats[:, channels:-1], stats[:, -1:]
        total = counts.sum()
        mean = (counts * means).sum(0) / total  # (C,)
        var = (counts * (variances + (means - mean) ** 2)).sum(0) / total  # Chan et al.'s parallel variance
        if running_mean is not None and running_var is not None:
            unbiased = var * (total / (total - 1).clamp_min(1))
            running_mean.mul_(1 - momentum).add_(momentum * mean.to(running_mean.dtype))
            running_var.mul_(1 - momentum).add_(momentum * unbiased.to(running_var.dtype))
        invstd = torch.rsqrt(var + eps)
        shape = [1, channels] + [1] * (x.ndim - 2)
        xhat = (work - mean.view(shape)) * invstd.view(shape)
        out = xhat
        if weight is not None:
            out = out * weight.float().view(shape)
        if bias is not None:
            out = out + bias.float().view(shape)
        ctx.save_for_backward(xhat, weight, invstd)
        ctx.total, ctx.group, ctx.has_bias = total, group, bias is not None
        ctx.param_dtype = weight.dtype if weight is not None else x.dtype
        return out.to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        xhat, weight, invstd = ctx.saved_tensors
        dims = [0, *range(2, xhat.ndim)]
        shape = [1, xhat.shape[1]] + [1] * (xhat.ndim - 2)
        grad = grad_out.float()
        sum_dy = grad.sum(dims)  # (C,)
        sum_dy_xhat = (grad * xhat).sum(dims)
        # parameter gradients stay per process: DDP averages them like every other parameter's
        grad_weight = sum_dy_xhat.to(ctx.param_dtype) if weight is not None and ctx.needs_input_grad[1] else None
        grad_bias = sum_dy.to(ctx.param_dtype) if ctx.has_bias and ctx.needs_input_grad[2] else None
        grad_x = None
        if ctx.needs_input_grad[0]:
            # the statistics depend on every process's input: the gradient needs both sums over all of them
            sums = torch.cat([sum_dy, sum_dy_xhat])
            dist.all_reduce(sums, group=ctx.group)
            mean_dy, mean_dy_xhat = (sums / ctx.total).chunk(2)
            scale = invstd if weight is None else invstd * weight.float()
            grad_x = (grad - mean_dy.view(shape) - xhat * mean_dy_xhat.view(shape)) * scale.view(shape)
            grad_x = grad_x.to(grad_out.dtype)
        return grad_x, grad_weight, grad_bias, None, None, None, None, None, None


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm with statistics over every process's batch, for CPU tensors (gloo); the arguments and
    state of `torch.nn.SyncBatchNorm`.

    Not a subclass of `torch.nn.SyncBatchNorm`: DistributedDataParallel refuses those on the CPU.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group: Any = None,
    ) -> None:
        """
        Args:
            num_features: channels C.
            eps: added to the variance.
            momentum: running-statistics factor; `None` = cumulative average.
            affine: learnable scale and shift.
            track_running_stats: keep running mean and variance for evaluation.
            process_group: the processes to synchronise; `None` = all.
        """
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.process_group = process_group

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (B, C, ...), got {input.dim()}D input")

    def forward(self, input: Tensor) -> Tensor:
        """`(B, C, ...)` -> `(B, C, ...)`."""
        group = self.process_group
        if group is None and dist.is_available() and dist.is_initialized():
            group = dist.group.WORLD
        world_size = dist.get_world_size(group) if group is not None else 1
        if world_size == 1 or not self.training:
            return super().forward(input)
        self._check_input_dim(input)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                momentum = 1.0 / float(self.num_batches_tracked)
        return _SyncBatchNormFunction.apply(
            input,
            self.weight,
            self.bias,
            self.running_mean if self.track_running_stats else None,
            self.running_var if self.track_running_stats else None,
            self.eps,
            momentum,
            group,
            world_size,
        )


def convert_sync_batchnorm(
    module: nn.Module, device: torch.device | str = "cpu", process_group: Any = None
) -> nn.Module:
    """Replace every `BatchNorm*d` in `module` by a synchronised one sharing its parameters and buffers:
    `torch.nn.SyncBatchNorm` on accelerators, `CPUSyncBatchNorm` on the CPU. Returns `module` itself
    unless it is a BatchNorm layer."""
    if torch.device(device).type in _NATIVE:
        return nn.SyncBatchNorm.convert_sync_batchnorm(module, process_group)
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, (nn.SyncBatchNorm, CPUSyncBatchNorm)
    ):
        out = CPUSyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats, process_group
        )
        if module.affine:
            with torch.no_grad():
                out.weight = module.weight
                out.bias = module.bias
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.training = module.training
    for name, child in module.named_children():
        out.add_module(name, convert_sync_batchnorm(child, device, process_group))
    return out
