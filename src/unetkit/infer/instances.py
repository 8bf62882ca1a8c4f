"""Instance labels from a semantic prediction: the objects of a foreground probability map, 2-D or 3-D.

Three methods:

- `components`: the connected components (face connectivity: 4 in 2-D, 6 in 3-D) of the thresholded
  foreground, the baseline. Touching objects come out as one.
- `watershed`: the separation of touching objects that the U-Net paper's border weight map aims at
  (Ronneberger et al. 2015, arXiv:1505.04597, section 3): a marker-controlled watershed of the distance
  transform of the foreground (Beucher & Meyer 1993), restricted to the foreground. Markers are the
  h-maxima of the (lightly smoothed) distance transform: a maximum is a marker unless it is less than `h`
  pixels higher than the saddle joining it to a higher one, so a neck between two cells splits them while
  the ridge of an elongated cell does not. With `sharpen > 0` the distance is multiplied by the foreground
  probability raised to `sharpen`, which deepens the saddles where the network is unsure, as it is on the
  thin background borders that the weight map trains for.
- `distance`: for models trained with `separation: distance`, whose extra output is each object's normalised
  distance to its own outline (`unetkit.data.distance`; StarDist's object probability, Schmidt et al. 2018):
  seeds are the maxima of that distance (within the foreground) that stand at least `seed` above the saddle
  to a higher one, one per object since the distance falls to 0 along the border between two touching
  objects, and the watershed of the negated distance grows them over the foreground. Unlike `watershed`, the
  valleys are learned, not inferred from the mask's shape; seeding by height rather than by a fixed level
  keeps a shallow dip inside an object (as a network trained briefly leaves) from splitting it.

Objects smaller than `min_size` pixels are merged into a touching object or, when isolated, removed.

Every step sees one connected component of the foreground at a time: the distance transform and the
watershed stay inside the foreground, and a marker must stand more than `h` above the level of the
background (a maximum that does not is never a marker, wherever the image's other objects are; a component
without a marker gets one at its highest pixel). So the objects of a component do not depend on the rest
of the image, and `unetkit.infer.instances_tiled` computes them block by block with the same result.
Objects are numbered in the raster order of their first pixel.

`fit_instances` chooses the method and its parameters that give the best instance F1 on images with known
objects (training fits them on its validation split).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["INSTANCE_METHODS", "fit_instances", "foreground_probability", "instances_from_probs"]

INSTANCE_METHODS = ("components", "watershed", "distance")
MARKER_TOLERANCE = 1e-5  # relative: markers must exceed `h` by more than the float32 rounding of h_maxima
# the candidates `fit_instances` tries: watershed h in pixels of distance, the distance method's seed level, and
# min_size as a share of the 5th percentile of the true objects' sizes
H_GRID = (0.5, 1.0, 2.0, 3.0)
SEED_GRID = (0.05, 0.1, 0.15, 0.2, 0.3)
# `min_size` candidates as shares of the true objects' 5th-percentile size; never 0: a validation split without
# sparse or empty regions cannot see speckle, which a fitted `min_size` 0 then kept on sparse test volumes
# (2058 one-voxel objects where 24 were true)
MIN_SIZE_SHARES = (0.1, 0.25, 0.5)
# candidates within this instance F1 of the best are as good; the first method of PREFERRED among them wins
FIT_TOLERANCE = 0.01
PREFERRED = ("distance", "components", "watershed")


def foreground_probability(probs: np.ndarray, spatial_dims: int = 2) -> np.ndarray:
    """`(H, W)` foreground probability, `(1, H, W)` the same, or `(K, H, W)` class probabilities (class 0 is
    background) -> float32 `(H, W)` probability of any foreground class; with `spatial_dims` 3 the same for
    `(D, H, W)` volumes.
    """
    probs = np.asarray(probs)
    if probs.ndim == spatial_dims + 1 and probs.shape[0] == 1:
        probs = probs[0]
    elif probs.ndim == spatial_dims + 1:
        if probs.shape[0] < 2:
            raise ValueError(f"`probs` must have at least 2 classes, got shape {probs.shape}")
        probs = probs[1] if probs.shape[0] == 2 else 1.0 - probs[0]
    elif probs.ndim != spatial_dims:
        raise ValueError(f"`probs` must be a {spatial_dims}-D map or (K, *spatial), got shape {probs.shape}")
    if not np.issubdtype(probs.dtype, np.floating) and probs.dtype != bool:
        raise ValueError(f"`probs` must hold probabilities (float), got dtype {probs.dtype}")
    fg = probs.astype(np.float32)
    if fg.size and (not np.all(np.isfinite(fg)) or fg.min() < 0.0 or fg.max() > 1.0):
        raise ValueError(f"`probs` must be probabilities in [0, 1], got range [{fg.min()}, {fg.max()}]")
    return fg


def _check(method: str, threshold: float, min_size: int, h: float, smoothing: float, sharpen: float) -> None:
    if method not in INSTANCE_METHODS:
        raise ValueError(f"`method` must be one of {', '.join(INSTANCE_METHODS)}, got {method!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)):
        raise ValueError(f"`threshold` must be a number in (0, 1), got {threshold!r}")
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
    distance: np.ndarray | None = None,
    seed: float = 0.1,
    spatial_dims: int = 2,
) -> np.ndarray:
    """Instance labels `(H, W)` (or `(D, H, W)`) int32 (0 = background, objects 1..N) from foreground
    probabilities.

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
        distance: `distance`: the model's normalised object distance, in [0, 1], of the foreground's shape.
        seed: `distance`: least height, in units of the normalised distance, of a maximum of `distance` over the
            saddle to a higher one (and over the background) for it to seed its own object, in (0, 1).
        spatial_dims: 2 for images, 3 for volumes.
    """
    _check(method, threshold, min_size, h, smoothing, sharpen)
    fg = foreground_probability(probs, spatial_dims)
    if method == "distance":
        if distance is None or np.shape(distance) != fg.shape:
            raise ValueError(
                f"`distance` must be the model's distance map of shape {fg.shape} for method 'distance', got "
                f"{None if distance is None else np.shape(distance)}: the checkpoint needs separation 'distance'"
            )
        if not 0.0 < seed < 1.0:
            raise ValueError(f"`seed` must be in (0, 1), got {seed}")
    mask = fg > threshold
    if not mask.any():
        return np.zeros(mask.shape, dtype=np.int32)
    from scipy import ndimage

    if method == "distance":
        assert distance is not None
        from skimage.morphology import h_maxima

        level = np.where(mask, np.asarray(distance, dtype=np.float32), np.float32(0))  # 0 off the foreground
        # seeds: maxima of the learned distance that stand `seed` above the saddle to a higher one (and above the
        # background's 0), so a shallow dip inside an under-trained object does not split it
        peaks = h_maxima(level, seed).astype(bool) & mask & (level - seed > MARKER_TOLERANCE * level)
        markers, _ = ndimage.label(peaks)
        return _grow(markers, -level, level, mask, min_size)

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
    return _grow(markers, -distance, distance, mask, min_size)


def _grow(markers: np.ndarray, flood: np.ndarray, height: np.ndarray, mask: np.ndarray, min_size: int) -> np.ndarray:
    """Objects grown from `markers` over `mask` by the watershed of `flood`; a component of the mask without a
    marker gets one at its highest pixel of `height` (a component too shallow to hold a seed still is one
    object); objects below `min_size` merged into a touching one or removed."""
    from scipy import ndimage

    components, n = ndimage.label(mask)
    unmarked = np.setdiff1d(np.arange(1, n + 1), components[markers > 0])
    if unmarked.size:
        tops = ndimage.maximum_position(height, components, unmarked)
        for offset, top in enumerate(tops, start=int(markers.max()) + 1):
            markers[tuple(top)] = offset
    labels = _flood(flood, markers, mask)  # from the markers, within the foreground
    if min_size > 0:
        sizes = np.bincount(labels.ravel())
        kept = np.where((sizes < min_size)[labels], 0, labels)
        # flooding again from the kept objects gives small fragments to a touching object; isolated
        # small objects are reached by no marker and stay background
        labels = _flood(flood, kept, mask)
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


def fit_instances(
    probs: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    distances: Sequence[np.ndarray] | None = None,
    *,
    spatial_dims: int = 2,
) -> dict[str, Any]:
    """The post-processing that maximises the pooled instance F1 at IoU 0.5 on images with known objects.

    Tries `components`, the `watershed` over `H_GRID` and, with `distances`, the `distance` method over
    `SEED_GRID`, each with `min_size` from `MIN_SIZE_SHARES` of the true objects' 5th-percentile size. Among the
    candidates within `FIT_TOLERANCE` of the best F1, the first method of `PREFERRED` wins (a learned separation
    before a rule, a rule with fewer parameters before more: the validation split is small), with its best
    parameters; among its settings within half the tolerance of its best, the largest `min_size`.

    Args:
        probs: class probabilities `(K, *spatial)` (or foreground `(*spatial)`) per image.
        truths: integer instance labels per image.
        distances: the model's distance maps, where it has the separation head.
        spatial_dims: 2 or 3.

    Returns:
        `{"method", "min_size", "f1", "summary", "tried"}` and the method's own setting (`h` or `seed`); empty
        without images.
    """
    from unetkit.metrics.instance import instance_counts, instance_scores

    if not probs:
        return {}
    sizes = np.concatenate([np.unique(t[t > 0], return_counts=True)[1] for t in truths])
    small = float(np.percentile(sizes, 5)) if sizes.size else 0.0
    fgs = [foreground_probability(p, spatial_dims) for p in probs]
    candidates: list[dict[str, Any]] = []
    grids: list[tuple[str, str | None, Sequence[float]]] = [("components", None, (0.0,)), ("watershed", "h", H_GRID)]
    if distances is not None:
        grids.append(("distance", "seed", SEED_GRID))
    for method, key, values in grids:
        for value in values:
            for share in MIN_SIZE_SHARES:
                options: dict[str, Any] = {"min_size": int(share * small)}
                if key is not None:
                    options[key] = value
                counts = sum(
                    instance_counts(
                        np.asarray(truth),
                        instances_from_probs(
                            fg, method, spatial_dims=spatial_dims,
                            distance=None if distances is None else distances[i], **options,
                        ),
                        (0.5,),
                    )
                    for i, (fg, truth) in enumerate(zip(fgs, truths, strict=True))
                )  # fmt: skip
                f1 = float(instance_scores(np.asarray(counts), (0.5,), 0.5)["instance_f1"] or 0.0)
                candidates.append({"method": method, **options, "f1": f1})
    best = max(c["f1"] for c in candidates)
    good = [c for c in candidates if c["f1"] >= best - FIT_TOLERANCE]
    method = min((c["method"] for c in good), key=PREFERRED.index)
    best_of_method = max(c["f1"] for c in good if c["method"] == method)
    # its best setting; of settings as good, the largest min_size (removing noise costs validation nothing)
    chosen = dict(
        max(
            (c for c in good if c["method"] == method and c["f1"] >= best_of_method - FIT_TOLERANCE / 2),
            key=lambda c: (c["min_size"], c["f1"]),
        )
    )
    setting = {"watershed": f"h {chosen.get('h')}, ", "distance": f"seed {chosen.get('seed')}, "}.get(method, "")
    chosen["summary"] = f"{method} ({setting}min_size {chosen['min_size']})"
    chosen["tried"] = {m: round(max(c["f1"] for c in candidates if c["method"] == m), 4) for m, _, _ in grids}
    return chosen
