"""The CPU engine choice of `unetkit predict`: ONNX Runtime gives the torch masks, its export is cached by the
checkpoint's content, and `auto` picks it only where the export pays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unetkit import create_model, save_model
from unetkit.cli.main import main
from unetkit.data import read_image, write_image
from unetkit.infer.engine import AUTO_PIXELS, choose_engine, image_pixels, onnx_cache_path

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("unet", in_channels=1, base_channels=4, depth=2)
    extra = {"preprocess": {"mean": [0.5], "std": [0.25]}, "mask": {"mode": "binary", "num_classes": 2}}
    return save_model(model, tmp_path_factory.mktemp("engine") / "ckpt", extra=extra)


def test_onnxruntime_engine_writes_the_torch_mask_and_caches_its_export(tmp_path, ckpt):
    image = tmp_path / "img.png"
    write_image(image, np.random.default_rng(3).integers(0, 255, (70, 90), dtype=np.uint8))
    common = [str(image), "--tile", "32", "--device", "cpu"]
    assert main(["predict", str(ckpt), *common, "--engine", "torch", "--out", str(tmp_path / "t")]) == 0
    assert not onnx_cache_path(ckpt).exists()
    assert main(["predict", str(ckpt), *common, "--engine", "onnxruntime", "--out", str(tmp_path / "o")]) == 0
    cached = onnx_cache_path(ckpt)
    assert cached.is_file()
    np.testing.assert_array_equal(read_image(tmp_path / "o" / "img.png"), read_image(tmp_path / "t" / "img.png"))
    stamp = cached.stat().st_mtime_ns
    assert choose_engine("auto", CPU, ckpt, pixels=1) == "onnxruntime"  # cached: auto uses it
    assert main(["predict", str(ckpt), *common, "--out", str(tmp_path / "a")]) == 0
    assert cached.stat().st_mtime_ns == stamp  # reused, not exported again
    np.testing.assert_array_equal(read_image(tmp_path / "a" / "img.png"), read_image(tmp_path / "t" / "img.png"))


def test_auto_uses_onnxruntime_only_for_large_inputs_and_never_on_cuda(tmp_path):
    torch.manual_seed(1)
    fresh = save_model(create_model("unet", in_channels=1, base_channels=4, depth=2), tmp_path / "fresh")
    assert choose_engine("auto", CPU, fresh, pixels=AUTO_PIXELS - 1) == "torch"
    assert choose_engine("auto", CPU, fresh, pixels=AUTO_PIXELS) == "onnxruntime"
    assert choose_engine("auto", torch.device("cuda"), fresh, pixels=10**9) == "torch"
    assert choose_engine("torch", CPU, fresh, pixels=10**9) == "torch"
    with pytest.raises(ValueError, match="onnxruntime runs on the CPU"):
        choose_engine("onnxruntime", torch.device("cuda"), fresh, pixels=0)


def test_the_cache_key_follows_the_weights(tmp_path):
    torch.manual_seed(2)
    model = create_model("unet", in_channels=1, base_channels=4, depth=2)
    first = onnx_cache_path(save_model(model, tmp_path / "a"))
    assert onnx_cache_path(save_model(model, tmp_path / "b")) == first  # same content, same key
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert onnx_cache_path(save_model(model, tmp_path / "c")) != first


def test_image_pixels_reads_headers_and_skips_unreadable_files(tmp_path):
    write_image(tmp_path / "a.png", np.zeros((30, 40), np.uint8))
    write_image(tmp_path / "b.tif", np.zeros((5, 7), np.uint16))
    (tmp_path / "c.png").write_bytes(b"not a png")
    assert image_pixels([tmp_path / "a.png", tmp_path / "b.tif", tmp_path / "c.png"]) == 30 * 40 + 5 * 7
