"""The digit-likeness score of generated samples: a classifier trained on real digits, asked about images."""

import numpy as np
import pytest
import torch

from unetkit.data.digits import load_digits
from unetkit.metrics.digit_score import (
    NO_DIGIT,
    digit_features,
    frechet_distance,
    no_digit_images,
    score_digits,
    train_digit_classifier,
)


@pytest.fixture(scope="module")
def trained():
    splits = load_digits("synthetic:digits", size=28, seed=0, n_train=1500, n_val=0, n_test=200)
    classifier = train_digit_classifier(
        torch.from_numpy(splits.train), torch.from_numpy(splits.train_labels), steps=250, seed=0
    )
    return classifier, splits


def test_real_digits_read_as_digits_and_noise_does_not(trained):
    classifier, splits = trained
    test = torch.from_numpy(splits.test)
    with torch.no_grad():
        accuracy = (classifier(test).argmax(1).numpy() == splits.test_labels).mean()
    assert accuracy > 0.9
    real = score_digits(classifier, test)
    assert real.confident > 0.7 and real.classes_seen == 10
    assert sum(real.counts) == round(real.confident * len(test))
    assert np.array_equal(real.predicted, classifier(test).argmax(1).tolist())
    blank = score_digits(classifier, torch.zeros(50, 1, 28, 28))
    assert blank.classes_seen <= 1  # one image repeated 50 times: at most one class
    noise = score_digits(classifier, torch.rand(200, 1, 28, 28, generator=torch.Generator().manual_seed(0)))
    assert noise.confident < 0.05 and noise.no_digit > 0.9
    # junk of a kind it never saw: one fixed scramble of the pixels (training scrambles each image anew)
    scrambled = test.flatten(1)[:, torch.randperm(28 * 28, generator=torch.Generator().manual_seed(1))]
    junk = score_digits(classifier, scrambled.view_as(test))
    assert junk.confident < 0.1 and junk.no_digit > 0.5
    made_up = no_digit_images(test, torch.from_numpy(splits.test_labels), torch.Generator().manual_seed(5))
    assert score_digits(classifier, made_up).confident < 0.3


def test_frechet_distance_is_small_for_real_digits_and_large_for_junk(trained):
    classifier, splits = trained
    train, test = torch.from_numpy(splits.train[:200]), torch.from_numpy(splits.test)
    real = frechet_distance(digit_features(classifier, train), digit_features(classifier, test))
    blurred = torch.nn.functional.avg_pool2d(test, 5, stride=1, padding=2)
    worse = frechet_distance(digit_features(classifier, train), digit_features(classifier, blurred))
    assert 0 <= real < worse
    a = torch.randn(500, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    assert frechet_distance(a, a + 2) == pytest.approx(12, rel=1e-6)  # a shift of 2 in each of 3 dimensions


def test_no_digit_images_keep_the_shape_and_the_ink():
    splits = load_digits("synthetic:digits", size=28, seed=0, n_train=30, n_val=0, n_test=0)
    x, y = torch.from_numpy(splits.train), torch.from_numpy(splits.train_labels)
    out = no_digit_images(x, y, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and not torch.equal(out, x)
    kind = torch.arange(len(x)) % 3
    # scrambles and patch shuffles move pixels, so the ink of each image stays
    torch.testing.assert_close(out[kind < 2].sum((1, 2, 3)), x[kind < 2].sum((1, 2, 3)))
    ink_before, ink_after = x[kind == 2].sum((1, 2, 3)), out[kind == 2].sum((1, 2, 3))
    assert (ink_after >= ink_before - 1e-3).all()  # overlays add ink, turns keep it
    assert NO_DIGIT == 10


def test_bad_arguments_are_named(trained):
    classifier, _ = trained
    with pytest.raises(ValueError, match="`threshold` must be in"):
        score_digits(classifier, torch.zeros(1, 1, 28, 28), threshold=1.0)
    with pytest.raises(ValueError, match=r"expected images of shape \(N, 1, S, S\)"):
        score_digits(classifier, torch.zeros(3, 28, 28))
    with pytest.raises(ValueError, match="expected images"):
        train_digit_classifier(torch.zeros(4, 1, 28, 28), torch.zeros(3))
    with pytest.raises(ValueError, match=r"two \(N, D\) feature sets"):
        frechet_distance(torch.zeros(5, 3), torch.zeros(5, 4))
