"""`unetkit predict RUN VOLUME --out DIR` with a 3D checkpoint: the mask has the input's geometry (affine by
nibabel, spacing in TIFF stacks) and the labels of the in-memory prediction; wrong dimensionality is one line."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

from unetkit import create_model, load_model, save_model
from unetkit.cli.main import main
from unetkit.data import write_image
from unetkit.data.volume import read_volume, write_volume
from unetkit.infer import predict

nibabel = pytest.importorskip("nibabel")
LABELS = [0, 3, 7]


@pytest.fixture(scope="module")
def checkpoint3d(tmp_path_factory):
    """An untrained padded 3D `unet` with label values 0 / 3 / 7; its conv weights are tripled (no BatchNorm) so
    that all three classes occur."""
    torch.manual_seed(1)
    model = create_model("unet", in_channels=1, num_classes=3, base_channels=4, depth=2, spatial_dims=3, norm="none")
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim > 1:
                parameter.mul_(3)
    path = tmp_path_factory.mktemp("ckpt3d") / "ckpt"
    extra = {
        "preprocess": {"mean": [0.5], "std": [0.05]},
        "mask": {"mode": "classes", "num_classes": 3, "label_values": LABELS},
    }
    save_model(model, path, extra=extra)
    return path


@pytest.fixture(scope="module")
def checkpoint2d(tmp_path_factory):
    model = create_model("unet", in_channels=1, base_channels=4, depth=2, num_classes=1)
    path = tmp_path_factory.mktemp("ckpt2d") / "ckpt"
    save_model(model, path, extra={"preprocess": {"mean": [0.5], "std": [0.25]}})
    return path


def _volume(shape=(23, 18, 13)):
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, shape, dtype=np.uint8)


def _expected(checkpoint, volume):
    probs = predict(load_model(checkpoint), volume, tile=8)
    return np.asarray(LABELS)[probs.argmax(0)]


@pytest.mark.parametrize("name", ["case.nii.gz", "case.nii"])
def test_nifti_mask_has_the_inputs_affine_and_the_in_memory_labels(tmp_path, checkpoint3d, name):
    volume = _volume()
    affine = np.array([[0.8, 0, 0, -10.0], [0, 0.9, 0.1, 5.0], [0, 0, 2.5, 3.0], [0, 0, 0, 1]])
    image = nibabel.Nifti1Image(volume, affine)
    image.header.set_qform(affine, code=1)
    nibabel.save(image, tmp_path / name)
    out = tmp_path / "out"
    assert main(["predict", str(checkpoint3d), str(tmp_path / name), "--out", str(out), "--tile", "8"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [name]  # the mask only: no temporaries left
    mask = nibabel.load(out / name)
    np.testing.assert_array_equal(mask.affine, nibabel.load(tmp_path / name).affine)
    assert int(mask.header["sform_code"]) == int(image.header["sform_code"]) and int(mask.header["qform_code"]) == 1
    assert mask.get_data_dtype() == np.uint8 and mask.shape == volume.shape
    labels = np.asarray(mask.dataobj)
    expected = _expected(checkpoint3d, volume)
    assert set(np.unique(expected).tolist()) == set(LABELS)  # the test can tell labels apart
    np.testing.assert_array_equal(labels, expected)


def test_tiff_stack_mask_keeps_the_spacing_and_labels(tmp_path, checkpoint3d):
    volume = _volume((11, 20, 17))  # (Z, Y, X) pages
    write_volume(tmp_path / "stack.tif", volume, spacing=(2.0, 0.5, 0.25))
    out = tmp_path / "out"
    assert main(["predict", str(checkpoint3d), str(tmp_path / "stack.tif"), "--out", str(out), "--tile", "8"]) == 0
    mask = read_volume(out / "stack.tif")
    assert mask.spacing == (2.0, 0.5, 0.25)
    np.testing.assert_array_equal(mask.array, _expected(checkpoint3d, volume))
    assert tifffile.TiffFile(out / "stack.tif").series[0].axes in ("ZYX", "QYX", "IYX")


def test_nrrd_mask_is_written_with_the_inputs_geometry(tmp_path, checkpoint3d):
    pytest.importorskip("nrrd")
    volume = _volume((9, 14, 12))
    write_volume(tmp_path / "v.nrrd", volume, spacing=(1.5, 1.0, 0.7))
    out = tmp_path / "out"
    assert main(["predict", str(checkpoint3d), str(tmp_path / "v.nrrd"), "--out", str(out), "--tile", "8"]) == 0
    mask, source = read_volume(out / "v.nrrd"), read_volume(tmp_path / "v.nrrd")
    np.testing.assert_allclose(mask.affine, source.affine)
    np.testing.assert_array_equal(mask.array, _expected(checkpoint3d, volume))


def test_a_2d_checkpoint_on_a_volume_is_one_line(tmp_path, checkpoint2d, capsys):
    nibabel.save(nibabel.Nifti1Image(_volume(), np.eye(4)), tmp_path / "v.nii.gz")
    assert main(["predict", str(checkpoint2d), str(tmp_path / "v.nii.gz"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "v.nii.gz: a volume" in err[0] and "holds a 2D model" in err[0]
    assert not (tmp_path / "out" / "v.nii.gz").exists()


def test_a_3d_checkpoint_on_an_image_is_one_line(tmp_path, checkpoint3d, capsys):
    write_image(tmp_path / "img.png", _volume((20, 20, 1))[..., 0])
    assert main(["predict", str(checkpoint3d), str(tmp_path / "img.png"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "img.png: a 2-D image" in err[0] and "holds a 3D model" in err[0]


def test_a_folder_of_volumes_is_predicted(tmp_path, checkpoint3d):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(2):
        nibabel.save(nibabel.Nifti1Image(_volume((10, 9, 8)), np.eye(4)), folder / f"c{i}.nii.gz")
    assert main(["predict", str(checkpoint3d), str(folder), "--out", str(tmp_path / "out"), "--tile", "8"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["c0.nii.gz", "c1.nii.gz"]


def test_nifti_is_read_slab_by_slab_along_its_last_axis(tmp_path, checkpoint3d, monkeypatch):
    from unetkit.infer import volume_files

    volume = _volume((12, 10, 40))
    nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), tmp_path / "long.nii")
    ranges: list[tuple[int, int]] = []
    read = volume_files._NiftiSlabs.read

    def spy(self, lo, hi):
        ranges.append((lo, hi))
        return read(self, lo, hi)

    monkeypatch.setattr(volume_files._NiftiSlabs, "read", spy)
    out = tmp_path / "out"
    assert main(["predict", str(checkpoint3d), str(tmp_path / "long.nii"), "--out", str(out), "--tile", "8"]) == 0
    assert ranges == [(0, 8), (6, 14), (12, 20), (18, 26), (24, 32), (30, 38), (32, 40)]  # 8 slices at a time
    np.testing.assert_array_equal(np.asarray(nibabel.load(out / "long.nii").dataobj), _expected(checkpoint3d, volume))


def _probs(checkpoint, volume):
    return predict(load_model(checkpoint), volume, tile=8)  # (K, S0, S1, S2), in memory


def _overlay_size(shape, spacing, up):
    """(height, width) of the overlay: three planes stretched to the finest spacing, 4 pixels after each."""
    sides = [round(n * s / min(spacing)) for n, s in zip(shape, spacing, strict=True)]
    planes = [(sides[q], sides[p]) if up else (sides[p], sides[q]) for p, q in ((1, 2), (0, 2), (0, 1))]
    return max(h for h, _ in planes), sum(w for _, w in planes) + 3 * 4


def _is_coloured(picture):
    return bool((picture[..., 0] != picture[..., 1]).any())  # grey pixels have R == G == B


@pytest.mark.parametrize("name", ["case.nii.gz", "case.nii"])
def test_nifti_probs_are_the_in_memory_ones_with_the_inputs_geometry(tmp_path, checkpoint3d, name):
    from PIL import Image

    volume = _volume()
    affine = np.array([[0.8, 0, 0, -10.0], [0, 0.9, 0.1, 5.0], [0, 0, 2.5, 3.0], [0, 0, 0, 1]])
    image = nibabel.Nifti1Image(volume, affine)
    image.header.set_qform(affine, code=1)
    nibabel.save(image, tmp_path / name)
    out = tmp_path / "out"
    args = ["predict", str(checkpoint3d), str(tmp_path / name), "--out", str(out), "--tile", "8"]
    assert main([*args, "--probs", "--overlay"]) == 0
    stem, suffix = name.split(".", 1)
    assert sorted(p.name for p in out.iterdir()) == sorted([name, f"{stem}_probs.{suffix}", f"{stem}_overlay.png"])
    probs = nibabel.load(out / f"{stem}_probs.{suffix}")
    source = nibabel.load(tmp_path / name)
    np.testing.assert_array_equal(probs.affine, source.affine)
    assert int(probs.header["qform_code"]) == 1 and probs.get_data_dtype() == np.float32
    assert probs.shape == (*volume.shape, 3) and probs.header.get_zooms()[:3] == source.header.get_zooms()
    values = np.asarray(probs.dataobj)
    np.testing.assert_allclose(values, np.moveaxis(_probs(checkpoint3d, volume), 0, -1), atol=1e-5)
    np.testing.assert_allclose(values.sum(-1), 1.0, atol=1e-5)
    # the mask is the argmax of these probabilities
    np.testing.assert_array_equal(np.asarray(nibabel.load(out / name).dataobj), np.asarray(LABELS)[values.argmax(-1)])
    overlay = np.asarray(Image.open(out / f"{stem}_overlay.png"))
    assert overlay.shape == (*_overlay_size(volume.shape, source.header.get_zooms(), up=True), 3)
    assert _is_coloured(overlay)


def test_tiff_probs_are_an_imagej_hyperstack_with_the_inputs_spacing(tmp_path, checkpoint3d):
    from PIL import Image

    volume = _volume((11, 20, 17))  # (Z, Y, X) pages
    tifffile.imwrite(tmp_path / "stack.tif", volume, imagej=True, resolution=(1 / 0.25, 1 / 0.5),
                     metadata={"axes": "ZYX", "spacing": 2.0, "unit": "micron"})  # fmt: skip
    out = tmp_path / "out"
    args = ["predict", str(checkpoint3d), str(tmp_path / "stack.tif"), "--out", str(out), "--tile", "8"]
    assert main([*args, "--probs", "--overlay"]) == 0
    with tifffile.TiffFile(out / "stack_probs.tif") as tif:
        assert tif.is_imagej and tif.series[0].axes == "ZCYX" and tif.series[0].shape == (11, 3, 20, 17)
        assert tif.imagej_metadata["unit"] == "micron" and tif.series[0].dtype == np.float32
    probs = read_volume(out / "stack_probs.tif")  # (Z, Y, X, K)
    assert probs.spacing == pytest.approx((2.0, 0.5, 0.25))
    np.testing.assert_allclose(probs.array, np.moveaxis(_probs(checkpoint3d, volume), 0, -1), atol=1e-5)
    np.testing.assert_allclose(probs.array.sum(-1), 1.0, atol=1e-5)
    overlay = np.asarray(Image.open(out / "stack_overlay.png"))
    # Z 11 x 2.0, Y 20 x 0.5, X 17 x 0.25 on a 0.25 grid: 88, 40, 17 pixels; planes YX, ZX, ZY side by side
    assert overlay.shape == (88, 17 + 4 + 17 + 4 + 40 + 4, 3)
    assert overlay.shape[:2] == _overlay_size((11, 20, 17), (2.0, 0.5, 0.25), up=False)
    assert _is_coloured(overlay)


def test_nrrd_probs_and_overlay_are_written_whole(tmp_path, checkpoint3d):
    pytest.importorskip("nrrd")
    volume = _volume((9, 14, 12))
    write_volume(tmp_path / "v.nrrd", volume, spacing=(1.5, 1.0, 0.7))
    out = tmp_path / "out"
    args = ["predict", str(checkpoint3d), str(tmp_path / "v.nrrd"), "--out", str(out), "--tile", "8"]
    assert main([*args, "--probs", "--overlay"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["v.nrrd", "v_overlay.png", "v_probs.nrrd"]
    probs, source = read_volume(out / "v_probs.nrrd"), read_volume(tmp_path / "v.nrrd")
    np.testing.assert_allclose(probs.affine, source.affine)
    np.testing.assert_allclose(probs.array, np.moveaxis(_probs(checkpoint3d, volume), 0, -1), atol=1e-5)


def test_a_failing_output_leaves_nothing_behind(tmp_path, checkpoint3d, monkeypatch, capsys):
    from unetkit.data import DataError
    from unetkit.infer import volume_files

    def broken(*args, **kwargs):
        raise DataError("the overlay could not be drawn")

    monkeypatch.setattr(volume_files, "draw_planes", broken)
    nibabel.save(nibabel.Nifti1Image(_volume((10, 9, 8)), np.eye(4)), tmp_path / "v.nii.gz")
    out = tmp_path / "out"
    args = ["predict", str(checkpoint3d), str(tmp_path / "v.nii.gz"), "--out", str(out), "--tile", "8"]
    assert main([*args, "--probs", "--overlay"]) == 2
    assert "the overlay could not be drawn" in capsys.readouterr().err
    assert list(out.iterdir()) == []  # neither the mask nor the probabilities, nor a temporary folder


def test_a_multichannel_hyperstack_is_predicted_whole_with_probs_and_overlay(tmp_path):
    """ImageJ `ZCYX` pages are not a plain stack: read whole, probabilities still an ImageJ hyperstack."""
    from PIL import Image

    from unetkit.infer.predictor import Predictor
    from unetkit.infer.volume_files import predict_volume_file

    torch.manual_seed(0)
    save_model(create_model("unet", in_channels=2, num_classes=3, base_channels=4, depth=1, spatial_dims=3),
               tmp_path / "ckpt")  # fmt: skip
    voxels = np.random.default_rng(0).integers(0, 255, (7, 2, 12, 10), dtype=np.uint8)  # Z, C, Y, X
    tifffile.imwrite(tmp_path / "two.tif", voxels, imagej=True, resolution=(2.0, 2.0),
                     metadata={"axes": "ZCYX", "spacing": 3.0, "unit": "um"})  # fmt: skip
    model = load_model(tmp_path / "ckpt")
    written = predict_volume_file(Predictor(model), tmp_path / "two.tif", tmp_path / "out", tile=8, probs=True,
                                  overlay=True)  # fmt: skip
    probs = read_volume(written["probs"])
    assert probs.spacing == pytest.approx((3.0, 0.5, 0.5)) and probs.header["unit"] == "um"
    expected = predict(model, np.moveaxis(voxels, 1, 0), tile=8)
    np.testing.assert_allclose(probs.array, np.moveaxis(expected, 0, -1), atol=1e-5)
    assert Image.open(written["overlay"]).size == (10 + 10 + 12 + 3 * 4, 7 * 6)  # (width, height): Z 6x finer


def _smooth(shape, seed=0):
    """uint8 noise blurred into blobs of a few voxels."""
    from scipy import ndimage

    noise = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), 1.5)
    return ((noise - noise.min()) / (noise.max() - noise.min()) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def separation3d(tmp_path_factory):
    """An untrained 3D `unet` of an instance run with the separation's object distance (2 classes + 1 output);
    its head's biases set so that about a quarter of a blobby volume is foreground and a sixth of it seeds."""
    torch.manual_seed(0)
    model = create_model("unet", spatial_dims=3, in_channels=1, num_classes=3, base_channels=4, depth=1, norm="none")
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim > 1:
                parameter.mul_(3)
    path = tmp_path_factory.mktemp("sep3d") / "ckpt"
    extra = {
        "task": "segmentation",
        "preprocess": {"mean": [0.5], "std": [0.25]},
        "mask": {"mode": "instances", "num_classes": 2, "label_values": [0, 1]},
        "separation": "distance",
    }
    save_model(model, path, extra=extra)
    probs = predict(load_model(path), _smooth((21, 18, 13)), tile=8, distance=True)
    head = [m for m in model.modules() if isinstance(m, torch.nn.Conv3d)][-1]
    with torch.no_grad():
        head.bias[1] -= float(np.quantile(np.log(probs[1] / probs[0]), 0.75))
        head.bias[2] -= float(np.quantile(np.log(probs[2] / (1 - probs[2])), 0.85))
    save_model(model, path, extra=extra)
    return path


