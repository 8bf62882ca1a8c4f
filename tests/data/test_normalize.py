"""Intensity normalisation: the nnU-Net rules by hand, dtype / range invariance, and the fingerprint's choice."""

import numpy as np
import pytest

from unetkit.data.normalize import Normalization, choose_scheme, fit_normalization, stat_stride


def test_per_image_percentile_clipping_and_z_score_by_hand():
    image = np.arange(1000, dtype=np.float32).reshape(1, 20, 50)
    image[0, 0, 0] = -1e6  # an outlier the clipping removes
    out = Normalization("image").apply(image)
    low, high = np.percentile(image, [0.5, 99.5])
    clipped = np.clip(image.astype(np.float64), low, high)
    np.testing.assert_allclose(out, (clipped - clipped.mean()) / clipped.std(), rtol=1e-5, atol=1e-5)
    assert out.dtype == np.float32 and abs(float(out.mean())) < 1e-5


def test_the_same_picture_in_any_dtype_or_range_normalises_alike():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 236, (1, 40, 50))  # a low-range picture: 0..235
    as_uint16 = values.astype(np.uint16).astype(np.float32)  # a uint16 file read in its own units
    as_uint8 = values.astype(np.uint8).astype(np.float32)
    as_float = (values / 255.0).astype(np.float32)  # the float32 copy in [0, 1]
    norm = Normalization("image")
    a, b, c = (norm.apply(x) for x in (as_uint16, as_uint8, as_float))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, c, atol=1e-5)


def test_joint_statistics_keep_colour_relations():
    rgb = np.stack([np.full((4, 4), 10.0), np.full((4, 4), 20.0), np.arange(16.0).reshape(4, 4)]).astype(np.float32)
    joint = fit_normalization([rgb], scheme="image", dtypes=["uint8"])
    assert joint.joint
    out = joint.apply(rgb)
    assert out[1, 0, 0] > out[0, 0, 0]  # red < green stays so with one set of statistics
    separate = fit_normalization([rgb], scheme="image", dtypes=["float32"])
    np.testing.assert_allclose(separate.apply(rgb)[:2], 0.0, atol=1e-6)  # each constant channel z-scores to 0


def test_dataset_scheme_uses_the_foreground_of_all_training_images():
    a = np.array([[[-1000.0, 40.0], [100.0, 200.0]]], np.float32)
    b = np.array([[[-1000.0, 50.0], [150.0, -1000.0]]], np.float32)
    fg = [np.array([[False, False], [True, True]]), np.array([[False, False], [True, False]])]
    norm = fit_normalization([a, b], scheme="dataset", foreground=fg)
    pooled = np.array([100.0, 200.0, 150.0])
    low, high = np.percentile(pooled, [0.5, 99.5])
    clipped = np.clip(pooled, low, high)
    assert norm.low == [pytest.approx(low)] and norm.high == [pytest.approx(high)]
    assert norm.mean == [pytest.approx(clipped.mean())] and norm.std == [pytest.approx(clipped.std())]
    # -1000 (air) is clipped to the foreground's 0.5 percentile, identically in every image
    assert norm.apply(a)[0, 0, 0] == pytest.approx((low - clipped.mean()) / clipped.std(), rel=1e-5)
    again = Normalization.from_dict(norm.to_dict())
    np.testing.assert_array_equal(again.apply(b), norm.apply(b))


def test_the_fingerprint_rule_absolute_units_or_per_image():
    ct = [np.array([-1000.0 + i, 180.0 - 3 * i]) for i in range(5)]  # air at -1000 in every slice
    assert choose_scheme(ct, ["float32"] * 5)[0] == "dataset"
    exposures = [np.array([5.0, 60.0 * (1 + i)]) for i in range(5)]  # gain changes image to image
    scheme, reason = choose_scheme(exposures, ["uint16"] * 5)
    assert scheme == "image" and "vary by" in reason
    assert choose_scheme(ct, ["float32", "int16", "float32", "float32", "float32"])[0] == "image"


def test_large_images_use_a_strided_subsample():
    assert stat_stride(100, 100) == 1
    assert stat_stride(4096, 4096) == 4  # 16 M pixels -> every 4th row and column, 1 M pixels


def test_median_centre_by_hand_keeps_a_sparse_tiles_background_where_a_crowded_ones_is():
    rng = np.random.default_rng(1)
    background = 100 + rng.normal(0, 3, (1, 64, 64))
    crowded, sparse = background.copy(), background.copy()
    crowded[:, :, :24] += 300  # 37% of the tile is nuclei
    sparse[:, :4, :4] += 300  # a single nucleus
    norm = Normalization("image", center="median")
    for tile in (crowded, sparse):
        low, high = np.percentile(tile, [0.5, 99.5])
        clipped = np.clip(tile, low, high)
        expected = (clipped - np.median(clipped)) / clipped.std()
        np.testing.assert_allclose(norm.apply(tile.astype(np.float32)), expected, rtol=1e-4, atol=1e-4)
    # the background sits near 0 in both tiles; centred on the mean it sits far below 0 in the crowded one only
    back = [float(np.median(norm.apply(t.astype(np.float32))[:, 32:, 40:])) for t in (crowded, sparse)]
    assert abs(back[0]) < 0.1 and abs(back[1]) < 0.1
    mean_centred = Normalization("image", center="mean").apply(crowded.astype(np.float32))
    assert float(np.median(mean_centred[:, 32:, 40:])) < -0.5
    # the spec round-trips; checkpoints written before the choice existed keep the mean
    assert Normalization.from_dict(norm.to_dict()).center == "median"
    assert Normalization.from_dict({"scheme": "image"}).center == "mean"
    assert fit_normalization([crowded.astype(np.float32)], scheme="image").center == "median"


def test_tiles_of_one_setting_normalise_as_a_data_set_when_the_masks_say_so():
    """Percentiles that vary with how many objects a tile holds, objects and background that keep their levels."""
    rng = np.random.default_rng(2)
    images, masks = [], []
    for columns in (0.1, 10, 20, 30):  # a sparse tile (5 pixels of one nucleus) beside crowded ones
        image = 100 + rng.normal(0, 2, (1, 50, 50))
        mask = np.zeros((50, 50), bool)
        mask[:, : int(columns)] = True
        if columns < 1:
            mask[:5, 0] = True
        image[:, mask] += 400
        images.append(image.astype(np.float32))
        masks.append(mask)
    percentiles = [np.percentile(x.reshape(1, -1), (0.5, 99.5), axis=1) for x in images]
    scheme, _ = choose_scheme(percentiles, ["uint16"] * 4)
    assert scheme == "image"  # by the percentiles alone: they move with the content
    norm = fit_normalization(images, dtypes=["uint16"] * 4, foreground=masks)
    assert norm.scheme == "dataset" and "keep their intensities" in norm.reason
    gains = [x * g for x, g in zip(images, (1.0, 1.8, 2.6, 3.4), strict=True)]  # exposure changes: per image
    assert fit_normalization(gains, dtypes=["uint16"] * 4, foreground=masks).scheme == "image"
