"""Shared set-up of the page's tests: two small trained runs, images with ground truth, a served page in its
own process (`python -m unetkit serve`), and headless Chromium driven by Playwright (skipped, with the
reason, where the browser or Playwright is missing; `make test` installs the browser: .ci/install-browser).
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM_FLAGS = [  # what Chromium needs on a machine with no network beyond localhost, as root
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def chromium_path() -> str | None:
    """Debian's Chromium (or `$UNETKIT_CHROMIUM`), if installed."""
    for candidate in (os.environ.get("UNETKIT_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of two runs of a small `unet` on `synthetic:cells` (learning rate and epochs differ), trained
    far enough (Dice ~0.9 on validation) that their masks have foreground and errors of both kinds."""
    from unetkit.train import TrainConfig, train

    root = tmp_path_factory.mktemp("runs")
    for name, lr, epochs in (("narrow", 1e-2, 3), ("wide", 3e-3, 2)):
        config = TrainConfig(
            data="synthetic:cells",
            model="unet",
            model_options={"base_channels": 4, "depth": 2},
            epochs=epochs,
            steps_per_epoch=8,
            lr=lr,
            synthetic_train=8,
            synthetic_val=2,
            synthetic_size=64,
            patch_size=64,
            batch_size=4,
            samples=2,
            out=str(root / name),
        )
        train(config)
    return root


@pytest.fixture(scope="session")
def cells(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`images/` and `masks/` (0/255) of two synthetic cells pictures, 96 x 96, not seen in training."""
    from unetkit.cli.main import main

    folder = tmp_path_factory.mktemp("cells") / "data"
    assert main(["data", "synthetic", "cells", "--out", str(folder), "-n", "2", "--size", "96", "--start", "50"]) == 0
    return folder


class Served:
    """`python -m unetkit serve ROOT --port 0 ...` in its own process; `url` once it listens."""

    def __init__(self, root: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "unetkit", "serve", str(root), "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
        )
        lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []

        def read() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                self.output.append(line)
                lines.put(line)

        threading.Thread(target=read, daemon=True).start()
        try:
            first = lines.get(timeout=120)
        except queue.Empty:
            self.close()
            raise RuntimeError("unetkit serve did not start in 120 s") from None
        if " at http://" not in first:
            self.close()
            raise RuntimeError(f"unetkit serve failed: {first}{''.join(self.output[1:])}")
        self.url = first.split(" at ", 1)[1].split(" ", 1)[0]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def serve_process() -> Iterator[type[Served]]:
    """A factory of served pages, all stopped at the end of the test."""
    started: list[Served] = []

    class Tracked(Served):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            started.append(self)

    yield Tracked
    for served in started:
        served.close()


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """Headless Chromium (Debian's) under Playwright; skips when either is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright is not installed (pip install -e '.[dev]')")
    path = chromium_path()
    if path is None:
        pytest.skip(
            "Chromium is not installed (/usr/bin/chromium; `make test` installs it as root: .ci/install-browser)"
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, args=CHROMIUM_FLAGS)
        try:
            yield launched
        finally:
            launched.close()
