"""The object-distance target by hand: 1 at each object's deepest pixel, 0 at its border, on the background and
along the border of two touching objects; ids of any value; anisotropic voxels."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from unetkit.data.distance import object_distance


def test_a_square_by_hand():
    labels = np.zeros((7, 7), np.int32)
    labels[1:6, 1:6] = 4  # a 5x5 square: distances to the nearest outside pixel 1, 2, 3 from the rim inwards
    out = object_distance(labels)
    np.testing.assert_allclose(out[3, 1:6], [1 / 3, 2 / 3, 1.0, 2 / 3, 1 / 3])
    assert out.dtype == np.float32 and out[0].max() == 0 and out[3, 3] == 1.0


def test_touching_objects_get_a_valley_along_their_common_border():
    labels = np.zeros((9, 16), np.int32)
    labels[1:8, 1:8] = 7
    labels[1:8, 8:15] = 2**31 - 1  # an id as large as int32 holds
    out = object_distance(labels)
    assert out[4, 7] == out[4, 8] == pytest.approx(1 / 4)  # the pixels on either side of the contact: 1 from it
    assert out[4, 4] == out[4, 11] == 1.0  # each object's centre
    mask_distance = ndimage.distance_transform_edt(labels > 0)
    assert mask_distance[4, 7] > mask_distance[4, 4] * 0.9  # the mask alone has no valley there


def test_anisotropic_voxels_and_bad_arguments():
    labels = np.zeros((5, 9, 9), np.int32)
    labels[1:4, 1:8, 1:8] = 1
    coarse = object_distance(labels, spacing=(3.0, 1.0, 1.0))
    fine = object_distance(labels)
    assert coarse[2, 4, 4] == fine[2, 4, 4] == 1.0
    # with 3 um slices, the first slice is 3 um from the outside; the in-plane rim 1 um: the slice falls less
    assert coarse[1, 4, 4] > fine[1, 4, 4]
    with pytest.raises(ValueError, match="`spacing` must give 3 positive sizes"):
        object_distance(labels, spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match="`labels` must hold integer instance ids"):
        object_distance(labels.astype(np.float32))
