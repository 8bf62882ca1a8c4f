"""The hang-and-exhaustion part of the bad-input catalogue (docs/errors.md): image headers that promise more
than the file holds or than memory allows, pixel data cut short, config files that expand or repeat keys,
values too long to quote, patches larger than the images, built-in data over the pixel limit; plus the
summary of an input no machine could hold and a failed `--devices 2` run, each reported in one line."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from tests.cli.catalogue import Case, check_case, lines_of, missing_from_docs
from tests.cli.faults import checkpoint, folder, png_made
from tests.cli.test_bad_inputs import TINY_RUN
from unetkit.cli.main import main
from unetkit.data import io as data_io

SIDE = 30_000  # the header's claim: 900 M pixels


def _predict(tmp: Path, name: str, content: bytes) -> tuple[list[str], Path]:
    (tmp / "in").mkdir(exist_ok=True)
    (tmp / "in" / name).write_bytes(content)
    ckpt = checkpoint(tmp / "ckpt")
    return ["predict", str(ckpt), str(tmp / "in" / name), "--out", str(tmp / "pred")], tmp / "pred"


def _tiny_bomb() -> bytes:
    """A valid 69-byte PNG whose header claims 30000 x 30000 (the issue's file had 109 bytes)."""
    return png_made(SIDE, SIDE, zlib.compress(b"\x00" * 100))


def _raised_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_io, "MAX_PIXELS", 2**30)  # UNETKIT_MAX_PIXELS=1073741824


def _short_png(interlace: int) -> bytes:
    """64 x 64 grey with a complete zlib stream of only 2 rows (Pillow reads the other 62 as zeros)."""
    return png_made(64, 64, zlib.compress(b"".join(b"\x00" + bytes([200]) * 64 for _ in range(2))), interlace=interlace)


def _rle_bmp() -> bytes:
    """A BMP (RLE8) whose header claims 30000 x 30000 and whose data ends at once (end-of-bitmap)."""
    palette = b"".join(bytes([i, i, i, 0]) for i in range(256))
    data = b"\x00\x01"
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, SIDE, SIDE, 1, 8, 1, len(data), 2835, 2835, 256, 0)
    return b"BM" + struct.pack("<IHHI", offset + len(data), 0, 0, offset) + info + palette + data


def _short_tiff() -> bytes:
    """An uncompressed TIFF whose header claims 30000 x 30000 bytes of pixels, with 16 bytes of data."""
    tags = [(256, 4, SIDE), (257, 4, SIDE), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, 0), (277, 3, 1)]
    tags += [(278, 4, SIDE), (279, 4, SIDE * SIDE)]
    data_at = 8 + 2 + 12 * len(tags) + 4
    ifd = struct.pack("<H", len(tags))
    for tag, kind, value in tags:
        value = data_at if tag == 273 else value
        ifd += struct.pack("<HHII", tag, kind, 1, value) if kind == 4 else struct.pack("<HHIHH", tag, kind, 1, value, 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + bytes(16)


def _huge_model_checkpoint(tmp: Path) -> tuple[list[str], Path]:
    """A checkpoint whose config.json asks for `base_channels` 100000 (about 10^12 parameters) beside the
    weights of a small model: building it first would try to allocate terabytes."""
    argv, out = _predict(tmp, "img.png", png_made(16, 16, zlib.compress(b"".join([b"\x00" * 17] * 16))))
    config = json.loads((tmp / "ckpt" / "config.json").read_text())
    config["model_config"]["base_channels"] = 100_000
    (tmp / "ckpt" / "config.json").write_text(json.dumps(config))
    return argv, out


def _config(tmp: Path, text: str) -> tuple[list[str], Path]:
    (tmp / "config.yaml").write_text(text)
    return ["train", "--config", str(tmp / "config.yaml"), "--out", str(tmp / "run")], tmp / "run"


BILLION_LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{chr(c)}: &{chr(c)} [{', '.join([f'*{chr(c - 1)}'] * 9)}]\n" for c in range(ord("b"), ord("j"))
)
BILLION_LAUGHS += "epochs: *i\n"  # under a real key: 9**9 items when printed or checked
LONG = "x" * 100_000
TOO_LARGE = r"is larger than the pixel limit"
HEADER = r"its header claims 30000x30000 pixels \(900,000,000 bytes\), more than its [\d,]+ bytes can hold"


