"""The U-Net paper's pixel weight map (Ronneberger et al. 2015, arXiv:1505.04597, eq. 2).

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))

`w_c` balances the class frequencies; `d1` and `d2` are the distances to the nearest and the
second-nearest cell. The border term makes the network learn the thin background gaps between
touching cells, so, as in the paper, it is added on background pixels only; pixels inside a cell
get `w_c` alone.

Distances are exact Euclidean distance transforms (`scipy.ndimage.distance_transform_edt`), each
computed only in the bounding box of one cell padded by `BORDER_TRUNCATE_SIGMAS * sigma`; farther
pixels count as infinitely far. The border term dropped that way is below
`w0 * exp(-BORDER_TRUNCATE_SIGMAS**2 / 2)` (about `1.5e-8 * w0` for the default 6). The two
smallest distances are kept as running minima, so memory stays `O(H * W)` whatever the number of
cells.
"""

from __future__ import annotations

import math

import numpy as np

from unetkit._deps import MissingDependency
from unetkit._options import look_up_option

__all__ = ["BORDER_TRUNCATE_SIGMAS", "class_balance_weights", "touching_borders", "unet_weight_map"]

# distances beyond this many sigmas are treated as infinite: exp(-(d1 + d2)^2 / (2 sigma^2)) < exp(-18) there
BORDER_TRUNCATE_SIGMAS = 6.0


