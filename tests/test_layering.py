"""The layering of DESIGN.md, checked on the source: every import inside `src/unetkit` (at module level or
inside a function; not those under `if TYPE_CHECKING:`, which never run) points down, never up, and sideways
only where `SIDEWAYS` allows (infer never imports train); no two packages import each other; and no module
imports itself back through others (no cycle).

    cli -> serve -> bench -> train / infer / export -> models / data / losses / metrics / viz / diffusion
        -> layers -> the base helpers (_fs, _options, _deps, _device, version)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "unetkit"
LEVELS: dict[str, float] = {
    "_fs": 0,
    "_options": 0,
    "_yaml": 0,
    "_errors": 0.5,  # the error policy, above the helpers whose errors it names (_deps, _options)
    "_deps": 0,
    "_device": 0,
    "version": 0,
    "layers": 1,
    "models": 2,
    "data": 2,
    "losses": 2,
    "metrics": 2,
    "viz": 2,
    "diffusion": 2,
    "train": 3,
    "infer": 3,
    "export": 3,
    "bench": 4,
    "serve": 5,
    "cli": 6,
    "__main__": 7,
    "": 7,  # the package itself (`unetkit/__init__.py`, the public API) imports from everything
}


# the only imports between packages of one level: export reads infer's file formats (never the reverse),
# diffusion loads its models through the registry, evaluation reads masks with data's one mask reader, and
# training fits the instance post-processing of prediction (`train.instance_tuning.tune_instances` runs
# `infer.instances`; infer never imports train)
SIDEWAYS = {("export", "infer"), ("diffusion", "models"), ("metrics", "data"), ("train", "infer")}


def _modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(name: str, path: Path) -> set[str]:
    """The unetkit modules `name` imports when it runs (a `from PKG import MOD` names the module MOD)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imported(name, path) for name, path in MODULES.items()}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_package_has_a_place_in_the_layers():
    unplaced = sorted({_package(m) for m in MODULES} - set(LEVELS))
    assert not unplaced, f"give these a level in LEVELS (and DESIGN.md): {unplaced}"


def test_nothing_below_imports_from_above():
    upward = sorted(
        f"{a} -> {b}" for a, targets in GRAPH.items() for b in targets if LEVELS[_package(b)] > LEVELS[_package(a)]
    )
    assert not upward, "imports that point up the layers:\n" + "\n".join(upward)


def test_packages_of_one_level_import_each_other_only_where_listed():
    sideways = sorted(
        f"{a} -> {b}"
        for a, targets in GRAPH.items()
        for b in targets
        if _package(a) != _package(b)
        and LEVELS[_package(a)] == LEVELS[_package(b)]
        and (_package(a), _package(b)) not in SIDEWAYS
    )
    assert not sideways, "imports between packages of one level:\n" + "\n".join(sideways)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a path, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := walk(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (found := walk(start)):
            return found
    return None


def test_no_two_packages_import_each_other():
    packages: dict[str, set[str]] = {}
    for a, targets in GRAPH.items():
        for b in targets:
            if _package(a) != _package(b):
                packages.setdefault(_package(a), set()).add(_package(b))
    cycle = _cycle(packages)
    assert cycle is None, " -> ".join(cycle or [])


def test_no_module_imports_itself_back():
    cycle = _cycle(GRAPH)
    assert cycle is None, " -> ".join(cycle or [])


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from unetkit.train import engine", {"unetkit.train.engine"}),
        ("from unetkit import viz", {"unetkit.viz"}),
        ("import unetkit.models.checkpoint", {"unetkit.models.checkpoint"}),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from unetkit.cli import main", set()),
        ("def f():\n    from unetkit.cli.main import main", {"unetkit.cli.main"}),
        ("from .checkpointing import RunLock", {"unetkit.train.checkpointing"}),
    ],
)
def test_the_walker_reads_imports_as_python_runs_them(tmp_path, source, expected):
    path = tmp_path / "probe.py"
    path.write_text(source)
    assert _imported("unetkit.train.probe", path) == expected
