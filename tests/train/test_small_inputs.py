"""Small inputs plan and train with no flag but a short budget: one 128x256 image of nuclei, one stack of 30 voxels
a side (no validation split: the instance post-processing is not fitted, and says so)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from unetkit.cli.main import main
from unetkit.data.io import write_image
from unetkit.data.scenes import nuclei_scene


def _train(data, run) -> dict:
    assert main(["train", "--data", str(data), "--out", str(run), "--time-budget", "8s"]) == 0
    return json.loads((run / "plan.json").read_text())


def test_one_128x256_image_plans_and_trains(tmp_path):
    scene = nuclei_scene((128, 256), seed=5)
    write_image(tmp_path / "data" / "images" / "a.tif", scene.image)
    write_image(tmp_path / "data" / "masks" / "a.tif", scene.labels.astype(np.uint16))
    plan = _train(tmp_path / "data", tmp_path / "run")
    assert plan["settings"]["mask_mode"] == "instances" and plan["settings"]["separation"] == "distance"
    assert plan["settings"]["tune_instances"] is False and "no validation images" in plan["reasons"]["tune_instances"]
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()


def test_one_stack_of_30_voxels_a_side_plans_and_trains(tmp_path):
    pytest.importorskip("nibabel")
    from unetkit.data.volume import write_volume

    scene = nuclei_scene((30, 30, 30), seed=6, spacing=(1.0, 0.5, 0.5))
    write_volume(tmp_path / "data" / "images" / "a.nii.gz", scene.image.T, spacing=(0.5, 0.5, 1.0))
    write_volume(tmp_path / "data" / "masks" / "a.nii.gz", scene.labels.T.astype(np.uint16), spacing=(0.5, 0.5, 1.0))
    plan = _train(tmp_path / "data", tmp_path / "run")
    assert plan["settings"]["model_options"]["spatial_dims"] == 3
    assert plan["settings"]["epochs"] * plan["settings"]["steps_per_epoch"] >= 2
    config = json.loads((tmp_path / "run" / "best" / "config.json").read_text())
    assert "separation" not in config and config["spatial_dims"] == 3  # volumes: watershed on the foreground
    assert plan["settings"]["separation"] == "none" and "instance volumes" in plan["reasons"]["separation"]