def _empty_zarr(tmp: Path) -> tuple[list[str], Path]:
    """A zarr store whose shape claims 200000^2 pixels and which holds no chunk (a few hundred bytes on disk)."""
    zarr = pytest.importorskip("zarr")
    path = tmp / "in" / "huge.zarr"
    zarr.create_array(str(path), shape=(200_000, 200_000), chunks=(1024, 1024), dtype="uint8", fill_value=0)
    return ["predict", str(checkpoint(tmp / "ckpt")), str(path), "--out", str(tmp / "pred")], tmp / "pred"


CASES = [
    Case(
        "zarr-store-over-the-pixel-limit",
        rf"huge\.zarr: 200000x200000 {TOO_LARGE} 4294967296 for zarr stores \(raise it with UNETKIT_MAX_PIXELS\)",
        lambda t, m: _empty_zarr(t),
    ),
    Case(
        "image-header-larger-than-the-file",
        rf"img\.png: {HEADER} \(1032:1 at most\); the file is truncated or damaged",
        lambda t, m: (_raised_limit(m), _predict(t, "img.png", _tiny_bomb()))[1],
    ),
    Case(
        "image-over-the-default-pixel-limit",
        rf"img\.png: 30000x30000 {TOO_LARGE} 268435456 \(raise it with UNETKIT_MAX_PIXELS\)",
        lambda t, m: _predict(t, "img.png", _tiny_bomb()),
    ),
    Case(
        "image-png-pixel-data-cut-short",
        r"img\.png: cannot read image \(truncated pixel data: 130 of the 4,160 bytes its 64x64 header promises\)",
        lambda t, m: _predict(t, "img.png", _short_png(0)),
    ),
    Case(
        "image-png-interlaced-pixel-data-cut-short",
        r"img\.png: cannot read image \(truncated pixel data: 130 of the 4,\d\d\d bytes its 64x64 header",
        lambda t, m: _predict(t, "img.png", _short_png(1)),
    ),
    Case(
        "image-bmp-header-larger-than-the-file",
        rf"img\.bmp: {HEADER} \(1032:1 at most\)",
        lambda t, m: (_raised_limit(m), _predict(t, "img.bmp", _rle_bmp()))[1],
    ),
    Case(
        "image-tiff-header-larger-than-the-file",
        rf"img\.tif: {HEADER} \(1:1 at most\)",
        lambda t, m: _predict(t, "img.tif", _short_tiff()),
    ),
    Case(
        "checkpoint-config-asks-for-a-huge-model",
        r"ckpt/config\.json: `base_channels` 100000 with `depth` 2 gives 800000 channels at the deepest level, "
        r"more than 262144",
        lambda t, m: _huge_model_checkpoint(t),
    ),
    Case(
        "config-alias-bomb",
        r"config\.yaml: line 2: YAML aliases \(\*a\) are not accepted in a config; write the value out",
        lambda t, m: _config(t, BILLION_LAUGHS),
    ),
    Case(
        "config-duplicate-key",
        r"config\.yaml: line 3: key 'epochs' is given twice \(first at line 1\)",
        lambda t, m: _config(t, "epochs: 1\nlr: 0.01\nepochs: 999\n"),
    ),
    Case(
        "config-duplicate-nested-key",
        r"config\.yaml: line 3: key 'elastic' is given twice \(first at line 2\)",
        lambda t, m: _config(t, "augment:\n  elastic: true\n  elastic: false\n"),
    ),
    Case(
        "config-too-long",
        r"config\.yaml: 1,048,\d{3} characters; a config may hold at most 1,048,576",
        lambda t, m: _config(t, "# padding\n" * 104_858),
    ),
    Case(
        "config-nested-too-deep",
        r"config\.yaml: line 1: nested deeper than 50 levels",
        lambda t, m: _config(t, "augment: " + "[" * 60 + "]" * 60 + "\n"),
    ),
    Case(
        "error-quoting-a-huge-value",
        r"`optimizer` must be one of 'adam', 'adamw', 'sgd', got 'x+\.\.\.x+'$",
        lambda t, m: (["train", *TINY_RUN, "--out", str(t / "run"), "--optimizer", LONG], t / "run"),
    ),
    Case(
        "error-line-of-a-huge-value",
        r"unknown model 'x{900,}.*\.\.\. \(\d[\d,]* more characters\)$",
        lambda t, m: (["train", *TINY_RUN, "--out", str(t / "run"), "--model", LONG], t / "run"),
    ),
    Case(
        "patch-larger-than-the-images",
        r"`patch_size` 4096 is more than 2x the largest training image of .*data \(32x32\): its patches would be "
        r"mostly padding; give at most 64, or 0 to train on whole images",
        lambda t, m: (["train", "--data", str(folder(t / "data", size=32)), "--out", str(t / "run"),
                       "--patch-size", "4096"], t / "run"),
    ),
    Case(
        "synthetic-data-over-the-pixel-limit",
        r"\d synthetic image\(s\) of 100000x100000 hold [\d,]+ pixels, more than the pixel limit 268435456",
        lambda t, m: (["train", *TINY_RUN, "--out", str(t / "run"), "--set", "synthetic_size=100000",
                       "--set", "synthetic_train=1"], t / "run"),
    ),
    Case(
        "data-synthetic-over-the-pixel-limit",
        r"2 synthetic image\(s\) of 100000x100000 hold 20,000,000,000 pixels, more than the pixel limit",
        lambda t, m: (["data", "synthetic", "cells", "--size", "100000", "-n", "2", "--out", str(t / "set")],
                      t / "set"),
    ),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_resource_case_exits_2_with_one_line_before_any_tile_or_step(case, tmp_path, monkeypatch, capsys):
    # refused from headers and settings: no tile was predicted, no volume slab, no training epoch begun
    from unetkit.infer import files, predictor, volume_files
    from unetkit.train.engine import Engine

    def never(*args, **kwargs):
        raise AssertionError("the work began before the refusal")

    for module, name in ((files, "run_tiled"), (predictor, "run_tiled"), (volume_files, "run_grid")):
        monkeypatch.setattr(module, name, never)
    monkeypatch.setattr(Engine, "train_epoch", never)
    line = check_case(case, tmp_path, monkeypatch, capsys)
    assert len(line) < 1200  # a huge value never makes a huge line


def test_the_short_png_really_reads_as_zeros_in_pillow(tmp_path):
    """The fault the truncation check exists for: Pillow itself accepts the file."""
    import io

    from PIL import Image, ImageFile

    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    pixels = np.asarray(Image.open(io.BytesIO(_short_png(0))))
    assert pixels.shape == (64, 64) and (pixels[:2] == 200).all() and (pixels[2:] == 0).all()


def test_the_alias_bomb_would_expand_to_a_billion_items():
    import yaml

    loaded = yaml.safe_load(BILLION_LAUGHS)  # plain SafeLoader: shared lists, 9**9 leaves when walked
    size, node = 1, loaded["epochs"]
    while isinstance(node, list):
        size, node = size * len(node), node[0]
    assert size == 9**9


def test_summary_of_an_input_no_machine_holds_prints_the_estimate(capsys):
    assert main(["summary", "unet", "--input", "1x3x100000x100000"]) == 0
    out = capsys.readouterr().out
    assert "Output shape: [1, 2, 100000, 100000]" in out
    # leaf outputs of unet (base 64, depth 4) at 100000^2, float32, twice: computed on the meta device
    assert "Forward/backward activations (MB, leaf outputs x2): 123,291,015.62" in out


def test_summary_on_a_real_device_refuses_what_does_not_fit():
    import torch

    from unetkit import create_model
    from unetkit.models.summary import free_memory, summarize

    free = free_memory(torch.device("cpu"))
    if free is None:
        pytest.skip("no free-memory figure on this system")
    with pytest.raises(ValueError, match=r"one pass of unet needs about [\d,.]+ GiB, more than the [\d,.]+ GiB free"):
        summarize(create_model("unet"), (1, 3, 100000, 100000), device="cpu")


def test_a_failed_devices_run_prints_one_line_once(monkeypatch, capsys, tmp_path):
    """Both processes fail on the same bad image and leave their line; the launcher prints rank 0's, once."""
    import os

    import torch.distributed.run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    from unetkit.cli.train import RANK_ERRORS

    message = f"{tmp_path}/data/images/img0.png: cannot read image (OSError: Truncated File Read)"

    def run(args: object) -> None:  # what two failing processes do: their line in the folder, exit status 2
        for rank in (1, 0):
            Path(os.environ[RANK_ERRORS], f"rank{rank:05d}").write_text(message.replace("img0", f"img{rank}"))
        raise ChildFailedError("unetkit", {1: ProcessFailure(local_rank=1, pid=1, exitcode=2, error_file="")})

    monkeypatch.setattr(torchrun, "run", run)
    assert main(["train", "--data", "synthetic:cells", "--devices", "2", "--epochs", "1"]) == 2
    assert lines_of(capsys.readouterr().err) == [f"unetkit train: error: {message}"]
    assert RANK_ERRORS not in os.environ


def test_every_resource_case_is_in_the_docs():
    missing = missing_from_docs(CASES)
    assert not missing, f"docs/errors.md lacks {missing}"
