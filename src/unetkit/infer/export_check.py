"""Refuse exported models (`.pt2`, `.onnx`) that would run code or read other files, before torch or
onnxruntime reads them.

**ONNX** (`check_onnx`): a model may keep its tensors in external files named by a path in the model; an
export of unetkit holds them inside (`external_data=False`), so any external reference is refused, and
onnxruntime gets the checked bytes (from bytes it cannot resolve external files either).

**`.pt2`** (`check_pt2`):
`torch.export.load` is documented as unsafe for untrusted files. Reading torch 2.13's loader
(`torch/export/pt2_archive/_package.py`, `torch/_export/serde/serialize.py`, `torch/export/_unlift.py`,
`torch/export/custom_ops.py`) gives these ways a file runs code (`tests/_payloads.py` plants each one and
shows it live):

1. a weight or tensor constant marked `use_pickle` in `data/{weights,constants}/model_*_config.json`:
   `torch.load` with the full unpickler (`weights_only` off);
2. constants named `opaque_obj_*` (`pickle.loads`) and `custom_obj_*` (TorchScript's unpickler);
3. legacy weight / constant files (`data/weights/model.pt`) and the pre-2.7 layout: `torch.load`, falling
   back to the full unpickler when the weights-only one refuses;
4. `data/sample_inputs/model.pt`: the same fallback;
5. `data/aotinductor/`: compiled shared libraries, loaded with `dlopen`;
6. `models/model.json` itself: its `guards_code` is pasted into Python source and `exec`'d by
   `ExportedProgram.module()`; symbolic sizes (`expr_str`) go through `sympy.sympify`, which `eval`s;
   graph-node targets are attribute paths under `torch` / `operator` / `math`, called when the program
   runs, and one of them that torch's verifier admits imports a module named in the file.

`check_pt2` therefore admits only what `unetkit.export.export_torch` writes: the archive's entries by
name (one top folder, no duplicates), payload configs without pickles, sample inputs that torch's
weights-only unpickler reads, guards and symbolic expressions that parse (Python `ast`) into arithmetic
on input sizes, and node targets that are ATen operators or size arithmetic. Anything else is refused
with one line naming the file and the entry. The caller reads the file once and hands torch the same
bytes, so the file cannot change between the check and the load.
"""

from __future__ import annotations

import ast
import io
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["UnsafeArchive", "check_onnx", "check_pt2"]

# entry names (below the archive's one top folder) that an export of one program holds
_ENTRIES = re.compile(
    r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id|models/model\.json"
    r"|data/weights/model_weights_config\.json|data/weights/weight_\d+"
    r"|data/constants/model_constants_config\.json|data/constants/tensor_\d+"
    r"|data/sample_inputs/model\.pt|extra/[A-Za-z0-9_.-]+"
)
_WHY_REFUSED = (  # known entries that would run code, and why (the rest: "not part of an export unetkit reads")
    ("data/aotinductor/", "an AOTInductor shared library, loaded as native code"),
    ("data/weights/", "a weight file in a legacy format, unpickled"),
    ("data/constants/", "a constant in a pickled format (custom or opaque object, or legacy file)"),
    ("models/", "a second program"),
)
_PAYLOAD_NAME = {
    "data/weights/model_weights_config.json": "weight_",
    "data/constants/model_constants_config.json": "tensor_",
}
_TARGETS = re.compile(
    r"torch\.ops\.aten\.\w+\.\w+"
    r"|_operator\.(add|sub|mul|floordiv|truediv|mod|neg|pos|eq|ne|lt|le|gt|ge|and_|or_|not_|getitem)"
    r"|math\.(ceil|floor|trunc|sqrt)|torch\.sym_(max|min|int|float|not|ite|sqrt|sum)"
)
# sympy names a symbolic size may call (torch's own printer writes `srepr` form: `Mul(Integer(2), Symbol(...))`);
# powers only to a small literal exponent (`Pow(x, Integer(2))`: attention over H * W), no shifts: their
# evaluation could otherwise be made unbounded
_SYMPY_WORDS = (
    "Symbol Integer Float Rational Add Mul Max Min Abs Mod FloorDiv ModularIndexing Where PythonMod CleanDiv "
    "CeilToInt FloorToInt CeilDiv FloatTrueDiv IntTrueDiv TruncToFloat TruncToInt RoundToInt ToFloat Identity "
    "Eq Ne Lt Le Gt Ge StrictLessThan StrictGreaterThan LessThan GreaterThan Equality Unequality And Or Not"
)
_SYMPY_CALLS = frozenset(_SYMPY_WORDS.split())
_SYMPY_NAMES = frozenset({"true", "false", "oo", "zoo", "nan", "int_oo"})
_SYMBOL_ASSUMPTIONS = frozenset({"positive", "integer", "real", "nonnegative", "negative", "finite", "nonzero"})
# guards: comparisons of arithmetic on `L['x'].size()[i]`, as torch's Python printer writes them
_GUARD_NAMES = frozenset({"L", "max", "min", "int", "float", "abs", "math"})
_GUARD_ATTRS = frozenset({"size", "stride", "storage_offset", "dim", "floor", "ceil", "trunc", "sqrt"})
_ARITHMETIC = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod)
_NODES: tuple[type[ast.AST], ...] = (
    ast.Expression,
    ast.Load,
    ast.BoolOp,
    ast.And,
    ast.Or,
    ast.Compare,
    ast.Eq,
    ast.NotEq,
    ast.Lt,
    ast.LtE,
)
_NODES += (ast.Gt, ast.GtE, ast.BinOp, *_ARITHMETIC, ast.Pow, ast.UnaryOp, ast.USub, ast.UAdd, ast.Not, ast.Constant)
_NODES += (ast.Name, ast.Call, ast.Attribute, ast.Subscript, ast.keyword)
_MAX_EXPRESSION = 20_000  # characters of one guard or symbolic expression
_MAX_INT = 2**63
_MAX_EXPONENT = 8


