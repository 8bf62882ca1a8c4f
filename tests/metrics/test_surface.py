"""Surface distances against hand-computed geometric cases (nested squares, shifted boxes, concentric spheres) and
against MONAI's implementations on random shapes with anisotropic spacing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from unetkit.metrics.surface import (
    average_surface_distance,
    hausdorff_distance,
    normalized_surface_dice,
    surface_distances,
    surface_scores,
    surface_voxels,
)


def _squares() -> tuple[np.ndarray, np.ndarray]:
    """A 20x20 square (rows and columns 5..24) around a concentric 14x14 one (8..21)."""
    outer = np.zeros((30, 30), bool)
    outer[5:25, 5:25] = True
    inner = np.zeros((30, 30), bool)
    inner[8:22, 8:22] = True
    return outer, inner


def test_nested_squares_by_hand():
    """Inner ring (52 voxels): every voxel 3 from the outer ring. Outer ring (76 voxels): 56 face the inner ring at
    3; at each corner (5, 5) is sqrt(18) from (8, 8), (5, 6) and (6, 5) are sqrt(13), (5, 7) and (7, 5) sqrt(10)."""
    outer, inner = _squares()
    assert surface_voxels(outer).sum() == 76 and surface_voxels(inner).sum() == 52
    from_outer, from_inner = surface_distances(outer, inner)
    np.testing.assert_allclose(from_inner, 3.0)
    expected = sorted([3.0] * 56 + [math.sqrt(10)] * 8 + [math.sqrt(13)] * 8 + [math.sqrt(18)] * 4)
    np.testing.assert_allclose(np.sort(from_outer), expected)
    # 95th percentile of the 76 outer distances (linear interpolation): position 75 * 0.95 = 71.25
    hd95 = math.sqrt(13) + 0.25 * (math.sqrt(18) - math.sqrt(13))
    assert hausdorff_distance(outer, inner) == pytest.approx(hd95)
    assert hausdorff_distance(outer, inner, percentile=100) == pytest.approx(math.sqrt(18))
    asd = (52 * 3 + 56 * 3 + 4 * (math.sqrt(18) + 2 * math.sqrt(13) + 2 * math.sqrt(10))) / (52 + 76)
    assert average_surface_distance(outer, inner) == pytest.approx(asd)
    assert normalized_surface_dice(outer, inner, 3.0) == pytest.approx((52 + 56) / 128)
    assert normalized_surface_dice(outer, inner, 3.2) == pytest.approx((52 + 64) / 128)
    assert normalized_surface_dice(outer, inner, 2.9) == 0.0
    assert hausdorff_distance(inner, outer) == hausdorff_distance(outer, inner)  # symmetric


@pytest.mark.parametrize(("axis", "shift"), [(0, 2), (1, 3), (2, 1)])
def test_shifted_boxes_give_the_shift_in_millimetres(axis, shift):
    """A 10^3 cube and the same cube moved `shift` voxels along `axis`: the farthest surface voxel is the moved
    face, `shift` voxels from the other surface, so HD = shift * spacing[axis] (and no axis is mixed up)."""
    spacing = (2.0, 0.5, 1.25)
    a = np.zeros((24, 24, 24), bool)
    a[5:15, 5:15, 5:15] = True
    b = np.roll(a, shift, axis=axis)
    assert hausdorff_distance(a, b, spacing, percentile=100) == pytest.approx(shift * spacing[axis])
    assert normalized_surface_dice(a, b, tolerance=shift * spacing[axis], spacing=spacing) == 1.0
    assert normalized_surface_dice(a, b, tolerance=shift * spacing[axis] - 1e-6, spacing=spacing) < 1.0


def test_concentric_spheres_are_their_radii_apart():
    """Spheres of radius 12 and 8 mm on a 1 x 0.5 x 0.5 mm grid: surface distances scatter within a voxel of 4 mm."""
    spacing = (1.0, 0.5, 0.5)
    grid = np.indices((40, 80, 80)).astype(np.float64)
    radius = np.sqrt(sum(((g - c) * s) ** 2 for g, c, s in zip(grid, (20, 40, 40), spacing, strict=True)))
    big, small = radius <= 12.0, radius <= 8.0
    forward, backward = surface_distances(big, small, spacing)
    both = np.concatenate([forward, backward])
    assert both.min() > 4.0 - 1.0 and both.max() < 4.0 + 1.0
    assert average_surface_distance(big, small, spacing) == pytest.approx(4.0, abs=0.5)
    assert normalized_surface_dice(big, small, tolerance=5.0, spacing=spacing) == 1.0


def test_empty_masks_follow_the_policy():
    empty, full = np.zeros((4, 5, 6), bool), np.ones((4, 5, 6), bool)
    assert hausdorff_distance(empty, empty) == 0.0 and average_surface_distance(empty, empty) == 0.0
    assert normalized_surface_dice(empty, empty, 1.0) == 1.0
    assert hausdorff_distance(full, empty) is None and average_surface_distance(empty, full) is None
    assert normalized_surface_dice(full, empty, 1.0) == 0.0
    assert hausdorff_distance(full, full) == 0.0  # the border of the volume is the surface


def test_per_class_scores_and_headline_on_a_3d_label_map():
    target = np.zeros((12, 12, 12), np.int64)
    target[2:6, 2:6, 2:6] = 1
    target[7:11, 7:11, 7:11] = 2
    pred = target.copy()
    pred[2:6, 2:6, 2:6] = 0
    pred[3:7, 2:6, 2:6] = 1  # class 1 moved one voxel along axis 0
    headline, per_class = surface_scores(pred, target, 4, spacing=(3.0, 1.0, 1.0), tolerance=2.0)
    assert per_class["2"] == {"hd95": 0.0, "asd": 0.0, "nsd": 1.0}
    assert per_class["1"]["hd95"] == pytest.approx(3.0)  # one voxel of 3 mm
    assert 0 < per_class["1"]["nsd"] < 1  # the moved faces are 3 mm off, beyond the 2 mm tolerance
    assert per_class["3"] == {"hd95": 0.0, "asd": 0.0, "nsd": 1.0}  # absent from both
    assert headline["hd95"] == pytest.approx(1.0) and headline["nsd"] == pytest.approx((per_class["1"]["nsd"] + 2) / 3)
    binary_headline, _ = surface_scores((pred == 1).astype(int), (target == 1).astype(int), 2)
    assert binary_headline["hd95"] == pytest.approx(1.0)  # in voxels without spacing


def _blobs(seed: int, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    smooth = [ndimage.gaussian_filter(rng.standard_normal(shape), 2.5) for _ in range(2)]
    return smooth[0] > 0.05, smooth[1] > 0.05


@pytest.mark.filterwarnings("ignore::FutureWarning")  # MONAI 1.6 warns about its own deprecated argument
@pytest.mark.parametrize(("seed", "shape", "spacing"), [(0, (40, 36), (0.7, 1.9)), (1, (20, 24, 18), (2.5, 0.8, 1.1))])
def test_agrees_with_monai(seed, shape, spacing):
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance, compute_surface_dice

    pred, target = _blobs(seed, shape)
    p = torch.from_numpy(pred)[None, None].float()
    t = torch.from_numpy(target)[None, None].float()
    onehot_p, onehot_t = torch.cat([1 - p, p], 1), torch.cat([1 - t, t], 1)
    hd95 = compute_hausdorff_distance(onehot_p, onehot_t, percentile=95, spacing=list(spacing)).item()
    asd = compute_average_surface_distance(onehot_p, onehot_t, symmetric=True, spacing=list(spacing)).item()
    nsd = compute_surface_dice(onehot_p, onehot_t, class_thresholds=[1.5], spacing=list(spacing)).item()
    assert hausdorff_distance(pred, target, spacing) == pytest.approx(hd95, rel=1e-5)
    assert average_surface_distance(pred, target, spacing) == pytest.approx(asd, rel=1e-5)
    assert normalized_surface_dice(pred, target, 1.5, spacing) == pytest.approx(nsd, rel=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"spacing": (1.0, 0.0)}, "`spacing` must give 2 positive numbers"),
        ({"spacing": (1.0, 1.0, 1.0)}, "`spacing` must give 2 positive numbers"),
        ({"percentile": 101}, r"`percentile` must be in \[0, 100\]"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, message):
    outer, inner = _squares()
    with pytest.raises(ValueError, match=message):
        hausdorff_distance(outer, inner, **kwargs)
    with pytest.raises(ValueError, match="one shape"):
        surface_distances(outer, inner[:-1])
    with pytest.raises(ValueError, match="`tolerance` must be a finite number >= 0"):
        normalized_surface_dice(outer, inner, -1.0)
    with pytest.raises(ValueError, match="2-D or 3-D"):
        surface_distances(np.ones(5, bool), np.ones(5, bool))
