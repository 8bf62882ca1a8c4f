"""Masks as users ship them: one reader for `train`, `evaluate` and `predict`, and the rules that decide
how mask values map to classes.

A mask file is read as its raw integer values: a palette PNG (PASCAL VOC style) as its palette indices,
a grey or equal-channel RGB file as its grey values, an integer or integer-valued float TIFF as its
values. An `ignore_index` (VOC's 255 border) marks pixels that no loss, metric or prediction uses: it is
not a class, and its pixels become invalid (`valid` False) wherever masks are read.

Modes (`MaskInfo.mode`): `binary` (every mask within {0, 1} or {0, 255}), `classes` (the sorted union
of the values are the classes) and `instances` (one id per object, 0 = background; the class target is
`id > 0`). `auto` decides from evidence gathered over every mask and says in one line what it decided,
why, and which setting overrides it. The evidence is chosen to survive what real label images go through
(cropping and tiling a large annotated image, relabelling, permuted or scattered ids, any integer or
integer-valued float dtype): nothing depends on how the ids are numbered.

- binary when every mask fits a binary value set;
- instance labels when there are more distinct values than `MAX_CLASS_VALUES`, or when the masks look like
  label images: (almost) every id is one connected blob (`SINGLE_BLOB_SHARE`), objects are small against
  their image (`OBJECT_AREA_SHARE`), the ids are not a vocabulary shared by the masks (arbitrary values
  recurring in most masks, as an atlas's region codes do), and at least one of: a mask holds many ids
  (`MANY_IDS`), the ids of different masks are mostly different objects (the union of the ids is at least
  `SPREAD` times the most ids of one mask: tiles of one annotated scene, relabelled subsets), or the masks
  are stored wider than 8 bits (uint16 / int32 / float label images, as nuclei sets ship them) with at
  least `WIDE_MIN_IDS` distinct ids;
- classes otherwise (palette PNGs are class maps). In palette masks with at most 21 other values, and in grey
  masks where every 255 pixel lies in thin bands along other labels' outlines (`VOID_DEPTH`), 255 is PASCAL
  VOC's void border and is ignored unless `ignore_index` or `mask_mode: classes` says otherwise.

A mask set that fits both readings (few ids, each one small blob) gets a warning that names a file and
both readings. An `ignore_index` that leaves no label but background (e.g. 255 on 0/255 binary masks, where
it is the foreground) is an error naming both.
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
    "OBJECT_AREA_SHARE",
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
MANY_IDS = 10  # ids in one mask from which a set of masks is taken as instance labels, whatever its dtype
SINGLE_BLOB_SHARE = 0.9  # share of ids that must be one connected blob
OBJECT_AREA_SHARE = 0.1  # the median object covers at most this share of its image
SPREAD = 2.0  # the union of the ids over the masks at least this many times the most ids of one mask
WIDE_MIN_IDS = 4  # distinct ids from which masks wider than 8 bits are taken as instance labels
SHARED_VOCABULARY = 0.5  # mean Jaccard overlap of two masks' ids from which arbitrary ids are a shared vocabulary
PREFIX_SHARE = 0.8  # share of masks whose ids are about 1..N: per-image numbering, not a vocabulary
PAIRS = 256  # mask pairs compared for the shared vocabulary
EIGHT_BIT = ("uint8", "int8", "palette", "bool")
VOC_VOID = 255  # palette masks with this value and at most VOC_MAX_CLASSES others: VOC's void border, ignored
VOC_MAX_CLASSES = 21
VOID_DEPTH = 3  # grey masks: 255 is VOC's void border where at most VOID_DEEP_SHARE of it lies this deep
VOID_DEEP_SHARE = 0.1
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
        blobs: connected blobs (full connectivity: 8 in 2-D, 26 in 3-D) per nonzero value, in the order of
            `values[values > 0]`; None when not computed (binary masks, explicit modes).
        sizes: pixels per nonzero value, in the same order; None when not computed.
        ignored: pixels holding the ignore index.
        void_band: for a mask holding `VOC_VOID` (255): whether those pixels are thin bands along the outlines of
            other labels (PASCAL VOC's void border), not regions of their own; None when 255 is absent.
    """

    path: Path
    dtype: str
    values: np.ndarray
    pixels: int
    blobs: np.ndarray | None = None
    sizes: np.ndarray | None = None
    ignored: int = 0
    void_band: bool | None = None

    @property
    def ids(self) -> int:
        return int(np.count_nonzero(self.values))

    @property
    def nonzero(self) -> np.ndarray:
        return self.values[self.values > 0]

    @property
    def consecutive(self) -> bool:
        """The nonzero values are about 1..N (the largest is at most 2 N + 1): one mask's own numbering."""
        return self.ids > 0 and int(self.values.max()) <= 2 * self.ids + 1

    @property
    def binary(self) -> bool:
        present = {int(v) for v in self.values}
        return any(present <= allowed for allowed in BINARY_VALUE_SETS)


