"""Tiles of the page's layers as PNG: the image, the class map in per-class colours, the probability of a
class in a colour scale, the error map (true positives green, false positives red, false negatives blue: the
colours of `unetkit predict --overlay` and the demo's picture) and instance outlines. Overlays come with an
alpha channel (transparent where there is nothing to show); the page blends them at the chosen opacity.
"""

from __future__ import annotations

import io
from functools import cache

import numpy as np

from unetkit.serve._viz import FN, FP, TP, class_colours
from unetkit.serve.paths import Refused
from unetkit.serve.pyramid import level_shape, read_window
from unetkit.serve.view import View

__all__ = ["LAYERS", "OUTLINE", "class_colours", "render_tile", "tile_box"]

LAYERS = ("image", "mask", "probs", "errors", "outlines")
OUTLINE = (255, 220, 0)  # instance outlines: yellow, apart from the class and error colours
NEEDS = {"image": "image", "mask": "classes", "probs": "probs", "errors": "truth", "outlines": "instances"}
PNG_LEVEL = 1  # zlib level of tiles: fast to make, small enough on localhost


@cache
def _probability_colours() -> np.ndarray:
    """`(256, 3)` uint8: matplotlib's viridis (perceptually uniform), probability 0 dark blue to 1 yellow."""
    from matplotlib import colormaps

    return (colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)


def tile_box(view: View, level: int, ty: int, tx: int) -> tuple[int, int, int, int]:
    """`(y0, y1, x0, x1)` of tile `(ty, tx)` in its level; `Refused` outside the pyramid."""
    if not 0 <= level < view.levels:
        raise Refused(f"level {level}: the view has levels 0..{view.levels - 1}")
    height, width = level_shape(view.height, view.width, level)
    y0, x0 = ty * view.tile, tx * view.tile
    if ty < 0 or tx < 0 or y0 >= height or x0 >= width:
        raise Refused(f"tile ({ty}, {tx}) is outside level {level}")
    return y0, min(height, y0 + view.tile), x0, min(width, x0 + view.tile)


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", compress_level=PNG_LEVEL)
    return buffer.getvalue()


def _rgba(colours: np.ndarray, shown: np.ndarray) -> np.ndarray:
    """`(h, w, 3)` colours and `(h, w)` bool -> `(h, w, 4)`, transparent where not shown."""
    alpha = np.where(shown, 255, 0).astype(np.uint8)[..., None]
    return np.concatenate([colours, alpha], axis=-1)


def _outlines(labels: np.ndarray) -> np.ndarray:
    """Pixels of an object whose 4-neighbour belongs to another label (background included)."""
    edge = np.zeros(labels.shape, dtype=bool)
    edge[1:] |= labels[1:] != labels[:-1]
    edge[:-1] |= labels[:-1] != labels[1:]
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    return edge & (labels > 0)


def render_tile(view: View, layer: str, level: int, ty: int, tx: int, channel: int = 1) -> bytes:
    """One tile of `layer` as PNG bytes.

    Args:
        view: the prediction's pyramids.
        layer: one of `LAYERS` the view has.
        level: pyramid level (0 = full size).
        ty, tx: tile row and column within the level.
        channel: the class whose probability `probs` shows (1..K-1).
    """
    if layer not in LAYERS or NEEDS[layer] not in view.layers:
        raise Refused(f"layer {layer!r}: not in this view")
    y0, y1, x0, x1 = tile_box(view, level, ty, tx)
    path = view.folder / f"{NEEDS[layer]}-{level}.npy"
    if layer == "image":
        return _png(read_window(path, y0, y1, x0, x1))
    if layer == "mask":
        classes = read_window(path, y0, y1, x0, x1)
        colours = class_colours(view.num_classes)[np.minimum(classes, view.num_classes - 1)]
        return _png(_rgba(colours, classes > 0))
    if layer == "probs":
        if not 1 <= channel < view.num_classes:
            raise Refused(f"class {channel}: probabilities are of classes 1..{view.num_classes - 1}")
        values = read_window(path, y0, y1, x0, x1)[..., channel - 1]
        return _png(_probability_colours()[values])
    if layer == "errors":
        truth = read_window(path, y0, y1, x0, x1) > 0
        pred = read_window(view.folder / f"classes-{level}.npy", y0, y1, x0, x1) > 0
        colours = np.zeros((*pred.shape, 3), dtype=np.uint8)
        for where, colour in ((pred & truth, TP), (pred & ~truth, FP), (~pred & truth, FN)):
            colours[where] = colour
        return _png(_rgba(colours, pred | truth))
    # outlines: read one pixel more on each side, so that an object cut by the tile's edge is not outlined there
    height, width = level_shape(view.height, view.width, level)
    top, left = max(0, y0 - 1), max(0, x0 - 1)
    labels = read_window(path, top, min(height, y1 + 1), left, min(width, x1 + 1))
    edge = _outlines(labels)[y0 - top : y0 - top + y1 - y0, x0 - left : x0 - left + x1 - x0]
    colours = np.broadcast_to(np.array(OUTLINE, dtype=np.uint8), (*edge.shape, 3))
    return _png(_rgba(colours, edge))
