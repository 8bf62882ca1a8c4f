"""`unetkit bench`: FLOP counts against shared/BENCH.md, the smoke form on CPU, and its argument errors."""

from __future__ import annotations

import json
import math

import pytest
import torch

from unetkit.bench.device import copy_bandwidth, matmul_peak
from unetkit.bench.training import Case, count_flops
from unetkit.cli.main import main


@pytest.mark.parametrize(
    ("case", "tflop"),
    [
        (Case("unet", 512, 16, 3, 2), 1.155),
        (Case("unet_classic", 572, 8, 1, 2), 0.902),
        (Case("sa_unet", 592, 8, 3, 1), 0.074),
    ],
)
def test_flops_per_image_match_the_published_counts(case, tflop):
    # shared/BENCH.md counts forward + backward with torch.utils.flop_counter on an H100
    assert count_flops(case) / 1e12 == pytest.approx(tflop, rel=5e-3)


def test_device_limits_are_positive_and_plausible():
    device = torch.device("cpu")
    flops = matmul_peak(device, torch.float32, 256, repeats=2, inner=2)
    bandwidth = copy_bandwidth(device, 2**22, repeats=2)
    assert 1e8 < flops < 1e14  # between 0.1 GFLOP/s and 100 TFLOP/s on any CPU
    assert 1e8 < bandwidth < 1e13


def test_quick_bench_on_cpu_writes_a_complete_report(tmp_path, capsys):
    pytest.importorskip("monai")
    out = tmp_path / "bench.json"
    torch.set_num_threads(1)
    assert main(["bench", "--device", "cpu", "--quick", "--no-tiling", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    text = out.with_suffix(".md").read_text()
    assert text == capsys.readouterr().out.split("written:")[0].rstrip("\n") + "\n"
    assert report["machine"]["type"] == "cpu" and report["peak_dtype"] == "fp32"
    rows = {(r["case"], r["path"]): r for r in report["results"]}
    for model in ("unet", "unet_classic", "sa_unet", "monai_unet", "monai_basicunet"):
        for path in ("eager_fp32", "default"):
            row = next(r for (case, p), r in rows.items() if case.startswith(model + " ") and p == path)
            assert row["images_per_s"] > 0 and row["loss_finite"]
            assert row["tflops"] == pytest.approx(row["flops_per_image"] * row["images_per_s"] / 1e12)
            assert 0 < row["fraction_of_peak"] < 5
    sa = next(r for (case, p), r in rows.items() if case.startswith("sa_unet") and p == "default")
    assert sa["bytes_per_image"] > 0 and sa["fraction_of_copy_bandwidth"] > 0
    assert rows[("unet 64² b2", "default")]["channels_last"]
    assert not rows[("unet 64² b2", "eager_fp32")]["channels_last"]
    e2e = report["end_to_end"]
    assert e2e["pipeline_images_per_s"] > 0 and math.isfinite(e2e["ratio"])
    assert "| unet 64² b2 | default |" in text and "End-to-end" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--models", "resnet"], "--models: unknown case 'resnet'"),
        (["--steps", "0"], "--steps must be >= 1"),
        (["--device", "cuda:0"], "CUDA is not available"),
    ],
)
def test_bad_arguments_are_one_line_errors(argv, message, capsys, tmp_path):
    if "cuda" in argv[-1] and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert main(["bench", *argv, "--out", str(tmp_path / "b.json")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b.json").exists()
