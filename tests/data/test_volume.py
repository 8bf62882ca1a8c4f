"""Volume IO: NIfTI through nibabel, NRRD through pynrrd, TIFF stacks through tifffile; spacing kept, predictions
written with the input's affine and header (checked with nibabel / pynrrd / tifffile themselves), one-line errors."""

from __future__ import annotations

import gzip
import logging
import sys
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest
import tifffile

from unetkit.data import DataError
from unetkit.data import volume as volume_module
from unetkit.data.volume import read_volume, volume_stem, write_volume

CH2 = Path("/usr/share/mricron/templates/ch2.nii.gz")  # Debian mricron-data (shared/DATA.md)


def _oblique_affine() -> np.ndarray:
    """A scanner affine with anisotropic voxels (0.8 x 0.9 x 2.5 mm), a rotation and an origin."""
    angle = np.deg2rad(20.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.8, 0.9, 2.5])
    affine[:3, 3] = [-90.5, 12.0, 33.25]
    return affine


def _ct(path: Path) -> np.ndarray:
    """An int16 CT-like volume in HU stored with scl_slope 2 / scl_inter -1024, qform and sform set, odd sizes."""
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 1500, size=(13, 11, 7), dtype=np.int16)
    image = nib.Nifti1Image(raw, _oblique_affine())
    image.header.set_slope_inter(2.0, -1024.0)
    image.header.set_qform(_oblique_affine(), code=1)
    image.header.set_sform(_oblique_affine(), code=2)
    image.header.set_xyzt_units("mm")
    nib.save(image, str(path))
    return raw.astype(np.float64) * 2.0 - 1024.0


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_nifti_prediction_opens_with_the_inputs_affine(tmp_path, suffix):
    """The issue's must-show: the written labels overlay the input (same affine, codes, zooms) in nibabel."""
    hu = _ct(tmp_path / f"ct{suffix}")
    volume = read_volume(tmp_path / f"ct{suffix}")
    assert volume.format == "nifti" and volume.shape == (13, 11, 7) and volume.channels == 1
    np.testing.assert_allclose(volume.array, hu)  # scaled to HU as nibabel applies the slope
    assert volume.spacing == pytest.approx((0.8, 0.9, 2.5))
    np.testing.assert_allclose(volume.affine, _oblique_affine())
    labels = (volume.array > 0).astype(np.uint8)
    labels[0, 0, 0] = 2
    out = write_volume(tmp_path / f"pred{suffix}", labels, like=volume)
    opened = nib.load(str(out))
    source = nib.load(str(tmp_path / f"ct{suffix}"))
    np.testing.assert_array_equal(opened.affine, source.affine)
    np.testing.assert_array_equal(opened.get_qform(), source.get_qform())
    np.testing.assert_array_equal(opened.get_sform(), source.get_sform())
    assert (int(opened.header["qform_code"]), int(opened.header["sform_code"])) == (1, 2)
    assert opened.header.get_zooms() == source.header.get_zooms()
    assert opened.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asanyarray(opened.dataobj), labels)  # no slope: labels as written
    assert (out.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".nii.gz")
    assert not list(tmp_path.glob(".*tmp*"))  # atomic: no temporary left


def test_nifti_4d_channels_and_a_new_file_without_reference(tmp_path):
    data = np.random.default_rng(1).random((6, 5, 4, 3), dtype=np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([1.5, 1.5, 3.0, 1.0])), str(tmp_path / "multi.nii.gz"))
    volume = read_volume(tmp_path / "multi.nii.gz")
    assert volume.shape == (6, 5, 4) and volume.channels == 3 and volume.spacing == (1.5, 1.5, 3.0)
    np.testing.assert_array_equal(volume.array, data)
    out = write_volume(tmp_path / "plain.nii.gz", np.zeros((6, 5, 4), np.int16), spacing=(0.5, 0.6, 0.7))
    opened = nib.load(str(out))
    np.testing.assert_allclose(opened.affine, np.diag([0.5, 0.6, 0.7, 1.0]))
    assert opened.header.get_zooms() == pytest.approx((0.5, 0.6, 0.7))