def mask_evidence(mask: np.ndarray, path: Path, *, ignore_index: int | None = None, dtype: str = "") -> MaskEvidence:
    """The evidence of one mask (raw values from `read_mask`, 2-D or 3-D); blobs and sizes only for non-binary
    masks."""
    from skimage.measure import label

    ignored = 0 if ignore_index is None else int(np.count_nonzero(mask == ignore_index))
    kept = mask if not ignored else np.where(mask == ignore_index, 0, mask)
    values, counts = np.unique(kept, return_counts=True)
    if ignored and not np.any(mask == 0):
        present = values != 0
        values, counts = values[present], counts[present]  # 0 only stands in for ignored pixels
    void_band = _thin_band(kept == VOC_VOID, (kept > 0) & (kept != VOC_VOID)) if VOC_VOID in values else None
    evidence = MaskEvidence(path, dtype, values, int(mask.size), ignored=ignored, void_band=void_band)
    if evidence.binary:
        return evidence
    regions = label(kept, background=0, connectivity=kept.ndim)
    region_value = np.zeros(int(regions.max()) + 1, dtype=np.int64)
    region_value[regions.ravel()] = kept.ravel()
    nonzero = values[values > 0]
    blobs = np.searchsorted(nonzero, region_value[1:])
    per_value = np.bincount(blobs, minlength=nonzero.size)[: nonzero.size]
    return MaskEvidence(path, dtype, values, int(mask.size), per_value, counts[values > 0], ignored, void_band)


def _thin_band(pixels: np.ndarray, labelled: np.ndarray) -> bool:
    """Whether `pixels` are thin bands along the outlines of the `labelled` pixels (VOC's void border is about 5 px
    wide): almost none lies deeper than `VOID_DEPTH` pixels inside the set, as the inside of a region would, and
    most lie within twice that of a labelled pixel."""
    from scipy import ndimage

    total = int(pixels.sum())
    if total == 0 or not labelled.any():
        return False
    deep = ndimage.binary_erosion(pixels, iterations=VOID_DEPTH, border_value=1)
    near = ndimage.binary_dilation(labelled, iterations=2 * VOID_DEPTH) & pixels
    return int(deep.sum()) <= VOID_DEEP_SHARE * total and int(near.sum()) >= (1 - VOID_DEEP_SHARE) * total