class UnsafeArchive(ValueError):
    """A `.pt2` file holds something that would run code (or that unetkit does not know to be safe)."""


def check_pt2(data: bytes, path: str | Path) -> None:
    """Refuse the `.pt2` archive `data` (the bytes of `path`) unless it holds only what `export_torch`
    writes, with no way to run code (see the module docstring).

    Raises:
        UnsafeArchive: naming `path` and the entry.
    """
    read = _read_archive(data, path)
    if read.get("archive_format") != b"pt2":
        raise UnsafeArchive(f"{path}: not a torch.export archive (no archive_format 'pt2')")
    for config_name, prefix in _PAYLOAD_NAME.items():
        if config_name in read:
            _check_payloads(_json(read[config_name], path, config_name), prefix, path, config_name)
    if "data/sample_inputs/model.pt" in read:
        _check_sample_inputs(read["data/sample_inputs/model.pt"], path)
    if "models/model.json" not in read:
        raise UnsafeArchive(f"{path}: not a torch.export archive (no models/model.json)")
    _check_program(_json(read["models/model.json"], path, "models/model.json"), path)


def _read_archive(data: bytes, path: str | Path) -> dict[str, bytes]:
    """The archive's entries (below its top folder) other than the raw weight and constant files, read with
    torch's own zip reader, which the loader then uses on the same bytes; Python's zipfile must see the
    same entries, once each, or the archive is refused as ambiguous."""
    import torch

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = [info.filename for info in archive.infolist()]
        files = _entries(names, path)
        reader = torch._C.PyTorchFileReader(io.BytesIO(data))
        records = sorted(reader.get_all_records())
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as err:
        raise UnsafeArchive(f"{path}: not a readable torch.export file ({type(err).__name__})") from err
    if sorted(files) != records:
        raise UnsafeArchive(f"{path}: the archive's directory reads differently to different zip readers; refusing it")
    raw = re.compile(r"data/(weights/weight|constants/tensor)_\d+")
    try:
        return {name: bytes(reader.get_record(name)) for name in records if not raw.fullmatch(name)}
    except RuntimeError as err:
        raise UnsafeArchive(f"{path}: not a readable torch.export file ({type(err).__name__})") from err


