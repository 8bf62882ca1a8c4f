"""In-memory segmentation data shared by folder datasets and the synthetic generators."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["MaskInfo", "SegmentationSet"]


@dataclass
class MaskInfo:
    """How mask files map to class indices.

    Attributes:
        mode: `"binary"`, `"classes"` or `"instances"` (instance labels; the class target is `label > 0`).
        num_classes: classes of the target, background included (2 for binary and instances).
        label_values: the mask value written for each class index, e.g. `[0, 255]`; predictions are
            written back in these values.
        ignore_index: the mask value of pixels that no loss, metric or prediction uses (e.g. VOC's 255
            border), or None.
        reason: what the mode was decided from, in one line (for logs and `unetkit data inspect`).
    """

    mode: str
    num_classes: int
    label_values: list[int]
    ignore_index: int | None = None
    reason: str = ""


@dataclass
class SegmentationSet:
    """Images with their class targets and, where known, instance labels and field-of-view masks.

    Attributes:
        images: float32 `(C, H, W)` arrays in the file's own units (not scaled by the dtype, not normalised:
            `unetkit.data.normalize` does that, the same way in training and prediction).
        targets: int64 `(H, W)` class indices in `[0, num_classes)`.
        names: one name per image (file stem or generated id).
        instances: int32 `(H, W)` instance labels (0 = background), or `None` when unknown.
        fov: bool `(H, W)` valid pixels: the field of view less the ignored mask pixels (True = the pixel
            counts), or `None` when every pixel counts.
    """

    images: list[np.ndarray]
    targets: list[np.ndarray]
    names: list[str]
    instances: list[np.ndarray] | None = None
    fov: list[np.ndarray] | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: list[int]) -> SegmentationSet:
        """The samples at `indices`, in that order."""
        return SegmentationSet(
            images=[self.images[i] for i in indices],
            targets=[self.targets[i] for i in indices],
            names=[self.names[i] for i in indices],
            instances=None if self.instances is None else [self.instances[i] for i in indices],
            fov=None if self.fov is None else [self.fov[i] for i in indices],
            extra=dict(self.extra),
        )
