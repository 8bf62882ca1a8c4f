"""Shared test set-up: deterministic seeds and few threads, so the suite is repeatable on 2 cores."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
