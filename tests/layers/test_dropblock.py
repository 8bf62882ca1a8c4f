import pytest
import torch
import torch.nn.functional as F

from unetkit.layers import DropBlock2d, DropBlock3d, drop_block_gamma, make_dropblock


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


def _opening_3d(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Morphological opening by a size^3 cube (outside the volume counts as not dropped)."""
    p = size // 2
    eroded = -F.max_pool3d(F.pad(-mask, (p,) * 6, value=0.0), size, stride=1)
    return F.max_pool3d(F.pad(eroded, (p,) * 6, value=0.0), size, stride=1)


def test_gamma_in_3d_matches_eq1_with_cubes():
    # (1 - 0.9) / 3^3 * (16 * 20 * 24) / (14 * 18 * 22) by hand; per-axis blocks multiply their sides
    assert drop_block_gamma(0.9, 3, 16, 20, 24) == pytest.approx(0.1 / 27 * 7680 / 5544)
    assert drop_block_gamma(0.8, (1, 3, 5), 8, 16, 16) == pytest.approx(0.2 / 15 * 2048 / (8 * 14 * 12))
    assert drop_block_gamma(0.9, 7, 64, 64) == drop_block_gamma(0.9, (7, 7), 64, 64)


@pytest.mark.parametrize("block_size", [3, 5])
def test_3d_drop_fraction_close_to_one_minus_keep_prob(block_size):
    torch.manual_seed(4321)
    layer = DropBlock3d(block_size=block_size, keep_prob=0.9).train()
    y = layer(torch.ones(4, 8, 24, 24, 24))
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.1) < 0.015, dropped


@pytest.mark.parametrize("block_size", [3, 5])
def test_3d_dropped_regions_are_whole_cubes(block_size):
    torch.manual_seed(7)
    layer = DropBlock3d(block_size=block_size, keep_prob=0.8).train()
    mask = (layer(torch.ones(2, 4, 20, 20, 20)) == 0).float()
    assert mask.sum() > 0
    assert torch.equal(_opening_3d(mask, block_size), mask)
    x = torch.ones(3, 2, 16, 16, 16)
    torch.testing.assert_close(layer(x).flatten(1).sum(1), x.flatten(1).sum(1))  # mass kept per sample


def test_3d_per_axis_blocks_are_boxes_of_that_shape():
    torch.manual_seed(3)
    layer = DropBlock3d(block_size=(1, 5, 5), keep_prob=0.8).train()
    mask = (layer(torch.ones(2, 3, 6, 20, 20)) == 0).float()
    assert mask.sum() > 0
    # every dropped voxel lies in a 1x5x5 box: each slice of the mask is a union of 5x5 squares
    flat = mask.reshape(-1, 1, 20, 20)
    assert torch.equal(_opening(flat, 5), flat)


def test_3d_eval_and_keep_prob_one_are_identity_and_rank_is_checked():
    x = torch.randn(2, 3, 4, 5, 6)
    assert DropBlock3d(3, 0.9).eval()(x) is x
    assert DropBlock3d(3, 1.0).train()(x) is x
    with pytest.raises(ValueError, match=r"DropBlock3d expects 3 spatial axes"):
        DropBlock3d(3, 0.9).train()(torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"`block_size` must be an integer >= 1 or 3 of them"):
        DropBlock3d((3, 3), 0.9)
    small = DropBlock3d(7, 0.9).train()(torch.ones(2, 2, 2, 9, 9))  # the cube clips to the smallest side
    assert small.shape == (2, 2, 2, 9, 9) and torch.isfinite(small).all()


def test_make_dropblock_picks_the_class_by_spatial_dims():
    assert type(make_dropblock(3, 0.9, spatial_dims=2)) is DropBlock2d
    assert type(make_dropblock(3, 0.9, spatial_dims=3)) is DropBlock3d
