"""The page's prediction jobs: progress over tiles (the callable form of `predict_file`'s progress), the
messages naming uploaded files by their names, readable sizes."""

from __future__ import annotations

import numpy as np
from PIL import Image

from unetkit.infer.files import predict_file
from unetkit.infer.predictor import Predictor
from unetkit.models.checkpoint import load_model
from unetkit.serve.jobs import Job, Upload, _size


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