def test_nrrd_lps_geometry_becomes_ras_and_round_trips(tmp_path):
    directions = np.array([[0.7, 0.0, 0.0], [0.0, 0.7, 0.1], [0.0, 0.0, 3.0]])  # rows: one per axis
    header = {"space": "left-posterior-superior", "space directions": directions, "space origin": [10.0, -20.0, 5.0]}
    data = np.arange(5 * 6 * 4, dtype=np.int16).reshape(5, 6, 4)
    nrrd.write(str(tmp_path / "brain.nrrd"), data, header)
    volume = read_volume(tmp_path / "brain.nrrd")
    np.testing.assert_array_equal(volume.array, data)
    assert volume.spacing == pytest.approx((0.7, np.hypot(0.7, 0.1), 3.0))
    # LPS -> RAS: x and y negated, columns of the matrix are the axes' directions
    expected = np.eye(4)
    expected[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ directions.T
    expected[:3, 3] = [-10.0, 20.0, 5.0]
    np.testing.assert_allclose(volume.affine, expected)
    labels = (data % 3).astype(np.uint8)
    write_volume(tmp_path / "pred.nrrd", labels, like=volume)
    back, written = nrrd.read(str(tmp_path / "pred.nrrd"))
    np.testing.assert_array_equal(back, labels)
    assert written["space"] == "left-posterior-superior"
    np.testing.assert_allclose(written["space directions"], directions)
    np.testing.assert_allclose(written["space origin"], [10.0, -20.0, 5.0])
    # the same geometry written as NIfTI (another format): its affine is the RAS affine
    write_volume(tmp_path / "pred.nii.gz", labels, like=volume)
    np.testing.assert_allclose(nib.load(str(tmp_path / "pred.nii.gz")).affine, expected)


def test_nrrd_channel_axis_moves_last_and_detached_data_is_refused(tmp_path):
    data = np.random.default_rng(2).random((2, 5, 6, 4)).astype(np.float32)  # vector axis first, as Slicer writes
    directions = np.array([[np.nan] * 3, [1.0, 0, 0], [0, 1.0, 0], [0, 0, 2.0]])
    header = {"space": "right-anterior-superior", "space directions": directions, "kinds": ["vector"] + ["domain"] * 3}
    nrrd.write(str(tmp_path / "vec.nrrd"), data, header)
    volume = read_volume(tmp_path / "vec.nrrd")
    assert volume.shape == (5, 6, 4) and volume.channels == 2 and volume.spacing == (1.0, 1.0, 2.0)
    np.testing.assert_array_equal(volume.array, np.moveaxis(data, 0, -1))
    (tmp_path / "detached.nrrd").write_text(
        "NRRD0004\ntype: uint8\ndimension: 3\nsizes: 2 2 2\nencoding: raw\ndata file: /etc/hostname\n\n"
    )
    with pytest.raises(DataError, match=r"detached\.nrrd: NRRD headers that point to other data files"):
        read_volume(tmp_path / "detached.nrrd")


def test_tiff_stacks_keep_imagej_spacing_and_channels(tmp_path):
    stack = np.random.default_rng(3).integers(0, 4000, size=(9, 17, 15), dtype=np.uint16)  # (Z, Y, X), 12-bit
    tifffile.imwrite(
        tmp_path / "cells.tif",
        stack,
        imagej=True,
        resolution=(1 / 0.25, 1 / 0.2),
        metadata={"spacing": 1.5, "axes": "ZYX"},
    )
    volume = read_volume(tmp_path / "cells.tif")
    assert volume.format == "tiff" and volume.shape == (9, 17, 15)
    assert volume.spacing == pytest.approx((1.5, 0.2, 0.25))  # Z, then Y (rows), then X (columns)
    np.testing.assert_array_equal(volume.array, stack)
    labels = (stack > 2000).astype(np.uint16) * 7  # instance-style uint16 labels
    write_volume(tmp_path / "pred.tif", labels, like=volume)
    again = read_volume(tmp_path / "pred.tif")
    np.testing.assert_array_equal(again.array, labels)
    assert again.spacing == pytest.approx((1.5, 0.2, 0.25))
    two = np.random.default_rng(4).integers(0, 255, size=(4, 2, 8, 8), dtype=np.uint8)  # ImageJ ZCYX
    tifffile.imwrite(tmp_path / "two.tif", two, imagej=True, metadata={"axes": "ZCYX"})
    assert read_volume(tmp_path / "two.tif").array.shape == (4, 8, 8, 2)
    tifffile.imwrite(tmp_path / "flat.tif", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match=r"flat\.tif: expected a stack of 2-D pages"):
        read_volume(tmp_path / "flat.tif")


@pytest.mark.skipif(not CH2.exists(), reason="Debian's mricron-data is not installed")
def test_real_mri_and_atlas_from_mricron_data(tmp_path):
    ch2 = read_volume(CH2)
    aal = read_volume(CH2.with_name("aal.nii.gz"))
    assert ch2.shape == aal.shape == (181, 217, 181) and ch2.array.dtype == np.uint8
    assert ch2.spacing == (1.0, 1.0, 1.0)
    np.testing.assert_allclose(ch2.affine, aal.affine)
    assert len(np.unique(aal.array)) == 117  # background and the 116 AAL regions
    out = write_volume(tmp_path / "aal_pred.nii.gz", aal.array.astype(np.uint8), like=ch2)
    np.testing.assert_array_equal(nib.load(str(out)).affine, nib.load(str(CH2)).affine)


def test_volume_stems_and_zero_spacing(tmp_path, caplog):
    assert volume_stem("case_0003.nii.gz") == "case_0003" and volume_stem("A.NRRD") == "A"
    image = nib.Nifti1Image(np.zeros((3, 3, 3), np.uint8), np.eye(4))
    image.header["pixdim"][1:4] = [1.0, 0.0, 2.0]  # a careless header: nibabel reads the 0 as 1
    nib.save(image, str(tmp_path / "zero.nii"))
    assert read_volume(tmp_path / "zero.nii").spacing == (1.0, 1.0, 2.0)
    nrrd.write(str(tmp_path / "zero.nrrd"), np.zeros((3, 3, 3), np.uint8), {"spacings": [1.0, 0.0, 2.0]})
    with caplog.at_level(logging.WARNING, logger="unetkit.data.volume"):
        assert read_volume(tmp_path / "zero.nrrd").spacing == (1.0, 1.0, 2.0)
    assert "zero.nrrd: voxel spacing (1.0, 0.0, 2.0) is not positive and finite; using (1.0, 1.0, 2.0)" in caplog.text


@pytest.mark.parametrize("where", ["nifti-sform", "nrrd-origin"])
def test_a_nan_affine_is_replaced_by_the_spacing_with_a_warning_and_outputs_carry_no_nan(where, tmp_path, caplog):
    if where == "nifti-sform":
        affine = np.diag([2.0, 1.0, 1.0, 1.0])
        affine[0, 3] = np.nan  # a forged or careless origin
        image = nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), affine)
        image.header.set_qform(None, code=0)
        path = tmp_path / "nan.nii.gz"
        nib.save(image, str(path))
    else:
        path = tmp_path / "nan.nrrd"
        header = {"space directions": np.diag([2.0, 1.0, 1.0]), "space origin": [np.nan, 0.0, 0.0], "space": "RAS"}
        nrrd.write(str(path), np.zeros((4, 5, 6), np.float32), header)
    with caplog.at_level(logging.WARNING, logger="unetkit.data.volume"):
        volume = read_volume(path)
    assert f"{path.name}: its affine (voxel-to-world geometry) holds NaN or infinite values" in caplog.text
    assert volume.spacing == (2.0, 1.0, 1.0)
    np.testing.assert_array_equal(volume.affine, np.diag([2.0, 1.0, 1.0, 1.0]))
    out = write_volume(tmp_path / f"pred{''.join(path.suffixes)}", np.ones((4, 5, 6), np.uint8), like=volume)
    written = read_volume(out)
    assert np.all(np.isfinite(written.affine)) and written.spacing == (2.0, 1.0, 1.0)


