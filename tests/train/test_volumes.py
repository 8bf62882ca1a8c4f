"""3D training through the one engine: `unetkit train` on a folder of NIfTI volumes (and nnU-Net's raw layout)
learns, validates on whole volumes, honours `ignore_index` in loss and metric, records spatial_dims, spacing and
the normalisation in its checkpoints; bad input is one line with exit status 2 (docs/errors.md)."""

from __future__ import annotations

import json
import re
import shutil
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tests.train.volumes import SPACING, make_volume_folder, save
from unetkit.cli.main import main
from unetkit.data.normalize import Normalization
from unetkit.data.volume_folder import load_volume_folder
from unetkit.models.checkpoint import load_model
from unetkit.train.config import TrainConfig
from unetkit.train.distributed import World
from unetkit.train.tasks import Forward, SegmentationTask

CORE = [
    "--epochs",
    "2",
    "--batch-size",
    "2",
    "--patch-size",
    "16x16x16",
    "--plan",
    "off",
    "--device",
    "cpu",
    "--set",
    "steps_per_epoch=8",
    "--set",
    "lr=0.003",
    "--set",
    "threads=1",
    "--set",
    "samples=1",
    "--seed",
    "0",
]
FAST = [*CORE, "-m", "base_channels=8", "-m", "depth=2"]  # fmt: skip


def _dice(pred: np.ndarray, target: np.ndarray) -> float:
    return float(2 * (pred & target).sum() / (pred.sum() + target.sum()))


def test_unetkit_train_on_a_folder_of_volumes_learns_and_validates_whole_volumes(tmp_path):
    data, run = make_volume_folder(tmp_path / "vols"), tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), *FAST]) == 0
    rows = [json.loads(json.dumps(r)) for r in _csv(run / "metrics.csv")]
    splits, _ = load_volume_folder(data, val_fraction=0.2, seed=0)  # the split training held out
    val = splits["val"]
    assert len(val) == 1
    # the hand-computed baseline: predicting every voxel foreground
    everything = _dice(np.ones_like(val.targets[0], bool), val.targets[0] > 0)
    assert everything < 0.15
    assert float(rows[-1]["dice"]) > 0.6 > 4 * everything
    config = json.loads((run / "best" / "config.json").read_text())
    assert config["model_config"]["spatial_dims"] == 3 and config["spatial_dims"] == 3
    assert config["spacing"] == list(SPACING)
    assert config["preprocess"]["scheme"] in ("image", "dataset")
    # validation scored the whole volume: the best weights on it, Dice computed here, equal the recorded one
    model = load_model(run / "best").eval()
    norm = Normalization.from_dict(config["preprocess"])
    with torch.no_grad():
        logits = model(torch.from_numpy(norm.apply(val.images[0]))[None])
    pred = logits.argmax(1)[0].numpy() > 0
    best = max(rows, key=lambda r: float(r["dice"]))
    assert _dice(pred, val.targets[0] > 0) == pytest.approx(float(best["dice"]), abs=1e-6)


def _csv(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open() as f:
        return list(csv.DictReader(f))


def test_the_nnunet_raw_layout_trains_too(tmp_path, capsys):
    vols = make_volume_folder(tmp_path / "vols", cases=4)
    raw = tmp_path / "Dataset001_Balls"
    for sub in ("imagesTr", "labelsTr"):
        (raw / sub).mkdir(parents=True)
    for image in sorted((vols / "images").iterdir()):
        stem = image.name[: -len(".nii.gz")]
        shutil.copy(image, raw / "imagesTr" / f"{stem}_0000.nii.gz")
        shutil.copy(vols / "masks" / image.name, raw / "labelsTr" / image.name)
    meta = {"channel_names": {"0": "MR"}, "labels": {"background": 0, "ball": 1}, "numTraining": 4,
            "file_ending": ".nii.gz"}  # fmt: skip
    (raw / "dataset.json").write_text(json.dumps(meta))
    run = tmp_path / "run"
    assert main(["train", "--data", str(raw), "--out", str(run), *FAST, "--set", "steps_per_epoch=1"]) == 0
    config = json.loads((run / "last" / "config.json").read_text())
    assert config["model_config"]["spatial_dims"] == 3 and config["mask"]["label_values"] == [0, 1]
    capsys.readouterr()
    assert main(["train", "--data", str(raw), "--out", str(tmp_path / "b"), *FAST, "--ignore-index", "255"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "`ignore_index` does not apply to the nnU-Net raw data set" in err[0], err


class _Threshold(nn.Module):
    """Logits (0, x): foreground where the normalised intensity is positive."""

    spatial_dims = 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x), x], dim=1)