def _entries(names: list[str], path: str | Path) -> dict[str, str]:
    """`{name below the top folder: full name}`; refuses duplicates, several top folders, unknown entries."""
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})[0]
        raise UnsafeArchive(f"{path}: entry {twice!r} appears twice in the archive; refusing it")
    if not names:
        raise UnsafeArchive(f"{path}: empty archive")
    top = names[0].split("/", 1)[0] + "/"
    files = {}
    for full in names:
        name = full[len(top) :] if full.startswith(top) else None
        if name is None:
            raise UnsafeArchive(f"{path}: entry {full!r} is outside the archive's folder {top!r}")
        if not _ENTRIES.fullmatch(name):
            why = next((w for p, w in _WHY_REFUSED if name.startswith(p)), "not part of an export unetkit reads")
            raise UnsafeArchive(
                f"{path}: refusing entry {name!r}: {why}; unetkit loads only .pt2 files that hold no code"
            )
        files[name] = full
    return files


def _json(data: bytes, path: str | Path, name: str) -> Any:
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise UnsafeArchive(f"{path}: entry {name!r} is not valid JSON ({type(err).__name__})") from err


def _check_payloads(config: Any, prefix: str, path: str | Path, name: str) -> None:
    """Every weight / constant of a payload config must be a raw tensor file, never a pickle."""
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise UnsafeArchive(f"{path}: entry {name!r} is not a payload config")
    for key, meta in entries.items():
        if not isinstance(meta, dict) or meta.get("use_pickle") is not False:
            raise UnsafeArchive(
                f"{path}: {name} marks {str(key)[:80]!r} as pickled (use_pickle); unpickling it could run code, "
                "so unetkit refuses the file"
            )
        if not isinstance(meta.get("path_name"), str) or not re.fullmatch(rf"{prefix}\d+", meta["path_name"]):
            raise UnsafeArchive(f"{path}: {name} points {str(key)[:80]!r} at {str(meta.get('path_name'))[:80]!r}")


def _check_sample_inputs(data: bytes, path: str | Path) -> None:
    """torch reads the sample inputs with the weights-only unpickler and, if that refuses, with the full
    one: refuse what the weights-only one refuses, so torch never takes its fallback."""
    import torch

    try:
        torch.load(io.BytesIO(data), weights_only=True)
    except Exception as err:  # the weights-only unpickler raises UnpicklingError, RuntimeError, ...
        raise UnsafeArchive(
            f"{path}: its sample inputs (data/sample_inputs/model.pt) hold more than tensors ({type(err).__name__}); "
            "loading them could run code, so unetkit refuses the file"
        ) from err


def _walk(tree: Any) -> Iterator[dict[str, Any]]:
    """Every mapping in a JSON tree."""
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _check_program(program: Any, path: str | Path) -> None:
    """The program's guards, symbolic sizes and node targets, which torch `exec`s, `eval`s and calls."""
    if not isinstance(program, dict):
        raise UnsafeArchive(f"{path}: models/model.json is not a program")
    guards = program.get("guards_code") or []
    if not isinstance(guards, list):
        raise UnsafeArchive(f"{path}: models/model.json has guards_code that is not a list")
    for guard in guards:
        _check_expression(guard, path, "guard", _guard_node)
    for item in _walk(program):
        if "expr_str" in item:
            _check_expression(item["expr_str"], path, "symbolic size", _sympy_node)
        if "as_operator" in item:
            raise UnsafeArchive(f"{path}: models/model.json passes an operator as an argument; unetkit refuses it")
        nodes = item.get("nodes")
        for node in nodes if isinstance(nodes, list) else ():
            target = node.get("target") if isinstance(node, dict) else None
            if not isinstance(target, str) or not _TARGETS.fullmatch(target):
                raise UnsafeArchive(
                    f"{path}: graph node target {str(target)[:80]!r} is not an ATen operator or size arithmetic; "
                    "unetkit runs no other code from a .pt2 file"
                )


def _check_expression(text: Any, path: str | Path, what: str, allowed: Any) -> None:
    """`text` must parse as one Python expression whose every node `allowed(node)` accepts."""
    refusal = f"{path}: models/model.json holds a {what} that is not plain size arithmetic"
    if not isinstance(text, str) or len(text) > _MAX_EXPRESSION or "\n" in text or "#" in text:
        raise UnsafeArchive(f"{refusal}: {str(text)[:80]!r}")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
        raise UnsafeArchive(f"{refusal} ({type(err).__name__})") from err
    for node in ast.walk(tree):
        if not isinstance(node, _NODES) or not allowed(node):
            raise UnsafeArchive(f"{refusal}: {text[:80]!r}")


