"""The run's reports: metrics.csv, curves.png, validation pictures and, with the TensorBoard extra, the same
scalars and the pictures as TensorBoard events; without it, the run log says how to install it."""

from __future__ import annotations

import csv
import sys

import numpy as np
import pytest

from unetkit import TrainConfig, train
from unetkit.data import read_image

TINY = {
    "data": "synthetic:cells",
    "model": "unet",
    "model_options": {"base_channels": 4, "depth": 2},
    "epochs": 2,
    "batch_size": 2,
    "patch_size": 32,
    "steps_per_epoch": 2,
    "synthetic_train": 4,
    "synthetic_val": 2,
    "synthetic_size": 32,
    "samples": 2,
    "threads": 1,
}


def test_tensorboard_holds_the_scalars_of_metrics_csv_and_the_validation_pictures(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    train(TrainConfig(**TINY, out=str(run)))  # type: ignore[arg-type]
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    for key in ("train_loss", "val_loss", "dice", "iou", "lr"):
        logged = [(e.step, e.value) for e in events.Scalars(key)]
        assert [step for step, _ in logged] == [1, 2], key
        assert [value for _, value in logged] == pytest.approx([float(r[key]) for r in rows], rel=1e-5), key
    pictures = events.Images("validation/samples")
    assert [p.step for p in pictures] == [1, 2]
    picture = read_image(run / "samples" / "epoch_002.png")
    assert (pictures[-1].height, pictures[-1].width) == picture.shape[:2]


def test_without_tensorboard_the_log_names_the_extra(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # `import` of it now fails
    run = tmp_path / "run"
    with caplog.at_level("INFO", logger="unetkit.train"):
        train(TrainConfig(**{**TINY, "epochs": 1}, out=str(run)))  # type: ignore[arg-type]
    assert (
        "TensorBoard events are off: the tensorboard package is not installed (pip install 'unetkit[tensorboard]')"
        in caplog.text
    )
    assert not (run / "tensorboard").exists()
    assert read_image(run / "samples" / "epoch_001.png").dtype == np.uint8
