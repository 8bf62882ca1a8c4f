"""The runner of the bad-input catalogue (docs/errors.md), shared by `test_bad_inputs*.py`: a `Case` builds
its input and the command line; `check_case` runs it through `unetkit.cli.main.main` and checks status 2,
exactly one stderr line matching the case's message, no traceback, the output byte for byte as it was and
no temporary file left anywhere."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli.faults import tree
from unetkit.cli.main import main

__all__ = ["ROOT", "Case", "check_case", "lines_of", "missing_from_docs"]

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Case:
    """One bad input: `build(tmp, monkeypatch)` returns the argv and the output that must stay as it was."""

    id: str
    expected: str  # a regular expression the one-line message must match
    build: Callable[[Path, pytest.MonkeyPatch], tuple[list[str], Path]]


def lines_of(err: str) -> list[str]:
    """stderr without progress-bar redraws: the text after the last carriage return of each line."""
    return [line.split("\r")[-1] for line in err.split("\n") if line.split("\r")[-1].strip()]


def check_case(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    """Run `case` in `tmp_path` and check the catalogue's promises; returns its one line."""
    monkeypatch.chdir(tmp_path)  # nothing may land in the working folder either
    argv, output = case.build(tmp_path, monkeypatch)
    before = tree(output)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    lines = lines_of(err)
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("unetkit "), err
    assert "Traceback" not in err
    assert re.search(case.expected, lines[0]), lines[0]
    assert tree(output) == before, "the output changed"
    leftovers = [p for p in tmp_path.rglob(".*") if "tmp" in p.name or p.name.endswith(".old")]
    assert not leftovers, leftovers
    return lines[0]


def missing_from_docs(cases: list[Case]) -> list[str]:
    """The ids of `cases` that docs/errors.md does not list."""
    table = (ROOT / "docs" / "errors.md").read_text()
    return [c.id for c in cases if f"`{c.id}`" not in table]
