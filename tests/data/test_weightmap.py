"""The U-Net weight map (eq. 2 of Ronneberger et al. 2015) against distances computed by hand."""

import math

import numpy as np
import pytest

pytest.importorskip("scipy")

from unetkit.data.weightmap import class_balance_weights, unet_weight_map

HEIGHT, WIDTH = 20, 30
# two 7 x 7 squares as (top, left, bottom, right), inclusive; `gap` background columns between them
SQUARE_A = (5, 5, 11, 11)


def _square_b(gap: int) -> tuple[int, int, int, int]:
    left = SQUARE_A[3] + 1 + gap
    return (5, left, 11, left + 6)


def _two_squares(gap: int) -> np.ndarray:
    labels = np.zeros((HEIGHT, WIDTH), dtype=np.int32)
    for value, (top, left, bottom, right) in ((1, SQUARE_A), (2, _square_b(gap))):
        labels[top : bottom + 1, left : right + 1] = value
    return labels


def _distance_to_square(row: int, col: int, square: tuple[int, int, int, int]) -> float:
    """Euclidean distance from pixel (row, col) to the nearest pixel of an axis-aligned square."""
    top, left, bottom, right = square
    d_row = max(top - row, 0, row - bottom)
    d_col = max(left - col, 0, col - right)
    return math.hypot(d_row, d_col)


def _hand_weights(gap: int) -> tuple[float, float]:
    """Balanced w_c (background, foreground): N / (2 n_c)."""
    n = HEIGHT * WIDTH
    n_fg = 2 * 7 * 7
    return n / (2 * (n - n_fg)), n / (2 * n_fg)


@pytest.mark.parametrize("gap", [1, 2])
def test_two_squares_match_hand_computed_map(gap: int) -> None:
    w0, sigma = 10.0, 5.0
    labels = _two_squares(gap)
    square_b = _square_b(gap)
    w_bg, w_fg = _hand_weights(gap)
    weights = unet_weight_map(labels, w0=w0, sigma=sigma)
    assert weights.dtype == np.float32 and weights.shape == (HEIGHT, WIDTH)

    expected = np.empty((HEIGHT, WIDTH))
    for row in range(HEIGHT):
        for col in range(WIDTH):
            if labels[row, col] > 0:
                expected[row, col] = w_fg
                continue
            d1, d2 = sorted((_distance_to_square(row, col, SQUARE_A), _distance_to_square(row, col, square_b)))
            expected[row, col] = w_bg + w0 * math.exp(-((d1 + d2) ** 2) / (2 * sigma**2))
    np.testing.assert_allclose(weights, expected, rtol=1e-6)

    # a gap pixel beside both squares: d1 = 1 and d2 = gap
    gap_col = SQUARE_A[3] + 1
    assert weights[8, gap_col] == pytest.approx(w_bg + w0 * math.exp(-((1 + gap) ** 2) / (2 * sigma**2)), rel=1e-6)
    # above the gap: (3, 12) is sqrt(2^2 + 1^2) from A and sqrt(2^2 + gap^2) from B
    d_sum = math.sqrt(5) + math.sqrt(4 + gap**2)
    assert weights[3, gap_col] == pytest.approx(w_bg + w0 * math.exp(-(d_sum**2) / (2 * sigma**2)), rel=1e-6)
    # inside the squares: w_c(foreground) only
    np.testing.assert_allclose(weights[labels > 0], w_fg, rtol=1e-6)
    # far background: the border term has vanished
    assert weights[HEIGHT - 1, WIDTH - 1] == pytest.approx(w_bg, abs=1e-6)


@pytest.mark.parametrize("gap", [1, 2])
def test_border_term_peaks_in_the_gap(gap: int) -> None:
    labels = _two_squares(gap)
    w_bg, w_fg = _hand_weights(gap)
    border = unet_weight_map(labels) - np.where(labels > 0, w_fg, w_bg)
    row, col = np.unravel_index(np.argmax(border), border.shape)
    assert SQUARE_A[3] < col < _square_b(gap)[1]
    assert SQUARE_A[0] <= row <= SQUARE_A[2]


def test_no_class_weights_and_no_border_is_all_ones() -> None:
    weights = unet_weight_map(_two_squares(1), w0=0.0, class_weights=None)
    np.testing.assert_array_equal(weights, np.ones((HEIGHT, WIDTH), dtype=np.float32))


def test_explicit_class_weights() -> None:
    labels = _two_squares(1)
    weights = unet_weight_map(labels, w0=0.0, class_weights=np.array([0.5, 2.0]))
    np.testing.assert_array_equal(weights, np.where(labels > 0, 2.0, 0.5).astype(np.float32))


def test_single_instance_has_no_border_term() -> None:
    labels = np.zeros((HEIGHT, WIDTH), dtype=np.int64)
    labels[5:12, 5:12] = 7
    weights = unet_weight_map(labels, class_weights=None)
    np.testing.assert_array_equal(weights, np.ones((HEIGHT, WIDTH), dtype=np.float32))


