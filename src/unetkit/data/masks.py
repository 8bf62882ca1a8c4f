"""Masks as users ship them: one reader for `train`, `evaluate` and `predict`, and the rules that decide
how mask values map to classes.

A mask file is read as its raw integer values: a palette PNG (PASCAL VOC style) as its palette indices,
a grey or equal-channel RGB file as its grey values, an integer or integer-valued float TIFF as its
values. An `ignore_index` (VOC's 255 border) marks pixels that no loss, metric or prediction uses: it is
not a class, and its pixels become invalid (`valid` False) wherever masks are read.

Modes (`MaskInfo.mode`): `binary` (every mask within {0, 1} or {0, 255}), `classes` (the sorted union
of the values are the classes) and `instances` (one id per object, 0 = background; the class target is
`id > 0`). `auto` decides from evidence gathered over every mask and says in one line what it decided,
why, and which setting overrides it:

- binary when every mask fits a binary value set;
- instance labels when masks look like label images: (almost) every id is one connected blob, ids
  per mask are about 1..N, objects are small against the image, and there are many ids per mask
  (`MANY_IDS`) or the masks are stored wider than 8 bits (uint16 / int32 label images, as nuclei sets
  such as the 2018 Data Science Bowl ship them); also when there are more distinct values than
  `MAX_CLASS_VALUES`;
- classes otherwise (palette PNGs are class maps). In palette masks with at most 21 other values, 255 is
  PASCAL VOC's void border and is ignored unless `ignore_index` or `mask_mode: classes` says otherwise.

A mask that fits both readings (a few ids, each one blob) gets a warning that names the file and both
readings.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unetkit.data.errors import DataError
from unetkit.data.io import read_image
from unetkit.data.types import MaskInfo

__all__ = [
    "MANY_IDS",
    "MASK_MODES",
    "MAX_CLASS_VALUES",
    "MaskEvidence",
    "check_ignore_index",
    "class_targets",
    "mask_evidence",
    "read_mask",
    "resolve_mask_mode",
]

logger = logging.getLogger(__name__)

MASK_MODES = ("auto", "binary", "classes", "instances")
# more distinct mask values than this are instance labels, not classes
MAX_CLASS_VALUES = 256
# the largest mask value: instance labels are stored as int32
MAX_MASK_VALUE = int(np.iinfo(np.int32).max)
BINARY_VALUE_SETS = (frozenset({0, 1}), frozenset({0, 255}))
# evidence thresholds of `auto` (see the module docstring)
MANY_IDS = 10  # ids in one mask from which 8-bit masks are taken as instance labels too
SINGLE_BLOB_SHARE = 0.9  # share of ids that must be one connected blob
CONSECUTIVE_SHARE = 0.8  # share of masks whose ids are about 1..N (largest id <= 2 N + 1)
OBJECT_AREA_SHARE = 0.1  # the median object covers at most this share of its image
VOC_VOID = 255  # palette masks with this value and at most VOC_MAX_CLASSES others: VOC's void border, ignored
VOC_MAX_CLASSES = 21
LISTED = 5


def _listing(items: Sequence[object]) -> str:
    shown = ", ".join(str(item) for item in items[:LISTED])
    return f"{shown} and {len(items) - LISTED} more" if len(items) > LISTED else shown


def is_palette_png(path: Path) -> bool:
    """Whether `path` is a PNG of colour type 3 (palette indices), from its header."""
    try:
        with open(path, "rb") as file:
            head = file.read(26)
    except OSError:
        return False
    return head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR" and len(head) == 26 and head[25] == 3


def _single_channel(array: np.ndarray, path: Path) -> np.ndarray:
    """`(H, W)` from a grey file, or from an RGB(A) / grey + alpha file whose colour channels are equal."""
    if array.ndim == 2:
        return array
    channels = array.shape[-1]
    if channels in (1, 2):  # grey (+ alpha)
        return array[..., 0]
    if channels in (3, 4):
        colour = array[..., :3]
        if not (np.array_equal(colour[..., 0], colour[..., 1]) and np.array_equal(colour[..., 0], colour[..., 2])):
            raise DataError(
                f"{path}: colour masks are not supported: expected a single-channel mask (grey values or a "
                "palette PNG of class indices)"
            )
        return colour[..., 0]
    raise DataError(f"{path}: expected a single-channel mask, got {channels} channels")


def read_mask(path: str | Path) -> np.ndarray:
    """A mask file as int64 `(H, W)` holding its raw, non-negative integer values.

    Palette PNGs give their palette indices (not colours), grey or equal-channel RGB(A) files their grey
    values, TIFFs their integer (or integer-valued float) values.

    Raises:
        DataError: an unreadable file, a colour (not grey, not palette) mask, non-integer, negative or
            too large values; the message names the file.
    """
    path = Path(path)
    mask = _single_channel(read_image(path, keep_palette=True), path)
    if mask.dtype.kind == "f":
        if not np.array_equal(mask, np.round(mask)):
            raise DataError(f"{path}: mask holds non-integer values (dtype {mask.dtype}); expected integer labels")
    elif mask.dtype.kind not in "iu":
        raise DataError(f"{path}: mask dtype {mask.dtype} is not supported; expected integer labels")
    low, high = mask.min().item(), mask.max().item()  # Python numbers: no overflow comparing float16 with int32
    if low < 0:
        raise DataError(f"{path}: mask holds negative values (min {low}); expected labels >= 0")
    if high > MAX_MASK_VALUE:
        raise DataError(f"{path}: mask value {high} is above the largest supported label {MAX_MASK_VALUE}")
    return mask.astype(np.int64)


def check_ignore_index(ignore_index: object, name: str = "ignore_index") -> int | None:
    """`ignore_index` as an int >= 0, or None; `ValueError` naming `name` otherwise."""
    if ignore_index is None:
        return None
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)) or ignore_index < 0:
        raise ValueError(f"`{name}` must be an integer >= 0 or null, got {ignore_index!r}")
    return int(ignore_index)


@dataclass(frozen=True)
class MaskEvidence:
    """What one mask says about its reading.

    Attributes:
        path: the mask file.
        dtype: its stored dtype (`uint8`, `uint16`, ...; `palette` for palette PNGs).
        values: sorted distinct values, the ignore index left out.
        pixels: pixels of the mask.
        blobs: connected blobs (8-connectivity) per nonzero value, in the order of `values[values > 0]`;
            None when not computed (binary masks).
        sizes: pixels per nonzero value, in the same order; None when not computed.
    """

    path: Path
    dtype: str
    values: np.ndarray
    pixels: int
    blobs: np.ndarray | None = None
    sizes: np.ndarray | None = None

    @property
    def ids(self) -> int:
        return int(np.count_nonzero(self.values))

    @property
    def consecutive(self) -> bool:
        """The nonzero values are about 1..N: the largest is at most 2 N + 1."""
        return self.ids > 0 and int(self.values.max()) <= 2 * self.ids + 1

    @property
    def binary(self) -> bool:
        present = {int(v) for v in self.values}
        return any(present <= allowed for allowed in BINARY_VALUE_SETS)


def mask_evidence(mask: np.ndarray, path: Path, *, ignore_index: int | None = None, dtype: str = "") -> MaskEvidence:
    """The evidence of one mask (raw values from `read_mask`); blobs and sizes only for non-binary masks."""
    from skimage.measure import label

    kept = mask if ignore_index is None else np.where(mask == ignore_index, 0, mask)
    values, counts = np.unique(kept, return_counts=True)
    if ignore_index is not None and not np.any(mask == 0):
        present = values != 0
        values, counts = values[present], counts[present]  # 0 only stands in for ignored pixels
    evidence = MaskEvidence(path, dtype, values, int(mask.size))
    if evidence.binary:
        return evidence
    regions = label(kept, background=0, connectivity=2)
    region_value = np.zeros(int(regions.max()) + 1, dtype=np.int64)
    region_value[regions.ravel()] = kept.ravel()
    nonzero = values[values > 0]
    blobs = np.searchsorted(nonzero, region_value[1:])
    per_value = np.bincount(blobs, minlength=nonzero.size)[: nonzero.size]
    return MaskEvidence(path, dtype, values, int(mask.size), per_value, counts[values > 0])


def _instance_like(evidence: Sequence[MaskEvidence]) -> tuple[bool, dict[str, float]]:
    """Whether the masks look like instance label images, with the figures that say so."""
    with_ids = [e for e in evidence if e.ids > 0 and e.blobs is not None]
    if not with_ids:
        return False, {}
    blobs = np.concatenate([e.blobs for e in with_ids if e.blobs is not None])
    share_single = float(np.mean(blobs == 1))
    share_consecutive = float(np.mean([e.consecutive for e in with_ids]))
    relative = np.concatenate([e.sizes / e.pixels for e in with_ids if e.sizes is not None])
    sizes = np.concatenate([e.sizes for e in with_ids if e.sizes is not None])
    figures = {
        "single": share_single,
        "consecutive": share_consecutive,
        "median_size": float(np.median(sizes)),
        "median_share": float(np.median(relative)),
        "min_ids": float(min(e.ids for e in with_ids)),
        "max_ids": float(max(e.ids for e in with_ids)),
    }
    like = (
        share_single >= SINGLE_BLOB_SHARE
        and share_consecutive >= CONSECUTIVE_SHARE
        and figures["median_share"] <= OBJECT_AREA_SHARE
    )
    return like, figures


def _instance_words(figures: dict[str, float], masks: int, dtypes: list[str]) -> str:
    ids = f"{int(figures['min_ids'])}-{int(figures['max_ids'])}" if figures["min_ids"] != figures["max_ids"] else ""
    ids = ids or str(int(figures["max_ids"]))
    return (
        f"{masks} {'/'.join(dtypes)} mask(s) with {ids} ids each, {figures['single']:.0%} of ids one connected "
        f"blob, median object {figures['median_size']:.0f} px ({figures['median_share']:.1%} of its image)"
    )


def _override(mode: str) -> str:
    return f"set mask_mode (--mask-mode) to {mode!r} to read them otherwise"


def resolve_mask_mode(
    evidence: Sequence[MaskEvidence], mask_mode: str, root: Path, *, ignore_index: int | None = None
) -> MaskInfo:
    """Pick the mask mode (for `auto`) and the label values from the evidence of every mask of every split.

    Logs one line saying what was decided and why, and warns about a mask that fits two readings.

    Raises:
        DataError: a mask that does not fit the asked mode; the message names the file.
    """
    dtypes = sorted({e.dtype for e in evidence})
    all_binary = all(e.binary for e in evidence)
    if mask_mode == "binary" or (mask_mode == "auto" and all_binary):
        for item in evidence:
            if not item.binary:
                values = [str(int(v)) for v in item.values]
                raise DataError(
                    f"{item.path}: binary mask must hold values within {{0, 1}} or {{0, 255}}, got "
                    f"{{{_listing(values)}}}; use mask_mode 'classes' or 'instances' for other labels"
                )
        seen_255 = [e.path.stem for e in evidence if 255 in e.values]
        seen_1 = [e.path.stem for e in evidence if 1 in e.values]
        if seen_255 and seen_1:
            logger.warning(
                "%s: binary masks mix 0/1 (%s) and 0/255 (%s); both read as foreground > 0",
                root,
                _listing(seen_1),
                _listing(seen_255),
            )
        binary_values = [0, 255] if seen_255 else [0, 1]
        reason = f"binary: every mask holds values within {{{binary_values[0]}, {binary_values[1]}}}"
        return _info("binary", binary_values, ignore_index, reason, mask_mode, root)
    union = np.unique(np.concatenate([e.values for e in evidence]))
    void = ""
    if mask_mode == "auto" and ignore_index is None and dtypes == ["palette"] and VOC_VOID in union:
        others = union[union != VOC_VOID]
        if others.size <= VOC_MAX_CLASSES and others.max(initial=0) < VOC_VOID:  # PASCAL VOC's convention
            ignore_index, union = VOC_VOID, others
            void = "void"
    like, figures = _instance_like(evidence) if mask_mode == "auto" else (False, {})
    wide = any(d not in ("uint8", "int8", "palette", "bool") for d in dtypes)
    palette = dtypes == ["palette"]
    many = bool(figures) and figures["max_ids"] >= MANY_IDS
    if mask_mode == "instances" or (
        mask_mode == "auto" and (len(union) > MAX_CLASS_VALUES or (like and not palette and (many or wide)))
    ):
        if mask_mode == "instances":
            reason = "instance labels, as asked (mask_mode 'instances')"
        elif len(union) > MAX_CLASS_VALUES:
            reason = f"instance labels: {len(union)} distinct values, more than {MAX_CLASS_VALUES} classes"
        else:
            reason = f"instance labels: {_instance_words(figures, len(evidence), dtypes)}"
            if not many:
                _warn_ambiguous(evidence, "instance labels", f"classes ({len(union)} values)", "classes")
        return _info("instances", [0, 1], ignore_index, reason, mask_mode, root)
    if len(union) > MAX_CLASS_VALUES:
        raise DataError(
            f"{root}: masks hold {len(union)} distinct values, more than the {MAX_CLASS_VALUES} allowed for "
            "mask_mode 'classes'; use mask_mode 'instances' for instance labels"
        )
    label_values = [int(v) for v in union]
    if len(label_values) == 1:  # a single value: add a second class so that num_classes >= 2
        label_values = sorted({label_values[0], 0 if label_values[0] != 0 else 1})
    source = "palette PNG indices" if palette else "grey values"
    reason = f"classes: {len(label_values)} values {{{_listing(label_values)}}} ({source}) across {len(evidence)} masks"
    if void:
        reason += f" ({VOC_VOID}: PASCAL VOC's void border)"
    if mask_mode == "classes":
        reason = f"classes, as asked (mask_mode 'classes'): {len(label_values)} values {{{_listing(label_values)}}}"
    elif like:
        _warn_ambiguous(
            evidence,
            f"classes ({len(label_values)} values)",
            "instance labels (each id one connected blob)",
            "instances",
        )
    return _info("classes", label_values, ignore_index, reason, mask_mode, root)


def _warn_ambiguous(evidence: Sequence[MaskEvidence], chosen: str, other: str, mode: str) -> None:
    """Name the first mask that fits both readings."""
    for item in evidence:
        if item.blobs is not None and item.ids > 0 and bool(np.all(item.blobs == 1)) and item.consecutive:
            logger.warning(
                "%s: ambiguous mask: read as %s, but its %d id(s) could also be %s; set mask_mode (--mask-mode) "
                "to %r if they are",
                item.path,
                chosen,
                item.ids,
                other,
                mode,
            )
            return


def _info(mode: str, values: list[int], ignore_index: int | None, reason: str, asked: str, root: Path) -> MaskInfo:
    if ignore_index is not None:
        reason += f"; value {ignore_index} ignored (no loss, metric or prediction)"
    if asked == "auto":
        other = {"binary": "classes", "classes": "instances", "instances": "classes"}[mode]
        reason += f"; {_override(other)}"
    logger.info("%s: masks read as %s", root, reason)
    return MaskInfo(mode=mode, num_classes=2 if mode != "classes" else len(values), label_values=values,
                    ignore_index=ignore_index, reason=reason)  # fmt: skip


def class_targets(mask: np.ndarray, info: MaskInfo, path: Path | str = "mask") -> tuple[np.ndarray, np.ndarray | None]:
    """Raw mask values -> int64 class indices of `info`, and the bool valid mask (None: every pixel valid).

    Ignored pixels (`info.ignore_index`) get class 0 and valid False. A value that is no label value of
    a `classes` reading is an error naming `path`.
    """
    ignored = None if info.ignore_index is None else mask == info.ignore_index
    if info.mode == "classes":
        lookup = np.asarray(info.label_values, dtype=np.int64)
        index = np.clip(np.searchsorted(lookup, mask), 0, len(lookup) - 1)
        unknown = lookup[index] != mask
        if ignored is not None:
            unknown &= ~ignored
        if unknown.any():
            extra = np.unique(mask[unknown])
            raise DataError(
                f"{path}: mask values {{{_listing([int(v) for v in extra])}}} are not among the label values "
                f"{{{_listing(info.label_values)}}}"
            )
        target = index.astype(np.int64)
    else:
        target = (mask > 0).astype(np.int64)
    if ignored is None or not ignored.any():
        return target, None
    target[ignored] = 0
    return target, ~ignored
