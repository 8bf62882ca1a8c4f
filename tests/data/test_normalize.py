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
