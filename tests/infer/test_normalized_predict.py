"""The checkpoint's normalisation is applied the same way by `predict` on a model, by an exported ONNX model,
and tile by tile or whole, whatever the input's dtype."""

import numpy as np
import pytest
import torch

from unetkit.data.normalize import Normalization
from unetkit.infer import predict
from unetkit.models import create_model
from unetkit.models.checkpoint import load_model, save_model


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = create_model("unet", in_channels=1, num_classes=2, base_channels=4, depth=2)
    extra = {"preprocess": Normalization("image").to_dict(), "mask": {"mode": "binary", "num_classes": 2,
             "label_values": [0, 255]}}  # fmt: skip
    return save_model(model, tmp_path / "ck", extra=extra)


def test_predict_normalises_raw_values_per_image(checkpoint):
    model = load_model(checkpoint)
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 236, (40, 52))
    low = predict(model, picture.astype(np.uint16))
    unit = predict(model, (picture / 255.0).astype(np.float32))
    np.testing.assert_allclose(low, unit, atol=1e-4)  # the same picture, 0..235 or in [0, 1]
    by_hand = model(torch.from_numpy(Normalization("image").apply(picture[None].astype(np.float32)))[None])
    np.testing.assert_allclose(low, by_hand.softmax(1)[0].detach().numpy(), atol=1e-4)


def test_exported_model_normalises_alike(checkpoint, tmp_path):
    pytest.importorskip("onnxruntime")
    from unetkit.export import export_model, load_exported

    export_model(checkpoint, tmp_path / "m.onnx", format="onnx")
    exported = load_exported(tmp_path / "m.onnx")
    assert exported.checkpoint_config["preprocess"]["scheme"] == "image"
    picture = np.random.default_rng(1).integers(0, 4096, (48, 48)).astype(np.uint16)  # 12-bit in uint16
    np.testing.assert_allclose(predict(exported, picture), predict(load_model(checkpoint), picture), atol=1e-4)