def _expected_instances(checkpoint, volume, method):
    from unetkit.infer.instances import instances_from_probs

    probs = predict(load_model(checkpoint), volume, tile=8, distance=True)  # (2 classes + distance, ...)
    distance = probs[-1] if method == "distance" else None
    return instances_from_probs(probs[:-1], method, spatial_dims=3, distance=distance)


@pytest.mark.parametrize(("name", "method"), [("case.nii.gz", None), ("case.nii", "watershed")])
def test_nifti_instances_have_the_inputs_affine_and_the_in_memory_labels(tmp_path, separation3d, name, method):
    volume = _smooth((21, 18, 13))
    affine = np.array([[0.8, 0, 0, -10.0], [0, 0.9, 0.1, 5.0], [0, 0, 2.5, 3.0], [0, 0, 0, 1]])
    image = nibabel.Nifti1Image(volume, affine)
    image.header.set_qform(affine, code=1)
    nibabel.save(image, tmp_path / name)
    out = tmp_path / "out"
    flag = ["--instances"] if method is None else ["--instances", method]  # auto: distance for this model
    assert main(["predict", str(separation3d), str(tmp_path / name), "--out", str(out), "--tile", "8", *flag]) == 0
    stem, suffix = name.split(".", 1)
    assert sorted(p.name for p in out.iterdir()) == sorted([name, f"{stem}_instances.{suffix}"])  # no temporaries
    objects = nibabel.load(out / f"{stem}_instances.{suffix}")
    np.testing.assert_array_equal(objects.affine, nibabel.load(tmp_path / name).affine)
    assert int(objects.header["qform_code"]) == 1 and objects.header.get_zooms() == image.header.get_zooms()
    assert objects.get_data_dtype() == np.uint16 and objects.shape == volume.shape
    expected = _expected_instances(separation3d, volume, method or "distance")
    assert expected.max() > 3  # the test can tell objects apart
    np.testing.assert_array_equal(np.asarray(objects.dataobj), expected)