def _truncated(tmp_path: Path) -> Path:
    nib.save(nib.Nifti1Image(np.ones((20, 20, 20), np.float32), np.eye(4)), str(tmp_path / "full.nii.gz"))
    data = (tmp_path / "full.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    return tmp_path / "cut.nii.gz"


def test_bad_volumes_give_one_line_naming_the_file(tmp_path, monkeypatch):
    (tmp_path / "empty.nii").write_bytes(b"")
    (tmp_path / "plain.nii.gz").write_bytes(b"not gzip at all")
    (tmp_path / "junk.nii").write_bytes(b"\x00" * 400)
    (tmp_path / "junk.nrrd").write_bytes(b"P5 not nrrd")
    nib.save(nib.Nifti1Image(np.full((4, 4, 4), np.nan, np.float32), np.eye(4)), str(tmp_path / "nan.nii"))
    nib.save(nib.Nifti1Image(np.zeros((4, 4), np.uint8), np.eye(4)), str(tmp_path / "flat.nii"))
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2, 2, 2), np.uint8), np.eye(4)), str(tmp_path / "five.nii"))
    cases = {
        tmp_path / "missing.nii.gz": "no such file",
        tmp_path / "empty.nii": r"empty file \(0 bytes\)",
        tmp_path / "plain.nii.gz": "not a gzip file",
        tmp_path / "junk.nii": "not a NIfTI file",
        tmp_path / "junk.nrrd": "not an NRRD file",
        tmp_path / "nan.nii": "NaN or infinite voxel values",
        tmp_path / "flat.nii": r"expected a 3-D volume \(X, Y, Z\) or \(X, Y, Z, C\), got shape \(4, 4\)",
        tmp_path / "five.nii": r"got shape \(2, 2, 2, 2, 2\)",
        tmp_path / "image.png": "unknown volume format",
        _truncated(tmp_path): "cannot read nifti volume",
    }
    for path, message in cases.items():
        with pytest.raises(DataError, match=message) as info:
            read_volume(path)
        assert str(path.name) in str(info.value) and "\n" not in str(info.value), str(info.value)
    monkeypatch.setattr(volume_module, "MAX_VOXELS", 100)
    with pytest.raises(DataError, match=r"full\.nii\.gz: shape \(20, 20, 20\) is larger than the voxel limit 100"):
        read_volume(tmp_path / "full.nii.gz")


