"""TrainStep: the loss stays on the device until `read`, which reports the mean and the first non-finite step."""

from __future__ import annotations

import pytest
import torch

from unetkit.losses import SegmentationLoss
from unetkit.models import create_model
from unetkit.train.step import TrainStep, resolve_amp, resolve_compile


def _step() -> TrainStep:
    torch.manual_seed(0)
    model = create_model("unet", in_channels=1, num_classes=1, base_channels=4, depth=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: every step sees the same weights
    return TrainStep(model, SegmentationLoss("bce", 1), optimizer, channels_last=True)


def _batch(value: float | None = None) -> dict[str, torch.Tensor]:
    image = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    if value is not None:
        image[0, 0, 0, 0] = value
    return {"image": image, "target": (image[:, 0] > 0).long()}


def test_read_gives_the_mean_of_the_interval_and_resets():
    step = _step()
    losses = [step(_batch()).item() for _ in range(3)]
    reading = step.read()
    assert reading.steps == 3 and reading.first_nonfinite is None
    assert reading.mean_loss == pytest.approx(sum(losses) / 3, rel=1e-6)
    step(_batch())
    assert step.read().steps == 1


def test_the_first_non_finite_step_is_remembered_on_the_device():
    step = _step()
    step(_batch())
    step(_batch(float("nan")))
    step(_batch())
    assert step.read().first_nonfinite == 1


def test_auto_settings_resolve_by_device():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_amp("auto", cpu) is None and resolve_amp("bf16", cpu) is torch.bfloat16
    assert resolve_compile("auto", cpu) is False and resolve_compile("auto", cuda) is True
    assert resolve_compile(False, cuda) is False
