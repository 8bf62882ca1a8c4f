"""The tiling engine over any number of axes: `2 * x` comes back exactly through every blend mode in 3D, slabs
read only their rows, and a 2D plan matches the 2D engine's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unetkit.infer.grid import grid_weights, plan_grid, run_grid
from unetkit.infer.tiling import plan_tiles, run_tiled


def _double(x: torch.Tensor) -> torch.Tensor:
    return 2 * x


def _run(volume: torch.Tensor, plan, reads=None) -> np.ndarray:
    out = np.full((1, *volume.shape[1:]), np.nan, dtype=np.float32)

    def reader(indices):
        if reads is not None:
            reads.append(tuple(len(i) for i in indices))
        block = volume
        for axis, idx in enumerate(indices):
            block = block.index_select(axis + 1, torch.from_numpy(idx))
        return block

    def sink(r0, r1, values):
        out[:, r0:r1] = values.numpy()

    run_grid(_double, reader, plan, sink, batch_size=3)
    return out


@pytest.mark.parametrize("blend", ["gaussian", "constant", "center"])
@pytest.mark.parametrize("tile", [5, (4, 9, 6), 64])
def test_double_comes_back_exactly_in_3d(blend, tile):
    torch.manual_seed(0)
    volume = torch.rand(1, 13, 17, 11)  # odd sizes; tile 64 is larger than the volume
    plan = plan_grid(volume.shape[1:], tile=tile, overlap=0.4, blend=blend)
    out = _run(volume, plan)
    np.testing.assert_allclose(out, 2 * volume.numpy(), rtol=1e-6, atol=0)  # float rounding of the weighted mean


def test_slabs_read_only_their_rows_and_cover_every_voxel_once():
    volume = torch.rand(1, 40, 9, 7)
    plan = plan_grid(volume.shape[1:], tile=(8, 9, 7), overlap=0.25, blend="gaussian")
    reads: list[tuple[int, ...]] = []
    out = _run(volume, plan, reads)
    assert plan.starts[0] == (0, 6, 12, 18, 24, 30, 32)  # step round(8 * 0.75) = 6, the last one on the edge
    assert reads == [(8, 9, 7)] * plan.num_slabs  # one read per slab, one tile high: never the whole volume
    np.testing.assert_allclose(out, 2 * volume.numpy(), rtol=1e-6)


def test_overlap_tile_plan_per_axis_with_margins():
    legal = {0: lambda n: -(-n // 4) * 4, 1: lambda n: -(-n // 2) * 2, 2: lambda n: n}  # legal outputs per axis
    plan = plan_grid(
        (30, 21, 9), tile=(6, 7, 100), overlap=0.5, margins=(3, 2, 1), blend="gaussian",
        legal_output=lambda n, axis: legal[axis](n), align=(4, 2, 1),
    )  # fmt: skip
    assert plan.tile == (8, 8, 9) and plan.margins == (3, 2, 1) and plan.blend == "none"
    assert plan.starts == ((0, 8, 16, 24), (0, 8, 16), (0,))  # abutting, multiples of each axis' factor


def test_gaussian_weights_are_separable_and_floored():
    plan = plan_grid((9, 7, 5), tile=(9, 7, 5), overlap=0.0)
    w = grid_weights(plan).double().numpy()
    assert w.shape == (9, 7, 5) and w[4, 3, 2] == 1.0 and w.min() == pytest.approx(1e-3)
    # odd sides: the centre is the maximum, and each centre line is that axis' gaussian, sigma = side / 8
    lines = [np.exp(-((np.arange(n) - (n - 1) / 2) ** 2) / (2 * (n / 8) ** 2)) for n in (9, 7, 5)]
    product = np.einsum("i,j,k->ijk", *lines)
    np.testing.assert_allclose(w, np.maximum(product, 1e-3), rtol=1e-6)


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
def test_2d_tiles_blend_to_the_weighted_mean_computed_by_hand(blend):
    torch.manual_seed(1)
    image = torch.rand(2, 37, 29)

    def model(x):
        return torch.cat([x.sin(), x.cumsum(-1)], dim=1)  # depends on the tile: blending matters

    plan = plan_tiles(37, 29, tile=12, overlap=0.3, blend=blend)
    grid = plan_grid((37, 29), tile=12, overlap=0.3, blend=blend)
    assert grid.starts == (plan.ys, plan.xs) == ((0, 8, 16, 24, 25), (0, 8, 16, 17))
    w = grid_weights(grid).double().numpy()
    total, norm = np.zeros((4, 37, 29)), np.zeros((37, 29))
    for y in plan.ys:  # the reference: every tile's weighted output summed, then divided
        for x in plan.xs:
            tile = model(image[None, :, y : y + 12, x : x + 12])[0].double().numpy()
            total[:, y : y + 12, x : x + 12] += w * tile
            norm[y : y + 12, x : x + 12] += w
    out = np.zeros((4, 37, 29), dtype=np.float32)

    def sink(r0, r1, values):
        out[:, r0:r1] = values.numpy()

    run_tiled(model, lambda r, c: image[:, r][:, :, c], plan, sink)  # the 2D entry point, through the grid engine
    np.testing.assert_allclose(out, total / norm, rtol=1e-5, atol=1e-6)
