"""The block-wise watershed gives exactly the labels (and so the instance F1) of one pass over the whole
image or volume, wherever the block borders fall; objects larger than the margin come out whole and once."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from unetkit.data.distance import object_distance
from unetkit.data.scenes import nuclei_scene
from unetkit.infer.instances import instances_from_probs
from unetkit.infer.instances_tiled import RawArray, RawPlane, tiled_instances
from unetkit.metrics.instance import instance_counts, instance_scores


def _cells(shape=(260, 330), count=70, seed=1):
    """Foreground probabilities of overlapping elliptic cells (semi-axes 3-12 px), blurred and noisy; the
    probabilities saturate at 1 inside cells, so the distance map is full of ties, as real outputs are."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    fg = np.zeros(shape, np.float32)
    for _ in range(count):
        cy, cx, ry, rx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1]), *rng.uniform(3, 12, 2)
        fg = np.maximum(fg, np.clip(1.3 - ((yy - cy) / ry) ** 2 - ((xx - cx) / rx) ** 2, 0, 1))
    return np.clip(ndimage.gaussian_filter(fg, 1.0) + rng.normal(0, 0.03, shape), 0, 1).astype(np.float32)


def _tiled(tmp_path, fg, **kwargs):
    foreground = RawPlane(tmp_path / "fg.raw", *fg.shape, np.float32)
    foreground.append(fg)
    labels = RawPlane(tmp_path / "labels.raw", *fg.shape, np.int32)
    count, bands = tiled_instances(foreground, labels, **kwargs)
    out = np.concatenate(list(bands))
    foreground.close()
    labels.close()
    return count, out


@pytest.mark.parametrize(
    ("method", "options"),
    [("watershed", {}), ("watershed", {"min_size": 0}), ("watershed", {"smoothing": 1.0}), ("components", {})],
)
@pytest.mark.parametrize(("block", "margin"), [(64, 40), (100, 48)])
def test_tiled_labels_equal_the_untiled_ones(tmp_path, method, options, block, margin):
    fg = _cells()
    whole = instances_from_probs(fg, method, **options)
    count, tiled = _tiled(tmp_path, fg, method=method, block=block, margin=margin, **options)
    assert count == whole.max() > 20
    np.testing.assert_array_equal(tiled, whole)


def test_instance_f1_tiled_equals_untiled(tmp_path):
    fg = _cells(count=90, seed=3)
    truth = instances_from_probs(np.clip(fg + 0.1, 0, 1), "components")  # a reference to score against
    whole = instances_from_probs(fg, "watershed")
    _, tiled = _tiled(tmp_path, fg, method="watershed", block=80, margin=40)
    f1 = [
        instance_scores(instance_counts(truth, labels, (0.5,)), (0.5,), 0.5)["instance_f1"] for labels in (whole, tiled)
    ]
    assert f1[0] == f1[1] and 0.0 < f1[0] < 1.0


def test_an_object_larger_than_the_margin_comes_out_whole_and_once(tmp_path):
    fg = np.zeros((200, 200), np.float32)
    fg[20:180, 90:110] = 1.0  # a bar 160 px long: larger than any block's context
    fg[100, 50] = 1.0
    count, tiled = _tiled(tmp_path, fg, method="watershed", block=64, margin=16, min_size=0)
    assert count == 2
    assert np.unique(tiled[20:180, 90:110]).tolist() == [1]
    assert tiled[100, 50] == 2 and (tiled > 0).sum() == 160 * 20 + 1


def test_objects_removed_as_too_small_stay_background(tmp_path):
    fg = np.zeros((100, 100), np.float32)
    fg[10:13, 10:13] = 1.0  # 9 pixels, alone: removed by min_size 16
    fg[50:60, 50:60] = 1.0
    whole = instances_from_probs(fg, "watershed", min_size=16)
    count, tiled = _tiled(tmp_path, fg, method="watershed", block=64, margin=16, min_size=16)
    assert count == whole.max() == 1
    np.testing.assert_array_equal(tiled, whole)


def test_a_clump_that_its_owner_cannot_see_whole_has_no_holes(tmp_path):
    fg = np.zeros((200, 60), np.float32)
    fg[20:140, 20:40] = 1.0  # the last block sees its end whole, the owner of its top does not see it
    count, tiled = _tiled(tmp_path, fg, method="watershed", block=64, margin=16, min_size=0)
    assert count == 1
    np.testing.assert_array_equal(tiled > 0, fg > 0)


