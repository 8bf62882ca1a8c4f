"""Apply the image-to-image models of `unetkit train --task denoise|superres` to image files of any size with
the tiler (`restore_file`, behind `unetkit predict`), and evaluate them on held-out digits: PSNR / SSIM of the
corrupted input and of the model's output, and a picture.

A super-resolution model was trained on bicubic-up-sampled inputs (SRCNN's set-up), so `restore_file` first
up-samples a low-resolution image by the checkpoint's `scale_factor` (bicubic), then restores it: the output
is `scale_factor` times larger. The held-out digits are the test split of `unetkit.data.digits`, which
training never reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from unetkit.data.corrupt import add_noise, reduce_resolution
from unetkit.data.digits import load_digits
from unetkit.metrics.image import psnr, ssim

__all__ = [
    "RESTORATION_TASKS",
    "evaluate_denoiser",
    "evaluate_superres",
    "held_out_digits",
    "load_restoration_model",
    "restore",
    "restore_file",
    "restored_name",
]

RESTORATION_TASKS = ("denoise", "superres")


def load_restoration_model(path: str | Path, *, device: str | torch.device = "cpu") -> nn.Module:
    """The model of a `denoise` or `superres` checkpoint (its `checkpoint_config` says which)."""
    from unetkit.models.checkpoint import load_model, read_checkpoint_config, resolve_checkpoint

    folder = resolve_checkpoint(path)
    task = read_checkpoint_config(folder).get("task", "segmentation")
    if task not in RESTORATION_TASKS:
        raise ValueError(f"{folder}: a {task} checkpoint; expected one of unetkit train --task denoise|superres")
    return load_model(folder, map_location=device)


def held_out_digits(model: nn.Module, n: int = 500) -> torch.Tensor:
    """The first `n` test digits `(n, 1, S, S)` of the data the checkpointed `model` was trained on."""
    checkpoint_config: dict[str, Any] = getattr(model, "checkpoint_config", None) or {}
    if "train_config" not in checkpoint_config:
        raise ValueError("`model` must come from load_model() of a denoise / superres checkpoint")
    train_config: dict[str, Any] = checkpoint_config["train_config"]
    size = int(train_config["digits_size"])
    source = str(train_config["data"])
    splits = load_digits(source, size=size, seed=int(train_config["seed"]), n_train=0, n_val=0, n_test=n)
    return torch.from_numpy(splits.test[:n])


@torch.no_grad()
def restore(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """`(N, C, S, S)` corrupted images in [0, 1] -> the restored images (the model's output, added to its input
    for a `residual` checkpoint), clipped to [0, 1], on the CPU."""
    model.eval()
    device = next(model.parameters()).device
    residual = _is_residual(model)
    out = []
    for chunk in images.split(batch_size):
        y = model(chunk.to(device)).float().cpu()
        out.append((chunk + y if residual else y).clamp(0, 1))
    return torch.cat(out)


def _is_residual(model: Any) -> bool:
    """Whether the model's checkpoint says its output is a correction to add to its input."""
    return (getattr(model, "checkpoint_config", None) or {}).get("output") == "residual"


def _shown(n: int, k: int = 8) -> torch.Tensor:
    """Indices of `min(k, n)` images spread over the set (test splits may be sorted by label)."""
    return torch.linspace(0, n - 1, min(k, n)).round().long()


def _scores(clean: torch.Tensor, corrupted: torch.Tensor, restored: torch.Tensor) -> dict[str, float]:
    psnr_in, psnr_out = psnr(corrupted, clean).mean().item(), psnr(restored, clean).mean().item()
    return {
        "psnr_input": psnr_in,
        "psnr_output": psnr_out,
        "psnr_gain": psnr_out - psnr_in,
        "ssim_input": ssim(corrupted, clean).mean().item(),
        "ssim_output": ssim(restored, clean).mean().item(),
    }


def evaluate_denoiser(
    model: nn.Module, images: torch.Tensor, amounts: Sequence[float] = (0.2, 0.4, 0.6), seed: int = 0
) -> tuple[list[dict[str, float]], np.ndarray]:
    """Corrupt `images` at each noise amount, denoise, and score input and output against the clean images.

    Returns:
        One row per amount (`amount`, `psnr_input`, `psnr_output`, `psnr_gain`, `ssim_input`,
        `ssim_output`; means over the images), and a figure of 8 digits spread over `images`: the clean
        ones on top, then a noisy row and a denoised row per amount, as an `(H, W, 3)` uint8 array.
    """
    from unetkit.viz import image_grid

    rows: list[dict[str, float]] = []
    shown = _shown(len(images))
    strip = [images[shown]]
    for amount in amounts:
        generator = torch.Generator().manual_seed(seed)
        noisy = add_noise(images, float(amount), generator)
        denoised = restore(model, noisy)
        rows.append({"amount": float(amount), **_scores(images, noisy, denoised)})
        strip += [noisy[shown], denoised[shown]]
    figure = image_grid(torch.cat(strip).numpy(), columns=min(8, len(images)))
    return rows, figure