def _shared_vocabulary(with_ids: Sequence[MaskEvidence]) -> float:
    """The mean Jaccard overlap of the id sets of pairs of masks (neighbours in name order, then seeded random
    pairs, `PAIRS` at most); 0 for fewer than two masks. Class codes recur from mask to mask; the ids of
    different tiles or images are mostly different objects."""
    n = len(with_ids)
    if n < 2:
        return 0.0
    pairs = [(i, i + 1) for i in range(min(n - 1, PAIRS // 2))]
    rng = np.random.default_rng(0)
    while len(pairs) < min(PAIRS, n * (n - 1) // 2):
        i, j = (int(v) for v in rng.choice(n, 2, replace=False))
        pairs.append((i, j))
    overlaps = []
    for i, j in pairs:
        a, b = with_ids[i].nonzero, with_ids[j].nonzero
        union = np.union1d(a, b).size
        overlaps.append(np.intersect1d(a, b, assume_unique=True).size / union if union else 0.0)
    return float(np.mean(overlaps))


def _instance_like(evidence: Sequence[MaskEvidence], wide: bool) -> tuple[bool, dict[str, float]]:
    """Whether the masks look like instance label images, with the figures that say so (module docstring)."""
    with_ids = [e for e in evidence if e.ids > 0 and e.blobs is not None and e.sizes is not None]
    if not with_ids:
        return False, {}
    blobs = np.concatenate([e.blobs for e in with_ids if e.blobs is not None])
    relative = np.concatenate([e.sizes / e.pixels for e in with_ids if e.sizes is not None])
    sizes = np.concatenate([e.sizes for e in with_ids if e.sizes is not None])
    union = np.unique(np.concatenate([e.nonzero for e in with_ids])).size
    most = max(e.ids for e in with_ids)
    figures = {
        "single": float(np.mean(blobs == 1)),
        "median_size": float(np.median(sizes)),
        "median_share": float(np.median(relative)),
        "min_ids": float(min(e.ids for e in with_ids)),
        "max_ids": float(most),
        "union": float(union),
        "shared": _shared_vocabulary(with_ids),
        "prefix": float(np.mean([e.consecutive for e in with_ids])),
    }
    vocabulary = figures["shared"] >= SHARED_VOCABULARY and figures["prefix"] < PREFIX_SHARE
    figures["vocabulary"] = float(vocabulary)
    figures["many"] = float(most >= MANY_IDS)
    figures["spread"] = float(union >= SPREAD * most and union >= WIDE_MIN_IDS)
    figures["wide"] = float(wide and union >= WIDE_MIN_IDS)
    like = (
        figures["single"] >= SINGLE_BLOB_SHARE
        and figures["median_share"] <= OBJECT_AREA_SHARE
        and not vocabulary
        and bool(figures["many"] or figures["spread"] or figures["wide"])
    )
    return like, figures


def _instance_words(figures: dict[str, float], masks: int, dtypes: list[str]) -> str:
    """The evidence of an instance reading in words, the deciding figure first."""
    low, high = int(figures["min_ids"]), int(figures["max_ids"])
    ids = f"{low}-{high}" if low != high else str(high)
    deciding = []
    if figures.get("many"):
        deciding.append(f"up to {high} ids in one mask (>= {MANY_IDS})")
    if figures.get("spread"):
        deciding.append(
            f"{int(figures['union'])} distinct ids over the masks, {figures['union'] / max(high, 1):.1f}x the most "
            f"of one mask (ids of different masks are different objects)"
        )
    if figures.get("wide"):
        deciding.append(f"stored as {'/'.join(d for d in dtypes if d not in EIGHT_BIT)}, as label images are")
    return (
        f"{'; '.join(deciding)}; {masks} {'/'.join(dtypes)} mask(s) with {ids} ids each, {figures['single']:.0%} of "
        f"ids one connected blob, median object {figures['median_size']:.0f} px ({figures['median_share']:.1%} of "
        "its image)"
    )


def _override(mode: str) -> str:
    return f"set mask_mode (--mask-mode) to {mode!r} to read them otherwise"


def _check_ignore(evidence: Sequence[MaskEvidence], ignore_index: int | None, root: Path) -> None:
    """Refuse an ignore index that leaves nothing to learn: every pixel that is not background ignored."""
    if ignore_index is None:
        return
    if ignore_index > 255 and evidence and all(e.dtype in EIGHT_BIT for e in evidence):
        raise DataError(
            f"{root}: ignore_index (--ignore-index) {ignore_index} cannot occur in 8-bit masks (values 0-255); "
            "give the value the masks use for pixels to ignore"
        )
    if not any(e.ignored for e in evidence):
        return
    if all(e.ids == 0 for e in evidence):
        raw = sorted({0, ignore_index} if any(0 in e.values for e in evidence) else {ignore_index})
        raise DataError(
            f"{root}: ignore_index (--ignore-index) {ignore_index} is the only label other than background in "
            f"every mask (values {{{_listing(raw)}}}): ignoring it leaves nothing to learn; for binary masks "
            f"{ignore_index} is the foreground, so give no ignore index, or the value of the pixels to ignore"
        )


def resolve_mask_mode(
    evidence: Sequence[MaskEvidence], mask_mode: str, root: Path, *, ignore_index: int | None = None
) -> MaskInfo:
    """Pick the mask mode (for `auto`) and the label values from the evidence of every mask of every split.

    Logs one line saying what was decided and why, and warns about masks that fit two readings.

    Raises:
        DataError: a mask that does not fit the asked mode, or an `ignore_index` that leaves only background;
            the message names the file or folder.
    """
    _check_ignore(evidence, ignore_index, root)
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
    banded = all(e.void_band is not False for e in evidence) and any(e.void_band for e in evidence)
    if mask_mode == "auto" and ignore_index is None and (dtypes == ["palette"] or banded) and VOC_VOID in union:
        others = union[union != VOC_VOID]
        if others.size <= VOC_MAX_CLASSES and others.max(initial=0) < VOC_VOID:  # PASCAL VOC's convention
            ignore_index, union = VOC_VOID, others
            void = "void"
            evidence = [_without(e, VOC_VOID) for e in evidence]
    palette = dtypes == ["palette"]
    wide = any(d not in EIGHT_BIT for d in dtypes)
    like, figures = _instance_like(evidence, wide) if mask_mode == "auto" else (False, {})
    if mask_mode == "instances" or (mask_mode == "auto" and (len(union) > MAX_CLASS_VALUES or (like and not palette))):
        if mask_mode == "instances":
            reason = "instance labels, as asked (mask_mode 'instances')"
        elif len(union) > MAX_CLASS_VALUES and not like:
            reason = f"instance labels: {len(union)} distinct values, more than {MAX_CLASS_VALUES} classes"
        else:
            reason = f"instance labels: {_instance_words(figures, len(evidence), dtypes)}"
            if not (figures["many"] or figures["spread"]):  # the storage alone decided
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
    if figures.get("vocabulary"):
        reason += f" (the same codes recur from mask to mask: the ids of two masks overlap {figures['shared']:.0%})"
    if void:
        reason += f" ({VOC_VOID}: PASCAL VOC's void border)"
    if mask_mode == "classes":
        reason = f"classes, as asked (mask_mode 'classes'): {len(label_values)} values {{{_listing(label_values)}}}"
    elif figures and figures["single"] >= SINGLE_BLOB_SHARE and figures["median_share"] <= OBJECT_AREA_SHARE:
        _warn_ambiguous(
            evidence,
            f"classes ({len(label_values)} values)",
            "instance labels (each id one connected blob)",
            "instances",
        )
    return _info("classes", label_values, ignore_index, reason, mask_mode, root)


def _without(evidence: MaskEvidence, value: int) -> MaskEvidence:
    """`evidence` with `value` (a void border found after the fact) taken out of the ids."""
    if value not in evidence.values:
        return evidence
    keep = evidence.values != value
    blobs = sizes = None
    if evidence.blobs is not None and evidence.sizes is not None:
        nonzero = evidence.nonzero != value
        blobs, sizes = evidence.blobs[nonzero], evidence.sizes[nonzero]
    return MaskEvidence(evidence.path, evidence.dtype, evidence.values[keep], evidence.pixels, blobs, sizes,
                        evidence.ignored, evidence.void_band)  # fmt: skip


def _warn_ambiguous(evidence: Sequence[MaskEvidence], chosen: str, other: str, mode: str) -> None:
    """Name the first mask that fits both readings."""
    for item in evidence:
        if item.blobs is not None and item.ids > 0 and bool(np.all(item.blobs == 1)):
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
