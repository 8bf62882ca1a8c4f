"""Conv blocks in 2D and 3D: layer order, per-axis kernels and trims, norm choices."""

import pytest
import torch
from torch import nn

from unetkit.layers import ConvBlock, DropBlock3d, SpatialAttention, make_norm


def test_3d_block_order_is_conv_dropblock_norm_act():
    block = ConvBlock(2, 4, dropblock=(3, 0.9), attention=True, spatial_dims=3)
    unit = [nn.Conv3d, DropBlock3d, nn.BatchNorm3d, nn.ReLU]
    assert [type(m) for m in block] == [*unit, SpatialAttention, *unit]
    assert block(torch.randn(2, 2, 5, 6, 7)).shape == (2, 4, 5, 6, 7)


def test_unpadded_per_axis_kernels_trim_per_axis():
    block = ConvBlock(1, 2, kernel_size=(1, 3, 5), padding=False, norm="none", spatial_dims=3)
    assert block.shrink == (0, 4, 8)  # two convs, kernel // 2 from each side each
    assert block(torch.randn(1, 1, 6, 10, 12)).shape == (1, 2, 6, 6, 4)
    padded = ConvBlock(1, 2, kernel_size=(1, 3, 5), spatial_dims=3)
    assert padded[0].padding == (0, 1, 2) and padded.shrink == (0, 0, 0)


def test_norms_by_spatial_dims_and_affine():
    assert isinstance(make_norm("batch", 4, 3), nn.BatchNorm3d)
    assert isinstance(make_norm("instance", 4, 3), nn.InstanceNorm3d)
    assert make_norm("none", 4, 3) is None
    plain = make_norm("batch", 4, 3, affine=False)
    assert plain is not None and not plain.affine and sum(p.numel() for p in plain.parameters()) == 0
    assert isinstance(make_norm("batch", 4), nn.BatchNorm2d)  # 2D by default


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kernel_size": 4}, "`kernel_size` must be odd"),
        ({"kernel_size": (3, 3)}, r"`kernel_size` must be an integer >= 1 or 3 of them"),
        ({"spatial_dims": 1}, "`spatial_dims` must be 2 or 3"),
    ],
)
def test_bad_block_arguments_name_themselves(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ConvBlock(1, 2, **{"spatial_dims": 3, **kwargs})
