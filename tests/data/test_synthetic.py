"""The synthetic generators: formats, determinism, the statistics each kind promises, speed."""

import numpy as np
import pytest

pytest.importorskip("scipy")
pytest.importorskip("skimage")

from scipy import ndimage

from unetkit.data.synthetic import SYNTHETIC_NAMES, make_synthetic
from unetkit.data.types import MaskInfo, SegmentationSet

N_IMAGES = 12
CHANNELS = {"cells": 1, "vessels": 1, "shapes": 3}


@pytest.fixture(scope="module", params=SYNTHETIC_NAMES)
def generated(request: pytest.FixtureRequest) -> tuple[str, SegmentationSet, MaskInfo]:
    data, info = make_synthetic(request.param, N_IMAGES, seed=3)
    return request.param, data, info


def _touching_pair(labels: np.ndarray) -> bool:
    """Whether some instance, dilated by one pixel, overlaps another instance."""
    for label in range(1, int(labels.max()) + 1):
        ring = ndimage.binary_dilation(labels == label) & (labels != label)
        if np.any(labels[ring] > 0):
            return True
    return False


def test_formats(generated: tuple[str, SegmentationSet, MaskInfo]) -> None:
    name, data, info = generated
    assert len(data) == N_IMAGES
    assert data.names == [f"{name}_{i:04d}" for i in range(N_IMAGES)]
    assert info.num_classes == 2
    for image, target in zip(data.images, data.targets, strict=True):
        assert image.shape == (CHANNELS[name], 128, 128) and image.dtype == np.float32
        assert image.min() >= 0.0 and image.max() <= 1.0
        assert target.shape == (128, 128) and target.dtype == np.int64
        assert set(np.unique(target).tolist()) <= {0, 1}
    assert (data.instances is not None) == (name == "cells")
    assert (data.fov is not None) == (name == "vessels")


def test_mask_info() -> None:
    assert make_synthetic("cells", 1)[1] == MaskInfo("instances", 2, [0, 1])
    assert make_synthetic("vessels", 1)[1] == MaskInfo("binary", 2, [0, 255])
    assert make_synthetic("shapes", 1)[1] == MaskInfo("binary", 2, [0, 255])


@pytest.mark.parametrize("name", SYNTHETIC_NAMES)
def test_deterministic_prefix_and_seeded(name: str) -> None:
    short, _ = make_synthetic(name, 3, size=64, seed=5)
    long, _ = make_synthetic(name, 6, size=64, seed=5)
    again, _ = make_synthetic(name, 3, size=64, seed=5)
    other, _ = make_synthetic(name, 3, size=64, seed=6)
    for i in range(3):
        np.testing.assert_array_equal(short.images[i], long.images[i])
        np.testing.assert_array_equal(short.targets[i], long.targets[i])
        np.testing.assert_array_equal(short.images[i], again.images[i])
        assert not np.array_equal(short.images[i], other.images[i])
    assert long.names[:3] == short.names
    # images within one set differ too
    assert not np.array_equal(long.images[0], long.images[1])


def test_kinds_differ_for_one_seed() -> None:
    cells, _ = make_synthetic("cells", 1, size=64)
    vessels, _ = make_synthetic("vessels", 1, size=64)
    assert not np.array_equal(cells.targets[0], vessels.targets[0])


@pytest.mark.parametrize("name", SYNTHETIC_NAMES)
@pytest.mark.parametrize("size", [32, 77])
def test_small_and_odd_sizes(name: str, size: int) -> None:
    data, _ = make_synthetic(name, 2, size=size)
    assert data.images[0].shape == (CHANNELS[name], size, size)
    assert data.targets[0].shape == (size, size)


def test_cells_instances() -> None:
    data, _ = make_synthetic("cells", N_IMAGES, seed=1)
    assert data.instances is not None
    counts = [int(labels.max()) for labels in data.instances]
    assert np.mean(counts) >= 8
    touching = [_touching_pair(labels) for labels in data.instances]
    assert np.mean(touching) >= 0.75
    for labels, target, image in zip(data.instances, data.targets, data.images, strict=True):
        assert labels.dtype == np.int32
        np.testing.assert_array_equal(target, (labels > 0).astype(np.int64))
        # labels are 1..K without gaps
        assert set(np.unique(labels[labels > 0]).tolist()) == set(range(1, int(labels.max()) + 1))
        # cells clearly brighter than the background
        assert image[0][target == 1].mean() > image[0][target == 0].mean() + 0.25


def test_vessels_fov_and_statistics() -> None:
    data, _ = make_synthetic("vessels", N_IMAGES, seed=2)
    assert data.fov is not None
    rows, cols = np.mgrid[0:128, 0:128]
    centre = 127 / 2
    distance = np.hypot(rows - centre, cols - centre)
    for image, target, fov in zip(data.images, data.targets, data.fov, strict=True):
        assert fov.dtype == np.bool_
        # a centred disc of radius about 0.45 * size
        assert fov[distance <= 0.43 * 128].all() and not fov[distance >= 0.47 * 128].any()
        assert not target[~fov].any()
        assert 0.02 <= target[fov].mean() <= 0.25
        vessel = image[0][target == 1].mean()
        background = image[0][(target == 0) & fov].mean()
        assert vessel < background - 0.05
        assert image[0][~fov].mean() < 0.1 < background


def test_shapes_statistics() -> None:
    data, _ = make_synthetic("shapes", N_IMAGES, seed=4)
    fractions = [target.mean() for target in data.targets]
    assert min(fractions) >= 0.01 and max(fractions) <= 0.4
    # the affine moves, turns and scales the logo: masks differ pairwise
    flat = np.stack([target.ravel() for target in data.targets])
    overlap = (flat @ flat.T) / np.maximum(flat.sum(axis=1)[:, None], 1)
    assert np.all(overlap[~np.eye(N_IMAGES, dtype=bool)] < 0.95)
    assert len({target.sum() for target in data.targets}) > N_IMAGES // 2
    # the logo's colour stands out from its surroundings
    for image, target in zip(data.images, data.targets, strict=True):
        inside = image[:, target == 1].mean(axis=1)
        ring = ndimage.binary_dilation(target == 1, iterations=3) & (target == 0)
        assert np.abs(inside - image[:, ring].mean(axis=1)).max() > 0.1


@pytest.mark.parametrize("name", SYNTHETIC_NAMES)
def test_64_images_of_128(name: str) -> None:  # (speed: `unetkit bench`; no wall-clock assertion here)
    data, _ = make_synthetic(name, 64, size=128)
    assert len(data.images) == 64 and all(image.shape[-2:] == (128, 128) for image in data.images)


def test_name_is_case_insensitive() -> None:
    data, _ = make_synthetic("Cells", 1, size=32)
    assert data.names == ["cells_0000"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "cels", "n": 1}, r"`name`.*'cels'.*did you mean 'cells'"),
        ({"name": "cells", "n": 0}, r"`n` must be an integer >= 1, got 0"),
        ({"name": "cells", "n": 2.0}, r"`n` must be an integer"),
        ({"name": "cells", "n": True}, r"`n` must be an integer"),
        ({"name": "cells", "n": 1, "size": 31}, r"`size` must be an integer >= 32, got 31"),
        ({"name": "cells", "n": 1, "seed": -1}, r"`seed` must be an integer >= 0, got -1"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_synthetic(**kwargs)
