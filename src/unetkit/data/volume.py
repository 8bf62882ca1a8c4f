"""Volume reading and writing through well-kept readers: NIfTI (`.nii`, `.nii.gz`) through nibabel, NRRD
(`.nrrd`) through pynrrd (both in the `unetkit[medical]` extra), TIFF stacks (`.tif`, `.tiff`) through tifffile.

A `Volume` holds the voxels with the three spatial axes first, in the file's own index order (NIfTI and NRRD:
i, j, k; TIFF: pages, rows, columns) and channels, if any, last: `(X, Y, Z)` or `(X, Y, Z, C)` in the file's
dtype. `spacing` gives the voxel size per array axis (mm for NIfTI / NRRD, the file's unit for TIFF; 1 where
the file says nothing) and `affine` maps voxel indices to world coordinates (RAS+, NIfTI's convention; NRRD's
LPS directions are converted). `write_volume(path, labels, like=volume)` writes a prediction with the input's
geometry, and the input's own header where the formats agree, so it overlays the input in ITK-SNAP, 3D Slicer
or napari.

Every error is a one-line `DataError` naming the file. Writes are atomic (`unetkit._fs.atomic_file`).
"""

from __future__ import annotations

import gzip
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unetkit._deps import MissingDependency
from unetkit._fs import atomic_file
from unetkit.data.errors import DataError
from unetkit.data.tiff_stack import tiff_spacing

__all__ = [
    "MAX_VOXELS",
    "VOLUME_SUFFIXES",
    "Volume",
    "is_volume_file",
    "nifti_claim",
    "read_tiff_spacing",
    "read_volume",
    "short_nifti",
    "volume_stem",
    "write_volume",
]

logger = logging.getLogger(__name__)

# the longest first: ".nii.gz" before ".nii"
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".tiff", ".tif")
FORMATS = {".nii.gz": "nifti", ".nii": "nifti", ".nrrd": "nrrd", ".tif": "tiff", ".tiff": "tiff"}
# decompression-bomb guard: refuse volumes above this many values unless raised (env UNETKIT_MAX_VOXELS)
MAX_VOXELS = int(os.environ.get("UNETKIT_MAX_VOXELS", 2**31))
# gzip level of written .nii.gz / .nrrd: nibabel's default, fast on large label volumes
GZIP_LEVEL = 1
_MEDICAL_HINT = "pip install 'unetkit[medical]'"
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass
class Volume:
    """A volume as read from a file.

    Attributes:
        array: `(S0, S1, S2)` or `(S0, S1, S2, C)` voxels in the file's dtype.
        spacing: voxel size along each spatial array axis.
        affine: `(4, 4)` float64, voxel index `(i, j, k, 1)` -> world coordinates (RAS+).
        format: `"nifti"`, `"nrrd"` or `"tiff"`.
        path: the file it came from.
        header: the reader's header (nibabel header, NRRD header dict, TIFF metadata), reused when writing.
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    format: str
    path: Path | None = None
    header: Any = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        """The spatial shape `(S0, S1, S2)`."""
        s = self.array.shape
        return (int(s[0]), int(s[1]), int(s[2]))

    @property
    def channels(self) -> int:
        """Channels per voxel (1 for a scalar volume)."""
        return int(self.array.shape[3]) if self.array.ndim == 4 else 1


def volume_suffix(path: str | Path) -> str | None:
    """The volume suffix of `path` (`".nii.gz"`, ...; compared case-insensitively), or None."""
    name = Path(path).name.lower()
    return next((s for s in VOLUME_SUFFIXES if name.endswith(s) and len(name) > len(s)), None)


def is_volume_file(path: str | Path) -> bool:
    """Whether `path` has a volume suffix (TIFF counts: a stack of pages)."""
    return volume_suffix(path) is not None


def volume_stem(path: str | Path) -> str:
    """The name without its volume suffix: `case_0000.nii.gz` -> `case_0000`."""
    path = Path(path)
    suffix = volume_suffix(path)
    return path.name[: -len(suffix)] if suffix else path.stem


def _spacing(values: Sequence[float], path: Path) -> tuple[float, float, float]:
    """Three positive spacings: a zero, non-finite or missing value (headers written carelessly) becomes 1, with a
    warning; a negative one (a flipped axis) its absolute value."""
    given = [float(v) for v in list(values)[:3]]
    given += [1.0] * (3 - len(given))
    out = [abs(v) if math.isfinite(v) and v != 0 else 1.0 for v in given]
    if any(not math.isfinite(v) or v == 0 for v in given):
        logger.warning("%s: voxel spacing %s is not positive and finite; using %s", path, tuple(given), tuple(out))
    return (out[0], out[1], out[2])


def _affine(affine: np.ndarray, spacing: tuple[float, float, float], path: Path) -> np.ndarray:
    """`affine` as float64, or, where it holds a NaN or an infinity (a header written carelessly or forged), the
    plain scaling by `spacing`, with a warning: outputs written "like" this volume carry the geometry in use, not
    the file's NaNs."""
    matrix = np.asarray(affine, dtype=np.float64)
    if matrix.shape == (4, 4) and np.all(np.isfinite(matrix)):
        return matrix
    plain = np.diag([*spacing, 1.0])
    logger.warning(
        "%s: its affine (voxel-to-world geometry) holds NaN or infinite values; using the voxel spacing %s with no "
        "rotation and origin 0, and outputs written beside it carry that geometry",
        path,
        spacing,
    )
    return plain