def test_a_missing_reader_says_how_to_install_it(tmp_path, monkeypatch):
    _ct(tmp_path / "ct.nii.gz")
    monkeypatch.setitem(sys.modules, "nibabel", None)
    with pytest.raises(ImportError, match=r"ct\.nii\.gz: NIfTI and NRRD volumes need nibabel: pip install"):
        read_volume(tmp_path / "ct.nii.gz")


def test_bad_writes_are_refused_and_leave_nothing(tmp_path):
    _ct(tmp_path / "ct.nii.gz")
    volume = read_volume(tmp_path / "ct.nii.gz")
    with pytest.raises(DataError, match=r"pred\.nii\.gz: volume is \(13, 11, 6\) but its reference .*ct\.nii\.gz is"):
        write_volume(tmp_path / "pred.nii.gz", np.zeros((13, 11, 6), np.uint8), like=volume)
    with pytest.raises(DataError, match="do not fit the int32"):
        write_volume(tmp_path / "big.nii.gz", np.full((2, 2, 2), 2**40, np.int64))
    with pytest.raises(DataError, match=r"expected a 3-D volume .* to write"):
        write_volume(tmp_path / "flat.nrrd", np.zeros((3, 3), np.uint8))
    with pytest.raises(DataError, match="unknown volume format"):
        write_volume(tmp_path / "pred.mha", np.zeros((3, 3, 3), np.uint8))
    with pytest.raises(ValueError, match="`spacing` must be three positive numbers"):
        write_volume(tmp_path / "pred.nii", np.zeros((3, 3, 3), np.uint8), spacing=(1.0, 0.0, 1.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nii.gz"]
    # bool and int64 labels are written as uint8 and int32, which viewers read
    write_volume(tmp_path / "mask.nii.gz", np.ones((2, 3, 4), bool))
    write_volume(tmp_path / "ids.nii.gz", np.arange(24, dtype=np.int64).reshape(2, 3, 4))
    assert nib.load(str(tmp_path / "mask.nii.gz")).get_data_dtype() == np.uint8
    assert nib.load(str(tmp_path / "ids.nii.gz")).get_data_dtype() == np.int32
    with gzip.open(tmp_path / "ids.nii.gz") as file:
        assert int.from_bytes(file.read(4), "little") == 348  # a NIfTI-1 header inside the gzip stream


@pytest.mark.parametrize("gz", [False, True])
def test_a_forged_nifti_header_is_refused_before_a_buffer_is_sized_to_it(gz, tmp_path):
    # 1200 x 1200 x 1200 uint8 claimed over 64 voxels: under the voxel limit, so nibabel allocated 1.7 GB before
    # "Whoops, not enough data in file"
    import struct
    import tracemalloc

    small = tmp_path / "small.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), str(small))
    raw = bytearray(small.read_bytes())
    raw[40:56] = struct.pack("<8h", 3, 1200, 1200, 1200, 1, 1, 1, 1)
    forged = tmp_path / ("forged.nii.gz" if gz else "forged.nii")
    forged.write_bytes(gzip.compress(bytes(raw)) if gz else bytes(raw))
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as caught:
            read_volume(forged)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(caught.value) == (
        f"{forged}: its header claims 1,728,000,352 bytes of header and voxels, more than the {len(raw):,} bytes "
        "the file holds; the file is truncated or damaged"
    )
    assert peak < 64 << 20  # nothing sized to the claim
