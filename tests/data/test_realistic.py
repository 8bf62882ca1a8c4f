"""The generated realistic sets are stored as promised, and `unetkit data inspect` reads each one right."""

import json

import numpy as np
import pytest
import tifffile
from PIL import Image

from unetkit.cli.main import main
from unetkit.data.realistic import write_realistic


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("realistic")
    return {name: write_realistic(name, root / name, n=6) for name in ("nuclei", "voc", "bit12", "ct")}


def test_files_are_stored_the_way_real_sets_come(sets):
    nuclei = tifffile.imread(next((sets["nuclei"] / "images").iterdir()))
    labels = tifffile.imread(next((sets["nuclei"] / "masks").iterdir()))
    assert nuclei.dtype == np.uint16 and nuclei.max() < 1000  # low range: < 1.5% of 65535
    assert (
        labels.dtype == np.uint16
        and labels.max() >= 10
        and np.array_equal(np.unique(labels), np.arange(labels.max() + 1))
    )
    photo = next((sets["voc"] / "images").iterdir())
    mask = Image.open(next((sets["voc"] / "masks").iterdir()))
    assert photo.suffix == ".jpg" and mask.mode == "P" and set(np.unique(np.asarray(mask))) <= {0, 1, 8, 15, 255}
    assert 255 in np.asarray(mask)
    eye = np.asarray(Image.open(next((sets["bit12"] / "images").iterdir())))
    assert eye.dtype in (np.uint16, np.int32) and 1000 < eye.max() <= 4095  # 12 bits in a 16-bit PNG
    assert set(np.unique(np.asarray(Image.open(next((sets["bit12"] / "masks").iterdir()))))) <= {0, 1}
    assert (sets["bit12"] / "fov").is_dir()
    ct = tifffile.imread(next((sets["ct"] / "images").iterdir()))
    assert ct.dtype == np.float32 and ct.min() < -900  # Hounsfield-like: air


@pytest.mark.parametrize(
    ("name", "flags", "mode", "normalisation"),
    [
        ("nuclei", [], "instance labels", "image"),
        ("voc", [], "classes: 4 values {0, 1, 8, 15} (palette PNG indices)", "image"),  # 255: VOC's void, ignored
        ("bit12", [], "binary", "image"),
        ("ct", [], "classes: 3 values {0, 1, 2}", "dataset"),
    ],
)
def test_inspect_prints_the_mask_mode_and_the_plan(sets, tmp_path, capsys, name, flags, mode, normalisation):
    out = tmp_path / "inspect.json"
    assert main(["data", "inspect", str(sets[name]), *flags, "--no-timing", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "mask mode" in text and mode in text
    assert "the plan `unetkit train --data DIR` would use" in text and "loss = 'dice_ce'" in text
    payload = json.loads(out.read_text())
    assert payload["fingerprint"]["normalization"]["scheme"] == normalisation
    plan = payload["plan"]["settings"]
    assert plan["normalize"] == normalisation and plan["model"] == "unet"
    if name == "nuclei":
        assert plan["tune_instances"] is True and plan["separation"] == "distance"  # touching nuclei
        assert plan["weight_map"] is False  # the distance output separates them, not the border weight map
        assert payload["fingerprint"]["objects"]["touching"] > 0.5
    if name == "voc":
        assert payload["fingerprint"]["mask"]["ignore_index"] == 255 and "ignored (value 255)" in text
        assert plan["out_channels"] == 4 and plan["ignore_index"] == 255  # the plan carries the ignore value
