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
