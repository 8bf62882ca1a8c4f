"""The distance target that separates touching objects: each object's Euclidean distance to its own outline,
divided by its largest value, so 1 at the object's centre, falling to 0 at its border and on the background.

This is the object probability of StarDist (Schmidt et al. 2018, arXiv:1806.03535, Sec. 2: "the (normalized)
Euclidean distance to the nearest background pixel", where an object's neighbours count as its background)
and the distance map of deep-watershed segmentation (Bai & Urtasun 2017): where two objects touch, the map has
a valley down to 0 along their common border, even though the foreground mask has none, so seeds taken where
it is high (`unetkit.infer.instances`, method `distance`) fall one per object. Normalising per object makes it
independent of the object's size, of the pixel size and of zoom augmentation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["object_distance"]


def object_distance(labels: np.ndarray, spacing: Sequence[float] | None = None) -> np.ndarray:
    """The normalised inner distance of every object of an instance label image, 2-D or 3-D.

    Args:
        labels: integer instance ids, 0 = background, `(H, W)` or `(D, H, W)`.
        spacing: the pixel size per axis (anisotropic voxels); default 1 on every axis.

    Returns:
        float32 of `labels`' shape: in (0, 1] inside objects (1 at each object's deepest pixel), 0 elsewhere.

    Raises:
        ValueError: `labels` is not an integer array, or `spacing` does not give one positive size per axis.
    """
    from scipy import ndimage

    labels = np.asarray(labels)
    if labels.dtype.kind not in "iub":
        raise ValueError(f"`labels` must hold integer instance ids, got dtype {labels.dtype}")
    step = None
    if spacing is not None:
        step = tuple(float(s) for s in spacing)
        if len(step) != labels.ndim or not all(s > 0 for s in step):
            raise ValueError(f"`spacing` must give {labels.ndim} positive sizes, got {spacing!r}")
    ids, inverse = np.unique(labels, return_inverse=True)
    labels = (inverse.reshape(labels.shape) + (0 if ids[0] == 0 else 1)).astype(np.int64)  # ids 1..N: any values
    out = np.zeros(labels.shape, dtype=np.float32)
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        # one pixel of margin: an object that fills its box still has background around it
        shape: tuple[int, ...] = labels.shape
        padded = tuple(slice(max(cut.start - 1, 0), min(cut.stop + 1, n)) for cut, n in zip(box, shape, strict=True))
        inside = labels[padded] == index
        distance = ndimage.distance_transform_edt(np.pad(inside, 1), sampling=step)[(slice(1, -1),) * labels.ndim]
        top = float(distance[inside].max())
        if top > 0:
            out[padded][inside] = distance[inside] / top
    return out
