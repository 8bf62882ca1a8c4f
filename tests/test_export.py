"""Export: ONNX and torch.export round trips at two sizes, the tiler with an exported model, the
`unetkit export` command, `unetkit predict` with an exported file, and one-line errors that leave no file."""

from __future__ import annotations

import contextlib
import io
import re
import sys

import numpy as np
import pytest
import torch

from unetkit import create_model, list_models, load_model, predict, save_model
from unetkit.cli.main import main
from unetkit.data import read_image, write_image
from unetkit.export import (
    InputSides,
    OnnxPredictor,
    TorchExportPredictor,
    export_onnx,
    export_torch,
    load_exported,
)
from unetkit.infer import Predictor
from unetkit.models import get_model_entry

PREPROCESS = {"preprocess": {"mean": [0.5], "std": [0.25], "scale": 1.0}}
MASK = {"mask": {"mode": "binary", "num_classes": 2, "label_values": [0, 255]}}


@pytest.fixture(scope="module")
def unet_ckpt(tmp_path_factory):
    """A small untrained `unet` (downsample factor 4) saved with normalisation and 0/255 label values."""
    torch.manual_seed(0)
    model = create_model("unet", in_channels=1, base_channels=4, depth=2)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval mode matters
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("unet") / "ckpt"
    return save_model(model, path, extra={**PREPROCESS, **MASK})


@pytest.fixture(scope="module")
def classic_ckpt(tmp_path_factory):
    """A small untrained `unet_classic` (depth 2: context margin 20, legal sides 44 + 4k)."""
    torch.manual_seed(0)
    model = create_model("unet_classic", base_channels=4, depth=2)
    path = tmp_path_factory.mktemp("classic") / "ckpt"
    return save_model(model, path, extra=PREPROCESS)


@pytest.fixture(scope="module")
def unet_onnx(unet_ckpt, tmp_path_factory):
    """`unetkit export` of the unet checkpoint: the file and what the command printed."""
    out = tmp_path_factory.mktemp("unet_onnx") / "model.onnx"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["export", str(unet_ckpt), "--format", "onnx", "--out", str(out)])
    assert code == 0
    return out, stdout.getvalue()


@pytest.fixture(scope="module")
def classic_onnx(classic_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("classic_onnx") / "classic.onnx"
    return export_onnx(classic_ckpt, out)


def _onnx_vs_torch(path, model, sizes):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for batch, (h, w) in zip((1, 3), sizes, strict=True):
        x = torch.randn(batch, 1, h, w)
        got = session.run(None, {name: x.numpy()})[0]
        with torch.no_grad():
            expected = model(x).numpy()
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-4)


def test_cli_export_prints_the_difference_and_writes_one_file(unet_onnx):
    path, printed = unet_onnx
    pattern = rf"wrote {re.escape(str(path))} \(onnx, opset (\d+)\); max \|onnx - torch\| = (\S+) on (.*)\n"
    match = re.fullmatch(pattern, printed)
    assert match, printed
    assert float(match.group(2)) < 1e-4
    assert match.group(3) == "1x1x24x24 and 2x1x40x32"  # two legal sizes, batch 1 and 2
    assert [p.name for p in path.parent.iterdir()] == ["model.onnx"], "no temporary or external-data files"


def test_onnx_unet_round_trip_at_two_sizes_with_metadata(unet_onnx, unet_ckpt):
    path, _ = unet_onnx
    model = load_model(unet_ckpt)
    _onnx_vs_torch(path, model, [(24, 24), (40, 32)])  # legal sides: multiples of 4
    exported = OnnxPredictor(path)
    assert exported.checkpoint_config == model.checkpoint_config
    assert (exported.context_margin(), exported.downsample_factor, exported.in_channels) == (0, 4, 1)
    x = torch.randn(2, 1, 37, 45)  # any side: padded outside the graph as the model pads inside
    with torch.no_grad():
        torch.testing.assert_close(exported(x), model(x), atol=1e-4, rtol=0)


def test_onnx_unet_classic_round_trip_and_legal_sizes(classic_onnx, classic_ckpt):
    report = classic_onnx
    assert report.dynamic and report.max_abs_diff is not None and report.max_abs_diff < 1e-4
    assert report.sizes == ((1, 1, 52, 52), (2, 1, 68, 60))
    model = load_model(classic_ckpt)
    _onnx_vs_torch(report.path, model, [(52, 52), (84, 60)])
    exported = OnnxPredictor(report.path)
    assert exported.context_margin() == model.context_margin() == 20
    assert exported.sides == InputSides(44, 4)
    assert [exported.valid_input_size(n) for n in range(1, 160)] == [model.valid_input_size(n) for n in range(1, 160)]
    with pytest.raises(ValueError, match="input height 53 is not legal"):
        exported(torch.zeros(1, 1, 53, 52))


@pytest.mark.parametrize(
    ("name", "options", "expected"),
    [
        ("unet", {"depth": 2}, InputSides(4, 4)),  # padded: multiples of the down-sampling factor
        ("basic_unet", {}, InputSides(4, 4)),
        ("unet_classic", {"base_channels": 4}, InputSides(188, 16)),  # the paper's 572 = 188 + 24 * 16
        ("unet_dense_bottleneck", {}, InputSides(16, 0)),  # one input size: static H and W
    ],
)
def test_legal_sides_of_an_export_follow_the_model(name, options, expected):
    from unetkit.export import _input_sides

    model = create_model(name, **options)
    sides = _input_sides(model)
    assert sides == expected
    if name == "unet_classic":  # the formula is the model's own `valid_input_size`
        assert all(sides.at_least(n) == model.valid_input_size(n) for n in range(1, 700))
        assert sides.is_legal(572) and not sides.is_legal(571)


