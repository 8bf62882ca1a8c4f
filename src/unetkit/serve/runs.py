"""The runs view's data: which run directories are served, their `metrics.csv`, validation overlays across
epochs (`samples/epoch_NNN.png`), `config.yaml`, and the difference of two configs.

Every file is reached through `unetkit.serve.paths.inside`, so nothing outside the served directory is read.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import re
from pathlib import Path
from typing import Any

from unetkit.serve.paths import Refused, inside

__all__ = ["MAX_RUNS", "RunIndex", "config_diff", "flatten", "is_run"]

MAX_RUNS = 200  # runs listed from one folder (the page's run menus stay usable)
MAX_TEXT_BYTES = 1 << 20  # config.yaml / metrics.csv read up to this size
_SAMPLE = re.compile(r"epoch_(\d+)\.png")


def is_run(folder: Path) -> bool:
    """A run directory (from `unetkit train`) or a checkpoint directory."""
    return folder.is_dir() and any(
        (folder / name).is_file() for name in ("config.yaml", "metrics.csv", "config.json", "best/config.json")
    )


def _within(root: Path, name: str) -> bool:
    """Whether `root / name` really lies in `root` (a link to a run elsewhere is not served)."""
    try:
        inside(root, name)
    except Refused:
        return False
    return True


def _read_text(path: Path) -> str:
    with open(path, "rb") as handle:
        data = handle.read(MAX_TEXT_BYTES + 1)
    if len(data) > MAX_TEXT_BYTES:
        raise ValueError(f"{path.name}: larger than {MAX_TEXT_BYTES} bytes")
    return data.decode("utf-8", errors="replace")


class RunIndex:
    """The runs under `root`: `root` itself when it is a run, else its sub-folders that are runs.

    Args:
        root: the served directory.

    Raises:
        NotADirectoryError: `root` is not a folder.
        ValueError: `root` holds no run.
    """

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise NotADirectoryError(f"{root}: no such folder; expected a run directory or a folder of runs")
        self.root = root.resolve()
        if is_run(self.root):
            self.base = self.root.parent
            self.names = [self.root.name]
        else:
            self.base = self.root
            found = sorted(p.name for p in self.root.iterdir() if not p.name.startswith(".") and is_run(p))
            self.names = [name for name in found if _within(self.root, name)][:MAX_RUNS]
        if not self.names:
            raise ValueError(
                f"{root}: no run here (a run directory from `unetkit train` holds config.yaml, metrics.csv or "
                "best/config.json; a folder of runs holds such directories)"
            )

    def folder(self, name: str) -> Path:
        """The run directory called `name`; `Refused` for any other name."""
        if name not in self.names:
            raise Refused(f"{name!r}: no such run")
        path = inside(self.base, name)
        if not path.is_relative_to(self.root) and path != self.root:
            raise Refused(f"{name!r}: outside the served directory")
        return path

    def file(self, name: str, *parts: str) -> Path:
        """A file of run `name` (e.g. `samples`, `epoch_001.png`), within the served directory."""
        self.folder(name)
        path = inside(self.base, name, *parts)
        if not path.is_relative_to(self.root) or not path.is_file():
            raise Refused(f"{'/'.join(parts)}: no such file in run {name!r}")
        return path

    def summary(self, name: str) -> dict[str, Any]:
        """Name, model, task, epochs and the best checkpoint's metrics of one run."""
        folder = self.folder(name)
        info: dict[str, Any] = {"name": name, "checkpoint": False}
        for sub in ("best/config.json", "config.json", "last/config.json"):
            try:
                config = json.loads(_read_text(self.file(name, *sub.split("/"))))
            except (Refused, ValueError, OSError):
                continue
            if isinstance(config, dict):
                info.update(
                    checkpoint=True,
                    model=config.get("model"),
                    task=config.get("task", "segmentation"),
                    epoch=config.get("epoch"),
                    metrics={k: v for k, v in (config.get("metrics") or {}).items() if isinstance(v, int | float)},
                )
                break
        info["epochs"] = len(self.metrics(name)["rows"])
        info["samples"] = len(self.samples(name))
        info["has_config"] = (folder / "config.yaml").is_file()
        return info

    def metrics(self, name: str) -> dict[str, Any]:
        """`metrics.csv` as `{"columns": [...], "rows": [[number or None, ...], ...]}` (empty when absent)."""
        self.folder(name)
        try:
            text = _read_text(self.file(name, "metrics.csv"))
        except Refused:
            return {"columns": [], "rows": []}
        reader = csv.reader(io.StringIO(text))
        columns = next(reader, [])
        rows = []
        for line in reader:
            row: list[float | None] = []
            for value in line[: len(columns)]:
                try:
                    row.append(float(value))
                except ValueError:
                    row.append(None)
            rows.append(row)
        return {"columns": columns, "rows": rows}

    def samples(self, name: str) -> list[dict[str, Any]]:
        """The validation overlays of each epoch, `[{"epoch": N, "file": "epoch_NNN.png"}, ...]` by epoch."""
        self.folder(name)
        try:
            folder = inside(self.base, name, "samples")
        except Refused:
            return []
        if not folder.is_dir() or not folder.is_relative_to(self.root):
            return []
        found = []
        for path in folder.iterdir():
            match = _SAMPLE.fullmatch(path.name)
            if match is None:
                continue
            try:  # a link out of the served directory is not listed (nor served)
                if inside(self.base, name, "samples", path.name).is_relative_to(self.root):
                    found.append((int(match.group(1)), path.name))
            except Refused:
                continue
        return [{"epoch": epoch, "file": file} for epoch, file in sorted(found)]

    def config_text(self, name: str) -> str:
        """`config.yaml` of the run ("" when it has none)."""
        self.folder(name)
        try:
            return _read_text(self.file(name, "config.yaml"))
        except Refused:
            return ""


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> `{"a.b": leaf}`."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: value} if prefix else {}


def config_diff(text_a: str, text_b: str, name_a: str, name_b: str) -> dict[str, Any]:
    """The settings that differ between two `config.yaml` texts, and their line diff.

    Returns:
        `{"changed": [{"key", "a", "b"}, ...], "lines": unified diff text}`; a key missing on one side has None
        there (and `"missing": "a"|"b"`).
    """
    from unetkit.train.config import parse_yaml

    values = []
    for text, name in ((text_a, name_a), (text_b, name_b)):
        parsed = parse_yaml(text, source=f"{name}/config.yaml")
        values.append(flatten(parsed if isinstance(parsed, dict) else {}))
    a, b = values
    changed = []
    for key in [*a, *(k for k in b if k not in a)]:
        if key not in b or key not in a or a[key] != b[key]:
            entry: dict[str, Any] = {"key": key, "a": a.get(key), "b": b.get(key)}
            if key not in a or key not in b:
                entry["missing"] = "a" if key not in a else "b"
            changed.append(entry)
    lines = difflib.unified_diff(
        text_a.splitlines(), text_b.splitlines(), f"{name_a}/config.yaml", f"{name_b}/config.yaml", lineterm=""
    )
    return {"changed": changed, "lines": "\n".join(lines)}
