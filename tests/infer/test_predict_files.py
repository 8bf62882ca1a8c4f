"""`unetkit predict` on files: outputs in the training masks' values, streamed large TIFFs with flat
memory, and one-line errors that leave no partial output behind."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tifffile
import torch

from unetkit import create_model, save_model
from unetkit.cli.main import main
from unetkit.data import read_image, write_image


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained small `unet` saved as a checkpoint with binary 0/255 label values."""
    torch.manual_seed(0)
    model = create_model("unet", in_channels=1, base_channels=4, depth=2, num_classes=1)
    path = tmp_path_factory.mktemp("ckpt") / "ckpt"
    extra = {
        "preprocess": {"mean": [0.5], "std": [0.25]},
        "mask": {"mode": "binary", "num_classes": 2, "label_values": [0, 255]},
    }
    save_model(model, path, extra=extra)
    return path


def _images(folder, n=2, size=(45, 67)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        write_image(folder / f"img{i}.png", rng.integers(0, 255, size, dtype=np.uint8))
    return folder


def test_predict_a_folder_writes_masks_probs_and_overlays(tmp_path, checkpoint, capsys):
    images = _images(tmp_path / "in")
    out = tmp_path / "out"
    argv = ["predict", str(checkpoint), str(images), "--out", str(out), "--tile", "32", "--probs", "--overlay"]
    assert main(argv) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"img{i}{s}" for i in range(2) for s in (".png", "_probs.tif", "_overlay.png"))
    mask = read_image(out / "img0.png")
    assert mask.shape == (45, 67) and set(np.unique(mask).tolist()) <= {0, 255}
    probs = tifffile.imread(out / "img0_probs.tif")
    assert probs.shape == (2, 45, 67) and probs.dtype == np.float32
    np.testing.assert_array_equal(mask == 255, probs.argmax(0) == 1)
    from unetkit import load_model, predict

    direct = predict(load_model(checkpoint), read_image(images / "img0.png"), tile=32)
    np.testing.assert_allclose(probs, direct, atol=1e-6)
    assert "[2/2]" in capsys.readouterr().out


def test_globs_and_tiff_mask_format(tmp_path, checkpoint):
    images = _images(tmp_path / "in", n=3)
    out = tmp_path / "out"
    assert (
        main(["predict", str(checkpoint), str(images / "img[01].png"), "--out", str(out), "--mask-format", "tif"]) == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["img0.tif", "img1.tif"]
    assert tifffile.imread(out / "img0.tif").dtype == np.uint8


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unreadable", "cannot read image"),
        ("channels", "image has 3 channels, the model expects 1"),
        ("tile", "`tile` 2 is smaller than the model's smallest tile"),
        ("overlap", "`--overlap` must be in [0, 1), got 1.0"),
        ("checkpoint", "not a checkpoint"),
        ("missing", "no such file or folder"),
    ],
)
def test_bad_input_one_line_and_no_partial_output(tmp_path, checkpoint, capsys, case, expected):
    images = _images(tmp_path / "in", n=1)
    target = images / "img0.png"
    ckpt, extra = str(checkpoint), []
    if case == "unreadable":
        target = images / "broken.png"
        target.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    elif case == "channels":
        target = images / "rgb.png"
        write_image(target, np.zeros((20, 20, 3), np.uint8))
    elif case == "tile":
        extra = ["--tile", "2"]
    elif case == "overlap":
        extra = ["--overlap", "1.0"]
    elif case == "checkpoint":
        ckpt = str(images)
    elif case == "missing":
        target = images / "nope.png"
    out = tmp_path / "out"
    code = main(["predict", ckpt, str(target), "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert expected in err, err
    assert not out.exists() or not any(out.iterdir()), "no partial output"


def test_a_failure_midway_leaves_no_partial_files(tmp_path, checkpoint, monkeypatch, capsys):
    from unetkit.infer import files as predict_module

    images = _images(tmp_path / "in", size=(200, 200))
    calls = {"n": 0}
    real = predict_module.run_tiled

    def failing(predictor, reader, plan, sink, **kwargs):  # type: ignore[no-untyped-def]
        def broken_sink(y0, y1, values):  # type: ignore[no-untyped-def]
            calls["n"] += 1
            if calls["n"] > 1:
                raise OSError("disk full")
            sink(y0, y1, values)

        return real(predictor, reader, plan, broken_sink, **kwargs)

    monkeypatch.setattr(predict_module, "run_tiled", failing)
    out = tmp_path / "out"
    code = main(["predict", str(checkpoint), str(images / "img0.png"), "--out", str(out), "--tile", "64", "--probs"])
    assert code == 2 and "disk full" in capsys.readouterr().err  # an OSError: one line, status 2
    assert list(out.iterdir()) == []


MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    from unetkit import load_model
    from unetkit.infer import Predictor, predict_file
    predictor = Predictor(load_model(sys.argv[1]))
    predict_file(predictor, sys.argv[2], sys.argv[3], tile=128, mask_format="tif", batch_size=4, probs=True)
    print(json.dumps({"maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
    """
)


def test_process_memory_stays_flat_as_the_image_grows(tmp_path, checkpoint):
    """A 9x larger image, taller or wider (tiled, compressed TIFF in; TIFF mask and probabilities out),
    costs almost no more peak memory: the image is read and the outputs written one band at a time."""
    peaks = {}
    for shape in ((512, 512), (1536, 1536), (256, 9216)):
        image = tmp_path / f"big{shape[0]}x{shape[1]}.tif"
        pixels = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
        tifffile.imwrite(image, pixels, tile=(256, 256), compression="zlib")
        run = subprocess.run(
            [sys.executable, "-c", MEMORY_SCRIPT, str(checkpoint), str(image), str(tmp_path / image.stem)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr
        peaks[shape] = json.loads(run.stdout.strip().splitlines()[-1])["maxrss_kb"] / 1024
        assert tifffile.imread(tmp_path / image.stem / f"{image.stem}.tif").shape == shape
        assert tifffile.imread(tmp_path / image.stem / f"{image.stem}_probs.tif").shape == (2, *shape)
    from unetkit.infer.files import band_bytes
    from unetkit.infer.tiling import plan_tiles

    whole_probs_mb = 2 * 1536 * 1536 * 4 / 2**20  # what holding the (K, H, W) float32 output would cost: 18 MB
    assert peaks[(1536, 1536)] - peaks[(512, 512)] < 0.25 * whole_probs_mb  # taller: flat
    bound = band_bytes(plan_tiles(256, 9216, tile=128, overlap=0.25), 1, 1, 2, {"probs": True}) / 2**20
    growth = peaks[(256, 9216)] - peaks[(512, 512)]
    print(f"peak RSS {peaks}; 256x9216 grows {growth:.1f} MB, within one band's bound {bound:.1f} MB")
    assert growth < bound  # wider: one band's buffers, far below the whole probabilities (18 MB at 1536²)