def _check_size(path: Path, shape: Sequence[int]) -> None:
    if math.prod(int(n) for n in shape) > MAX_VOXELS:
        raise DataError(
            f"{path}: shape {tuple(int(n) for n in shape)} is larger than the voxel limit {MAX_VOXELS} "
            "(raise it with UNETKIT_MAX_VOXELS)"
        )


def _import(module: str, path: Path) -> Any:
    """`nibabel` or `nrrd` (the `medical` extra), imported by literal name."""
    try:
        if module == "nibabel":
            import nibabel

            return nibabel
        if module == "nrrd":
            import nrrd

            return nrrd
    except ImportError as err:
        raise MissingDependency(f"{path}: NIfTI and NRRD volumes need {module}: {_MEDICAL_HINT}") from err
    raise ValueError(f"`module` must be 'nibabel' or 'nrrd', got {module!r}")


GZ_COUNT_BYTES = 64 << 20  # a .nii.gz whose header claims more is decompressed once, uncounted, before it is read


def nifti_claim(image: Any) -> int:
    """The bytes a NIfTI file must hold by its (already loaded) header: the data offset plus every voxel."""
    header: Any = image.header
    proxy: Any = image.dataobj  # its offset is where the voxels start in the file (the header's may read 0)
    offset = int(getattr(proxy, "offset", 0) or header.get_data_offset())
    voxels = math.prod(int(n) for n in header.get_data_shape())
    return offset + voxels * np.dtype(header.get_data_dtype()).itemsize


def short_nifti(path: Path, need: int, held: int) -> DataError:
    """The error for a NIfTI file holding fewer bytes than its header claims."""
    return DataError(
        f"{path}: its header claims {need:,} bytes of header and voxels, more than the {held:,} bytes the "
        "file holds; the file is truncated or damaged"
    )


def _check_nifti_claim(path: Path, image: Any) -> None:
    """Refuse, before any voxel buffer is sized to it, a header claiming more bytes than the file holds (a forged
    header made nibabel allocate 1.7 GB before "Whoops, not enough data in file"). A `.nii.gz` claiming more than
    `GZ_COUNT_BYTES` is decompressed once without keeping anything, and no further than the claim."""
    need = nifti_claim(image)
    if not path.name.lower().endswith(".gz"):
        held = path.stat().st_size
    elif need > GZ_COUNT_BYTES:
        held = 0
        with gzip.open(path, "rb") as stream:
            while held < need and (chunk := stream.read(min(1 << 22, need - held))):
                held += len(chunk)
    else:
        return  # small claims: the buffer is small, and a short file is reported by the read itself
    if held < need:
        raise short_nifti(path, need, held)


