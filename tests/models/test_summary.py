"""`unetkit.models.summary`: the pass on the meta device gives the very table of a real pass, for any size."""

from __future__ import annotations

import pytest
import torch

from unetkit import create_model
from unetkit.models.summary import summarize


@pytest.mark.parametrize("name", ["sa_unet", "unet_classic"])
@pytest.mark.parametrize("training", [True, False])
def test_the_meta_pass_gives_the_cpu_table(name, training):
    model = create_model(name, base_channels=8)
    side = 188 if name == "unet_classic" else 64
    shape = (1, model.in_channels, side, side)
    on_cpu = summarize(model, shape, training=training, device="cpu")
    on_meta = summarize(model, shape, training=training)
    assert str(on_meta) == str(on_cpu)  # DropBlock rows, shapes, parameter counts, activation bytes
    assert on_meta.memory_bytes == on_cpu.memory_bytes


def test_a_model_built_on_meta_is_summarised_without_memory():
    with torch.device("meta"):
        model = create_model("unet", base_channels=4096)  # ~128 G parameters: 512 GB of fp32 weights
    summary = summarize(model, (1, 3, 64, 64))
    assert summary.total_params == sum(p.numel() for p in model.parameters()) > 10**11
    # fp32 parameters plus twice the leaf outputs (forward and backward)
    leaves = sum(r.activation_bytes for r in summary.rows if r.leaf)
    assert summary.memory_bytes == 4 * summary.total_params + 2 * leaves
