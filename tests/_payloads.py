"""Malicious files for the safety tests: each one, if unetkit (or a library it calls) unpickled,
exec'd or dlopen'd it, would create a marker file. A test builds one, hands it to unetkit, and checks
that the command refused it and that the marker does not exist. The live-payload tests run the same
file through the unsafe loader (plain `pickle.loads`, `torch.load(weights_only=False)`,
`torch.export.load`) and see the marker appear, so a payload that stopped working fails loudly
instead of making the safety tests pass by accident.

- `code_writing(marker)`: the Python statement every payload runs.
- `pickle_payload(marker)`: a pickle whose loading runs it (`__reduce__` -> `exec`).
- `torch_save_payload(marker)`: a `torch.save` file (zip, as `last/state.pt` is) holding that pickle: what a
  swapped training state would be.
- `pt2_payload(good, out, how, marker)`: a copy of a real `.pt2` archive with code planted in one of the ways
  torch 2.13's loader runs code (`PT2_WAYS`).
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

__all__ = ["PLANTED_MODULE", "PT2_WAYS", "code_writing", "pickle_payload", "pt2_payload", "torch_save_payload"]


def code_writing(marker: Path) -> str:
    """A Python statement that creates `marker` (the proof that code ran)."""
    return f"open({str(marker)!r}, 'w').write('payload ran')"


class _Exec:
    """Unpickles as `exec(code)`."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return exec, (self.code,)


def pickle_payload(marker: Path) -> bytes:
    """Pickle bytes whose `pickle.loads` creates `marker`."""
    return pickle.dumps(_Exec(code_writing(marker)), protocol=2)


def torch_save_payload(marker: Path, wrap: bool = True) -> bytes:
    """A `torch.save` archive whose `torch.load(weights_only=False)` creates `marker` (`weights_only=True`
    refuses it). `wrap` puts the payload inside a dict, as a training state would be."""
    import torch

    buffer = io.BytesIO()
    torch.save({"model": _Exec(code_writing(marker))} if wrap else _Exec(code_writing(marker)), buffer)
    return buffer.getvalue()


PLANTED_MODULE = "unetkit_planted_module"

# --- .pt2 archives --------------------------------------------------------------------------------------

PT2_WAYS = (
    "weight-use-pickle",  # a weight marked `use_pickle: true` in model_weights_config.json: torch.load, full unpickler
    "constant-use-pickle",  # the same for a tensor constant in model_constants_config.json
    "opaque-object",  # a constant `opaque_obj_*`: pickle.loads
    "legacy-weights",  # a pre-2.8 `data/weights/model.pt`: torch.load, falling back to weights_only=False
    "sample-inputs",  # `data/sample_inputs/model.pt` that the weights-only unpickler refuses: fallback to full pickle
    "guards-code",  # `guards_code` in models/model.json: exec'd by ExportedProgram.module()
    "sympy-expression",  # a symbolic size `expr_str`: sympy.sympify, which evals
    "node-target",  # a graph node that imports a module by name when the program runs (`PLANTED_MODULE`,
    # written beside the archive: `python -m unetkit` has the working folder on sys.path)
)


def _rewrite(good: Path, out: Path, change: dict[str, bytes | None]) -> Path:
    """Copy the zip `good` to `out`, replacing (bytes) or dropping (None) the entries named in `change`
    (names below the archive's top folder) and adding the new ones; entries stored, as torch writes them."""
    with zipfile.ZipFile(good) as source:
        infos = source.infolist()
        prefix = infos[0].filename.split("/", 1)[0] + "/"
        contents = {i.filename[len(prefix) :]: source.read(i) for i in infos}
    for name, data in change.items():
        if data is None:
            contents.pop(name, None)
        else:
            contents[name] = data
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for name, data in contents.items():
            target.writestr(prefix + name, data)
    return out


def _json(good: Path, name: str) -> dict:
    with zipfile.ZipFile(good) as source:
        prefix = source.infolist()[0].filename.split("/", 1)[0] + "/"
        return json.loads(source.read(prefix + name))


def pt2_payload(good: Path, out: Path, how: str, marker: Path) -> Path:
    """A copy of the real `.pt2` file `good` (from `unetkit.export.export_torch`) with code that creates
    `marker` planted the way `how` (one of `PT2_WAYS`) says."""
    import torch

    code = code_writing(marker)
    weights_config = "data/weights/model_weights_config.json"
    constants_config = "data/constants/model_constants_config.json"
    if how == "weight-use-pickle":
        config = _json(good, weights_config)
        first = next(iter(config["config"].values()))
        first["use_pickle"] = True
        path = f"data/weights/{first['path_name']}"
        return _rewrite(
            good, out, {weights_config: json.dumps(config).encode(), path: torch_save_payload(marker, False)}
        )
    if how in ("constant-use-pickle", "opaque-object"):
        name = "tensor_0" if how == "constant-use-pickle" else "opaque_obj_0"
        data = torch_save_payload(marker, False) if how == "constant-use-pickle" else pickle_payload(marker)
        config = {
            "config": {"planted": {"path_name": name, "is_param": False, "use_pickle": True, "tensor_meta": None}}
        }
        return _rewrite(good, out, {constants_config: json.dumps(config).encode(), f"data/constants/{name}": data})
    if how == "legacy-weights":
        return _rewrite(good, out, {"data/weights/model.pt": torch_save_payload(marker, False)})
    if how == "sample-inputs":
        buffer = io.BytesIO()
        torch.save((_Exec(code), {}), buffer)
        return _rewrite(good, out, {"data/sample_inputs/model.pt": buffer.getvalue()})
    program = _json(good, "models/model.json")
    if how == "guards-code":
        quoted = f"bytes({list(code.encode())}).decode()"  # no quote marks: the guard is pasted into a string
        program["guards_code"] = [f"(exec({quoted}) is None) or L['x'].size()[0] >= 1"]
    elif how == "sympy-expression":
        program["range_constraints"] = program.get("range_constraints", {})
        node = _first(program, "expr_str")
        node["expr_str"] = f"Integer(__import__('builtins').exec({code!r}) or 2)"
    elif how == "node-target":  # torch's verifier lets this one through: it imports a module by name
        (out.parent / f"{PLANTED_MODULE}.py").write_text(code + "\n")
        graph = program["graph_module"]["graph"]
        graph["nodes"].insert(0, _import_node(f"{PLANTED_MODULE}.Function"))
    else:
        raise ValueError(f"unknown way {how!r}, expected one of {PT2_WAYS}")
    return _rewrite(good, out, {"models/model.json": json.dumps(program).encode()})


def _first(tree: object, key: str) -> dict:
    """The first mapping in a JSON tree that has `key`."""
    stack = [tree]
    while stack:
        item = stack.pop(0)
        if isinstance(item, dict):
            if key in item:
                return item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    raise KeyError(key)


def _import_node(qualified: str) -> dict:
    """A graph node calling torch's `_call_custom_autograd_function_in_pre_dispatch(qualified)`, which
    passes torch's verifier and runs `importlib.import_module` on the module part of `qualified`."""
    return {
        "target": "torch.export.custom_ops._call_custom_autograd_function_in_pre_dispatch",
        "inputs": [{"name": "function_cls_name", "arg": {"as_string": qualified}, "kind": 1}],
        "outputs": [{"as_none": True}],
        "metadata": {},
        "is_hop_single_tensor_return": None,
        "name": "planted",
    }
