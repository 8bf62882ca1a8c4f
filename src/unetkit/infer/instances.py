"""Instance labels from a semantic prediction: the objects of a foreground probability map.

Two methods:

- `components`: the connected components (4-connectivity) of the thresholded foreground, the baseline.
  Touching objects come out as one.
- `watershed`: the separation of touching objects that the U-Net paper's border weight map aims at
  (Ronneberger et al. 2015, arXiv:1505.04597, section 3): a marker-controlled watershed of the distance
  transform of the foreground (Beucher & Meyer 1993), restricted to the foreground. Markers are the
  h-maxima of the (lightly smoothed) distance transform: a maximum is a marker unless it is less than `h`
  pixels higher than the saddle joining it to a higher one, so a neck between two cells splits them while
  the ridge of an elongated cell does not. With `sharpen > 0` the distance is multiplied by the foreground
  probability raised to `sharpen`, which deepens the saddles where the network is unsure, as it is on the
  thin background borders that the weight map trains for.

Objects smaller than `min_size` pixels are merged into a touching object or, when isolated, removed.

Every step sees one connected component of the foreground at a time: the distance transform and the
watershed stay inside the foreground, and a marker must stand more than `h` above the level of the
background (a maximum that does not is never a marker, wherever the image's other objects are; a component
without a marker gets one at its highest pixel). So the objects of a component do not depend on the rest
of the image, and `unetkit.infer.instances_tiled` computes them block by block with the same result.
Objects are numbered in the raster order of their first pixel.
"""

from __future__ import annotations

import numpy as np

__all__ = ["INSTANCE_METHODS", "foreground_probability", "instances_from_probs"]

INSTANCE_METHODS = ("components", "watershed")
MARKER_TOLERANCE = 1e-5  # relative: markers must exceed `h` by more than the float32 rounding of h_maxima


def foreground_probability(probs: np.ndarray) -> np.ndarray:
    """`(H, W)` foreground probability, `(1, H, W)` the same, or `(K, H, W)` class probabilities (class 0 is
    background) -> float32 `(H, W)` probability of any foreground class.
    """
    probs = np.asarray(probs)
    if probs.ndim == 3 and probs.shape[0] == 1:
        probs = probs[0]
    elif probs.ndim == 3:
        if probs.shape[0] < 2:
            raise ValueError(f"`probs` must have at least 2 classes, got shape {probs.shape}")
        probs = probs[1] if probs.shape[0] == 2 else 1.0 - probs[0]
    elif probs.ndim != 2:
        raise ValueError(f"`probs` must be (H, W), (1, H, W) or (K, H, W), got shape {probs.shape}")
    if not np.issubdtype(probs.dtype, np.floating) and probs.dtype != bool:
        raise ValueError(f"`probs` must hold probabilities (float), got dtype {probs.dtype}")
    fg = probs.astype(np.float32)
    if fg.size and (not np.all(np.isfinite(fg)) or fg.min() < 0.0 or fg.max() > 1.0):
        raise ValueError(f"`probs` must be probabilities in [0, 1], got range [{fg.min()}, {fg.max()}]")
    return fg


def _check(method: str, threshold: float, min_size: int, h: float, smoothing: float, sharpen: float) -> None:
    if method not in INSTANCE_METHODS:
        raise ValueError(f"`method` must be one of {', '.join(INSTANCE_METHODS)}, got {method!r}")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"`threshold` must be in (0, 1), got {threshold}")
    if not isinstance(min_size, (int, np.integer)) or isinstance(min_size, bool) or min_size < 0:
        raise ValueError(f"`min_size` must be an integer >= 0, got {min_size!r}")
    if not h > 0.0:
        raise ValueError(f"`h` must be > 0, got {h}")
    if not smoothing >= 0.0:
        raise ValueError(f"`smoothing` must be >= 0, got {smoothing}")
    if not sharpen >= 0.0:
        raise ValueError(f"`sharpen` must be >= 0, got {sharpen}")