def test_all_background_is_positive() -> None:
    weights = unet_weight_map(np.zeros((4, 5), dtype=np.uint8))
    np.testing.assert_array_equal(weights, np.ones((4, 5), dtype=np.float32))


def test_label_values_do_not_matter() -> None:
    labels = _two_squares(1)
    relabelled = np.where(labels == 1, 300, np.where(labels == 2, 12, 0)).astype(np.uint16)
    np.testing.assert_array_equal(unet_weight_map(relabelled), unet_weight_map(labels))


def test_balanced_class_weights() -> None:
    target = (_two_squares(1) > 0).astype(np.int64)
    weights = class_balance_weights(target, 2)
    n_fg = int(target.sum())
    n_bg = target.size - n_fg
    assert weights[target].mean() == pytest.approx(1.0)
    assert weights[1] / weights[0] == pytest.approx(n_bg / n_fg)


def test_balanced_class_weights_absent_class() -> None:
    target = np.array([[0, 0, 2], [2, 2, 2]])
    weights = class_balance_weights(target, 3)
    assert weights[1] == 0.0
    assert weights[target].mean() == pytest.approx(1.0)
    assert weights[0] / weights[2] == pytest.approx(4 / 2)


def test_truncation_matches_full_distance_stack() -> None:
    from scipy import ndimage

    rng = np.random.default_rng(0)
    labels = np.zeros((64, 80), dtype=np.int32)
    for k in range(1, 9):
        top, left = rng.integers(0, 56), rng.integers(0, 72)
        labels[top : top + rng.integers(2, 8), left : left + rng.integers(2, 8)] = k
    ids = [k for k in np.unique(labels) if k > 0]
    stack = np.stack([ndimage.distance_transform_edt(labels != k) for k in ids])  # (N, H, W)
    two = np.partition(stack, 1, axis=0)[:2]
    sigma, w0 = 3.0, 10.0
    border = w0 * np.exp(-((two[0] + two[1]) ** 2) / (2 * sigma**2)) * (labels == 0)
    expected = border + 1.0
    np.testing.assert_allclose(unet_weight_map(labels, w0=w0, sigma=sigma, class_weights=None), expected, atol=1e-6)


def test_256_with_40_instances_is_positive_and_finite() -> None:
    """(Its speed is measured by `unetkit bench`, not asserted here: no wall-clock assertion in a unit test.)"""
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[:256, :256]
    labels = np.zeros((256, 256), dtype=np.int32)
    for k in range(1, 41):
        centre = rng.integers(8, 248, size=2)
        labels[(rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= rng.integers(9, 64)] = k
    weights = unet_weight_map(labels)
    assert weights.shape == (256, 256) and np.all(weights > 0) and np.all(np.isfinite(weights))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"w0": -1.0}, "`w0`"),
        ({"sigma": 0.0}, "`sigma`"),
        ({"sigma": float("nan")}, "`sigma`"),
        ({"class_weights": "inverse"}, "`class_weights`"),
        ({"class_weights": np.array([1.0, 2.0, 3.0])}, "`class_weights`"),
        ({"class_weights": np.array([1.0, 0.0])}, "`class_weights`"),
    ],
)
def test_bad_options_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        unet_weight_map(_two_squares(1), **kwargs)


@pytest.mark.parametrize(
    "instances",
    [np.zeros((2, 3, 4), dtype=np.int32), np.zeros((3, 4), dtype=np.float32), np.full((3, 4), -1)],
)
def test_bad_instances_raise(instances: np.ndarray) -> None:
    with pytest.raises(ValueError, match="`instances`"):
        unet_weight_map(instances)


def test_class_balance_weights_validation() -> None:
    with pytest.raises(ValueError, match="`target`"):
        class_balance_weights(np.array([0, 3]), 2)
    with pytest.raises(ValueError, match="`num_classes`"):
        class_balance_weights(np.array([0, 1]), 0)


def test_touching_borders_split_two_touching_squares_and_leave_lone_edges():
    from scipy import ndimage

    from unetkit.data.weightmap import touching_borders

    labels = np.zeros((8, 12), np.int32)
    labels[2:6, 1:5] = 1
    labels[2:6, 5:9] = 2  # touches square 1 along columns 4 | 5
    labels[0:2, 10:12] = 3  # alone
    border = touching_borders(labels)
    assert border[2:6, 4].all() and border[2:6, 5].all()  # one pixel on each side of the contact
    assert border.sum() == 8 and not border[labels == 3].any() and not border[labels == 0].any()
    separated = (labels > 0) & ~border
    assert ndimage.label(separated)[1] == 3  # the touching pair is now two components
    assert touching_borders(labels, width=2)[2:6, 3:7].all()
    with pytest.raises(ValueError, match="`width` must be an integer >= 1, got 0"):
        touching_borders(labels, width=0)
