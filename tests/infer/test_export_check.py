"""`unetkit.infer.export_check`: every way torch 2.13's `.pt2` loader runs code from a file is live (the plain
torch loader runs the payload: the marker file appears), and unetkit refuses each such file before torch
reads it (the marker does not appear), while real exports pass. ONNX files naming external data are refused."""

from __future__ import annotations

import contextlib
import io
import json
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from tests._payloads import PLANTED_MODULE, PT2_WAYS, code_writing, pickle_payload, pt2_payload, torch_save_payload
from unetkit import create_model
from unetkit.export import export_torch
from unetkit.infer.export_check import UnsafeArchive, check_onnx, check_pt2
from unetkit.infer.exported import TorchExportPredictor


@pytest.fixture(scope="module")
def good_pt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = create_model("unet", in_channels=1, num_classes=1, base_channels=4, depth=2)
    return export_torch(model, tmp_path_factory.mktemp("pt2") / "unet.pt2").path


def _run_with_plain_torch(path: Path) -> None:
    """What `torch.export.load` + `.module()` + a call do with the file (errors after the payload are fine)."""
    with contextlib.suppress(Exception):  # the payload runs before the damaged program fails
        torch.export.load(path).module()(torch.zeros(2, 1, 16, 16))


@pytest.mark.parametrize("how", PT2_WAYS)
def test_each_payload_is_live_under_the_plain_torch_loader(how, good_pt2, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))  # `python -m unetkit` has the working folder on sys.path
    monkeypatch.delitem(sys.modules, PLANTED_MODULE, raising=False)
    marker = tmp_path / "ran"
    bad = pt2_payload(good_pt2, tmp_path / "bad.pt2", how, marker)
    _run_with_plain_torch(bad)
    assert marker.read_text() == "payload ran"  # torch 2.13 runs it: the safety test below can fail


@pytest.mark.parametrize("how", PT2_WAYS)
def test_unetkit_refuses_each_payload_and_runs_no_code(how, good_pt2, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, PLANTED_MODULE, raising=False)
    marker = tmp_path / "ran"
    bad = pt2_payload(good_pt2, tmp_path / "bad.pt2", how, marker)
    with pytest.raises(UnsafeArchive, match=rf"^{bad}: ") as caught:
        TorchExportPredictor(bad)(torch.zeros(2, 1, 16, 16))
    assert "\n" not in str(caught.value)
    assert not marker.exists()
    assert PLANTED_MODULE not in sys.modules


def test_a_real_export_passes_and_runs(good_pt2):
    check_pt2(good_pt2.read_bytes(), good_pt2)
    out = TorchExportPredictor(good_pt2)(torch.zeros(1, 1, 20, 20))
    assert out.shape == (1, 1, 20, 20)


def _entries(path: Path) -> tuple[str, dict[str, bytes]]:
    with zipfile.ZipFile(path) as archive:
        prefix = archive.infolist()[0].filename.split("/", 1)[0] + "/"
        return prefix, {i.filename: archive.read(i) for i in archive.infolist()}


