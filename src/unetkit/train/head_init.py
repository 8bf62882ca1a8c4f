"""The output head starts at the class prior.

Why: a freshly initialised U-Net puts out a near-constant logit map. The decoder's last activations are
non-negative (ReLU after BatchNorm) and vary little across the image, so the random 1x1 head turns them
into an offset of random sign that dwarfs the spatial contrast (at `unet(base_channels=8, depth=3)`: mean
logit +0.06..+0.35 with a spatial standard deviation of 0.01 for 3 of 4 seeds). A sigmoid head then
predicts "everything foreground" and stays there until the optimiser has unlearned the offset, which
on a small folder (2 steps an epoch) took several epochs, while a two-channel softmax head started from
whichever constant its random difference gave. That is the BCE stall of issue 15.

The fix is the prior initialisation of the focal-loss paper (Lin et al. 2017, arXiv:1708.02002, Sec. 4.1),
made data-dependent (as LSUV, Mishkin & Matas 2015, arXiv:1511.06422): one forward pass on a training
batch measures the head's mean output per class, and the head's bias is shifted so that the mean becomes
the log-odds of the foreground (`K == 1`) or the log of each class's pixel share (`K >= 2`). The network
then starts at the loss of the best constant prediction and spends its first steps on the contrast.
BatchNorm's running statistics are left as they were.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["class_priors", "init_head_to_prior", "output_head"]

PRIOR_FLOOR = 1e-4  # a class with (almost) no pixel still gets a finite log-prior


def output_head(model: nn.Module, out_channels: int) -> nn.Conv2d | None:
    """The model's output layer: `model.head` when it is a convolution, else the last convolution with
    `out_channels` outputs and a bias; None when there is none."""
    head = getattr(model, "head", None)
    if isinstance(head, nn.Conv2d) and head.out_channels == out_channels and head.bias is not None:
        return head
    found = None
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.out_channels == out_channels and module.bias is not None:
            found = module
    return found


def class_priors(targets: list[torch.Tensor], valid: list[torch.Tensor], num_classes: int) -> list[float]:
    """Pixel share of each class over the valid pixels of the training targets."""
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for target, keep in zip(targets, valid, strict=True):
        counts += torch.bincount(target[keep].flatten().cpu(), minlength=num_classes)[:num_classes].double()
    total = float(counts.sum())
    return [max(float(c) / total, PRIOR_FLOOR) if total else 1.0 / num_classes for c in counts]


@torch.no_grad()
def init_head_to_prior(
    model: nn.Module, images: torch.Tensor, priors: list[float], channels: int, sigmoid_priors: Sequence[float] = ()
) -> bool:
    """Shift the head's bias so that the mean output on `images` is the prior's logit (in place).

    Args:
        model: the freshly built model.
        images: `(B, C, H, W)` normalised training patches on the model's device.
        priors: class shares; one class channel means a sigmoid and `priors[1]` is the foreground.
        channels: the model's output channels: the class channels, then one per entry of `sigmoid_priors`.
        sigmoid_priors: the mean targets of trailing sigmoid channels (the separation's distance).

    Returns:
        Whether a head was found and shifted.
    """
    head = output_head(model, channels)
    if head is None or head.bias is None:
        return False
    buffers = {name: buf.clone() for name, buf in model.named_buffers()}
    training = model.training
    model.train()  # the batch statistics that training steps see
    logits = model(images).float()  # (B, K, h, w)
    model.train(training)
    for name, buf in model.named_buffers():  # running statistics as they were
        buf.copy_(buffers[name])
    mean = logits.mean(dim=(0, *range(2, logits.ndim)))  # (K,)
    classes = channels - len(sigmoid_priors)

    def logit(p: float) -> float:
        p = min(max(p, PRIOR_FLOOR), 1 - PRIOR_FLOOR)
        return math.log(p / (1 - p))

    if classes == 1:
        target = torch.tensor([logit(priors[1] if len(priors) > 1 else priors[0])], device=mean.device)
    else:
        target = torch.log(torch.tensor(priors[:classes], device=mean.device).clamp_min(PRIOR_FLOOR))
    if sigmoid_priors:
        target = torch.cat([target, torch.tensor([logit(p) for p in sigmoid_priors], device=mean.device)])
    head.bias.add_((target - mean).to(head.bias.dtype))
    return True