def _read_nifti(path: Path) -> Volume:
    nibabel = _import("nibabel", path)
    with open(path, "rb") as file:
        head = file.read(4)
    if path.name.lower().endswith(".gz"):
        if not head.startswith(b"\x1f\x8b"):
            raise DataError(f"{path}: not a gzip file, but its name ends in .gz")
    elif not {int.from_bytes(head, "little"), int.from_bytes(head, "big")} & {348, 540}:
        raise DataError(f"{path}: not a NIfTI file (its first bytes are no NIfTI-1 or NIfTI-2 header size)")
    image = nibabel.load(str(path))
    if not isinstance(image, (nibabel.Nifti1Image, nibabel.Nifti2Image)):
        raise DataError(f"{path}: not a NIfTI image ({type(image).__name__})")
    _check_size(path, image.shape)
    _check_nifti_claim(path, image)
    array = np.asanyarray(image.dataobj)  # applies scl_slope / scl_inter where the header sets them
    if array.ndim == 5 and array.shape[3] == 1:  # (X, Y, Z, T=1, C): NIfTI's vector intent
        array = array[:, :, :, 0]
    spacing = _spacing(image.header.get_zooms()[:3], path)
    return Volume(np.asarray(array), spacing, _affine(image.affine, spacing, path), "nifti", path, image.header)


def _read_nrrd(path: Path) -> Volume:
    nrrd = _import("nrrd", path)
    with open(path, "rb") as file:
        if not file.read(4) == b"NRRD":
            raise DataError(f"{path}: not an NRRD file (it does not start with 'NRRD')")
        file.seek(0)
        header = nrrd.read_header(file)
        if any(key in header for key in ("data file", "datafile")):
            raise DataError(f"{path}: NRRD headers that point to other data files are not supported")
        _check_size(path, header.get("sizes", ()))
        array = nrrd.read_data(header, file, str(path), index_order="F")
    directions = header.get("space directions")
    spatial = list(range(array.ndim))
    if directions is not None:  # axes without a direction ('none': channels) are not spatial
        rows = [np.asarray(d, dtype=np.float64) for d in directions]
        spatial = [i for i, d in enumerate(rows) if d.size and np.all(np.isfinite(d))]
    if len(spatial) != 3 or array.ndim - len(spatial) > 1:
        raise DataError(f"{path}: expected 3 spatial axes and at most one channel axis, got shape {array.shape}")
    channel = [i for i in range(array.ndim) if i not in spatial]
    array = np.moveaxis(array, channel, [3]) if channel else array
    if directions is not None:
        matrix = np.stack([np.asarray(directions[i], dtype=np.float64) for i in spatial], axis=1)  # columns = axes
        spacing = _spacing(np.linalg.norm(matrix, axis=0), path)
    else:
        spacing = _spacing(header.get("spacings", [1.0, 1.0, 1.0])[:3], path)
        matrix = np.diag(spacing)
    origin = np.asarray(header.get("space origin", np.zeros(3)), dtype=np.float64)
    space = str(header.get("space", "")).lower()
    if space in ("left-posterior-superior", "lps"):
        matrix, origin = _LPS_TO_RAS @ matrix, _LPS_TO_RAS @ origin
    affine = np.eye(4)
    affine[:3, :3], affine[:3, 3] = matrix, origin
    return Volume(array, spacing, _affine(affine, spacing, path), "nrrd", path, header)


def _read_tiff(path: Path) -> Volume:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        shape, axes = tuple(series.shape), str(series.axes)
        _check_size(path, shape)
        array = series.asarray()
        step, unit = tiff_spacing(tif)
    for axis in "T":  # a single time point is a volume
        if axis in axes and array.shape[axes.index(axis)] == 1:
            array, axes = np.take(array, 0, axis=axes.index(axis)), axes.replace(axis, "")
    axes = axes.replace("I", "Z").replace("Q", "Z")  # pages of unknown meaning: a stack
    spatial = [axes.index(a) for a in "ZYX" if a in axes]
    channel = [i for i, a in enumerate(axes) if a in "CS"]
    if len(spatial) != 3 or len(channel) > 1 or len(spatial) + len(channel) != array.ndim:
        raise DataError(f"{path}: expected a stack of 2-D pages (Z, Y, X[, C]), got shape {shape} ({axes})")
    array = np.transpose(array, spatial + channel)
    spacing = _spacing(step, path)
    return Volume(array, spacing, np.diag([*spacing, 1.0]), "tiff", path, {"unit": unit})