def test_tiff_stack_instances_keep_the_spacing_and_equal_the_in_memory_labels(tmp_path, separation3d):
    volume = _smooth((11, 20, 17), 1)  # (Z, Y, X) pages
    write_volume(tmp_path / "stack.tif", volume, spacing=(2.0, 0.5, 0.25))
    out = tmp_path / "out"
    args = ["predict", str(separation3d), str(tmp_path / "stack.tif"), "--out", str(out), "--tile", "8"]
    assert main([*args, "--instances", "components", "--probs"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["stack.tif", "stack_instances.tif", "stack_probs.tif"]
    objects = read_volume(out / "stack_instances.tif")
    assert objects.spacing == (2.0, 0.5, 0.25) and objects.array.dtype == np.uint16
    expected = _expected_instances(separation3d, volume, "components")
    assert expected.max() > 1
    np.testing.assert_array_equal(objects.array, expected)


def test_nrrd_instances_are_labelled_whole_with_the_inputs_geometry(tmp_path, separation3d):
    pytest.importorskip("nrrd")
    volume = _smooth((9, 14, 12), 2)
    write_volume(tmp_path / "v.nrrd", volume, spacing=(1.5, 1.0, 0.7))
    out = tmp_path / "out"
    args = ["predict", str(separation3d), str(tmp_path / "v.nrrd"), "--out", str(out), "--tile", "8", "--instances"]
    assert main(args) == 0
    objects, source = read_volume(out / "v_instances.nrrd"), read_volume(tmp_path / "v.nrrd")
    np.testing.assert_allclose(objects.affine, source.affine)
    assert objects.array.dtype == np.uint16
    np.testing.assert_array_equal(objects.array, _expected_instances(separation3d, volume, "distance"))


def test_instances_in_small_blocks_are_labelled_in_the_models_axis_order(tmp_path, separation3d):
    """Blocks of 6 voxels cut the volume on every axis: the labels stay those of the tiled labelling of the
    in-memory probabilities in the model's order (NIfTI's X, Y, Z), not of the file's Z, Y, X."""
    from unetkit.infer.instances_tiled import RawArray, tiled_instances
    from unetkit.infer.predictor import Predictor
    from unetkit.infer.volume_files import predict_volume_file

    volume = _smooth((19, 16, 14), 3)
    nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), tmp_path / "v.nii")
    model = load_model(separation3d)
    written = predict_volume_file(Predictor(model), tmp_path / "v.nii", tmp_path / "out", tile=8,
                                  instances="watershed", instance_block=6, instance_margin=4)  # fmt: skip
    probs = predict(model, volume, tile=8, distance=True)
    from unetkit.infer.instances import foreground_probability

    foreground = RawArray(tmp_path / "fg.raw", volume.shape, np.float32)
    foreground.write_region((0, 0, 0), foreground_probability(probs[:-1], spatial_dims=3))
    labels = RawArray(tmp_path / "labels.raw", volume.shape, np.int32)
    count, bands = tiled_instances(foreground, labels, method="watershed", block=6, margin=4)
    expected = np.concatenate(list(bands))
    assert count > 3
    np.testing.assert_array_equal(np.asarray(nibabel.load(written["instances"]).dataobj), expected)