def _constant(node: ast.Constant, strings: bool) -> bool:
    value = node.value
    if isinstance(value, bool | float):
        return True
    if isinstance(value, int):
        return abs(value) <= _MAX_INT
    return strings and isinstance(value, str) and value.isidentifier()


def _guard_node(node: ast.AST) -> bool:
    """A node of a guard such as `(L['x'].size()[2] // 4) != 1`."""
    if isinstance(node, ast.Name):
        return node.id in _GUARD_NAMES
    if isinstance(node, ast.Attribute):
        return node.attr in _GUARD_ATTRS
    if isinstance(node, ast.Constant):
        return _constant(node, strings=True)
    if isinstance(node, ast.Call):
        return not node.keywords
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        return _small_exponent(node.right)
    return not isinstance(node, ast.keyword)


def _small_exponent(node: ast.AST) -> bool:
    """`k` or sympy's `Integer(k)` for a literal integer `|k| <= _MAX_EXPONENT`."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Integer" and node.args:
        node = node.args[0]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        node = node.operand
    value = node.value if isinstance(node, ast.Constant) else None
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) <= _MAX_EXPONENT


def _sympy_node(node: ast.AST) -> bool:
    """A node of a symbolic size in sympy's `srepr` form, e.g. `FloorDiv(Symbol('s0', positive=True), Integer(2))`."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Pow":
        return len(node.args) == 2 and not node.keywords and _small_exponent(node.args[1])
    if isinstance(node, ast.Call):
        return isinstance(node.func, ast.Name) and node.func.id in _SYMPY_CALLS
    if isinstance(node, ast.Name):
        return node.id in _SYMPY_CALLS or node.id in _SYMPY_NAMES or node.id == "Pow"
    if isinstance(node, ast.keyword):
        return node.arg in _SYMBOL_ASSUMPTIONS and isinstance(node.value, ast.Constant)
    if isinstance(node, ast.Constant):
        return _constant(node, strings=True)
    return not isinstance(node, ast.Attribute | ast.Subscript | ast.BinOp)  # srepr form has no operators


def check_onnx(data: bytes, path: str | Path) -> None:
    """Refuse the ONNX model `data` (the bytes of `path`) if any tensor (initialisers, constants, subgraphs,
    functions) names an external data file. Needs the `onnx` package ([export] extra); without it the check
    rests on onnxruntime, which cannot resolve external files of a model given as bytes.

    Raises:
        UnsafeArchive: naming `path` and the tensor.
    """
    try:
        import onnx
    except ImportError:
        return
    try:
        model = onnx.load_model_from_string(data)
    except Exception as err:  # protobuf's DecodeError and others
        raise UnsafeArchive(f"{path}: not a readable ONNX model ({type(err).__name__})") from err
    for tensor in _onnx_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
            where = next((e.value for e in tensor.external_data if e.key == "location"), "?")
            raise UnsafeArchive(
                f"{path}: tensor {tensor.name[:80]!r} refers to an external data file {where[:80]!r}; unetkit reads "
                "only self-contained ONNX files (as `unetkit export` writes them)"
            )


def _onnx_tensors(model: Any) -> Iterator[Any]:
    """Every TensorProto of an ONNX model: initialisers, sparse initialisers and node attributes, in the main
    graph, its subgraphs and the model's functions."""
    graphs = [model.graph]
    node_lists = [list(f.node) for f in model.functions]
    while graphs or node_lists:
        if graphs:
            graph = graphs.pop()
            yield from graph.initializer
            for sparse in graph.sparse_initializer:
                yield from (sparse.values, sparse.indices)
            node_lists.append(list(graph.node))
            continue
        for node in node_lists.pop():
            for attribute in node.attribute:
                yield from ([attribute.t] if attribute.HasField("t") else [])
                yield from attribute.tensors
                for sparse in [attribute.sparse_tensor] if attribute.HasField("sparse_tensor") else []:
                    yield from (sparse.values, sparse.indices)
                graphs.extend([attribute.g] if attribute.HasField("g") else [])
                graphs.extend(attribute.graphs)