def read_tiff_spacing(path: str | Path) -> tuple[float, float, float]:
    """The voxel size `(Z, Y, X)` of a TIFF stack as `read_volume` gives it, from its metadata alone (no pixels
    read): `unetkit.data.tiff_stack.tiff_spacing`, zero or non-finite values made 1 with a warning."""
    import tifffile

    path = Path(path)
    with tifffile.TiffFile(path) as tif:
        step, _ = tiff_spacing(tif)
    return _spacing(step, path)


def read_volume(path: str | Path) -> Volume:
    """Read a NIfTI, NRRD or TIFF-stack volume.

    Raises:
        DataError: a missing, unreadable, empty, truncated or mislabelled file, one with fewer or more than three
            spatial axes (or more than one channel axis), no real numbers, NaN / infinite values, or more voxels than
            `MAX_VOXELS`; a reader that is not installed (nibabel, pynrrd: `unetkit[medical]`). The message names
            the file.
    """
    path = Path(path)
    suffix = volume_suffix(path)
    if suffix is None:
        raise DataError(f"{path}: unknown volume format, expected one of {', '.join(VOLUME_SUFFIXES)}")
    try:
        if not path.exists():
            raise DataError(f"{path}: no such file")
        if not path.is_file():
            raise DataError(f"{path}: not a regular file, expected a volume file")
        if path.stat().st_size == 0:
            raise DataError(f"{path}: empty file (0 bytes)")
        fmt = FORMATS[suffix]
        reader = {"nifti": _read_nifti, "nrrd": _read_nrrd, "tiff": _read_tiff}[fmt]
        volume = reader(path)
    except (DataError, ImportError):
        raise
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err})") from err
    except Exception as err:  # readers raise many types for corrupt data: report them as one
        raise DataError(f"{path}: cannot read {FORMATS[suffix]} volume ({type(err).__name__}: {err})") from err
    array = volume.array
    if array.ndim not in (3, 4):
        raise DataError(f"{path}: expected a 3-D volume (X, Y, Z) or (X, Y, Z, C), got shape {array.shape}")
    if 0 in array.shape:
        raise DataError(f"{path}: volume has an empty axis, shape {array.shape}")
    if array.dtype.kind not in "biuf":
        raise DataError(f"{path}: voxel type {array.dtype} is not supported; expected integers or real numbers")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise DataError(f"{path}: contains NaN or infinite voxel values")
    if array.dtype == bool:
        volume.array = array.astype(np.uint8)
    return volume


def _writable(array: np.ndarray, path: Path) -> np.ndarray:
    """bool as uint8, int64 as int32 where it fits (viewers read int64 poorly)."""
    if array.ndim not in (3, 4) or 0 in array.shape:
        raise DataError(f"{path}: expected a 3-D volume (X, Y, Z) or (X, Y, Z, C) to write, got shape {array.shape}")
    if array.dtype.kind not in "biuf":
        raise DataError(f"{path}: cannot write voxels of type {array.dtype}")
    if array.dtype == bool:
        return array.astype(np.uint8)
    if array.dtype in (np.int64, np.uint64):
        info = np.iinfo(np.int32)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise DataError(f"{path}: labels up to {array.max()} do not fit the int32 a volume file holds")
        return array.astype(np.int32)
    return array


def _write_nifti(tmp: Path, array: np.ndarray, gz: bool, like: Volume | None, spacing: Sequence[float]) -> None:
    nibabel = _import("nibabel", tmp)
    if like is not None and like.format == "nifti" and like.header is not None:
        header = like.header.copy()
        header.set_data_dtype(array.dtype)
        image_class = nibabel.Nifti2Image if isinstance(header, nibabel.Nifti2Header) else nibabel.Nifti1Image
        image = image_class(array, like.affine, header=header)
        image.header.set_slope_inter(1.0, 0.0)  # labels are written as they are, never rescaled
    else:
        affine = like.affine if like is not None else np.diag([*spacing, 1.0])
        image = nibabel.Nifti1Image(array, affine)
        image.header.set_xyzt_units("mm")
        image.header.set_sform(affine, code=1)
        image.header.set_qform(affine, code=1)
    if gz:
        with gzip.open(tmp, "wb", compresslevel=GZIP_LEVEL) as file:
            image.to_stream(file)
    else:
        with open(tmp, "wb") as file:
            image.to_stream(file)


