"""The data set fingerprint (after nnU-Net's `DatasetFingerprintExtractor`, Isensee et al. 2021): what a
folder holds, measured once, from which the normalisation and the training plan (`unetkit.train.plan`)
are chosen and which `unetkit data inspect DIR` prints as a table and JSON.

It reports the image count per split, sizes, dtypes, channels, intensity percentiles, the mask mode with
its evidence, classes with their pixel frequencies, object counts and sizes (instance ids, or connected
components of the foreground), the share of objects touching another, the normalisation, and the images
whose statistics stand out (more than `OUTLIER_MADS` median absolute deviations from the median).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.data.normalize import fit_normalization, stat_stride
from unetkit.data.types import MaskInfo, SegmentationSet

__all__ = ["Fingerprint", "fingerprint_folder", "fingerprint_sets"]

OUTLIER_MADS = 4.0
INTENSITY_PERCENTILES = (0.5, 50.0, 99.5)


@dataclass
class Fingerprint:
    """The measured facts of a data set (JSON-ready through `to_dict`)."""

    root: str
    counts: dict[str, int]
    sizes: dict[str, list[int]]  # "height" / "width": [min, median, max]
    dtypes: dict[str, int]
    channels: int
    intensity: dict[str, list[float]]  # percentile name -> one value per channel
    mask: dict[str, Any]
    classes: list[dict[str, Any]]
    objects: dict[str, Any]
    normalization: dict[str, Any]
    outliers: list[dict[str, str]] = field(default_factory=list)
    shape: list[int] | None = None  # volumes: the median shape, per axis
    spacing: list[float] | None = None  # volumes: the median voxel spacing, per axis

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @property
    def median_size(self) -> tuple[int, int]:
        return int(self.sizes["height"][1]), int(self.sizes["width"][1])

    def table(self) -> str:
        """The fingerprint as an aligned text table."""
        sides = zip(self.sizes["height"], self.sizes["width"], strict=True)
        sizes = " / ".join(f"{h}x{w}" for h, w in sides) + "  (min / median / max)"
        rows = [
            ("images", ", ".join(f"{n} {split}" for split, n in self.counts.items())),
            *([("volume shape", "x".join(map(str, self.shape)) + "  (median)")] if self.shape else []),
            *([("spacing", " x ".join(f"{v:g}" for v in self.spacing) + "  (median)")] if self.spacing else []),
            *([] if self.shape else [("size (HxW)", sizes)]),
            ("dtypes", ", ".join(f"{k} ({v})" for k, v in self.dtypes.items())),
            ("channels", str(self.channels)),
        ]  # fmt: skip
        for name, values in self.intensity.items():
            rows.append((f"intensity {name}", ", ".join(f"{v:.6g}" for v in values)))
        rows.append(("normalisation", f"{self.normalization['scheme']}: {self.normalization.get('reason', '')}"))
        rows.append(("mask mode", self.mask["reason"]))
        for entry in self.classes:
            rows.append((f"class {entry['index']} (value {entry['value']})", f"{entry['share']:.2%} of valid pixels"))
        if self.mask.get("ignore_index") is not None:
            rows.append((f"ignored (value {self.mask['ignore_index']})", f"{self.mask['ignored_share']:.2%} of pixels"))
        if self.objects:
            objects = self.objects
            rows.append(
                ("objects per image", "{} / {:g} / {}".format(*objects["per_image"]) + "  (min / median / max)")
            )
            unit = "voxels" if self.shape else "px"
            rows.append(
                (f"object size ({unit})", "{:g} / {:g} / {:g}".format(*objects["size"]) + "  (5% / median / 95%)")
            )
            rows.append(("objects touching another", f"{objects['touching']:.0%} ({objects['kind']})"))
        for item in self.outliers:
            rows.append((f"outlier {item['name']}", item["why"]))
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _touching(labels: np.ndarray) -> tuple[int, int]:
    """(objects touching another object, objects) of an instance label image or volume (full neighbourhood)."""
    from scipy import ndimage

    ids = np.unique(labels)
    ids = ids[ids > 0]
    if ids.size == 0:
        return 0, 0
    high = ndimage.maximum_filter(labels, 3)
    low = ndimage.minimum_filter(np.where(labels > 0, labels, np.iinfo(np.int32).max), 3)
    contact = (labels > 0) & ((high != labels) | (low != labels)) & (low != np.iinfo(np.int32).max)
    contact &= (high > 0) & (low > 0)
    return int(np.unique(labels[contact]).size), int(ids.size)


def _objects(data: SegmentationSet, info: MaskInfo) -> dict[str, Any]:
    """Object counts and sizes: instance ids, or connected components of each image's foreground."""
    from skimage.measure import label

    counts: list[int] = []
    sizes: list[int] = []
    touching = total = 0
    for i, target in enumerate(data.targets):
        labels = data.instances[i] if data.instances is not None else label(target > 0, connectivity=target.ndim)
        ids, areas = np.unique(labels[labels > 0], return_counts=True)
        counts.append(int(ids.size))
        sizes.extend(int(a) for a in areas)
        if data.instances is not None:
            t, n = _touching(labels)
            touching, total = touching + t, total + n
    if not counts:
        return {}
    kind = "instance ids" if data.instances is not None else "connected components of the foreground"
    size = np.percentile(sizes, (5, 50, 95)).round(1).tolist() if sizes else [0.0, 0.0, 0.0]
    return {
        "kind": kind,
        "per_image": [int(min(counts)), float(np.median(counts)), int(max(counts))],
        "size": size,
        "touching": touching / total if total else 0.0,
    }


