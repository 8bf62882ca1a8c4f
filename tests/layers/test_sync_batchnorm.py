"""CPUSyncBatchNorm on 2 gloo processes equals BatchNorm on the whole batch: outputs, input and parameter
gradients, running statistics; and the converter keeps parameters, buffers and state-dict keys."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from unetkit.layers.sync_batchnorm import CPUSyncBatchNorm, convert_sync_batchnorm


def _worker(rank: int, world: int, store: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        for momentum in (0.1, None):  # exponential and cumulative running averages
            _check(rank, momentum)
    finally:
        dist.destroy_process_group()


def _check(rank: int, momentum: float | None) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 5, 7, generator=gen, dtype=torch.float64).float() * 3 + 1  # whole batch
    g = torch.randn(6, 3, 5, 7, generator=gen)  # upstream gradient
    reference = nn.BatchNorm2d(3, momentum=momentum)
    with torch.no_grad():
        reference.weight.uniform_(0.5, 1.5, generator=gen)
        reference.bias.uniform_(-1, 1, generator=gen)
    synced = convert_sync_batchnorm(nn.Sequential(_copy(reference)))[0]
    assert isinstance(synced, CPUSyncBatchNorm)
    shard = slice(rank * 3, (rank + 1) * 3)
    for _ in range(2):  # two steps: the running statistics accumulate
        xr = x.clone().requires_grad_(True)
        (reference(xr) * g).sum().backward()
        xs = x[shard].clone().requires_grad_(True)
        out = synced(xs)
        (out * g[shard]).sum().backward()
        torch.testing.assert_close(out.detach(), _ref_out(reference, x)[shard], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(xs.grad, xr.grad[shard], rtol=1e-4, atol=1e-5)
    for name in ("weight", "bias"):
        grad = getattr(synced, name).grad.clone()
        dist.all_reduce(grad)  # the whole loss is the sum of the processes' losses
        torch.testing.assert_close(grad, getattr(reference, name).grad, rtol=1e-4, atol=1e-4)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(synced, name), getattr(reference, name), rtol=1e-5, atol=1e-6)
    synced.eval()
    reference.eval()
    torch.testing.assert_close(synced(x[shard]), reference(x)[shard], rtol=1e-5, atol=1e-5)


def _ref_out(bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """BatchNorm of `x` with batch statistics, without touching `bn`'s running statistics."""
    return nn.functional.batch_norm(x, None, None, bn.weight, bn.bias, True, 0.0, bn.eps).detach()


def _copy(bn: nn.BatchNorm2d) -> nn.BatchNorm2d:
    out = nn.BatchNorm2d(bn.num_features, momentum=bn.momentum)
    out.load_state_dict(bn.state_dict())
    return out


def test_two_processes_match_batchnorm_on_the_whole_batch(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, str(tmp_path / "store")), nprocs=2, join=True)


def test_single_process_is_plain_batchnorm_and_state_dict_keys_are_kept() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    keys = set(model.state_dict())
    weight = model[1].weight
    converted = convert_sync_batchnorm(model)
    assert converted is model and isinstance(model[1], CPUSyncBatchNorm)
    assert model[1].weight is weight and set(model.state_dict()) == keys
    reference = nn.BatchNorm2d(4)
    reference.load_state_dict(model[1].state_dict())
    x = torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(model[1](x), reference(x))  # no process group: BatchNorm
    torch.testing.assert_close(model[1].running_var, reference.running_var)
    assert isinstance(convert_sync_batchnorm(nn.BatchNorm2d(2), "cuda"), nn.SyncBatchNorm)