def _write_nrrd(tmp: Path, array: np.ndarray, like: Volume | None, spacing: Sequence[float]) -> None:
    nrrd = _import("nrrd", tmp)
    affine = like.affine if like is not None else np.diag([*spacing, 1.0])
    space = "right-anterior-superior"
    directions, origin = affine[:3, :3], affine[:3, 3]
    if (
        like is not None
        and like.format == "nrrd"
        and str(like.header.get("space", "")).lower()
        in (
            "left-posterior-superior",
            "lps",
        )
    ):
        space, directions, origin = "left-posterior-superior", _LPS_TO_RAS @ directions, _LPS_TO_RAS @ origin
    rows: list[Any] = [directions[:, i] for i in range(3)]
    kinds = ["domain"] * 3
    if array.ndim == 4:
        rows.append(np.full(3, np.nan))  # pynrrd writes a row of NaN as 'none'
        kinds.append("vector")
    header = {"space": space, "space directions": np.stack(rows), "space origin": origin, "kinds": kinds}
    header["encoding"] = "gzip"
    nrrd.write(str(tmp), np.asarray(array), header, compression_level=GZIP_LEVEL, index_order="F")


def _write_tiff(tmp: Path, array: np.ndarray, like: Volume | None, spacing: Sequence[float]) -> None:
    import tifffile

    step = like.spacing if like is not None else tuple(spacing)
    resolution = (1.0 / step[2], 1.0 / step[1])  # pixels per unit along X (columns), then Y (rows)
    axes = "ZYXC" if array.ndim == 4 else "ZYX"
    tifffile.imwrite(
        tmp, array, resolution=resolution, metadata={"axes": axes, "spacing": list(step)}, compression="zlib"
    )


def write_volume(
    path: str | Path, array: np.ndarray, *, like: Volume | None = None, spacing: Sequence[float] | None = None
) -> Path:
    """Write a volume atomically in the format its suffix names.

    Args:
        path: `.nii.gz`, `.nii`, `.nrrd`, `.tif` or `.tiff` file.
        array: `(S0, S1, S2)` (or `(S0, S1, S2, C)`) voxels in the array order `like` was read in.
        like: the volume `array` was predicted from: its affine (and, for the same format, its header: orientation
            codes, units, description) go into the output, so the two overlay in viewers.
        spacing: voxel size per axis when there is no `like` (default 1).

    Raises:
        DataError: an unknown suffix, an array that is not a volume or does not match `like`'s shape, a type the
            format cannot hold, or a reader / writer that is not installed.
        WriteError: the folder cannot be written or the disk fills up; nothing is left half-written.
    """
    path = Path(path)
    suffix = volume_suffix(path)
    if suffix is None:
        raise DataError(f"{path}: unknown volume format, expected one of {', '.join(VOLUME_SUFFIXES)}")
    array = _writable(np.asarray(array), path)
    if like is not None and tuple(array.shape[:3]) != like.shape:
        raise DataError(f"{path}: volume is {array.shape[:3]} but its reference {like.path} is {like.shape}")
    step = tuple(float(s) for s in spacing) if spacing is not None else (1.0, 1.0, 1.0)
    if len(step) != 3 or not all(math.isfinite(s) and s > 0 for s in step):
        raise ValueError(f"`spacing` must be three positive numbers, got {spacing!r}")
    fmt = FORMATS[suffix]
    with atomic_file(path) as tmp:
        if fmt == "nifti":
            _write_nifti(tmp, array, suffix == ".nii.gz", like, step)
        elif fmt == "nrrd":
            _write_nrrd(tmp, array, like, step)
        else:
            _write_tiff(tmp, array, like, step)
    return path
