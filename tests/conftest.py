"""Shared test set-up: deterministic seeds and few threads, so the suite is repeatable on 2 cores."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch) -> None:
    """ONNX exports cached by `unetkit predict --engine` go to a test folder, not the user's ~/.cache."""
    monkeypatch.setenv("UNETKIT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
