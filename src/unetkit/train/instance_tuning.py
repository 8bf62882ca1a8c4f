"""After training on instance masks: run the best model over the validation images and choose the instance
post-processing there (`unetkit.infer.instances.fit_instances`), for `predict --instances` to reuse."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["tune_instances"]


def tune_instances(
    model: torch.nn.Module, images: list[torch.Tensor], instances: list[Any], class_channels: int
) -> dict[str, Any]:
    """The post-processing that maximises the pooled instance F1 at IoU 0.5 on validation images.

    Args:
        model: the trained model (eval mode is set here).
        images: normalised `(C, *spatial)` validation images on the model's device.
        instances: their integer instance labels.
        class_channels: the model's class outputs; one more output is the separation's distance.

    Returns:
        `unetkit.infer.instances.fit_instances`' choice with `tuned_on`; empty without images.
    """
    from unetkit.infer.instances import fit_instances
    from unetkit.models.inference import forward_whole

    if not images:
        return {}
    model.eval()
    probs, distances = [], []
    with torch.no_grad():
        for x in images:
            out = forward_whole(model, x[None]).float()[0]  # (K[+1], *spatial)
            logits = out[:class_channels]
            if class_channels == 1:
                fg = torch.sigmoid(logits)
                probs.append(torch.cat([1 - fg, fg]).cpu().numpy())
            else:
                probs.append(logits.softmax(0).cpu().numpy())
            if out.shape[0] > class_channels:
                distances.append(torch.sigmoid(out[class_channels]).cpu().numpy())
    spatial = images[0].ndim - 1
    fitted = fit_instances(probs, [np.asarray(t) for t in instances], distances or None, spatial_dims=spatial)
    fitted["tuned_on"] = f"{len(images)} validation image(s), instance F1 at IoU 0.5"
    return fitted
