"""`predict_file` streams every output band by band: the same pixels as predicting the image in memory,
whatever the input layout (PNG, tiled compressed TIFF, zarr) and output format (PNG, uncompressed TIFF,
tiled BigTIFF, zarr); overlays as `report.overlay` draws them; instances block by block as one pass."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from unetkit import create_model, load_model, predict, save_model
from unetkit.data import write_image
from unetkit.infer import Predictor, files, writers
from unetkit.infer.files import predict_file, remove_dead_temps
from unetkit.infer.instances import instances_from_probs
from unetkit.infer.readers import ArraySource

SHAPE = (150, 231)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("unet", in_channels=1, base_channels=4, depth=2, num_classes=1)
    path = tmp_path_factory.mktemp("ckpt") / "ckpt"
    extra = {"preprocess": {"mean": [0.5], "std": [0.25]}, "mask": {"label_values": [0, 255]}}
    save_model(model, path, extra=extra)
    return path


@pytest.fixture(scope="module")
def image():
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    blobs = np.sin(yy / 9.0) * np.cos(xx / 7.0) + np.random.default_rng(0).normal(0, 0.2, SHAPE)
    return np.clip((blobs + 1.5) * 80, 0, 255).astype(np.uint8)


def _reference(checkpoint, image):
    return predict(load_model(checkpoint), image, tile=64)


def _blobs(x: torch.Tensor) -> torch.Tensor:
    """A stand-in model whose foreground is the bright blobs of the test image."""
    return 12.0 * (x - 0.6)


def test_tiled_tiff_input_and_every_output_match_the_in_memory_prediction(tmp_path):
    from tests.infer.test_instances_tiled import _cells

    image = (_cells(SHAPE, count=30) * 255).astype(np.uint8)
    path = tmp_path / "img.tif"
    tifffile.imwrite(path, image, tile=(32, 32), compression="zlib")
    predictor = Predictor(_blobs, device="cpu")
    written = predict_file(
        predictor, path, tmp_path / "out", tile=64, probs=True, overlay=True, instances="watershed",
        instance_block=48, instance_margin=40,
    )  # fmt: skip
    probs = predict(predictor, image, tile=64)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in written.values())
    np.testing.assert_allclose(tifffile.imread(written["probs"]), probs, atol=1e-6)
    mask = np.asarray(Image.open(written["mask"]))
    np.testing.assert_array_equal(mask, probs[1] > probs[0])
    from unetkit import viz

    expected = viz.overlay(image[None].astype(np.float32) * np.float32(1 / 255), (probs[1] > probs[0]).astype(np.int64))
    np.testing.assert_array_equal(np.asarray(Image.open(written["overlay"])), expected)
    labels = tifffile.imread(written["instances"])
    whole = instances_from_probs(tifffile.imread(written["probs"]), "watershed")
    assert labels.dtype == np.uint16 and whole.max() > 3
    np.testing.assert_array_equal(labels, whole)


def test_large_outputs_are_tiled_compressed_bigtiff(tmp_path, checkpoint, image, monkeypatch):
    monkeypatch.setattr(writers, "LARGE_PIXELS", 1000)
    monkeypatch.setattr(files, "LARGE_PIXELS", 1000)
    path = tmp_path / "img.png"
    write_image(path, image)
    written = predict_file(Predictor(load_model(checkpoint)), path, tmp_path / "out", tile=64, probs=True,
                           overlay=True, instances="components")  # fmt: skip
    assert [p.name for p in written.values()] == ["img.tif", "img_probs.tif", "img_overlay.tif", "img_instances.tif"]
    probs = _reference(checkpoint, image)
    for key, p in written.items():
        with tifffile.TiffFile(p) as tif:
            assert tif.is_bigtiff and tif.pages[0].is_tiled and tif.pages[0].compression == 8, key
    np.testing.assert_allclose(np.moveaxis(tifffile.imread(written["probs"]), -1, 0), probs, atol=1e-6)
    np.testing.assert_array_equal(tifffile.imread(written["mask"]), np.where(probs[1] > probs[0], 255, 0))
    assert tifffile.imread(written["overlay"]).shape == (*SHAPE, 3)


def test_zarr_in_and_out(tmp_path, checkpoint, image):
    zarr = pytest.importorskip("zarr")
    path = tmp_path / "img.zarr"
    store = zarr.create_array(str(path), shape=SHAPE, chunks=(64, 64), dtype="uint8")
    store[:] = image
    written = predict_file(Predictor(load_model(checkpoint)), path, tmp_path / "out", tile=64, probs=True,
                           mask_format="zarr")  # fmt: skip
    assert [p.name for p in written.values()] == ["img.zarr", "img_probs.zarr"]
    probs = _reference(checkpoint, image)
    np.testing.assert_allclose(zarr.open_array(str(written["probs"]))[:], probs, atol=1e-6)
    np.testing.assert_array_equal(zarr.open_array(str(written["mask"]))[:], np.where(probs[1] > probs[0], 255, 0))


def test_dead_temporaries_go_and_live_ones_stay(tmp_path, caplog):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    out = tmp_path / "out"
    stale = out / f".big.tmp-{int(dead.stdout)}-abcd"
    stale.mkdir(parents=True)
    (stale / "mask.tif").write_bytes(b"half")
    live = out / f".other.tmp-{__import__('os').getpid()}-efgh"
    live.mkdir()
    half = out / f".case.nii.tmp-{int(dead.stdout)}-ijkl.gz"  # a killed volume prediction's atomic file
    half.write_bytes(b"x" * 100)
    with caplog.at_level("WARNING"):
        assert remove_dead_temps(out) == sorted([stale, half])
    assert not stale.exists() and not half.exists() and live.is_dir()
    assert f"removed {stale}, left by a prediction that was killed" in caplog.text


class _DecodingSource(ArraySource):
    """An in-memory image whose regions come back as fresh arrays, as a decoder makes them."""

    def _region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return self.array[:, y0:y1, x0:x1].copy()


def test_statistics_sample_keeps_only_the_subsample_of_each_band(monkeypatch):
    """The per-image statistics' subsample is read in bands; no band may stay alive through its strided view
    (that held the whole image: 1.6 GB at 40000²)."""
    from pathlib import Path
    from types import SimpleNamespace

    from unetkit.data.normalize import Normalization, stat_stride

    image = np.random.default_rng(0).integers(0, 256, (1, 4096, 4096), dtype=np.uint8)  # 16 MiB
    source = _DecodingSource(Path("img.tif"), image, 1, channels_first=True)
    monkeypatch.setattr(files, "STAT_BAND_PIXELS", 1 << 18)  # bands of 64 rows
    step = stat_stride(4096, 4096)
    tracemalloc.start()
    sample = files._statistics_sample(SimpleNamespace(normalization=Normalization("image")), source)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert step == 4
    np.testing.assert_array_equal(sample.numpy(), image[:, ::4, ::4].astype(np.float32))
    # the sample as uint8 parts (1 MiB), their concatenation (1 MiB), as float32 (4 MiB), one band (256 KiB)
    assert peak < 7 * 2**20, peak
