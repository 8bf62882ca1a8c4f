"""Volumes through a 3D model: tiled == one forward pass for the unpadded 3D U-Net, `2 * x` exactly for a
padded one, TTA over the 8 axis flips, and one-line errors for the wrong input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unetkit import create_model
from unetkit.infer import predict
from unetkit.infer.predictor import Predictor
from unetkit.infer.volume import AxisOrder, plan_volume
from unetkit.models.inference import forward_whole, mirror_pad


class Double3d(torch.nn.Module):
    """A padded 3D 'model' whose right answer is known everywhere."""

    spatial_dims = 3
    downsample_factor = 4
    in_channels = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x


@pytest.fixture(scope="module")
def classic3d():
    torch.manual_seed(0)
    return create_model("unet_classic_3d", in_channels=1, num_classes=2, base_channels=2, depth=2).eval()


def test_tiled_equals_one_forward_pass_for_the_unpadded_3d_unet(classic3d):
    torch.manual_seed(1)
    x = torch.rand(1, 30, 27, 21)  # odd sizes: the last tiles run into mirrored context
    plan = plan_volume(Predictor(classic3d), x.shape[1:], (8, 12, 4), 0.25, "gaussian")
    assert plan.margins == (20, 20, 20) and plan.num_tiles == 4 * 3 * 6  # many tiles on every axis
    tiled = predict(classic3d, x.numpy(), tile=(8, 12, 4), activation="none")
    with torch.no_grad():
        whole = forward_whole(classic3d, x[None])[0].numpy()
    assert tiled.shape == (2, 30, 27, 21)
    assert np.abs(tiled - whole).max() < 1e-5


def test_streaming_along_another_axis_changes_nothing(classic3d):
    torch.manual_seed(2)
    x = torch.rand(1, 12, 16, 20)
    pred = Predictor(classic3d, activation="none")
    axes = AxisOrder(pred, (2, 0, 1))
    tiles = x[None].permute(axes.to_engine)  # the volume in the engine's order
    tiles = mirror_pad(tiles, (20,) * 6)  # sizes 52, 56, 60: legal
    with torch.no_grad():
        whole = forward_whole(classic3d, x[None])
    np.testing.assert_allclose(axes(tiles).permute(axes.to_model).numpy(), whole.numpy(), atol=1e-5)


@pytest.mark.parametrize("blend", ["gaussian", "constant", "center"])
@pytest.mark.parametrize("tile", [8, (4, 12, 8), 64])
def test_a_padded_model_returning_2x_comes_back_as_2x(blend, tile):
    rng = np.random.default_rng(0)
    x = rng.random((13, 17, 11), dtype=np.float32)
    y = predict(Double3d(), x, tile=tile, overlap=0.4, blend=blend, activation="none")
    np.testing.assert_allclose(y[0], 2 * x, rtol=1e-6, atol=0)  # float rounding of the weighted mean


def test_a_padded_3d_unet_gives_a_distribution_per_voxel_through_overlapping_tiles():
    torch.manual_seed(3)
    model = create_model("unet", in_channels=1, num_classes=3, base_channels=4, depth=2, spatial_dims=3).eval()
    x = torch.rand(1, 24, 20, 16)
    probs = predict(model, x.numpy(), tile=16, overlap=0.5)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    assert probs.shape == (3, 24, 20, 16)


def test_tta_averages_the_eight_axis_flips():
    torch.manual_seed(4)
    model = create_model("unet", in_channels=1, num_classes=2, base_channels=4, depth=2, spatial_dims=3).eval()
    x = torch.rand(1, 8, 12, 16)
    with_tta = predict(model, x.numpy(), tile=64, tta=True)  # one tile: the whole volume
    manual = []
    with torch.no_grad():
        for k in range(8):
            axes = [2 + i for i in range(3) if k >> i & 1]
            out = torch.softmax(model(x[None].flip(axes) if axes else x[None]), dim=1)
            manual.append(out.flip(axes) if axes else out)
    expected = torch.stack(manual).mean(0)[0].numpy()
    np.testing.assert_allclose(with_tta, expected, atol=1e-5)
    assert np.abs(with_tta - predict(model, x.numpy(), tile=64)).max() > 1e-4  # the flips did change something


def test_wrong_inputs_are_one_line_errors(classic3d):
    with pytest.raises(ValueError, match=r"must be a volume \(D, H, W\) or \(C, D, H, W\)"):
        predict(classic3d, np.zeros((20, 20), dtype=np.float32))
    with pytest.raises(ValueError, match="has 2 channels, the model expects 1"):
        predict(classic3d, np.zeros((2, 9, 9, 9), dtype=np.float32))
    with pytest.raises(ValueError, match=r"`tile` 2 on axis 1 is smaller than the model's smallest output tile, 4"):
        predict(classic3d, np.zeros((9, 9, 9), dtype=np.float32), tile=(4, 2, 4))
