"""nnU-Net's raw data-set layout (Isensee et al. 2021, Nat. Methods 18:203; nnU-Net v2's `dataset_format.md`)::

    ROOT/dataset.json                {"channel_names": {"0": "T2"}, "labels": {"background": 0, ...},
                                      "file_ending": ".nii.gz", "numTraining": N}
    ROOT/imagesTr/CASE_0000.nii.gz   one file per channel: CASE_0000, CASE_0001, ...
    ROOT/labelsTr/CASE.nii.gz
    ROOT/imagesTs/CASE_0000.nii.gz   optional, without labels (`labelsTs/` is read where it exists)

nnU-Net v1 and Medical Segmentation Decathlon files (`"modality"`, labels keyed by value, `"training"` / `"test"`
lists of image / label paths, 4-D images holding the channels) read too. Cases are read by `volume_folder`'s
`read_case`, so images, labels and errors are those of a folder of volumes.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from unetkit.data.errors import DataError
from unetkit.data.folder import MAX_MASK_VALUE, _listing, _Sample
from unetkit.data.types import MaskInfo
from unetkit.data.volume import is_volume_file, volume_stem
from unetkit.data.volume_folder import VolumeCase, VolumeSet, load_cases, match_names

__all__ = ["NnUNetDataset", "load_nnunet_raw", "scan_nnunet_raw"]

logger = logging.getLogger(__name__)

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")  # CASE_0000


@dataclass(frozen=True)
class NnUNetDataset:
    """What `dataset.json` and the folders of an nnU-Net raw data set say."""

    root: Path
    channel_names: dict[int, str]
    labels: dict[str, int]
    file_ending: str
    training: list[VolumeCase]
    test: list[VolumeCase]


def _read_json(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise DataError(f"{path}: no such file; an nnU-Net raw data set needs its dataset.json") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a readable JSON file ({err})") from err
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _labels(meta: dict[str, object], path: Path) -> dict[str, int]:
    """`{name: value}` from v2 (`{"background": 0}`) or v1 (`{"0": "background"}`) labels."""
    raw = meta.get("labels")
    if not isinstance(raw, dict) or not raw:
        raise DataError(f"{path}: 'labels' must map label names to values, got {raw!r}")
    if all(isinstance(k, str) and k.isdigit() for k in raw) and all(isinstance(v, str) for v in raw.values()):
        raw = {v: int(k) for k, v in raw.items()}  # nnU-Net v1 / MSD
    if "ignore" in raw:
        raise DataError(f"{path}: the 'ignore' label is not supported for volumes yet")
    labels: dict[str, int] = {}
    for name, value in raw.items():
        if isinstance(value, list):
            raise DataError(f"{path}: label {name!r} is a region (a list of values); region labels are not supported")
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_MASK_VALUE:
            raise DataError(f"{path}: label {name!r} must be an integer >= 0, got {value!r}")
        labels[str(name)] = value
    if 0 not in labels.values():
        raise DataError(f"{path}: 'labels' must give the background the value 0, got {labels}")
    return labels


def _channel_cases(folder: Path, ending: str, channels: int) -> list[VolumeCase]:
    """`CASE_0000{ending}`, `CASE_0001{ending}`, ... grouped by case, every channel present; no labels yet."""
    groups: dict[str, dict[int, Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.name.endswith(ending):
            continue
        found = _CHANNEL.match(path.name[: -len(ending)])
        if found is None:
            raise DataError(f"{path}: expected CASE_XXXX{ending} (a 4-digit channel index) in {folder}")
        groups.setdefault(found["case"], {})[int(found["channel"])] = path
    cases = []
    for case, files in sorted(groups.items()):
        if sorted(files) != list(range(channels)):
            have = ", ".join(f"{c:04d}" for c in sorted(files))
            raise DataError(f"{folder}: case {case!r} has channel files {have}; dataset.json names {channels} channels")
        cases.append(VolumeCase(case, tuple(files[c] for c in range(channels)), None))
    return cases


def _listed_cases(meta: dict[str, object], key: str, root: Path, path: Path) -> list[VolumeCase] | None:
    """The cases of a v1 / MSD `"training"` or `"test"` list when every file it names exists (MSD: one 4-D file
    per case); None otherwise (nnU-Net v1 lists `CASE.nii.gz` for files named `CASE_0000.nii.gz`)."""
    entries = meta.get(key)
    if not isinstance(entries, list) or not entries:
        return None
    cases = []
    for entry in entries:
        image = entry.get("image") if isinstance(entry, dict) else entry
        label = entry.get("label") if isinstance(entry, dict) else None
        if not isinstance(image, str) or not isinstance(label, (str, type(None))):
            raise DataError(f"{path}: {key!r} entries must name image (and label) files, got {entry!r}")
        relative = [os.path.normpath(name) for name in (image, label) if name is not None]
        if any(os.path.isabs(r) or r.split(os.sep)[0] == ".." for r in relative):
            raise DataError(f"{path}: {key!r} names {entry!r}, outside the data set folder")
        files = [root / r for r in relative]
        if not all(f.is_file() for f in files):
            return None
        cases.append(VolumeCase(volume_stem(files[0]), (files[0],), files[1] if label is not None else None))
    return cases


def _with_labels(cases: list[VolumeCase], folder: Path, ending: str, required: bool) -> list[VolumeCase]:
    """`cases` with their `folder/CASE{ending}` labels; every case and label matched when `required`."""
    found = sorted(folder.iterdir()) if folder.is_dir() else []
    labels = {p.name[: -len(ending)]: p for p in found if p.name.endswith(ending) and not p.name.startswith(".")}
    names = {c.name for c in cases}
    if required:
        match_names(names, set(labels), folder.parent / "imagesTr", folder, "label")
        match_names(set(labels), names, folder, folder.parent / "imagesTr", "image")
    return [VolumeCase(c.name, c.images, labels.get(c.name)) for c in cases]


def scan_nnunet_raw(root: str | Path) -> NnUNetDataset:
    """Read `dataset.json` and match the image, label and test files of an nnU-Net raw data set."""
    root = Path(root)
    meta_path = root / "dataset.json"
    meta = _read_json(meta_path)
    names = meta.get("channel_names", meta.get("modality"))
    if not isinstance(names, dict) or not names or not all(str(k).isdigit() for k in names):
        raise DataError(f"{meta_path}: 'channel_names' must map channel indices to names, got {names!r}")
    channel_names = {int(k): str(v) for k, v in names.items()}
    labels = _labels(meta, meta_path)
    ending = str(meta.get("file_ending", ".nii.gz"))
    if not is_volume_file(f"x{ending}"):
        raise DataError(f"{meta_path}: 'file_ending' {ending!r} is not a volume format (.nii.gz, .nii, .nrrd, .tif)")
    for sub in ("imagesTr", "labelsTr"):
        if not (root / sub).is_dir():
            raise DataError(f"{root}: no {sub}/ sub-folder; an nnU-Net raw data set has imagesTr/ and labelsTr/")
    training = _listed_cases(meta, "training", root, meta_path)
    if training is None or any(c.mask is None for c in training):
        found = _channel_cases(root / "imagesTr", ending, len(channel_names))
        training = _with_labels(found, root / "labelsTr", ending, required=True)
    if not training:
        raise DataError(f"{root / 'imagesTr'}: no training cases (expected CASE_0000{ending})")
    expected = meta.get("numTraining")
    if isinstance(expected, int) and expected != len(training):
        logger.warning("%s: numTraining is %d but %d training cases were found", meta_path, expected, len(training))
    test = _listed_cases(meta, "test", root, meta_path)
    if test is None:
        test = []
        if (root / "imagesTs").is_dir():
            found = _channel_cases(root / "imagesTs", ending, len(channel_names))
            test = _with_labels(found, root / "labelsTs", ending, required=False)
    return NnUNetDataset(root, channel_names, labels, ending, sorted(training, key=lambda c: c.name), test)


def load_nnunet_raw(
    root: str | Path, *, val_fraction: float = 0.2, seed: int = 0
) -> tuple[dict[str, VolumeSet], MaskInfo]:
    """Load an nnU-Net raw data set: `imagesTr` + `labelsTr` give `train` and a seeded `val_fraction` of it as
    `val`; `imagesTs` + `labelsTs` give `test` where every test case has labels. Classes are `dataset.json`'s
    labels, in increasing value.

    Raises:
        DataError: a bad `dataset.json`, missing channel or label files, images with another channel count than
            `dataset.json` names, or label values it does not declare; the message names the file.
    """
    dataset = scan_nnunet_raw(root)
    values = sorted(dataset.labels.values())
    info = MaskInfo(mode="binary" if values == [0, 1] else "classes", num_classes=len(values), label_values=values)

    def declared(samples: list[_Sample]) -> MaskInfo:
        for sample in samples:
            if sample.image.shape[0] != len(dataset.channel_names):
                raise DataError(
                    f"{sample.files.image}: has {sample.image.shape[0]} channel(s) but dataset.json names "
                    f"{len(dataset.channel_names)}"
                )
            unknown = sorted(set(sample.values.tolist()) - set(values))
            if unknown:
                raise DataError(
                    f"{sample.files.mask}: holds label value(s) {_listing([str(v) for v in unknown])} that "
                    f"dataset.json does not declare (labels: {values})"
                )
        return info

    found = {"train": dataset.training}
    if dataset.test and all(c.mask is not None for c in dataset.test):
        found["test"] = dataset.test
    return load_cases(found, declared, dataset.root, val_fraction, seed)