def evaluate_superres(model: nn.Module, images: torch.Tensor, factor: int) -> tuple[dict[str, float], np.ndarray]:
    """Down-sample `images` by `factor` and up-sample back (bicubic, the input), restore, and score both.

    Returns:
        The scores, and a figure: bicubic input, output and the original, one row each.
    """
    from unetkit.viz import image_grid

    low = reduce_resolution(images, factor)
    restored = restore(model, low)
    shown = _shown(len(images))
    figure = image_grid(torch.cat([low[shown], restored[shown], images[shown]]).numpy(), columns=len(shown))
    return _scores(images, low, restored), figure


def restored_name(path: Path, dtype: np.dtype) -> str:
    """The output file name for input `path`: `<stem>.png` for 8- and 16-bit images (PNG is lossless, so a
    JPEG input gives a PNG), `<stem>.tif` for TIFF inputs and float images."""
    tiff = path.suffix.lower() in (".tif", ".tiff") or np.dtype(dtype).kind == "f"
    return f"{path.stem}{'.tif' if tiff else '.png'}"


def restore_file(
    model: Any,
    path: str | Path,
    out_dir: str | Path,
    *,
    tile: int | None = None,
    overlap: float = 0.25,
    blend: str = "gaussian",
    batch_size: int = 4,
    tta: bool = False,
    device: str | torch.device | None = None,
) -> Path:
    """Restore one image file of any size tile by tile (a `residual` model's output added to the input); write it
    to `out_dir` in the input's bit depth (8 or 16 bit; float32 TIFF for float inputs), atomically, as
    `restored_name` says.

    Args:
        model: a `denoise` or `superres` model from `load_model` (its `checkpoint_config` says which), or an
            exported one carrying that config.
        path: the image (grey or RGB, as many channels as the model takes).
        out_dir: the output folder.
        tile, overlap, blend, batch_size, tta, device: as `unetkit.infer.predict`.
    """
    import torch.nn.functional as F

    from unetkit.data.errors import DataError
    from unetkit.data.io import read_image, write_image
    from unetkit.infer.predictor import Predictor, predict

    path, out_dir = Path(path), Path(out_dir)
    config: dict[str, Any] = getattr(model, "checkpoint_config", None) or {}
    task = config.get("task")
    if task not in RESTORATION_TASKS:
        raise ValueError(f"`model` must be a denoise or superres model (its checkpoint says task {task!r})")
    raw = read_image(path)
    image = torch.from_numpy(np.array(raw, dtype=np.float32, copy=True))
    image = image[None] if image.ndim == 2 else image.movedim(-1, 0)  # (C, H, W) in the file's units
    channels = int(config.get("image", {}).get("channels", image.shape[0]))
    if image.shape[0] == 4 and channels == 3:
        image = image[:3]  # RGBA: the colour
    if image.shape[0] != channels:
        raise DataError(f"{path}: image has {image.shape[0]} channels, the model expects {channels}")
    from unetkit.data.folder import intensity_scale

    scale = intensity_scale(raw.dtype)
    x = image * scale
    if task == "superres":
        factor = int(config["superres"]["scale_factor"])
        size = (x.shape[-2] * factor, x.shape[-1] * factor)
        x = F.interpolate(x[None], size=size, mode="bicubic", align_corners=False)[0].clamp(0, 1)
    predictor = Predictor(model, device=device, tta=tta, activation="none")
    output = predict(predictor, x.numpy(), tile=tile, overlap=overlap, blend=blend, batch_size=batch_size)
    restored = np.clip(x.numpy() + output if _is_residual(model) else output, 0, 1)
    pixels = np.moveaxis(restored, 0, -1) if restored.shape[0] > 1 else restored[0]  # (H, W[, C])
    if raw.dtype in (np.uint8, np.uint16):
        pixels = np.round(pixels * np.iinfo(raw.dtype).max).astype(raw.dtype)
    else:
        pixels = pixels.astype(np.float32)
    return write_image(out_dir / restored_name(path, pixels.dtype), pixels)
