"""Instance labels from probabilities: touching discs split by the watershed and not by connected
components, isolated objects kept whole, small objects dropped or merged, arguments checked; and the
`--instances` output of `unetkit predict`."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

from unetkit import create_model, save_model
from unetkit.cli.main import main
from unetkit.data import write_image
from unetkit.data.distance import object_distance
from unetkit.infer.instances import INSTANCE_METHODS, fit_instances, instances_from_probs


def _discs(shape: tuple[int, int], centres: list[tuple[int, int]], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    mask = np.zeros(shape, dtype=bool)
    for cy, cx in centres:
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    return mask


def _probs(mask: np.ndarray, low: float = 0.05, high: float = 0.95) -> np.ndarray:
    """`(2, H, W)` probabilities as `unetkit.predict` returns them for a sigmoid model."""
    fg = np.where(mask, high, low).astype(np.float32)
    return np.stack([1.0 - fg, fg])


def _objects(labels: np.ndarray) -> int:
    return int(np.unique(labels[labels > 0]).size)


def _instances(probs: np.ndarray, method: str, truth: np.ndarray | None = None, **kwargs) -> np.ndarray:
    """`instances_from_probs`; for `distance`, the distance a trained model would give: the normalised object
    distance of `truth` (default: the connected components of the foreground)."""
    if method == "distance":
        from scipy import ndimage

        fg = probs if probs.ndim == kwargs.get("spatial_dims", 2) else probs[-1]
        truth = ndimage.label(fg > 0.5)[0] if truth is None else truth
        kwargs["distance"] = object_distance(truth)
    return instances_from_probs(probs, method, **kwargs)


def test_touching_discs_are_one_component_and_two_watershed_objects():
    mask = _discs((48, 80), [(24, 28), (24, 50)], 12.0)  # centres 22 apart, radii 12: a neck 2 x 9 px wide
    probs = _probs(mask)
    components = instances_from_probs(probs, "components")
    watershed = instances_from_probs(probs, "watershed")
    assert _objects(components) == 1
    assert _objects(watershed) == 2
    for labels in (components, watershed):
        assert labels.dtype == np.int32 and labels.shape == mask.shape
        np.testing.assert_array_equal(labels > 0, mask)  # same foreground, only split
    assert set(np.unique(watershed).tolist()) == {0, 1, 2}
    left, right = watershed[24, 20], watershed[24, 58]
    assert left != right and left > 0 and right > 0


@pytest.mark.parametrize("method", INSTANCE_METHODS)
def test_an_isolated_disc_stays_one_object(method):
    mask = _discs((40, 40), [(20, 19)], 10.0)
    labels = _instances(_probs(mask), method)
    assert _objects(labels) == 1
    np.testing.assert_array_equal(labels > 0, mask)


@pytest.mark.parametrize("method", INSTANCE_METHODS)
def test_an_elongated_object_is_not_split(method):
    mask = np.zeros((40, 80), dtype=bool)
    yy, xx = np.mgrid[:40, :80]
    mask[((yy - 20) / 7.0) ** 2 + ((xx - 40) / 30.0) ** 2 <= 1] = True  # an ellipse, aspect 0.23
    assert _objects(_instances(_probs(mask), method)) == 1


@pytest.mark.parametrize("method", INSTANCE_METHODS)
def test_an_empty_prediction_has_no_objects(method):
    labels = _instances(_probs(np.zeros((17, 23), dtype=bool)), method)
    assert labels.shape == (17, 23) and labels.dtype == np.int32 and not labels.any()


@pytest.mark.parametrize("method", INSTANCE_METHODS)
def test_accepts_a_foreground_probability_map(method):
    mask = _discs((40, 40), [(20, 20)], 8.0)
    fg = np.where(mask, 0.9, 0.1).astype(np.float32)
    expected = _instances(_probs(mask, 0.1, 0.9), method)
    np.testing.assert_array_equal(_instances(fg, method), expected)
    np.testing.assert_array_equal(_instances(fg[None], method), expected)


def test_threshold_decides_the_foreground():
    fg = np.zeros((30, 30), dtype=np.float32)
    fg[5:15, 5:15] = 0.7
    fg[18:28, 18:28] = 0.3
    assert _objects(instances_from_probs(fg, "components", threshold=0.5)) == 1
    assert _objects(instances_from_probs(fg, "components", threshold=0.2)) == 2


@pytest.mark.parametrize("method", INSTANCE_METHODS)
def test_small_isolated_objects_are_removed(method):
    mask = _discs((40, 40), [(20, 20)], 8.0)
    mask[2:4, 2:4] = True  # 4 pixels
    labels = _instances(_probs(mask), method, min_size=10)
    assert _objects(labels) == 1 and not labels[2:4, 2:4].any()
    assert _objects(_instances(_probs(mask), method, min_size=0)) == 2


def test_small_watershed_fragments_are_merged_not_removed():
    mask = _discs((48, 80), [(24, 28), (24, 50)], 12.0)
    big = instances_from_probs(_probs(mask), "watershed", min_size=10_000)  # every object "small", none kept
    assert not big.any()
    labels = instances_from_probs(_probs(mask), "watershed", min_size=400)  # each disc has ~450 px
    np.testing.assert_array_equal(labels > 0, mask)


def _touching_pair(shape=(48, 80)) -> tuple[np.ndarray, np.ndarray]:
    """Two discs overlapping along a long border (no neck for the mask's watershed to find), and their labels."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    left = (yy - 24) ** 2 + (xx - 32) ** 2 <= 13**2
    right = (yy - 24) ** 2 + (xx - 50) ** 2 <= 13**2
    truth = np.where(left & (xx < 41), 1, 0) + np.where(right & ~(left & (xx < 41)), 2, 0)
    return left | right, truth.astype(np.int32)


def test_the_distance_method_splits_objects_along_the_learned_valley():
    mask, truth = _touching_pair()
    probs = _probs(mask)
    assert _objects(instances_from_probs(probs, "components")) == 1
    labels = _instances(probs, "distance", truth=truth)
    assert _objects(labels) == 2
    np.testing.assert_array_equal(labels > 0, mask)
    # each object is the true one, to within a pixel of the border
    agree = np.mean([(labels[truth == k] == np.bincount(labels[truth == k]).argmax()).mean() for k in (1, 2)])
    assert agree > 0.97


@pytest.mark.parametrize("method", INSTANCE_METHODS)
def test_volumes_take_every_method(method):
    zz, yy, xx = np.mgrid[:20, :40, :40]
    truth = np.zeros((20, 40, 40), np.int32)
    truth[(zz - 10) ** 2 + (yy - 20) ** 2 + (xx - 11) ** 2 <= 64] = 1
    truth[((zz - 10) ** 2 + (yy - 20) ** 2 + (xx - 29) ** 2 <= 64)] = 2  # apart: every method finds two
    fg = np.where(truth > 0, 0.9, 0.1).astype(np.float32)
    labels = _instances(np.stack([1 - fg, fg]), method, truth=truth, spatial_dims=3)
    assert labels.shape == truth.shape and _objects(labels) == 2
    np.testing.assert_array_equal(labels > 0, truth > 0)


def test_the_distance_method_needs_the_distance_map():
    with pytest.raises(ValueError, match="`distance` must be the model's distance map"):
        instances_from_probs(_probs(np.ones((8, 8), dtype=bool)), "distance")
    with pytest.raises(ValueError, match="`seed`"):
        instances_from_probs(_probs(np.ones((8, 8), dtype=bool)), "distance", distance=np.ones((8, 8)), seed=1.0)


def test_fit_instances_prefers_the_learned_separation_where_it_scores():
    mask, truth = _touching_pair()
    probs = [_probs(mask)]
    without = fit_instances(probs, [truth])
    assert without["method"] in ("components", "watershed") and "distance" not in without["tried"]
    fitted = fit_instances(probs, [truth], [object_distance(truth)])
    assert fitted["method"] == "distance" and fitted["f1"] == 1.0 and "seed" in fitted
    assert fitted["tried"]["components"] < 1.0  # one merged object for two: at most one match
    assert fit_instances([], []) == {}


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"method": "stardist"}, "method"),
        ({"threshold": 1.0}, "threshold"),
        ({"threshold": 0.0}, "threshold"),
        ({"min_size": -1}, "min_size"),
        ({"min_size": 2.5}, "min_size"),
        ({"h": 0.0}, "h"),
        ({"smoothing": -1.0}, "smoothing"),
        ({"sharpen": -0.5}, "sharpen"),
    ],
)
def test_bad_arguments_raise_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        instances_from_probs(_probs(np.ones((8, 8), dtype=bool)), **kwargs)