def test_ignore_index_in_3d_is_left_out_of_loss_and_metric(tmp_path):
    data = make_volume_folder(tmp_path / "vols", cases=4, ignore_slab=True)
    config = TrainConfig(data=str(data), out=str(tmp_path / "run"), ignore_index=255, patch_size=[24, 24, 16],
                         plan="off", device="cpu", augment={"enabled": False})  # fmt: skip
    task = SegmentationTask(config.validate(), torch.device("cpu"))
    assert task.prepared.mask.num_classes == 2  # 255 is no class
    train = task.train_set
    for valid, target in zip(train.valid, train.targets, strict=True):
        assert not valid[..., :3].any() and valid[..., 3:].all() and not target[..., :3].any()
    task.attach(_Threshold())
    batch = task.batch([0, 1], torch.Generator().manual_seed(0), torch.Generator().manual_seed(1), slice(0, 2))
    logits = torch.randn(2, 2, 24, 24, 16)
    other = logits.clone()
    other[..., :3] = 100 * torch.randn_like(other[..., :3])  # any logits where the voxels are ignored
    loss = task.loss()
    assert torch.equal(
        loss(logits, batch["target"], valid=batch["valid"]), loss(other, batch["target"], valid=batch["valid"])
    )
    # the metric: Dice of the thresholded intensities over the valid voxels only, computed here
    metrics = task.validate(_Threshold(), Forward(nullcontext, False), World(torch.device("cpu"))).metrics
    image, target = task.val_set.images[0][0].numpy(), task.prepared.val.targets[0]
    keep = np.ones(target.shape, bool)
    keep[..., :3] = False
    expected = _dice((image > 0) & keep, (target > 0) & keep)
    assert _dice(image > 0, target > 0) != pytest.approx(expected)  # the ignored slab would change it
    assert metrics["dice"] == pytest.approx(expected, abs=1e-9)


BAD = [
    ("2d-model", ["--model", "basic_unet"], r"`model` 'basic_unet' is 2-D only and .* holds volumes"),
    ("spatial-dims-2", ["-m", "spatial_dims=2"], r"`model_options.spatial_dims` 2 does not fit .*: it holds volumes"),
    ("patch-axes", ["--patch-size", "16x16"], r"`patch_size` must give one side or 3 \(one per spatial axis\), "
     r"got \[16, 16\]"),
]  # fmt: skip


