import torch

from unetkit.layers import SpatialAttention


def test_parameters_and_shape():
    layer = SpatialAttention()
    assert sum(p.numel() for p in layer.parameters()) == 2 * 7 * 7 + 1  # 99, as in SA-UNet's table
    x = torch.randn(3, 8, 10, 12)
    y = layer(x)
    assert y.shape == x.shape
    assert (y.abs() <= x.abs() + 1e-6).all()  # a sigmoid gate only shrinks


def test_each_sample_is_gated_by_its_own_statistics():
    layer = SpatialAttention()
    x = torch.randn(4, 8, 9, 9)
    batched = layer(x)
    one_by_one = torch.cat([layer(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, one_by_one)
    # changing another sample leaves this one alone (the seed's stacking mixed samples)
    x2 = x.clone()
    x2[1:] = torch.randn_like(x2[1:])
    torch.testing.assert_close(layer(x2)[0], batched[0])


def test_3d_parameters_shape_and_gate():
    layer = SpatialAttention(spatial_dims=3)
    assert sum(p.numel() for p in layer.parameters()) == 2 * 7**3 + 1
    x = torch.randn(2, 4, 5, 6, 7)
    y = layer(x)
    assert y.shape == x.shape
    gate = torch.sigmoid(layer.conv(torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)))
    torch.testing.assert_close(y, x * gate)