def _robust_outliers(values: np.ndarray) -> np.ndarray:
    median = np.median(values)
    mad = np.median(np.abs(values - median))
    if mad == 0:
        return np.zeros(values.shape, bool)
    return np.abs(values - median) > OUTLIER_MADS * 1.4826 * mad


def fingerprint_sets(
    root: str | Path, splits: dict[str, SegmentationSet], info: MaskInfo, *, normalize: str = "auto"
) -> Fingerprint:
    """The fingerprint of loaded splits (from `load_folder`); statistics over every split, the
    normalisation fitted on `train` as training fits it."""
    every = [s for s in splits.values() if len(s)]
    images = [x for s in every for x in s.images]
    names = [n for s in every for n in s.names]
    targets = [t for s in every for t in s.targets]
    valids = [v for s in every for v in (s.fov if s.fov is not None else [None] * len(s))]
    dtypes: list[str] = [str(d) for s in every for d in _dtypes(s)]
    channels = int(images[0].shape[0])
    heights = np.array([x.shape[-2] for x in images])
    widths = np.array([x.shape[-1] for x in images])
    samples = [x[:, :: stat_stride(*x.shape[-2:]), :: stat_stride(*x.shape[-2:])].reshape(channels, -1) for x in images]
    pooled = np.concatenate(samples, axis=1)
    intensity = {f"p{p:g}": [float(v) for v in np.percentile(pooled, p, axis=1)] for p in INTENSITY_PERCENTILES}
    train = splits["train"]
    foreground = [(t > 0) if train.fov is None else (t > 0) & train.fov[i] for i, t in enumerate(train.targets)]
    norm = fit_normalization(train.images, scheme=normalize, dtypes=_dtypes(train), foreground=list(foreground))
    k = info.num_classes
    freq = np.zeros(k, dtype=np.int64)
    ignored = total = 0
    for target, valid in zip(targets, valids, strict=True):
        counted = target if valid is None else target[valid]
        freq += np.bincount(counted.ravel(), minlength=k)[:k]
        total += target.size
        ignored += 0 if valid is None else int((~valid).sum())
    classes = [
        {"index": c, "value": info.label_values[c] if c < len(info.label_values) else c,
         "share": float(freq[c] / max(freq.sum(), 1))}
        for c in range(k)
    ]  # fmt: skip
    outliers = []
    medians = np.array([float(np.median(s)) for s in samples])
    areas = heights * widths
    fg_share = np.array([float((t > 0).mean()) for t in targets])
    for what, values in (("size", areas), ("median intensity", medians), ("foreground share", fg_share)):
        for i in np.flatnonzero(_robust_outliers(values.astype(np.float64))):
            outliers.append({"name": names[i], "why": f"{what} {values[i]:.4g} (median {np.median(values):.4g})"})
    volumes = images[0].ndim == 4  # (C, D, H, W)
    objects = _objects(_merged(every), info)  # pixels or voxels
    mask = {
        "mode": info.mode,
        "num_classes": info.num_classes,
        "label_values": info.label_values,
        "ignore_index": info.ignore_index,
        "ignored_share": ignored / max(total, 1),
        "reason": info.reason,
    }
    return Fingerprint(
        root=str(root),
        counts={split: len(s) for split, s in splits.items()},
        sizes={
            "height": [int(heights.min()), int(np.median(heights)), int(heights.max())],
            "width": [int(widths.min()), int(np.median(widths)), int(widths.max())],
        },
        dtypes={d: dtypes.count(d) for d in sorted(set(dtypes))},
        channels=channels,
        intensity=intensity,
        mask=mask,
        classes=classes,
        objects=objects,
        normalization=norm.to_dict(),
        outliers=outliers,
        shape=[int(n) for n in np.median([x.shape[1:] for x in images], axis=0)] if volumes else None,
        spacing=_median_spacing(every) if volumes else None,
    )


def _median_spacing(sets: list[SegmentationSet]) -> list[float] | None:
    """The median voxel spacing per axis of volume sets (`VolumeSet.spacing`); None without spacing."""
    spacing = [s for data in sets for s in getattr(data, "spacing", [])]
    return [float(v) for v in np.median(np.array(spacing, dtype=np.float64), axis=0)] if spacing else None


def _dtypes(data: SegmentationSet) -> list[str]:
    """The image files' dtypes (`load_folder` records them), float32 where unknown."""
    found = data.extra.get("dtypes")
    return [str(d) for d in found] if isinstance(found, list) else ["float32"] * len(data)


def _merged(sets: list[SegmentationSet]) -> SegmentationSet:
    instances = None
    if all(s.instances is not None for s in sets):
        instances = [x for s in sets for x in (s.instances or [])]
    return SegmentationSet(
        images=[x for s in sets for x in s.images],
        targets=[t for s in sets for t in s.targets],
        names=[n for s in sets for n in s.names],
        instances=instances,
    )


def fingerprint_folder(
    root: str | Path,
    *,
    mask_mode: str = "auto",
    ignore_index: int | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    normalize: str = "auto",
) -> tuple[Fingerprint, dict[str, SegmentationSet], MaskInfo]:
    """Load a folder data set of images or volumes (`unetkit.data.any_folder`) and measure its fingerprint.

    Returns:
        The fingerprint, the loaded splits and the mask reading.
    """
    from unetkit.data.any_folder import load_any_folder

    splits, info = load_any_folder(root, mask_mode=mask_mode, val_fraction=val_fraction, seed=seed,
                                   ignore_index=ignore_index)  # fmt: skip
    return fingerprint_sets(root, splits, info, normalize=normalize), splits, info
