"""Image-to-image tasks on the user's own images or built-in ones: `denoise` and `superres` here, `diffusion`
in `tasks/diffusion.py`, all on `ImageTask`'s data: a folder of images (`unetkit.data.image_folder`: grey or
RGB, any size), `synthetic:digits` / `mnist` (`unetkit.data.digits`) or the images of `synthetic:cells|
vessels|shapes`; random patches of `patch_size` (`0`: whole images of one size), in [0, 1], not normalised.

- `denoise`: input `x (1 - a) + u a`, `u ~ U(0, 1)`, `a ~ U(0, noise_amount)` per image (`noise_type`
  uniform), or `clip(x + s n)`, `n ~ N(0, I)`, `s ~ U(0, noise_amount)` (gaussian); target `x`. Validation
  corrupts every image at the middle of the range, `noise_amount / 2`, so that a few validation images score
  the denoiser at a known noise level rather than at whatever amount the draw gave them.
- `superres`: input area-down-sampled by `scale_factor` and bicubic-up-sampled back; target `x`.

With `residual` (the default) the model learns the correction `x - input` and its output is added to the
input (VDSR, Kim et al. 2016, arXiv:1511.04587; DnCNN, Zhang et al. 2017): the identity is free, so a short
run already beats its input; the checkpoint's `output` says `residual`, and `unetkit predict` adds the input.

Patches smaller images cannot fill are mirror-padded and the padding left out of the loss (as segmentation
does). Validation runs on whole validation images (super-resolution: cropped to multiples of the factor),
corrupted by draws seeded from `seed` and the image's index alone, and scores PSNR and SSIM of the output
and of the input.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from unetkit import viz
from unetkit.data.corrupt import add_gaussian_noise, add_noise, reduce_resolution
from unetkit.data.image_folder import ImageSplits, load_image_folder
from unetkit.metrics.image import psnr, ssim
from unetkit.train.data import SYNTHETIC_PREFIX, TensorSet
from unetkit.train.distributed import World
from unetkit.train.tasks.base import Forward, PatchTask, Validation, epoch_seed, output_key

if TYPE_CHECKING:
    from unetkit.train.config import TrainConfig

__all__ = ["DenoiseTask", "ImageLoss", "ImageTask", "SuperResTask", "load_images"]

SSIM_MIN_SIDE = 11  # SSIM's Gaussian window (Wang et al. 2004)


def load_images(config: TrainConfig) -> ImageSplits:
    """The training and validation images of an image task's `data` (the test split stays unread)."""
    from unetkit.data.digits import DIGIT_SOURCES, load_digits

    if config.data in DIGIT_SOURCES:
        digits = load_digits(
            config.data,
            size=config.digits_size,
            seed=config.seed,
            n_train=config.synthetic_train,
            n_val=config.synthetic_val,
            n_test=0,  # the test split is for evaluation only (`unetkit.infer.restore`)
            val_fraction=config.val_fraction,
        )
        train, val = list(digits.train), list(digits.val)
        return ImageSplits(
            train,
            val,
            names={"train": [f"train_{i}" for i in range(len(train))], "val": [f"val_{i}" for i in range(len(val))]},
        )
    if config.data.startswith(SYNTHETIC_PREFIX):
        from unetkit.data.synthetic import make_synthetic

        n = config.synthetic_train + config.synthetic_val
        full, _ = make_synthetic(config.data[len(SYNTHETIC_PREFIX) :], n, config.synthetic_size, seed=0)
        images = [np.ascontiguousarray(x, dtype=np.float32) for x in full.images]
        names = {"train": full.names[: config.synthetic_train], "val": full.names[config.synthetic_train :]}
        return ImageSplits(images[: config.synthetic_train], images[config.synthetic_train :], names=names)
    return load_image_folder(config.data, val_fraction=config.val_fraction, seed=config.seed)


