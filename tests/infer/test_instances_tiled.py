"""The block-wise watershed gives exactly the labels (and so the instance F1) of one pass over the whole
image, wherever the block borders fall; objects larger than the margin come out whole and once."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from unetkit.infer.instances import instances_from_probs
from unetkit.infer.instances_tiled import RawPlane, tiled_instances
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