def test_raw_array_regions_in_a_stored_layout(tmp_path):
    data = np.random.default_rng(0).random((7, 5, 6)).astype(np.float32)
    raw = RawArray(tmp_path / "a.raw", data.shape, np.float32, layout=(2, 1, 0))  # NIfTI: stored Z, Y, X
    for z in range(0, 6, 4):
        raw.append(data[:, :, z : z + 4])
    assert np.fromfile(tmp_path / "a.raw", np.float32).tobytes() == data.transpose(2, 1, 0).tobytes()
    np.testing.assert_array_equal(raw.read_region((1, 2, 3), (6, 5, 5)), data[1:6, 2:5, 3:5])
    raw.write_region((2, 0, 1), np.zeros((3, 2, 4), np.float32))
    data[2:5, 0:2, 1:5] = 0
    np.testing.assert_array_equal(raw.read_region((0, 0, 0), data.shape), data)
    raw.close()


def _blobs(seed, shape=(48, 64, 64), largest=15):
    """Foreground probabilities of touching and separate 3-D nuclei (`nuclei_scene`), blurred and noisy, every
    component at most `largest` voxels along each axis (larger ones removed), and their object distance as a
    stand-in for a model's."""
    scene = nuclei_scene(shape, seed=seed, spacing=(1.0, 1.0, 1.0), radius=(3.0, 5.0), crowding=0.5)
    rng = np.random.default_rng(seed)
    fg = ndimage.gaussian_filter((scene.labels > 0).astype(np.float32), 1.0) * 1.2 - 0.1
    fg = np.clip(fg + rng.normal(0, 0.03, shape), 0, 1).astype(np.float32)
    comps, _ = ndimage.label(fg > 0.5, structure=np.ones((3, 3, 3)))
    for i, box in enumerate(ndimage.find_objects(comps), 1):
        if max(s.stop - s.start for s in box) > largest:
            fg[box][comps[box] == i] = 0.0
    return fg, object_distance(scene.labels)


def _tiled3d(tmp_path, fg, dist=None, layout=None, band_axis=0, **kwargs):
    arrays = [RawArray(tmp_path / f"{name}.raw", fg.shape, dtype, layout) for name, dtype in
              (("fg", np.float32), ("labels", np.int32), ("dist", np.float32))]  # fmt: skip
    foreground, labels, distance = arrays
    foreground.write_region((0, 0, 0), fg)
    if dist is not None:
        distance.write_region((0, 0, 0), dist)
    count, bands = tiled_instances(
        foreground, labels, distance=distance if dist is not None else None, band_axis=band_axis, **kwargs
    )
    out = np.concatenate(list(bands), axis=band_axis)
    for array in arrays:
        array.close()
    return count, out


@pytest.mark.parametrize(
    ("method", "options", "block"),
    [
        ("components", {}, 24),
        ("watershed", {}, 24),
        ("watershed", {}, 16),
        ("watershed", {"smoothing": 1.0, "min_size": 0}, 24),
        ("distance", {}, 24),
    ],
)
def test_tiled_labels_equal_the_untiled_ones_in_3d(tmp_path, method, options, block):
    fg, dist = _blobs(seed=1)
    dist = dist if method == "distance" else None
    whole = instances_from_probs(fg, method, spatial_dims=3, distance=dist, **options)
    count, tiled = _tiled3d(tmp_path, fg, dist, method=method, block=block, margin=20, **options)
    assert count == whole.max() > 50  # blocks of 16 or 24 and 20 of margin cut many of them
    np.testing.assert_array_equal(tiled, whole)


def test_3d_labels_in_the_niftis_layout_handed_on_along_its_last_axis(tmp_path):
    """Stored `Z, Y, X` (NIfTI's order) and handed on in slabs along Z: the labels of the array's own order."""
    fg, _ = _blobs(seed=2)
    whole = instances_from_probs(fg, "watershed", spatial_dims=3)
    count, tiled = _tiled3d(tmp_path, fg, layout=(2, 1, 0), band_axis=2, band_rows=5, block=24, margin=20)
    assert count == whole.max() > 50
    np.testing.assert_array_equal(tiled, whole)


def test_a_3d_object_larger_than_the_margin_comes_out_whole_and_once(tmp_path):
    fg = np.zeros((40, 50, 60), np.float32)
    fg[5:35, 20:30, 10:50] = 1.0  # a slab 30 x 10 x 40: larger than any block's context
    fg[20, 5, 5] = 1.0
    count, tiled = _tiled3d(tmp_path, fg, method="watershed", block=12, margin=6, min_size=0)
    assert count == 2
    assert np.unique(tiled[5:35, 20:30, 10:50]).tolist() == [1] and tiled[20, 5, 5] == 2
    assert (tiled > 0).sum() == 30 * 10 * 40 + 1
