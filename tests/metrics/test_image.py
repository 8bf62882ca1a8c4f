"""PSNR and SSIM against values computed by hand and against scikit-image."""

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from unetkit.metrics import psnr, ssim


def test_psnr_of_a_constant_offset():
    x = torch.rand(3, 1, 16, 16) * 0.8
    # MSE = 0.1^2 = 0.01 -> 10 log10(1 / 0.01) = 20 dB; with range 255: MSE 1 -> 48.13 dB
    torch.testing.assert_close(psnr(x + 0.1, x), torch.full((3,), 20.0))
    y = torch.zeros(1, 1, 4, 4)
    assert psnr(y + 1, y, data_range=255.0).item() == pytest.approx(20 * np.log10(255), rel=1e-6)


def test_ssim_of_identical_and_of_constant_images():
    x = torch.rand(2, 1, 20, 20)
    torch.testing.assert_close(ssim(x, x), torch.ones(2))
    # constant images a, b: SSIM = (2ab + C1) / (a^2 + b^2 + C1), C1 = (0.01 * range)^2
    a, b, c1 = 0.5, 0.25, 1e-4
    value = ssim(torch.full((1, 1, 20, 20), b), torch.full((1, 1, 20, 20), a)).item()
    assert value == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-4)


def test_ssim_agrees_with_scikit_image():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(4, 1, 32, 32, generator=gen)
    y = (x + 0.2 * torch.randn(4, 1, 32, 32, generator=gen)).clamp(0, 1)
    ours = ssim(y, x)
    theirs = [
        structural_similarity(
            y[i, 0].numpy(),
            x[i, 0].numpy(),
            data_range=1.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        for i in range(4)
    ]
    np.testing.assert_allclose(ours.numpy(), theirs, atol=0.02)


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="must both be"):
        psnr(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
