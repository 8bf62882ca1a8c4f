"""Training through the CLI on data stored as users ship it (`unetkit.data.realistic`), with the default plan:
VOC palette masks with 255 borders, uint16 nuclei with instance-label TIFFs; predictions that do not depend
on the dtype of the input; the border in no loss, metric or prediction."""

import json

import numpy as np
import pytest
import tifffile
import torch

from unetkit.cli.main import main
from unetkit.data.io import read_image, write_image
from unetkit.data.masks import read_mask
from unetkit.data.realistic import write_realistic

BUDGET = "12s"


@pytest.fixture(scope="module")
def voc_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    data = write_realistic("voc", root / "data", n=8)
    run = root / "run"
    assert (
        main(["train", "--data", str(data), "--out", str(run), "--ignore-index", "255", "--time-budget", BUDGET]) == 0
    )
    return data, run


@pytest.fixture(scope="module")
def nuclei_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("nuclei")
    data = write_realistic("nuclei", root / "data", n=8)
    run = root / "run"
    assert main(["train", "--data", str(data), "--out", str(run), "--time-budget", BUDGET]) == 0
    return data, run


def test_voc_border_is_no_class_and_never_predicted(voc_run, tmp_path):
    data, run = voc_run
    config = json.loads((run / "best" / "config.json").read_text())
    assert config["mask"]["label_values"] == [0, 1, 8, 15] and config["mask"]["ignore_index"] == 255
    assert config["model_config"]["num_classes"] == 4  # no output channel for the border
    saved = (run / "config.yaml").read_text()
    assert "plan: 'off'" in saved or "plan: off" in saved  # the resolved plan re-creates the run
    assert (run / "plan.json").is_file()
    images = sorted((data / "images").iterdir())[:2]
    assert main(["predict", str(run), *map(str, images), "--out", str(tmp_path / "pred")]) == 0
    for image in images:
        predicted = read_mask(tmp_path / "pred" / f"{image.stem}.png")
        assert set(np.unique(predicted).tolist()) <= {0, 1, 8, 15}


def test_voc_border_is_in_no_loss_and_no_metric(voc_run):
    from unetkit.losses import SegmentationLoss
    from unetkit.metrics import PixelMeter
    from unetkit.train.data import prepare_data, to_tensors

    data, _ = voc_run
    prepared = prepare_data(str(data), mask_mode="auto", val_fraction=0.2, seed=0, synthetic_train=1,
                            synthetic_val=1, synthetic_size=32, ignore_index=255)  # fmt: skip
    tensors = to_tensors(prepared.train, prepared.normalization, torch.device("cpu"))
    raw = read_mask(data / "masks" / f"{prepared.train.names[0]}.png")
    border = torch.from_numpy(raw == 255)
    assert border.any()
    np.testing.assert_array_equal(tensors.valid[0].numpy(), ~border.numpy())  # valid False exactly on the border
    target, valid = tensors.targets[0][None], tensors.valid[0][None]
    logits = torch.randn(1, 4, *target.shape[1:])
    loss = SegmentationLoss("dice_ce", 4)
    before = loss(logits, target, valid=valid)
    changed = torch.where(border[None, None], torch.randn_like(logits) * 50, logits)  # anything on the border
    other = torch.where(border[None], torch.full_like(target, 3), target)
    assert torch.equal(loss(changed, other, valid=valid), before)
    meters = []
    for pred in (logits.argmax(1), changed.argmax(1)):
        meter = PixelMeter(4)
        meter.update(pred, other, valid)
        meters.append(meter.compute())
    assert meters[0] == meters[1]


def test_nuclei_instance_post_processing_is_fitted_and_used(nuclei_run, tmp_path, monkeypatch):
    from unetkit.infer import files

    data, run = nuclei_run
    config = json.loads((run / "best" / "config.json").read_text())
    assert config["mask"]["mode"] == "instances"
    assert config["separation"] == "distance"  # instance masks: the object-distance head, by default
    fitted = config["instances"]
    assert set(fitted["tried"]) == {"components", "watershed", "distance"} and fitted["min_size"] >= 0
    assert fitted["f1"] == max(fitted["tried"].values()) or fitted["f1"] >= max(fitted["tried"].values()) - 0.01
    own = {"watershed": "h", "distance": "seed"}.get(fitted["method"])
    seen = []
    real = files.tiled_instances  # what `predict --instances` runs, block by block

    def spy(foreground, labels, *, method="watershed", block, margin, distance=None, **options):
        seen.append((method, options, distance is not None))
        return real(foreground, labels, method=method, block=block, margin=margin, distance=distance, **options)

    monkeypatch.setattr(files, "tiled_instances", spy)
    image = next((data / "images").iterdir())
    assert main(["predict", str(run), str(image), "--out", str(tmp_path / "p"), "--instances"]) == 0
    expected = {"min_size": fitted["min_size"], **({own: fitted[own]} if own else {})}
    assert seen == [(fitted["method"], expected, fitted["method"] == "distance")]  # the fitted method, as fitted
    assert (tmp_path / "p" / f"{image.stem}_instances.tif").is_file()
    seen.clear()
    assert main(["predict", str(run), str(image), "--out", str(tmp_path / "q"), "--instances", "distance"]) == 0
    assert seen[0][0] == "distance" and seen[0][2]  # the model's distance map goes to the labelling


def test_the_same_picture_as_uint16_uint8_and_float32_predicts_alike(nuclei_run, tmp_path):
    data, run = nuclei_run
    counts = read_image(next((data / "images").iterdir())).astype(np.float64)
    picture = np.round(counts / counts.max() * 235)  # values 0..235: 0.4% of the uint16 range
    files = {
        "u16": tmp_path / "in" / "u16.tif",
        "u8": tmp_path / "in" / "u8.png",
        "f32": tmp_path / "in" / "f32.tif",
        "unit": tmp_path / "in" / "unit.tif",
    }
    write_image(files["u16"], picture.astype(np.uint16))
    write_image(files["u8"], picture.astype(np.uint8))
    tifffile.imwrite(files["f32"], picture.astype(np.float32))
    tifffile.imwrite(files["unit"], (picture / 255.0).astype(np.float32))  # the float copy in [0, 1]
    assert main(["predict", str(run), *map(str, files.values()), "--out", str(tmp_path / "out")]) == 0
    masks = {key: read_mask(tmp_path / "out" / f"{key}.png") for key in files}
    assert 0.01 < float((masks["u16"] > 0).mean()) < 0.99  # the prediction is not trivial
    for key in ("u8", "f32", "unit"):
        agree = float((masks[key] == masks["u16"]).mean())
        assert agree >= 0.999, (key, agree)
