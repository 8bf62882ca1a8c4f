import pytest
import torch

from unetkit.layers import center_crop, pad_to_multiple, unpad


def test_center_crop_takes_the_middle():
    x = torch.arange(36.0).view(1, 1, 6, 6)
    y = center_crop(x, (2, 4))
    assert torch.equal(y[0, 0], torch.tensor([[13.0, 14.0, 15.0, 16.0], [19.0, 20.0, 21.0, 22.0]]))
    assert center_crop(x, like=torch.zeros(1, 1, 6, 6)).shape == x.shape
    with pytest.raises(ValueError, match="larger"):
        center_crop(x, (7, 6))


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (17, 31), (16, 16)])
@pytest.mark.parametrize("mode", ["reflect", "replicate", "constant"])
def test_pad_to_multiple_round_trip(size, mode):
    x = torch.randn(2, 3, *size)
    padded, pad = pad_to_multiple(x, 16, mode=mode)
    assert padded.shape[-2] % 16 == 0 and padded.shape[-1] % 16 == 0
    assert torch.equal(unpad(padded, pad), x)


def test_multiple_must_be_positive():
    with pytest.raises(ValueError, match="multiple"):
        pad_to_multiple(torch.zeros(1, 1, 4, 4), 0)


def test_center_crop_in_3d():
    x = torch.arange(5 * 6 * 7.0).view(1, 1, 5, 6, 7)
    y = center_crop(x, (3, 2, 3))
    assert torch.equal(y, x[..., 1:4, 2:4, 2:5])
    assert torch.equal(center_crop(x, like=torch.zeros(1, 2, 3, 2, 3), spatial_dims=3), y)
    # a tensor `like` gives its last two axes unless told otherwise (2D callers pass (B, K, H, W))
    assert center_crop(x, like=torch.zeros(1, 2, 3, 2, 3)).shape == (1, 1, 5, 2, 3)
    with pytest.raises(ValueError, match="cannot crop a 5x6x7 tensor to the larger size 6x6x7"):
        center_crop(x, (6, 6, 7))


@pytest.mark.parametrize("size", [(1, 1, 1), (3, 5, 2), (9, 16, 17)])
@pytest.mark.parametrize("mode", ["reflect", "replicate", "constant"])
def test_pad_to_multiple_round_trip_in_3d(size, mode):
    x = torch.randn(2, 3, *size)
    padded, pad = pad_to_multiple(x, (2, 8, 8), mode=mode, spatial_dims=3)
    assert len(pad) == 6
    assert padded.shape[-3] % 2 == 0 and padded.shape[-2] % 8 == 0 and padded.shape[-1] % 8 == 0
    assert torch.equal(unpad(padded, pad), x)


def test_pad_splits_evenly_in_f_pad_order():
    _, pad = pad_to_multiple(torch.zeros(1, 1, 3, 5, 6), 4, spatial_dims=3)
    assert pad == (1, 1, 1, 2, 0, 1)  # width 6 -> 8, height 5 -> 8, depth 3 -> 4
    _, pad2d = pad_to_multiple(torch.zeros(1, 1, 5, 6), 4)
    assert pad2d == (1, 1, 1, 2)
