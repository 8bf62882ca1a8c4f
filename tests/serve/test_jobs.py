"""The page's prediction jobs: progress over tiles (the callable form of `predict_file`'s progress), the
tiled copy of images decoded whole (the CLI's outputs byte for byte), the messages naming uploaded files by
their names, readable sizes."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from unetkit.infer.files import predict_file
from unetkit.infer.predictor import Predictor
from unetkit.models import create_model
from unetkit.models.checkpoint import load_model
from unetkit.serve.jobs import Job, Upload, _region_copy, _size


def test_progress_reports_every_batch_of_tiles(runs_root, tmp_path):
    image = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (700, 1100), dtype=np.uint8)).save(image)
    calls: list[tuple[int, int]] = []
    predictor = Predictor(load_model(runs_root / "narrow"))
    predict_file(predictor, image, tmp_path / "out", batch_size=4, progress=lambda d, t: calls.append((d, t)))
    # 512-pixel tiles overlapping by 0.25 (step 384): 3 across 1100 px, 2 down 700 px; batches of 4 in raster
    # order run across the band boundary: 4 tiles, then the last 2
    assert calls == [(4, 6), (6, 6)]


def test_messages_name_the_uploaded_files(tmp_path):
    folder = tmp_path / "uploads" / "abc"
    image = Upload("abc", "cells 1.png", folder / "cells 1.png", 10)
    job = Job("j", "run", image, None, False, None, tmp_path / "jobs" / "j")
    err = ValueError(f"{folder / 'cells 1.png'}: image has 3 channels, the model expects 1\nmore")
    assert job.user_message(err) == "cells 1.png: image has 3 channels, the model expects 1"
    out = OSError(28, "No space left on device", str(tmp_path / "jobs" / "j" / "out" / "x.png"))
    assert job.user_message(out) == "out/x.png: No space left on device"


def test_sizes_read_well():
    assert [_size(n) for n in (0, 1023, 1536, 5 * 2**20, 3 * 2**30)] == [
        "0 bytes",
        "1023 bytes",
        "1.5 KiB",
        "5.0 MiB",
        "3.0 GiB",
    ]


@pytest.mark.parametrize(
    ("mode", "dtype", "in_channels"),
    [("L", np.uint8, 1), ("I;16", np.uint16, 1), ("RGB", np.uint8, 3), ("RGBA", np.uint8, 3), ("RGBA", np.uint8, 4)],
)
def test_region_copy_predicts_as_the_upload(tmp_path, mode, dtype, in_channels):
    rng = np.random.default_rng(3)
    channels = {"L": 1, "I;16": 1, "RGB": 3, "RGBA": 4}[mode]
    shape = (301, 517) if channels == 1 else (301, 517, channels)
    pixels = rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
    image = tmp_path / "scan 1.png"
    Image.fromarray(pixels).save(image)
    copy = _region_copy(image, tmp_path / "pixels")
    assert copy is not None and copy.name == "scan 1.tif"
    torch.manual_seed(0)
    predictor = Predictor(create_model("unet", in_channels=in_channels, num_classes=3, base_channels=4, depth=2))
    direct = predict_file(predictor, image, tmp_path / "direct", probs=True, tile=128)
    copied = predict_file(predictor, copy, tmp_path / "copied", probs=True, tile=128)
    assert direct.keys() == copied.keys()
    for key in direct:
        assert direct[key].name == copied[key].name
        assert direct[key].read_bytes() == copied[key].read_bytes(), key


def test_files_read_by_region_are_not_copied(tmp_path):
    image = tmp_path / "scan.tif"
    tifffile.imwrite(image, np.zeros((64, 64), np.uint8), tile=(32, 32))
    assert _region_copy(image, tmp_path / "pixels") is None
    assert not (tmp_path / "pixels").exists()