@pytest.mark.parametrize(
    "probs",
    [np.zeros((8,)), np.zeros((1, 1, 8, 8)), np.full((8, 8), 1.5), np.full((8, 8), np.nan), np.zeros((8, 8), int)],
)
def test_bad_probabilities_raise_naming_them(probs):
    with pytest.raises(ValueError, match="`probs`"):
        instances_from_probs(probs)


def test_predict_cli_writes_instance_labels(tmp_path):
    torch.manual_seed(0)
    model = create_model("unet", in_channels=1, base_channels=4, depth=2, num_classes=1)
    ckpt = tmp_path / "ckpt"
    extra = {"preprocess": {"mean": [0.5], "std": [0.25]}, "mask": {"mode": "binary", "num_classes": 2}}
    save_model(model, ckpt, extra=extra)
    rng = np.random.default_rng(0)
    write_image(tmp_path / "img.png", rng.integers(0, 255, (37, 41), dtype=np.uint8))
    out = tmp_path / "out"
    assert main(["predict", str(ckpt), str(tmp_path / "img.png"), "--out", str(out), "--instances", "--probs"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["img.png", "img_instances.tif", "img_probs.tif"]
    labels = tifffile.imread(out / "img_instances.tif")
    probs = tifffile.imread(out / "img_probs.tif")
    assert labels.shape == (37, 41) and labels.dtype == np.uint16
    np.testing.assert_array_equal(labels, instances_from_probs(probs, "watershed"))
    argv = ["predict", str(ckpt), str(tmp_path / "img.png"), "--out", str(out), "--instances", "components"]
    assert main(argv) == 0
    np.testing.assert_array_equal(tifffile.imread(out / "img_instances.tif"), instances_from_probs(probs, "components"))


def test_fitted_min_size_is_never_zero_and_removes_speckle_the_validation_lacked():
    # validation: clean discs, where every min_size scores alike; test: the same discs plus one-pixel speckle (a
    # sparse volume's false positives). A fitted min_size of 0 kept 2058 one-voxel objects where 24 were true.
    from scipy import ndimage

    centres = [(16, 16), (16, 48), (48, 16), (48, 48)]
    clean = _discs((64, 64), centres, 6)
    truth = ndimage.label(clean)[0]
    fitted = fit_instances([_probs(clean)], [truth])
    small = np.percentile(np.unique(truth[truth > 0], return_counts=True)[1], 5)
    assert fitted["min_size"] == int(0.5 * small) > 0  # the largest share among equal scores
    speckled = clean.copy()
    speckled[2::7, 60] = True  # isolated pixels away from the discs
    options = {key: fitted[key] for key in ("min_size", "h") if key in fitted}
    labels = instances_from_probs(_probs(speckled), fitted["method"], **options)
    assert _objects(labels) == 4