def _write(path: Path, entries: list[tuple[str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return path


def test_entries_outside_the_known_layout_are_refused(good_pt2, tmp_path):
    prefix, entries = _entries(good_pt2)
    cases = {
        "data/aotinductor/model/model.so": "AOTInductor shared library",
        "data/constants/custom_obj_0": "pickled format",
        "serialized_state_dict.json": "not part of an export",
    }
    for name, why in cases.items():
        bad = _write(tmp_path / "bad.pt2", [*entries.items(), (prefix + name, b"\x7fELF")])
        with pytest.raises(UnsafeArchive, match=why):
            check_pt2(bad.read_bytes(), bad)


def test_an_ambiguous_archive_is_refused(good_pt2, tmp_path):
    prefix, entries = _entries(good_pt2)
    config = prefix + "data/weights/model_weights_config.json"
    with pytest.warns(UserWarning, match="Duplicate name"):  # zipfile's own warning for the second copy
        bad = _write(tmp_path / "twice.pt2", [*entries.items(), (config, entries[config])])
    with pytest.raises(UnsafeArchive, match="appears twice"):
        check_pt2(bad.read_bytes(), bad)
    other = _write(tmp_path / "two-folders.pt2", [*entries.items(), ("elsewhere/models/model.json", b"{}")])
    with pytest.raises(UnsafeArchive, match="outside the archive's folder"):
        check_pt2(other.read_bytes(), other)


@pytest.mark.parametrize(
    "text, allowed",
    [
        ("(L['x'].size()[2] // 4) != 1", True),
        ("(max(1, L['x'].size()[3] // 2)*max(1, L['x'].size()[2] // 2)) != 1", True),
        ("L['x'].size()[2] ** 1000000 > 1", False),  # a power: unbounded work
        ("L['x'].__class__ is not None", False),
        ("__import__('os').system('true') == 0", False),
        ("L['x'].size()[2] >= 1 # ), print(1", False),  # a comment would end the assert torch builds
    ],
)
def test_guards_must_be_size_arithmetic(good_pt2, tmp_path, text, allowed):
    def change(program: dict) -> None:
        program["guards_code"] = [text]

    _check_changed_program(good_pt2, tmp_path / "guard.pt2", change, None if allowed else "guard")


def _check_changed_program(good: Path, path: Path, change: Callable[[dict], None], refused: str | None) -> None:
    """Copy `good` with `change` applied to its models/model.json; check it passes, or is refused as a
    `refused` ("guard", "symbolic size") that is not plain size arithmetic."""
    prefix, entries = _entries(good)
    program = json.loads(entries[prefix + "models/model.json"])
    change(program)
    entries[prefix + "models/model.json"] = json.dumps(program).encode()
    _write(path, list(entries.items()))
    if refused is None:
        check_pt2(path.read_bytes(), path)
    else:
        with pytest.raises(UnsafeArchive, match=f"{refused} that is not plain size arithmetic"):
            check_pt2(path.read_bytes(), path)


@pytest.mark.parametrize(
    "text, allowed",
    [
        ("Mul(Integer(2), FloorDiv(Symbol('s0', positive=True, integer=True), Integer(4)))", True),
        ("Pow(Add(Symbol('s0', positive=True, integer=True), Integer(1)), Integer(2))", True),  # ddpm_unet's H*W
        ("Pow(Symbol('s0', positive=True, integer=True), Integer(1000000))", False),
        ("Pow(Integer(2), Pow(Integer(2), Integer(8)))", False),
        ("Symbol('s0') ** 1000000", False),
        ("Integer(__import__('os').getpid())", False),
        ("Symbol('s0').__class__", False),
    ],
)
def test_symbolic_sizes_must_be_sympy_arithmetic(good_pt2, tmp_path, text, allowed):
    def change(program: dict) -> None:
        program["graph_module"]["graph"]["sym_int_values"]["planted"] = {"as_expr": {"expr_str": text, "hint": None}}

    _check_changed_program(good_pt2, tmp_path / "sym.pt2", change, None if allowed else "symbolic size")


def test_the_payload_helpers_work_as_documented(tmp_path):
    import pickle

    marker = tmp_path / "ran"
    pickle.loads(pickle_payload(marker))
    assert marker.read_text() == "payload ran"
    marker.unlink()
    with pytest.raises(pickle.UnpicklingError):
        torch.load(io.BytesIO(torch_save_payload(marker)), weights_only=True)
    assert not marker.exists()
    torch.load(io.BytesIO(torch_save_payload(marker)), weights_only=False)  # what a swapped state.pt would do
    assert marker.exists() and str(marker) in code_writing(marker)


def _onnx_with_external_data(tmp_path: Path) -> Path:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.zeros(4, np.float32), "w")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "secrets.bin"), ("offset", "0"), ("length", "16")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    (tmp_path / "secrets.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())  # beside the model
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [weight],
    )
    path = tmp_path / "model.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    assert onnx.load(str(path), load_external_data=False).graph.initializer[0].data_location == TensorProto.EXTERNAL
    return path


def test_onnx_external_data_is_read_by_onnxruntime_from_a_path_and_refused_by_unetkit(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    path = _onnx_with_external_data(tmp_path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])  # the neighbour is live
    np.testing.assert_array_equal(session.run(None, {"x": np.zeros(4, np.float32)})[0], [0, 1, 2, 3])
    with pytest.raises(UnsafeArchive, match=r"tensor 'w' refers to an external data file 'secrets.bin'"):
        check_onnx(path.read_bytes(), path)
