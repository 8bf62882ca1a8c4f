"""The error policy of the console script: bad input and a missing optional package are one line and status 2;
a `TypeError` or an `ImportError` that is not a missing optional package is a bug: its traceback, then a line
asking for a report, status 1; Ctrl-C 130, SIGTERM 143."""

from __future__ import annotations

import signal

import pytest

from unetkit._deps import MissingDependency
from unetkit.cli import models
from unetkit.cli.main import BUG_REPORT, main
from unetkit.train.interrupt import TrainingInterrupted


def _raising(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    def run(args):  # type: ignore[no-untyped-def]
        raise error

    monkeypatch.setattr(models, "_run", run)


@pytest.mark.parametrize(
    "error",
    [TypeError("unsupported operand type(s) for %: 'list' and 'int'"), ImportError("cannot import name 'x' from 'y'")],
    ids=["TypeError", "ImportError"],
)
def test_a_bug_shows_its_traceback_and_asks_for_a_report(monkeypatch, capsys, error):
    _raising(monkeypatch, error)
    assert main(["models"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "Traceback (most recent call last):"
    assert err[-2] == f"{type(error).__name__}: {error}"
    assert err[-1] == f"unetkit models: internal error ({type(error).__name__}): {BUG_REPORT}"


def test_a_missing_optional_package_is_one_line_and_status_2(monkeypatch, capsys):
    _raising(monkeypatch, MissingDependency("onnxruntime is not installed; exporting needs it: pip install x"))
    assert main(["models"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "unetkit models: error: onnxruntime is not installed; exporting needs it: pip install x"
    ]


def test_debug_raises_the_bug_itself(monkeypatch):
    _raising(monkeypatch, TypeError("boom"))
    with pytest.raises(TypeError, match="boom"):
        main(["--debug", "models"])


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_exits_with_the_signals_status(monkeypatch, capsys, signum, status):
    _raising(monkeypatch, TrainingInterrupted("interrupted: saved run/last", signum))
    assert main(["models"]) == status
    assert capsys.readouterr().err.strip() == "unetkit models: interrupted: saved run/last"
