"""The tiling benchmark's smoke test: `benchmarks/tiling.py --quick` on the CPU writes a complete report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_quick_benchmark_writes_a_complete_report(tmp_path):
    pytest.importorskip("monai")
    out = tmp_path / "tiling.json"
    cmd = [sys.executable, "benchmarks/tiling.py", "--quick", "--device", "cpu", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two threads on two busy cores run several times slower
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "| unetkit.predict |" in run.stdout
    report = json.loads(out.read_text())
    assert out.with_suffix(".md").read_text().startswith("# Tiled prediction")
    for key in ("command", "machine", "versions", "config", "memory_method", "results", "stand_in", "agreement"):
        assert key in report
    assert {"torch", "monai", "unetkit"} <= report["versions"].keys()
    assert report["config"]["dtype"] == "float32" and report["config"]["repeats"] == 1
    for name in ("unetkit", "monai", "untiled"):
        result = report["results"][name]
        assert result["mp_per_s"] > 0 and len(result["seconds"]) == 1 and result["peak_memory_bytes"] > 0
    for pair in ("unetkit_vs_monai", "unetkit_vs_untiled", "monai_vs_untiled"):
        assert report["agreement"][pair]["label_agreement"] >= 0.99
    assert report["agreement"]["unetkit_vs_monai"]["max_abs_diff"] < 1e-3  # same blending, same tiles