def _sequential(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 1..N in the raster order of their first pixel, as int32."""
    present, first = np.unique(labels, return_index=True)
    keep = present > 0
    present = present[keep][np.argsort(first[keep])]
    lut = np.zeros(int(labels.max(initial=0)) + 1, dtype=np.int32)
    lut[present] = np.arange(1, present.size + 1, dtype=np.int32)
    return lut[labels]


def instances_from_probs(
    probs: np.ndarray,
    method: str = "watershed",
    *,
    threshold: float = 0.5,
    min_size: int = 16,
    h: float = 0.5,
    smoothing: float = 0.0,
    sharpen: float = 4.0,
) -> np.ndarray:
    """Instance labels `(H, W)` int32 (0 = background, objects 1..N) from foreground probabilities.

    The defaults suit `synthetic:cells` (cells of semi-axes 3 to 14 pixels, often overlapping): `h`,
    `smoothing` and `sharpen` were chosen on its validation images (`examples/cells_instances.py`).

    Args:
        probs: `(K, H, W)` class probabilities as `unetkit.predict` returns them (class 0 is background),
            or the `(H, W)` / `(1, H, W)` foreground probability.
        method: `components` (connected components of the foreground) or `watershed` (touching objects
            separated, see the module docstring).
        threshold: foreground where its probability is above this; 0.5 matches the argmax mask.
        min_size: objects of fewer pixels are merged into a touching object or removed; 0 keeps all.
        h: `watershed`: least height, in pixels of distance, of a distance maximum over the saddle to a
            higher one for it to seed its own object. Larger merges more; smaller splits more.
        smoothing: `watershed`: Gaussian sigma (pixels) applied to the distance transform before the
            markers are found, against spurious maxima on jagged outlines; 0 for none.
        sharpen: `watershed`: exponent of the foreground probability multiplying the distance; 0 ignores
            the probabilities beyond the threshold.
    """
    _check(method, threshold, min_size, h, smoothing, sharpen)
    fg = foreground_probability(probs)
    mask = fg > threshold
    if not mask.any():
        return np.zeros(mask.shape, dtype=np.int32)
    from scipy import ndimage

    if method == "components":
        labels, _ = ndimage.label(mask)  # 4-connectivity, as `unetkit.metrics.instance.label_components`
        if min_size > 0:
            sizes = np.bincount(labels.ravel())
            labels[(sizes < min_size)[labels]] = 0  # components touch nothing: small ones are removed
        return _sequential(labels)

    from skimage.morphology import h_maxima

    distance = ndimage.distance_transform_edt(mask).astype(np.float32)
    if smoothing > 0:
        distance = ndimage.gaussian_filter(distance, smoothing) * mask
    if sharpen > 0:
        distance = distance * fg**sharpen
    # a maximum within `h` of the background level is no marker, whatever the rest of the image holds
    peaks = h_maxima(distance, h).astype(bool) & mask & (distance - h > MARKER_TOLERANCE * distance)
    markers, _ = ndimage.label(peaks)
    # a component too shallow to hold an h-maximum still is one object: its own marker at its maximum
    components, n = ndimage.label(mask)
    unmarked = np.setdiff1d(np.arange(1, n + 1), components[peaks])
    if unmarked.size:
        tops = ndimage.maximum_position(distance, components, unmarked)
        for offset, (y, x) in enumerate(tops, start=int(markers.max()) + 1):
            markers[y, x] = offset
    labels = _flood(-distance, markers, mask)  # from the markers, within the foreground
    if min_size > 0:
        sizes = np.bincount(labels.ravel())
        kept = np.where((sizes < min_size)[labels], 0, labels)
        # flooding again from the kept objects gives small fragments to a touching object; isolated
        # small objects are reached by no marker and stay background
        labels = _flood(-distance, kept, mask)
    return _sequential(labels)


def _flood(image: np.ndarray, markers: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`skimage.segmentation.watershed(image, markers, mask=mask)` with every marker pixel taken first, in
    raster order.

    The watershed pops pixels by value, ties broken by the order they were queued; its marker pixels all
    enter the queue at once, so ties among them would be broken by the state of the whole queue, and each
    component's objects would depend on the others'. Giving the marker pixels distinct values below every
    other one, rising in raster order, fixes that order (and the queue order of everything flooded from
    them) within each component, wherever it lies in the image.
    """
    from skimage.segmentation import watershed

    seeded = markers > 0
    priority = image.astype(np.float64)
    count = int(seeded.sum())
    if count:
        priority[seeded] = priority.min() - 1.0 - count + np.arange(count)
    return watershed(priority, markers, mask=mask).astype(np.int32)