def test_distance_instances_need_the_separation_head(tmp_path, checkpoint3d, capsys):
    nibabel.save(nibabel.Nifti1Image(_volume((10, 9, 8)), np.eye(4)), tmp_path / "v.nii.gz")
    out = tmp_path / "out"
    args = ["predict", str(checkpoint3d), str(tmp_path / "v.nii.gz"), "--out", str(out), "--tile", "8"]
    assert main([*args, "--instances", "distance"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "separation 'distance'" in err[0]
    assert not out.exists() or list(out.iterdir()) == []


def test_a_failing_labelling_leaves_nothing_behind(tmp_path, separation3d, monkeypatch, capsys):
    from unetkit.data import DataError
    from unetkit.infer import volume_outputs

    def broken(*args, **kwargs):
        raise DataError("the labelling failed")

    monkeypatch.setattr(volume_outputs, "tiled_instances", broken)
    nibabel.save(nibabel.Nifti1Image(_volume((10, 9, 8)), np.eye(4)), tmp_path / "v.nii.gz")
    out = tmp_path / "out"
    args = ["predict", str(separation3d), str(tmp_path / "v.nii.gz"), "--out", str(out), "--tile", "8"]
    assert main([*args, "--probs", "--instances"]) == 2
    assert "the labelling failed" in capsys.readouterr().err
    assert list(out.iterdir()) == []  # neither the mask nor the probabilities, nor a temporary folder


@pytest.mark.parametrize("name", ["v.nii.gz", "v.tif"])
def test_evaluate_instances_reads_what_predict_instances_writes(tmp_path, separation3d, name):
    import json
    import shutil

    write_volume(tmp_path / "in" / name, _smooth((21, 18, 13)), spacing=(1.0, 1.0, 2.0))
    out = tmp_path / "pred"
    assert (
        main(["predict", str(separation3d), str(tmp_path / "in"), "--out", str(out), "--tile", "8", "--instances"]) == 0
    )
    stem, suffix = name.split(".", 1)
    assert read_volume(out / f"{stem}_instances.{suffix}").array.max() > 3
    (tmp_path / "truth").mkdir()
    shutil.copy(out / f"{stem}_instances.{suffix}", tmp_path / "truth" / name)  # paired by name with the prediction
    assert main(["evaluate", str(out), str(tmp_path / "truth"), "--instances", "--json", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["images"][0]["instance_f1"] == 1.0