class ImageLoss(nn.Module):
    """MSE or L1 between output and target `(B, C, H, W)`, over the pixels `valid` `(B, H, W)` marks."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def forward(
        self,
        output: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        error = (output - target).abs() if self.kind == "l1" else (output - target).square()
        if valid is None:
            return error.mean()
        mask = valid[:, None].to(error.dtype)
        return (error * mask).sum() / (mask.sum() * error.shape[1]).clamp_min(1)


class ImageTask(PatchTask):
    """What the image tasks share: data, patches, model channels, checkpoint entries. Subclasses draw the
    model input and target of a batch (`pair`) and score validation."""

    name = ""
    curve_metrics: tuple[str, ...] = ("psnr",)

    def __init__(self, config: TrainConfig, device: torch.device) -> None:
        self.config = config
        self.device = device
        self.images = load_images(config)
        if not self.images.train:
            raise ValueError(f"{config.data}: no training images")
        self.channels = int(self.images.train[0].shape[0])
        given = config.model_options.get("in_channels")
        if given is not None and given != self.channels:
            raise ValueError(
                f"`model_options.in_channels` {given!r} does not fit {config.data}: its images have "
                f"{self.channels} channel(s)"
            )
        tensors = [torch.from_numpy(x).to(device) for x in self.images.train]
        valid = [torch.ones(x.shape[-2:], dtype=torch.bool, device=device) for x in tensors]
        super().__init__(
            TensorSet(tensors, [], valid, None, list(self.images.names.get("train", []))), config.patch_size
        )
        self.val_images = [torch.from_numpy(x).to(device) for x in self.images.val]
        self.train_size = len(tensors)
        self.side = config.patch_side or min(min(x.shape[-2:]) for x in self.images.train)
        self.loss_fn = ImageLoss("l1" if config.loss == "l1" else "mse")

    def model_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"in_channels": self.channels, output_key(self.config.model): self.channels}
        if self.config.model == "unet_dense_bottleneck":
            options["image_size"] = self.side
        return options

    def attach(self, model: nn.Module) -> None:
        super().attach(model)
        self.side = self._sampler().height

    def loss(self) -> nn.Module:
        return self.loss_fn

    def batch(
        self, indices: list[int], generator: torch.Generator, augment: torch.Generator, rows: slice
    ) -> dict[str, torch.Tensor]:
        """Clean patches of the whole global batch, the task's pair drawn for all of them (so that every
        process draws the same), then this process's rows."""
        crops = self._sampler().batch(indices, generator)
        pair = self.pair(crops["image"], generator)
        return {k: v[rows] for k, v in {**pair, "valid": crops["valid"]}.items()}

    def pair(self, clean: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """`image` (model input) and `target` for clean patches `(B, C, h, w)`."""
        raise NotImplementedError

    def extra(self) -> dict[str, Any]:
        return {
            "task": self.name,
            "preprocess": {"range": [0.0, 1.0], "note": "images in [0, 1]; diffusion works in [-1, 1]"},
            "image": {"channels": self.channels, "size": self.side, "data": self.config.data},
            "output": "identity",
        }


class RestorationTask(ImageTask):
    """Denoising and super-resolution: validation PSNR / SSIM of output and input on whole images."""

    def __init__(self, config: TrainConfig, device: torch.device) -> None:
        super().__init__(config, device)
        self.monitor = "psnr" if config.monitor == "auto" else config.monitor

    def corrupt(self, clean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def corrupt_for_validation(self, clean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The corrupted input of a validation image (the training corruption unless a task says otherwise)."""
        return self.corrupt(clean, generator)

    def pair(self, clean: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        corrupted = self.corrupt(clean, generator)
        return {"image": corrupted, "target": clean - corrupted if self.config.residual else clean}

    def val_image(self, x: torch.Tensor) -> torch.Tensor:
        """The part of a validation image that is scored `(C, H, W)`."""
        return x

    @torch.no_grad()
    def validate(self, model: nn.Module, forward: Forward, world: World) -> Validation:
        n = len(self.val_images)
        if n == 0:
            return Validation({})
        sums = torch.zeros(5, dtype=torch.float64, device=self.device)  # loss, psnr, ssim, psnr_input, ssim count
        shown: list[list[np.ndarray]] = [[], [], []]
        for i in world.shard(n):
            clean = self.val_image(self.val_images[i])[None]
            generator = torch.Generator().manual_seed(epoch_seed(self.config.seed, i, 3))
            corrupted = self.corrupt_for_validation(clean, generator)
            output = forward(model, corrupted)
            output = corrupted + output if self.config.residual else output
            restored = output.clamp(0, 1)
            sums[0] += self.loss_fn(output, clean).double()
            sums[1] += psnr(restored, clean).double().sum()
            sums[3] += psnr(corrupted.clamp(0, 1), clean).double().sum()
            if min(clean.shape[-2:]) >= SSIM_MIN_SIDE:
                sums[2] += ssim(restored, clean).double().sum()
                sums[4] += 1
            if i < self.config.samples:
                for row, image in zip(shown, (corrupted, restored, clean), strict=True):
                    row.append(image[0].clamp(0, 1).cpu().numpy())
        world.sum_(sums)
        metrics = {"val_loss": (sums[0] / n).item(), "psnr": (sums[1] / n).item(), "psnr_input": (sums[3] / n).item()}
        if sums[4] > 0:
            metrics["ssim"] = (sums[2] / sums[4]).item()
        rows = [[x for part in world.gather(row) for x in part] for row in shown]
        picture = None
        if rows[0]:  # rank 0: input, output and target rows
            crops = viz.center_crops([x for row in rows for x in row])
            picture = viz.image_grid(crops, columns=len(rows[0]))
        return Validation(metrics, picture)

    def extra(self) -> dict[str, Any]:
        return {**super().extra(), "output": "residual" if self.config.residual else "identity"}


class DenoiseTask(RestorationTask):
    name = "denoise"

    def corrupt(self, clean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        amount = torch.rand(clean.shape[0], generator=generator) * self.config.noise_amount
        return self._noise(clean, amount.to(clean.device), generator)

    def corrupt_for_validation(self, clean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self._noise(clean, torch.full((clean.shape[0],), self.config.noise_amount / 2), generator)

    def _noise(self, clean: torch.Tensor, amount: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        amount = amount.to(clean.device, clean.dtype)
        if self.config.noise_type == "gaussian":
            return add_gaussian_noise(clean, amount, generator)
        return add_noise(clean, amount, generator)

    def extra(self) -> dict[str, Any]:
        settings = {"noise": self.config.noise_type, "max_amount": self.config.noise_amount}
        return {**super().extra(), "denoise": settings}


class SuperResTask(RestorationTask):
    name = "superres"

    def __init__(self, config: TrainConfig, device: torch.device) -> None:
        super().__init__(config, device)
        for name, x in zip(self.images.names.get("val", []), self.val_images, strict=False):
            if min(x.shape[-2:]) < config.scale_factor:
                raise ValueError(
                    f"{config.data}: validation image {name!r} is {x.shape[-2]}x{x.shape[-1]}, smaller than "
                    f"`scale_factor` {config.scale_factor}"
                )

    def check_patch(self, height: int, width: int) -> None:
        factor = self.config.scale_factor
        if height % factor or width % factor:
            what = f"patch {height}x{width}" if self.config.patch_size else f"images of {height}x{width}"
            raise ValueError(
                f"`scale_factor` {factor} must divide the training {what} (the model's input side); "
                f"choose a `patch_size` that is a multiple of {factor}"
            )

    def corrupt(self, clean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return reduce_resolution(clean, self.config.scale_factor)

    def val_image(self, x: torch.Tensor) -> torch.Tensor:
        factor = self.config.scale_factor
        height, width = (x.shape[-2] // factor) * factor, (x.shape[-1] // factor) * factor
        top, left = (x.shape[-2] - height) // 2, (x.shape[-1] - width) // 2
        return x[:, top : top + height, left : left + width]

    def extra(self) -> dict[str, Any]:
        return {
            **super().extra(),
            "superres": {"scale_factor": self.config.scale_factor, "down": "area", "up": "bicubic"},
        }