def class_balance_weights(target: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-class weights `w_c` inversely proportional to the class frequencies in `target`.

    With `n_c` pixels of class `c` among `N`, and `P` classes present, `w_c = N / (P * n_c)`: every
    present class gets the same total weight, and the weight averaged over the pixels of `target`
    is exactly 1. Absent classes get weight 0 (no pixel uses it).

    Args:
        target: integer class indices in `[0, num_classes)`, any shape (e.g. `(H, W)`).
        num_classes: number of classes, background included.

    Returns:
        float64 `(num_classes,)` weights.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"`num_classes` must be an integer >= 1, got {num_classes!r}")
    target = np.asarray(target)
    if not np.issubdtype(target.dtype, np.integer):
        raise ValueError(f"`target` must hold integer class indices, got dtype {target.dtype}")
    if target.size == 0:
        raise ValueError(f"`target` must not be empty, got shape {target.shape}")
    low, high = int(target.min()), int(target.max())
    if low < 0 or high >= num_classes:
        raise ValueError(f"`target` values must lie in [0, {num_classes}), got values in [{low}, {high}]")
    counts = np.bincount(target.ravel(), minlength=num_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(num_classes, dtype=np.float64)
    weights[present] = target.size / (present.sum() * counts[present])
    return weights


def _class_weight_map(foreground: np.ndarray, class_weights: str | np.ndarray | None) -> np.ndarray:
    """`w_c(x)` for a foreground mask: float64 `(H, W)`, every value > 0."""
    if class_weights is None:
        return np.ones(foreground.shape, dtype=np.float64)
    if isinstance(class_weights, str):
        look_up_option("class_weights", class_weights, ("balanced",))
        per_class = class_balance_weights(foreground.astype(np.int64), 2)
    else:
        per_class = np.asarray(class_weights, dtype=np.float64)
        if per_class.shape != (2,):
            raise ValueError(
                f"`class_weights` must hold 2 weights (background, foreground), got shape {per_class.shape}"
            )
        if not np.all(np.isfinite(per_class)) or np.any(per_class <= 0):
            raise ValueError(f"`class_weights` must be finite and > 0, got {per_class.tolist()}")
    return per_class[foreground.astype(np.intp)]


def _two_nearest_distances(labels: np.ndarray, num_instances: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Distances `(d1, d2)` of every pixel to its nearest and second-nearest instance.

    Args:
        labels: int `(H, W)` instance labels `1..num_instances`, 0 = background.
        num_instances: the largest label; every label in `1..num_instances` is present.
        pad: margin around each instance's bounding box; beyond it the distance counts as `inf`.

    Returns:
        Two float64 `(H, W)` arrays, `d1 <= d2`, `inf` where fewer instances lie within reach.
    """
    try:
        from scipy import ndimage
    except ImportError as err:  # scipy is needed here only
        raise MissingDependency("`unet_weight_map` needs scipy for its distance transforms: pip install scipy") from err

    d1 = np.full(labels.shape, np.inf)  # (H, W)
    d2 = np.full(labels.shape, np.inf)  # (H, W)
    for k, box in enumerate(ndimage.find_objects(labels, max_label=num_instances), start=1):
        if box is None:
            continue
        box = tuple(
            slice(max(s.start - pad, 0), min(s.stop + pad, size)) for s, size in zip(box, labels.shape, strict=True)
        )
        # all pixels of instance k lie inside the box, so the crop's transform is exact
        dk = ndimage.distance_transform_edt(labels[box] != k)  # (h, w)
        near, second = d1[box], d2[box]  # views into d1, d2
        # insert dk into the sorted pair (d1, d2): new d2 first, while `near` still holds the old d1
        second[...] = np.minimum(second, np.maximum(near, dk))
        near[...] = np.minimum(near, dk)
    return d1, d2


def unet_weight_map(
    instances: np.ndarray,
    *,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_weights: str | np.ndarray | None = "balanced",
) -> np.ndarray:
    """The pixel weight map of eq. 2 of Ronneberger et al. 2015, for the weighted loss of eq. 1.

    `w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))` on background pixels and
    `w(x) = w_c(x)` inside cells. With fewer than two cells there is no border term. The paper
    uses `w0 = 10` and `sigma ~ 5` pixels.

    Args:
        instances: integer `(H, W)` instance labels, 0 = background; labels need not be contiguous.
        w0: height of the border term, >= 0.
        sigma: width of the border term in pixels, > 0.
        class_weights: `"balanced"` for `class_balance_weights` of the foreground mask (two classes:
            background, cells), `None` for `w_c = 1`, or 2 weights `(background, foreground)`, > 0.

    Returns:
        float32 `(H, W)` weight map, every value > 0.
    """
    instances = np.asarray(instances)
    if instances.ndim != 2:
        raise ValueError(f"`instances` must be a 2-D (H, W) array, got shape {instances.shape}")
    if not np.issubdtype(instances.dtype, np.integer):
        raise ValueError(f"`instances` must hold integer instance labels, got dtype {instances.dtype}")
    if instances.size == 0:
        raise ValueError(f"`instances` must not be empty, got shape {instances.shape}")
    if instances.min() < 0:
        raise ValueError(f"`instances` labels must be >= 0 (0 = background), got minimum {instances.min()}")
    if not math.isfinite(w0) or w0 < 0:
        raise ValueError(f"`w0` must be finite and >= 0, got {w0}")
    if not math.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"`sigma` must be finite and > 0, got {sigma}")

    background = instances == 0  # (H, W)
    weights = _class_weight_map(~background, class_weights)  # (H, W) w_c(x)
    ids, inverse = np.unique(instances, return_inverse=True)
    num_instances = int(np.count_nonzero(ids))
    if num_instances < 2 or w0 == 0:
        return weights.astype(np.float32)

    # relabel to 1..num_instances (0 stays background) so that find_objects lists each cell once
    labels = inverse.reshape(instances.shape) + (0 if ids[0] == 0 else 1)  # (H, W)
    pad = math.ceil(BORDER_TRUNCATE_SIGMAS * sigma)
    d1, d2 = _two_nearest_distances(labels, num_instances, pad)  # (H, W) each
    # border term, eq. 2 of Ronneberger et al. 2015, on the background between cells only
    border = w0 * np.exp(-((d1[background] + d2[background]) ** 2) / (2.0 * sigma**2))
    weights[background] += border
    return weights.astype(np.float32)


def touching_borders(labels: np.ndarray, width: int = 1) -> np.ndarray:
    """Pixels of an instance that lie within `width` pixels of a *different* instance: `(H, W)` bool.

    Setting them to background separates touching objects in a binary target by a gap of about `2 width`
    pixels, as in the U-Net paper's data, where touching cells are divided by background (Ronneberger et al.
    2015, Sec. 3.1 and Fig. 3): the gap is what its border weight map emphasises.

    Args:
        labels: `(H, W)` instance labels, 0 = background.
        width: border half-width in pixels, >= 1.
    """
    from scipy import ndimage

    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise ValueError(f"`width` must be an integer >= 1, got {width!r}")
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"`labels` must be (H, W), got shape {labels.shape}")
    size = 2 * width + 1
    lab = labels.astype(np.int64)
    highest = ndimage.grey_dilation(lab, size=size, mode="nearest")  # background (0) never wins a max
    top = int(lab.max()) + 1  # above every label
    lowest = ndimage.grey_erosion(np.where(lab == 0, top, lab), size=size, mode="nearest")  # nor a min
    return (lab > 0) & ((highest > lab) | (lowest < lab))
