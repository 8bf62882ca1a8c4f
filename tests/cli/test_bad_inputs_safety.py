"""The safety part of the bad-input catalogue (docs/errors.md, docs/security.md): exported models that would
run code, and outputs that would write over a command's own inputs. Each case runs the CLI in-process and
must exit with status 2 and one line, with its output untouched (`tests.cli.catalogue.check_case`); the
`.pt2` cases also check that the payload's marker file was never created."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests._payloads import PLANTED_MODULE, PT2_WAYS, pt2_payload
from tests.cli.catalogue import Case, check_case, missing_from_docs
from tests.cli.faults import checkpoint, folder, png_bytes
from tests.cli.test_bad_inputs import TINY_RUN
from tests.infer.test_export_check import _onnx_with_external_data
from unetkit import create_model
from unetkit.data import write_image
from unetkit.export import export_torch

# --- exported models that would run code -------------------------------------------------------------

PT2_MESSAGES = {
    "weight-use-pickle": r"model_weights_config\.json marks '.*' as pickled \(use_pickle\); unpickling it could run",
    "constant-use-pickle": r"model_constants_config\.json marks 'planted' as pickled",
    "opaque-object": r"refusing entry 'data/constants/opaque_obj_0': a constant in a pickled format",
    "legacy-weights": r"refusing entry 'data/weights/model\.pt': a weight file in a legacy format, unpickled",
    "sample-inputs": r"its sample inputs \(data/sample_inputs/model\.pt\) hold more than tensors",
    "guards-code": r"models/model\.json holds a guard that is not plain size arithmetic",
    "sympy-expression": r"models/model\.json holds a symbolic size that is not plain size arithmetic",
    "node-target": r"graph node target 'torch\.export\.custom_ops\._call_custom_autograd_function_in_pre_dispatch' "
    r"is not an ATen operator",
}
PT2_CASES = [f"pt2-{how}" for how in PT2_WAYS]


@pytest.fixture(scope="module")
def good_pt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = create_model("unet", in_channels=1, num_classes=1, base_channels=4, depth=2)
    return export_torch(model, tmp_path_factory.mktemp("pt2") / "unet.pt2").path


def _predict_with(model: Path, tmp: Path) -> tuple[list[str], Path]:
    image = tmp / "in" / "img.png"
    image.parent.mkdir(exist_ok=True)
    image.write_bytes(png_bytes(np.zeros((16, 16), np.uint8)))
    return ["predict", str(model), str(image), "--out", str(tmp / "pred")], tmp / "pred"


@pytest.mark.parametrize("how", PT2_WAYS)
def test_predict_refuses_a_pt2_that_would_run_code_and_runs_none(how, good_pt2, tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(tmp_path))  # were the planted module imported, it would be found
    monkeypatch.delitem(sys.modules, PLANTED_MODULE, raising=False)
    marker = tmp_path / "payload-ran"
    bad = pt2_payload(good_pt2, tmp_path / "model.pt2", how, marker)
    case = Case(f"pt2-{how}", r"model\.pt2: .*" + PT2_MESSAGES[how], lambda t, m: _predict_with(bad, t))
    check_case(case, tmp_path, monkeypatch, capsys)
    assert not marker.exists(), "the payload ran"
    assert PLANTED_MODULE not in sys.modules


def test_predict_refuses_an_onnx_file_with_external_data(tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnxruntime")
    (tmp_path / "m").mkdir()
    model = _onnx_with_external_data(tmp_path / "m")
    case = Case(
        "onnx-external-data",
        r"model\.onnx: tensor 'w' refers to an external data file 'secrets\.bin'; unetkit reads only self-contained",
        lambda t, m: _predict_with(model, t),
    )
    check_case(case, tmp_path, monkeypatch, capsys)


# --- outputs over inputs ----------------------------------------------------------------------------------


def _masks(tmp: Path) -> tuple[Path, Path]:
    for sub in ("pred", "gt"):
        write_image(tmp / sub / "a.png", np.zeros((8, 8), np.uint8))
    return tmp / "pred", tmp / "gt"


def _evaluate(tmp: Path, *flags: str) -> tuple[list[str], Path]:
    pred, gt = _masks(tmp)
    return ["evaluate", str(pred), str(gt), *(f.replace("GT", str(gt)).replace("PRED", str(pred)) for f in flags)], tmp


def _image_in(tmp: Path) -> Path:
    write_image(tmp / "in" / "img.png", np.zeros((16, 16), np.uint8))
    return tmp / "in" / "img.png"


def _predict(tmp: Path, inputs: str, out: str) -> tuple[list[str], Path]:
    image, ckpt = _image_in(tmp), checkpoint(tmp / "ckpt")
    if out == "link":
        (tmp / "link").symlink_to(image.parent, target_is_directory=True)
    argv = ["predict", str(ckpt), str(image if inputs == "file" else image.parent), "--out", str(tmp / out)]
    return argv, tmp


def _predict_zarr(tmp: Path) -> tuple[list[str], Path]:
    """A zarr store predicted into the folder that holds it, as a zarr mask (it was written into the store)."""
    zarr = pytest.importorskip("zarr")
    store = tmp / "in" / "img.zarr"
    store.parent.mkdir()
    zarr.create_array(str(store), shape=(32, 32), chunks=(16, 16), dtype="uint8", fill_value=0)[:] = 7
    argv = ["predict", str(checkpoint(tmp / "ckpt")), str(store), "--out", str(tmp / "in"), "--mask-format", "zarr"]
    return argv, tmp


def _predict_over_folder(tmp: Path) -> tuple[list[str], Path]:
    """A folder stands where the mask goes (the message named the temporary file: `.img.tmp-.../mask.png`)."""
    image, ckpt = _image_in(tmp), checkpoint(tmp / "ckpt")
    (tmp / "pred" / "img.png").mkdir(parents=True)
    return ["predict", str(ckpt), str(image), "--out", str(tmp / "pred")], tmp


def _train(tmp: Path, out: str, data: str = "data") -> tuple[list[str], Path]:
    folder(tmp / data, n=2, size=32)
    return ["train", "--data", str(tmp / data), "--out", str(tmp / out), "--epochs", "1"], tmp


def _train_with_config(tmp: Path) -> tuple[list[str], Path]:
    (tmp / "exp").mkdir()
    (tmp / "exp" / "config.yaml").write_text("epochs: 1\nmodel: unet\n")
    return ["train", "--config", str(tmp / "exp" / "config.yaml"), "--out", str(tmp / "exp"), *TINY_RUN], tmp


def _from_one(tmp: Path) -> tuple[list[str], Path]:
    data = folder(tmp / "data", n=1, size=32)
    image, mask = data / "images" / "img0.png", data / "masks" / "img0.png"
    return ["data", "from-one", str(image), str(mask), "--out", str(data / "images"), "-n", "2"], tmp


def _sample(tmp: Path) -> tuple[list[str], Path]:
    ckpt = checkpoint(tmp / "ckpt")
    return ["sample", str(ckpt), "--out", str(tmp / "grid.png"), "--trajectory", str(tmp / "grid.png")], tmp


def _inspect_json(tmp: Path) -> tuple[list[str], Path]:
    data = folder(tmp / "data", n=2, size=32)
    return ["data", "inspect", str(data), "--no-timing", "--json", str(data / "masks" / "img0.png")], tmp


INPUT = r"is one of the inputs( \(.*\))?; refusing to write over it"
OUTPUT_CASES = [
    Case(
        "evaluate-json-over-a-mask", rf"`--json` .*gt/a\.png {INPUT}", lambda t, m: _evaluate(t, "--json", "GT/a.png")
    ),
    Case(
        "evaluate-csv-over-a-prediction",
        rf"`--csv` .*pred/a\.png {INPUT}",
        lambda t, m: _evaluate(t, "--csv", "PRED/a.png"),
    ),
    Case("evaluate-json-is-a-folder", rf"`--json` .*gt {INPUT}", lambda t, m: _evaluate(t, "--json", "GT")),
    Case(
        "evaluate-json-and-csv-one-file",
        r"`--csv` .*r\.json is also `--json`; give each output its own path",
        lambda t, m: _evaluate(t, "--json", str(t / "r.json"), "--csv", str(t / "." / "r.json")),
    ),
    Case("predict-out-is-the-input-folder", rf"`--out` .*in {INPUT}", lambda t, m: _predict(t, "folder", "in")),
    Case(
        "predict-out-holds-an-input",
        r"`--out` .*in holds the input .*in/img\.png; writing there could replace it",
        lambda t, m: _predict(t, "file", "in"),
    ),
    Case(
        "predict-zarr-out-holds-the-zarr-input",
        r"`--out` .*in holds the input .*in/img\.zarr; writing there could replace it",
        lambda t, m: _predict_zarr(t),
    ),
    Case(
        "predict-output-name-is-a-folder",
        r"pred/img\.png: cannot write \(a folder is in the way of the file\)",
        lambda t, m: _predict_over_folder(t),
    ),
    Case("predict-out-through-a-link", rf"`--out` .*link {INPUT}", lambda t, m: _predict(t, "folder", "link")),
    Case(
        "predict-out-is-the-checkpoint",
        r"`--out` .*ckpt (is one of the inputs|holds the input .*ckpt/config\.json)",
        lambda t, m: _predict(t, "file", "ckpt"),
    ),
    Case("train-out-is-the-data", rf"`--out` .*data {INPUT}", lambda t, m: _train(t, "data")),
    Case(
        "train-out-inside-the-data",
        r"`--out` .*data/run is inside the input .*data; choose a folder outside it",
        lambda t, m: _train(t, "data/run"),
    ),
    Case(
        "train-out-contains-the-data",
        r"`--out` .*run contains the input .*run/data; choose a folder outside it",
        lambda t, m: _train(t, "run", data="run/data"),
    ),
    Case(
        "train-out-holds-the-config",
        r"`--out` .*exp holds the input .*exp/config\.yaml; writing there could replace it",
        lambda t, m: _train_with_config(t),
    ),
    Case(
        "from-one-out-holds-the-image", r"`--out` .*data/images (is one of|holds) the input", lambda t, m: _from_one(t)
    ),
    Case(
        "inspect-json-over-a-mask",
        r"`--json` .*data/masks/img0\.png is inside the input .*data; choose a folder outside it",
        lambda t, m: _inspect_json(t),
    ),
    Case("sample-out-is-the-trajectory", r"`--trajectory` .*grid\.png is also `--out`", lambda t, m: _sample(t)),
    Case(
        "bench-out-is-its-markdown",
        r"`--out's \.md` .*r\.md is also `--out`; give each output its own path",
        lambda t, m: (["bench", "--out", str(t / "r.md"), "--device", "cpu"], t),
    ),
]


@pytest.mark.parametrize("case", OUTPUT_CASES, ids=[c.id for c in OUTPUT_CASES])
def test_no_command_writes_over_its_inputs(case, tmp_path, monkeypatch, capsys):
    check_case(case, tmp_path, monkeypatch, capsys)


def test_writing_beside_an_input_is_fine(tmp_path, monkeypatch, capsys):
    """A new file in an input folder replaces nothing: `--json GT/metrics.json` is written."""
    argv, _ = _evaluate(tmp_path, "--json", "GT/metrics.json")
    from unetkit.cli.main import main

    assert main(argv) == 0, capsys.readouterr().err
    assert (tmp_path / "gt" / "metrics.json").is_file()
    assert sorted(p.name for p in (tmp_path / "gt").iterdir()) == ["a.png", "metrics.json"]


def test_every_safety_case_is_in_the_docs():
    ids = [*PT2_CASES, "onnx-external-data", *(c.id for c in OUTPUT_CASES)]
    missing = missing_from_docs([Case(i, "", lambda t, m: ([], t)) for i in ids])
    assert not missing, f"docs/errors.md lacks {missing}"
