"""Pictures: prediction overlays, image grids, loss and metric curves, animated GIFs; written atomically.

Below the engines (as MONAI's `visualize/`): training, prediction, evaluation and the page draw with it, and
drawing a PNG imports no training or inference code.
"""

from __future__ import annotations

import colorsys
import io
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from unetkit._fs import atomic_write_bytes

__all__ = [
    "center_crops",
    "class_colours",
    "class_overlay",
    "display_image",
    "image_grid",
    "overlay",
    "picture_row",
    "plot_curves",
    "save_gif",
    "save_png",
]

# overlay colours: true positive, false positive, false negative (green / red / blue)
TP, FP, FN = (0, 200, 0), (230, 30, 30), (40, 90, 255)


def plot_curves(history: list[dict[str, Any]], path: Path, metrics: tuple[str, ...] = ("dice", "iou")) -> Path:
    """Loss (train, val) and validation `metrics` (Dice / IoU; PSNR for image-to-image) against epochs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=100)
    ax_loss.plot(epochs, [row["train_loss"] for row in history], "o-", label="train loss")
    if all("val_loss" in row for row in history):
        ax_loss.plot(epochs, [row["val_loss"] for row in history], "o-", label="validation loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    shown = [key for key in metrics if all(key in row for row in history)]
    for key in shown:
        ax_metric.plot(epochs, [row[key] for row in history], "o-", label=f"validation {key}")
    ax_metric.set_xlabel("epoch")
    if all(key in ("dice", "iou", "ssim") for key in shown):
        ax_metric.set_ylim(0, 1)
    if shown:
        ax_metric.legend(loc="lower right")
    ax_metric.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def display_image(image: np.ndarray) -> np.ndarray:
    """`(C, H, W)` float -> `(H, W, 3)` uint8, contrast-stretched to its 1st-99th percentiles."""
    x = image[:3] if image.shape[0] >= 3 else np.repeat(image[:1], 3, axis=0)
    lo, hi = np.percentile(x, [1, 99])
    x = np.clip((x - lo) / max(hi - lo, 1e-6), 0, 1)
    return (np.moveaxis(x, 0, -1) * 255).astype(np.uint8)


@cache
def class_colours(num_classes: int) -> np.ndarray:
    """`(K, 3)` uint8 colours: class 1 the foreground green of the overlays, the others spread around the
    colour wheel by the golden angle (so neighbouring class indices differ clearly); class 0 is never drawn."""
    colours = np.zeros((max(num_classes, 2), 3), dtype=np.uint8)
    colours[1] = TP
    for k in range(2, num_classes):
        hue = (1 / 3 + (k - 1) * 0.381966) % 1.0  # golden angle, as a fraction of the wheel
        colours[k] = np.array(colorsys.hsv_to_rgb(hue, 0.85, 0.95)) * 255
    return colours


def class_overlay(
    image: np.ndarray, classes: np.ndarray, num_classes: int, limits: tuple[float, float], alpha: float = 0.45
) -> np.ndarray:
    """The image in grey with each class > 0 blended in its colour of `class_colours`.

    Args:
        image: `(H, W)` intensities.
        classes: `(H, W)` class indices in `[0, num_classes)`.
        num_classes: the number of classes (colours).
        limits: the intensities shown black and white (e.g. 1st and 99th percentiles of several pictures, so
            they share one contrast).
        alpha: opacity of the colours.

    Returns:
        `(H, W, 3)` uint8.
    """
    lo, hi = float(limits[0]), float(limits[1])
    grey = (np.clip((image.astype(np.float32) - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=-1).astype(np.float32)
    colours = class_colours(num_classes).astype(np.float32)
    shown = classes > 0
    rgb[shown] = (1 - alpha) * rgb[shown] + alpha * colours[np.minimum(classes[shown], len(colours) - 1)]
    return rgb.clip(0, 255).astype(np.uint8)


def overlay(
    image: np.ndarray,
    pred: np.ndarray,
    target: np.ndarray | None = None,
    valid: np.ndarray | None = None,
    alpha: float = 0.45,
) -> np.ndarray:
    """Blend a prediction over an image: with a target, TP green / FP red / FN blue; without, green.

    Args:
        image: `(C, H, W)` float image.
        pred: `(H, W)` class indices (foreground = nonzero).
        target: `(H, W)` class indices, or None.
        valid: `(H, W)` bool; pixels outside are darkened.
        alpha: opacity of the colours.
    """
    rgb = display_image(image).astype(np.float32)
    p = pred > 0
    layers = [(p, TP)] if target is None else [(p & (target > 0), TP), (p & (target == 0), FP), (~p & (target > 0), FN)]
    for where, colour in layers:
        rgb[where] = (1 - alpha) * rgb[where] + alpha * np.array(colour, dtype=np.float32)
    if valid is not None:
        rgb[~valid] *= 0.4
    return rgb.clip(0, 255).astype(np.uint8)


def save_png(array: np.ndarray, path: Path) -> Path:
    """Write an `(H, W, 3)` uint8 picture atomically."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())


def save_gif(frames: list[Path], path: Path, duration_ms: int = 600) -> Path | None:
    """An animated GIF of the PNG `frames`, the last one held longer; None when there are no frames."""
    from PIL import Image

    if not frames:
        return None
    images = [Image.open(f).convert("RGB") for f in frames]
    durations = [duration_ms] * (len(images) - 1) + [duration_ms * 4]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0)
    return atomic_write_bytes(path, buffer.getvalue())


def image_grid(images: np.ndarray, columns: int = 8, pad: int = 2, value: float = 0.5) -> np.ndarray:
    """`(N, C, H, W)` float in [0, 1] -> an `(rows * (H + pad) + pad, ...)` RGB uint8 grid, row by row."""
    n, channels, height, width = images.shape
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    grid = np.full((rows * (height + pad) + pad, columns * (width + pad) + pad, 3), value, dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, columns)
        tile = images[i, :3] if channels >= 3 else np.repeat(images[i, :1], 3, axis=0)
        top, left = pad + r * (height + pad), pad + c * (width + pad)
        grid[top : top + height, left : left + width] = np.moveaxis(np.clip(tile, 0, 1), 0, -1)
    return (grid * 255).round().astype(np.uint8)


def picture_row(pictures: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """`(H_i, W_i, 3)` uint8 pictures side by side, each padded at the bottom to the tallest, `gap` px apart."""
    if not pictures:
        raise ValueError("`pictures` must hold at least one picture, got an empty list")
    height = max(p.shape[0] for p in pictures)
    padded = [np.pad(p, ((0, height - p.shape[0]), (0, gap), (0, 0))) for p in pictures]
    return np.concatenate(padded, axis=1)


def center_crops(images: list[np.ndarray], limit: int = 128) -> np.ndarray:
    """`(C, H_i, W_i)` images -> `(N, C, s, s)` centre crops of one side `s` (the smallest side, at most
    `limit`), so that images of different sizes fit one `image_grid`."""
    if not images:
        raise ValueError("`images` must hold at least one image, got an empty list")
    side = min(limit, *(min(x.shape[-2:]) for x in images))
    crops = []
    for x in images:
        top, left = (x.shape[-2] - side) // 2, (x.shape[-1] - side) // 2
        crops.append(x[:, top : top + side, left : left + side])
    return np.stack(crops)
