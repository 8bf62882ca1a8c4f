import pytest
import torch
import torch.nn.functional as F

from unetkit.layers import DropBlock2d, drop_block_gamma


def _opening(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Morphological opening by a size x size square (outside the image counts as not dropped)."""
    p = size // 2
    eroded = -F.max_pool2d(F.pad(-mask, (p, p, p, p), value=0.0), size, stride=1)
    return F.max_pool2d(F.pad(eroded, (p, p, p, p), value=0.0), size, stride=1)


def test_gamma_matches_eq1_of_ghiasi():
    # (1 - 0.9) / 7^2 * 64^2 / 58^2 by hand
    assert drop_block_gamma(0.9, 7, 64, 64) == pytest.approx(0.1 / 49 * 4096 / 3364)


@pytest.mark.parametrize("block_size", [3, 7])
def test_drop_fraction_close_to_one_minus_keep_prob(block_size):
    torch.manual_seed(1234)
    layer = DropBlock2d(block_size=block_size, keep_prob=0.9).train()
    y = layer(torch.ones(8, 16, 64, 64))
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.1) < 0.015, dropped


@pytest.mark.parametrize("block_size", [3, 5, 7])
def test_dropped_regions_are_whole_blocks(block_size):
    layer = DropBlock2d(block_size=block_size, keep_prob=0.8).train()
    mask = (layer(torch.ones(4, 8, 40, 40)) == 0).float()
    assert mask.sum() > 0
    # a union of k x k squares is unchanged by an opening with a k x k square; isolated pixels are not
    assert torch.equal(_opening(mask, block_size), mask)


def test_kept_values_are_rescaled_per_sample():
    layer = DropBlock2d(block_size=5, keep_prob=0.7).train()
    x = torch.ones(6, 4, 32, 32)
    y = layer(x)
    # every sample keeps its expected mass exactly: kept * (numel / kept) = numel
    torch.testing.assert_close(y.flatten(1).sum(1), x.flatten(1).sum(1))
    kept = y[y != 0]
    assert kept.min() > 1.0  # survivors are scaled up


def test_eval_and_keep_prob_one_are_identity():
    x = torch.randn(2, 3, 16, 16)
    assert DropBlock2d(7, 0.9).eval()(x) is x
    assert DropBlock2d(7, 1.0).train()(x) is x


def test_samples_and_channels_get_different_masks():
    layer = DropBlock2d(block_size=3, keep_prob=0.8).train()
    mask = layer(torch.ones(4, 2, 32, 32)) == 0
    assert not torch.equal(mask[0], mask[1])
    assert not torch.equal(mask[0, 0], mask[0, 1])


def test_same_seed_same_mask_and_small_maps():
    layer = DropBlock2d(block_size=7, keep_prob=0.9).train()
    torch.manual_seed(5)
    a = layer(torch.ones(2, 2, 24, 24))
    torch.manual_seed(5)
    b = layer(torch.ones(2, 2, 24, 24))
    assert torch.equal(a, b)
    # maps smaller than the block clip the block to the map
    y = layer(torch.ones(2, 2, 3, 5))
    assert y.shape == (2, 2, 3, 5) and torch.isfinite(y).all()


def test_bfloat16_keeps_dtype():
    y = DropBlock2d(3, 0.9).train()(torch.ones(2, 4, 16, 16, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16


@pytest.mark.parametrize(("block_size", "keep_prob"), [(0, 0.9), (3, 0.0), (3, 1.5), (2.5, 0.9)])
def test_bad_arguments_raise(block_size, keep_prob):
    with pytest.raises(ValueError, match=r"block_size|keep_prob"):
        DropBlock2d(block_size, keep_prob)