@pytest.mark.parametrize(("extra", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_settings_for_volumes_exit_2_with_one_line(tmp_path, capsys, extra, message):
    data, run = make_volume_folder(tmp_path / "vols", cases=2), tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), *CORE, *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and __import__("re").search(message, err[0]), err
    assert not (run / "last").exists()


def test_a_mask_of_another_shape_and_a_3d_model_on_images_exit_2(tmp_path, capsys):
    data = make_volume_folder(tmp_path / "vols", cases=2)
    save(data / "masks" / "case1.nii.gz", np.zeros((24, 24, 15), np.uint8))
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "a"), *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert "case1.nii.gz: is (24, 24, 15) voxels but its image is (24, 24, 16)" in err and len(err.splitlines()) == 1
    images = tmp_path / "images"
    assert main(["data", "synthetic", "shapes", "--out", str(images), "-n", "4", "--size", "32"]) == 0
    capsys.readouterr()
    args = ["train", "--data", str(images), "--out", str(tmp_path / "b"), "--model", "unet_classic_3d", "--plan", "off"]
    assert main([*args, "--epochs", "1", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "model 'unet_classic_3d': spatial_dims 3 does not fit" in err and "2-D images" in err, err


def test_the_plan_gives_thick_slices_in_plane_kernels_and_pooling_and_the_run_predicts(tmp_path):
    import nibabel as nib

    data = make_volume_folder(tmp_path / "vols", cases=4)
    for path in sorted(data.rglob("*.nii.gz")):  # 0.5 x 0.5 mm in-plane, 2.5 mm slices (ratio 5)
        volume = nib.load(path)
        nib.save(nib.Nifti1Image(np.asanyarray(volume.dataobj), np.diag([0.5, 0.5, 2.5, 1.0])), path)
    run = tmp_path / "run"
    args = ["--epochs", "1", "--set", "steps_per_epoch=2", "--set", "threads=1", "--device", "cpu", "--seed", "0"]
    assert main(["train", "--data", str(data), "--out", str(run), "--plan", "auto", *args]) == 0
    config = json.loads((run / "last" / "config.json").read_text())["model_config"]
    # nnU-Net's rule: z (5x coarser) is convolved and pooled only once x, y have caught up with its spacing
    assert config["pool"] == [[2, 2, 1], [2, 2, 1], [1, 1, 2]]
    assert config["kernel_size"] == [[3, 3, 1], [3, 3, 1], [3, 3, 3], [3, 3, 3]]
    plan = json.loads((run / "plan.json").read_text())
    assert "pooling" in json.dumps(plan)
    out = tmp_path / "pred"
    image = data / "images" / "case0.nii.gz"
    assert main(["predict", str(run), str(image), "--out", str(out)]) == 0
    (written,) = [p for p in out.iterdir() if p.name.endswith(".nii.gz")]
    assert nib.load(written).shape == nib.load(image).shape


def test_a_folder_of_fiji_hyperstacks_trains_a_3d_model_by_default(tmp_path, capsys):
    """Issue 32: ImageJ hyperstacks (axes ZYX, 31 pages of 46x28) were read as 2-D images of 28 channels."""
    from tests.train.volumes import HYPERSTACK, HYPERSTACK_SPACING, make_hyperstack_folder
    from unetkit.data.volume import read_volume

    data, run = make_hyperstack_folder(tmp_path / "stacks"), tmp_path / "run"
    assert main(["data", "inspect", str(data), "--no-timing"]) == 0
    shown = capsys.readouterr().out
    assert re.search(r"volume shape +31x46x28", shown) and re.search(r"spacing +2 x 0.5 x 0.5", shown), shown
    args = ["--epochs", "1", "--set", "steps_per_epoch=2", "--set", "threads=1", "--device", "cpu", "--seed", "0"]
    assert main(["train", "--data", str(data), "--out", str(run), *args]) == 0
    config = json.loads((run / "last" / "config.json").read_text())
    assert config["spatial_dims"] == 3 and config["model_config"]["spatial_dims"] == 3
    assert config["spacing"] == pytest.approx(list(HYPERSTACK_SPACING))
    # 2 um slices against 0.5 um pixels: the first poolings keep Z (nnU-Net's rule), kernels flat there
    assert config["model_config"]["pool"][0] == [1, 2, 2] and config["model_config"]["kernel_size"][0] == [1, 3, 3]
    assert json.loads((run / "plan.json").read_text())["settings"]["model_options"]["spatial_dims"] == 3
    out = tmp_path / "pred"
    assert main(["predict", str(run), str(data / "images" / "stack0.tif"), "--out", str(out)]) == 0
    mask = read_volume(out / "stack0.tif")
    assert mask.shape == HYPERSTACK and mask.spacing == pytest.approx(HYPERSTACK_SPACING)


def test_a_hyperstack_with_a_2d_mask_exits_2_naming_both(tmp_path, capsys):
    import tifffile

    from tests.train.volumes import make_hyperstack_folder

    data = make_hyperstack_folder(tmp_path / "stacks", cases=2)
    tifffile.imwrite(data / "masks" / "stack1.tif", np.zeros((46, 28), np.uint8))
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "run"), *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "masks/stack1.tif: is a 2-D image" in err[0] and "images/stack1.tif is a volume" in err[0]
    assert not (tmp_path / "run" / "last").exists()