@pytest.mark.parametrize("which", ["unet", "unet_classic"])
def test_tiler_with_the_onnx_model_matches_the_torch_model(which, unet_onnx, unet_ckpt, classic_onnx, classic_ckpt):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (45, 130), dtype=np.uint8)
    if which == "unet":
        path, ckpt, tile = unet_onnx[0], unet_ckpt, 30  # 30 is not a multiple of 4: padded outside the graph
    else:
        path, ckpt, tile = classic_onnx.path, classic_ckpt, 20  # output tiles 20, inputs 60
    expected = predict(load_model(ckpt), image, tile=tile, device="cpu")
    got = predict(OnnxPredictor(path), image, tile=tile, device="cpu")
    assert Predictor(OnnxPredictor(path)).margin == (0 if which == "unet" else 20)
    assert got.shape == expected.shape == (2, 45, 130)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_predict_with_the_exported_file_writes_the_same_mask(tmp_path, unet_onnx, unet_ckpt):
    image = tmp_path / "img.png"
    write_image(image, np.random.default_rng(1).integers(0, 255, (45, 67), dtype=np.uint8))
    common = [str(image), "--tile", "32", "--probs", "--device", "cpu"]
    assert main(["predict", str(unet_ckpt), *common, "--out", str(tmp_path / "torch")]) == 0
    assert main(["predict", str(unet_onnx[0]), *common, "--out", str(tmp_path / "onnx")]) == 0
    np.testing.assert_array_equal(read_image(tmp_path / "onnx" / "img.png"), read_image(tmp_path / "torch" / "img.png"))
    import tifffile

    np.testing.assert_allclose(
        tifffile.imread(tmp_path / "onnx" / "img_probs.tif"),
        tifffile.imread(tmp_path / "torch" / "img_probs.tif"),
        atol=1e-5,
    )


def test_torch_export_round_trip(tmp_path, unet_ckpt):
    report = export_torch(unet_ckpt, tmp_path / "model.pt2")
    assert report.dynamic and report.max_abs_diff is not None and report.max_abs_diff < 1e-5
    assert report.sizes == ((1, 1, 24, 24), (2, 1, 40, 32))
    exported = load_exported(report.path)
    assert isinstance(exported, TorchExportPredictor)
    assert exported.checkpoint_config["preprocess"] == PREPROCESS["preprocess"]
    image = np.random.default_rng(2).random((45, 70)).astype(np.float32)
    np.testing.assert_allclose(
        predict(exported, image, tile=30, device="cpu"),
        predict(load_model(unet_ckpt), image, tile=30, device="cpu"),
        atol=1e-5,
    )
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt2"]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("not_a_checkpoint", "not a checkpoint"),
        ("format", "`--format` must be one of onnx, torch, got 'tflite'"),
        ("missing_folder", "does not exist"),
        ("parent_is_a_file", "is not a writable folder"),
        ("suffix", "`--out` must end in .onnx for --format onnx"),
    ],
)
def test_bad_input_gives_one_line_status_2_and_no_file(tmp_path, unet_ckpt, capsys, case, expected):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    ckpt, out, fmt = str(unet_ckpt), out_dir / "model.onnx", "onnx"
    if case == "not_a_checkpoint":
        ckpt = str(tmp_path / "empty")
        (tmp_path / "empty").mkdir()
    elif case == "format":
        fmt = "tflite"
    elif case == "missing_folder":
        out = out_dir / "nope" / "model.onnx"
    elif case == "parent_is_a_file":
        (out_dir / "file").write_text("x")
        out = out_dir / "file" / "model.onnx"
    elif case == "suffix":
        out = out_dir / "model.bin"
    code = main(["export", ckpt, "--format", fmt, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert expected in err, err
    assert sorted(p.name for p in out_dir.iterdir()) == (["file"] if case == "parent_is_a_file" else [])


def test_a_failed_check_leaves_no_file(tmp_path, unet_ckpt, monkeypatch):
    from unetkit import export as export_module

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise ValueError("exported model returned (1, 2, 3, 3), eager (1, 2, 24, 24)")

    monkeypatch.setattr(export_module, "_compare", broken)
    with pytest.raises(ValueError, match="exported model returned"):
        export_torch(unet_ckpt, tmp_path / "model.pt2")
    assert list(tmp_path.iterdir()) == []


def test_load_exported_errors_name_the_file(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"model\.bin: an exported model must end in \.onnx or \.pt2"):
        load_exported(tmp_path / "model.bin")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(ValueError, match=r"bad\.onnx: not a readable ONNX model"):
        load_exported(bad)
    (tmp_path / "bad.pt2").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"bad\.pt2: not a readable torch.export file"):
        load_exported(tmp_path / "bad.pt2")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=re.escape("pip install unetkit[export]")):
        OnnxPredictor(bad)


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_every_zoo_model_exports_to_onnx_and_torch(tmp_path, name):
    if len(get_model_entry(name).example_shape) == 3:
        pytest.skip("export takes 2D models; 3D export comes with 3D prediction (issue 19, phase 2)")
    options = {
        "unet": {"base_channels": 4},
        "unet_classic": {"base_channels": 4},
        "sa_unet": {"base_channels": 4},
        "basic_unet": {"channels": [4, 8, 8]},
        "ddpm_unet": {"channels": [8, 8, 16]},
        "unet_dense_bottleneck": {},
    }[name]
    model = create_model(name, **options)
    for report in (export_onnx(model, tmp_path / "m.onnx"), export_torch(model, tmp_path / "m.pt2")):
        assert report.max_abs_diff is not None and report.max_abs_diff < 1e-4, report
        assert report.dynamic == (name != "unet_dense_bottleneck"), report
