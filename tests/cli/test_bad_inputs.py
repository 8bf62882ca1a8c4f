"""The bad-input catalogue (docs/errors.md): every case runs the CLI and must exit with status 2 and one
stderr line that names the file or argument and says what was expected, with no traceback, and leave
its output untouched (nothing half-written, no temporary files). Most cases run in-process through
`unetkit.cli.main.main`; `test_console_script_*` run a few through a real `python -m unetkit`.

Cases that need a file the process cannot read or a folder it cannot write use file modes; as root
(which ignores them) the refusal of the system call is simulated at the same place.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tests.cli.catalogue import Case, check_case, missing_from_docs
from tests.cli.catalogue import lines_of as _lines
from tests.cli.faults import (
    checkpoint,
    fail_fsync_on,
    fill_disk_on,
    folder,
    png_0x0,
    png_bytes,
    read_only,
    tree,
    unreadable,
)
from unetkit.cli.main import main
from unetkit.data import io as data_io
from unetkit.data import write_image
from unetkit.models.checkpoint import FORMAT_VERSION

SMALL = ["-m", "base_channels=4", "-m", "depth=2", "--patch-size", "32", "--batch-size", "2"]
TINY_RUN = [
    "--data", "synthetic:cells", "--epochs", "1", "--deterministic", *SMALL, "--set", "synthetic_train=4",
    "--set", "synthetic_val=1", "--set", "synthetic_size=32", "--set", "steps_per_epoch=1", "--set", "samples=0",
]  # fmt: skip


# --- the catalogue -------------------------------------------------------------------------------------


def _predict(tmp: Path, image: Path, *extra: str) -> tuple[list[str], Path]:
    ckpt = checkpoint(tmp / "ckpt")
    return ["predict", str(ckpt), str(image), "--out", str(tmp / "pred"), *extra], tmp / "pred"


def _predict3d(tmp: Path, volume: Path) -> tuple[list[str], Path]:
    """`unetkit predict` of `volume` with an untrained 1-channel 3D `unet` checkpoint."""
    from unetkit import create_model, save_model

    model = create_model("unet", in_channels=1, num_classes=2, base_channels=4, depth=2, spatial_dims=3)
    save_model(model, tmp / "ckpt3d", extra={"preprocess": {"mean": [0.5], "std": [0.25]}})
    return ["predict", str(tmp / "ckpt3d"), str(volume), "--out", str(tmp / "pred")], tmp / "pred"


def _nifti_claiming(tmp: Path, side: int, gz: bool) -> Path:
    """A 4^3 NIfTI whose header's dims are rewritten to `side`^3: a few hundred bytes claiming far more voxels."""
    import gzip
    import struct

    nibabel = pytest.importorskip("nibabel")
    path = _image_case(tmp, "small.nii")
    nibabel.save(nibabel.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), path)
    raw = bytearray(path.read_bytes())
    path.unlink()
    raw[40:56] = struct.pack("<8h", 3, side, side, side, 1, 1, 1, 1)
    target = tmp / "in" / ("bomb.nii.gz" if gz else "bomb.nii")
    target.write_bytes(gzip.compress(bytes(raw)) if gz else bytes(raw))
    return target


def _nifti(tmp: Path, shape: tuple[int, ...]) -> Path:
    nibabel = pytest.importorskip("nibabel")
    path = _image_case(tmp, "vol.nii.gz")
    nibabel.save(nibabel.Nifti1Image(np.zeros(shape, np.uint8), np.eye(4)), path)
    return path


def _train(tmp: Path, data: Path | str, *extra: str) -> tuple[list[str], Path]:
    return ["train", "--data", str(data), "--out", str(tmp / "run"), "--epochs", "1", *extra], tmp / "run"


def _image_case(tmp: Path, name: str, content: bytes | None = None) -> Path:
    folder = tmp / "in"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if content is not None:
        path.write_bytes(content)
    return path


def _mask_case(tmp: Path, name: str, mask: np.ndarray, *extra: str) -> tuple[list[str], Path]:
    data = folder(tmp / "data")
    (data / "masks" / "img0.png").unlink()
    write_image(data / "masks" / name, mask)
    return _train(tmp, data, *extra)


def _trained_run(tmp: Path) -> Path:
    run = tmp / "run"
    assert main(["train", *TINY_RUN, "--out", str(run)]) == 0
    return run


def _damaged_checkpoint(tmp: Path, change: Callable[[Path], None]) -> tuple[list[str], Path]:
    ckpt = checkpoint(tmp / "ckpt")
    change(ckpt)
    image = _image_case(tmp, "img.png", png_bytes(np.zeros((20, 20), np.uint8)))
    return ["predict", str(ckpt), str(image), "--out", str(tmp / "pred")], tmp / "pred"


def _edit_config(**changes: object) -> Callable[[Path], None]:
    def change(ckpt: Path) -> None:
        config = json.loads((ckpt / "config.json").read_text())
        (ckpt / "config.json").write_text(json.dumps({**config, **changes}))

    return change


def _config_file(tmp: Path, text: str | bytes) -> tuple[list[str], Path]:
    path = tmp / "config.yaml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return ["train", "--config", str(path), "--out", str(tmp / "run")], tmp / "run"


def _disk_full_training(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], Path]:
    run = _trained_run(tmp)
    fill_disk_on(monkeypatch, r"model\.safetensors$")  # the next checkpoint save: best/ or last/ of epoch 2
    return ["train", "--resume", str(run), "--epochs", "2"], run / "last"


def _disk_full_predict(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], Path]:
    fail_fsync_on(monkeypatch, r"^\.?mask\.")  # the mask, at its temporary name
    image = _image_case(tmp, "img.png", png_bytes(np.zeros((20, 20), np.uint8)))
    return _predict(tmp, image)


def _nan_tiff(tmp: Path, value: float) -> Path:
    array = np.zeros((20, 20), np.float32)
    array[3, 4] = value
    path = _image_case(tmp, "img.tif")
    tifffile.imwrite(path, array)
    return path


def _pixel_limit(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], Path]:
    monkeypatch.setattr(data_io, "MAX_PIXELS", 1000)  # UNETKIT_MAX_PIXELS=1000
    return _train(tmp, folder(tmp / "data"))  # 40 x 40 = 1600 pixels


def _unwritable_out(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], Path]:
    read_only(tmp / "ro", monkeypatch)
    return ["train", *TINY_RUN, "--out", str(tmp / "ro" / "run")], tmp / "ro"


def _tiny_images(tmp: Path, side: int) -> Path:
    data = tmp / "data"
    for i in range(3):
        write_image(data / "images" / f"img{i}.png", np.full((side, side), 10 * i, np.uint8))
        write_image(data / "masks" / f"img{i}.png", np.full((side, side), 255 * (i % 2), np.uint8))
    return data


def _one_pixel_from_one(tmp: Path) -> tuple[list[str], Path]:
    data = _tiny_images(tmp, 1)
    image, mask = data / "images" / "img0.png", data / "masks" / "img1.png"
    return ["data", "from-one", str(image), str(mask), "--out", str(tmp / "set"), "-n", "2"], tmp / "set"


def _broken_state(tmp: Path) -> tuple[list[str], Path]:
    run = _trained_run(tmp)
    (run / "last" / "state.pt").write_bytes((run / "last" / "state.pt").read_bytes()[:300])
    return ["train", "--resume", str(run), "--epochs", "2"], run / "last"


def _truncated(tmp: Path) -> Path:
    whole = png_bytes(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    return _image_case(tmp, "img.png", whole[: len(whole) // 2])


def _unreadable_image(t: Path, m: pytest.MonkeyPatch) -> tuple[list[str], Path]:
    unreadable(folder(t / "data") / "images" / "img0.png", m)
    return _train(t, t / "data")


def _binary_mask_with_three_values(t: Path, m: pytest.MonkeyPatch) -> tuple[list[str], Path]:
    mask = np.repeat(np.arange(3, dtype=np.uint8), [400, 400, 800]).reshape(40, 40)
    return _mask_case(t, "img0.png", mask, "--set", "mask_mode=binary")


def _empty_data_set(t: Path, m: pytest.MonkeyPatch) -> tuple[list[str], Path]:
    for sub in ("images", "masks"):
        (t / "data" / sub).mkdir(parents=True)
    return _train(t, t / "data")


def _image_without_mask(t: Path, m: pytest.MonkeyPatch) -> tuple[list[str], Path]:
    (folder(t / "data") / "masks" / "img1.png").unlink()
    return _train(t, t / "data")


def _grey(t: Path, name: str = "img.png") -> Path:
    return _image_case(t, name, png_bytes(np.zeros((9, 9), np.uint8)))


def _no_checkpoint(t: Path, m: pytest.MonkeyPatch) -> tuple[list[str], Path]:
    image = _grey(t)
    return ["predict", str(image.parent), str(image), "--out", str(t / "pred")], t / "pred"


def _under_a_file(t: Path, m: pytest.MonkeyPatch) -> tuple[list[str], Path]:
    (t / "out.txt").write_text("x")
    return ["train", *TINY_RUN, "--out", str(t / "out.txt" / "run")], t / "out.txt"


def _case(*argv: str) -> Callable[[Path, pytest.MonkeyPatch], tuple[list[str], Path]]:
    """A `train` case on built-in data with `argv` added."""
    return lambda t, m: _train(t, "synthetic:cells", *argv)


def _config(text: str | bytes) -> Callable[[Path, pytest.MonkeyPatch], tuple[list[str], Path]]:
    return lambda t, m: _config_file(t, text)


def _checkpoint_case(change: Callable[[Path], None]) -> Callable[[Path, pytest.MonkeyPatch], tuple[list[str], Path]]:
    return lambda t, m: _damaged_checkpoint(t, change)


def _cut_file(name: str, keep: int) -> Callable[[Path], None]:
    return lambda ckpt: (ckpt / name).write_bytes((ckpt / name).read_bytes()[:keep])


NO_SPACE = r"cannot write \(No space left on device\)"


def _spec(low: float, std: float) -> dict[str, object]:
    """A `dataset` preprocessing spec with one channel."""
    return {"scheme": "dataset", "low": [low], "high": [1.0], "mean": [0.5], "std": [std]}


CASES = [
    # image files
    Case("image-missing", r"img\.png: no such file", lambda t, m: _predict(t, _image_case(t, "img.png"))),
    Case("image-unreadable", r"img0\.png: cannot read \(Permission denied\)", _unreadable_image),
    Case("image-truncated", r"img\.png: cannot read image", lambda t, m: _predict(t, _truncated(t))),
    Case("image-zero-bytes", r"img\.png: empty file", lambda t, m: _predict(t, _image_case(t, "img.png", b""))),
    Case(
        "image-mislabelled",
        r"img\.png: holds JPEG data but its name says PNG; rename it to img\.jpg",
        lambda t, m: _predict(t, _image_case(t, "img.png", png_bytes(np.zeros((20, 20), np.uint8), "JPEG"))),
    ),
    Case(
        "image-not-an-image",
        r"img\.png: not a PNG file",
        lambda t, m: _predict(t, _image_case(t, "img.png", b"<html>404 not found</html>")),
    ),
    Case(
        "image-unknown-suffix",
        r"img\.gif: unknown image format '\.gif'",
        lambda t, m: _predict(t, _image_case(t, "img.gif", b"GIF89a")),
    ),
    Case("image-0x0", r"img\.png: image is 0x0 pixels", lambda t, m: _predict(t, _image_case(t, "img.png", png_0x0()))),
    Case(
        "image-1x1-whole-image-training",
        r"image 'img\d' is 1x1; whole-image training \(`patch_size` 0\)",
        lambda t, m: _train(t, _tiny_images(t, 1), "--patch-size", "0", *SMALL[:4]),
    ),
    Case("image-1x1-from-one", r"img0\.png: image is 1x1 pixels.*at least 2x2", lambda t, m: _one_pixel_from_one(t)),
    Case("image-over-pixel-limit", r"img0\.png: 40x40 is larger than the pixel limit 1000", _pixel_limit),
    Case("image-nan-pixels", r"img\.tif: contains NaN or infinite", lambda t, m: _predict(t, _nan_tiff(t, np.nan))),
    Case("image-inf-pixels", r"img\.tif: contains NaN or infinite", lambda t, m: _predict(t, _nan_tiff(t, np.inf))),
    Case(
        "image-channels-vs-model",
        r"img\.png: image has 3 channels, the model expects 1",
        lambda t, m: _predict(t, _image_case(t, "img.png", png_bytes(np.zeros((20, 20, 3), np.uint8)))),
    ),
    Case(
        "image-channels-vs-option",
        r"`model_options.in_channels` 3 does not fit .*: its images have 1 channel",
        lambda t, m: _train(t, folder(t / "data"), "-m", "in_channels=3"),
    ),
    # data sets
    Case(
        "mask-size-mismatch",
        r"img0\.png: mask is 30x40 \(HxW\) but its image .*img0\.png is 40x40",
        lambda t, m: _mask_case(t, "img0.png", np.zeros((30, 40), np.uint8)),
    ),
    Case(
        "mask-values-fit-no-mode",
        r"img0\.png: binary mask must hold values within \{0, 1\} or \{0, 255\}, got \{0, 1, 2\}",
        _binary_mask_with_three_values,
    ),
    Case(
        "mask-fractional-values",
        r"img0\.tif: mask holds non-integer values",
        lambda t, m: _mask_case(t, "img0.tif", np.full((40, 40), 0.5, np.float32)),
    ),
    Case("dataset-empty", r"images: no image files", _empty_data_set),
    Case("dataset-image-without-mask", r"1 image\(s\) have no mask of the same name .*: img1", _image_without_mask),
    Case("dataset-missing-folder", r"nowhere: no such folder", lambda t, m: _train(t, t / "nowhere")),
    Case(
        "predict-empty-folder", r"in: folder holds no image files", lambda t, m: _predict(t, _image_case(t, "x").parent)
    ),
    Case(
        "predict-volume-2d-checkpoint",
        r"in/vol\.nii\.gz: a volume, and .*ckpt holds a 2D model; predict volumes with a 3D checkpoint",
        lambda t, m: _predict(t, _nifti(t, (12, 10, 8))),
    ),
    Case(
        "predict-image-3d-checkpoint",
        r"in/img\.png: a 2-D image, and .*ckpt3d holds a 3D model; give volumes",
        lambda t, m: _predict3d(t, _image_case(t, "img.png", png_bytes(np.zeros((20, 20), np.uint8)))),
    ),
    Case(
        "predict-volume-channels",
        r"in/vol\.nii\.gz: volume has 2 channels, the model expects 1",
        lambda t, m: _predict3d(t, _nifti(t, (12, 10, 8, 2))),
    ),
    # arguments and options
    Case("unknown-model", r"unknown model 'unet_clasic'; did you mean 'unet_classic'", _case("--model", "unet_clasic")),
    Case(
        "unknown-model-option",
        r"`model_options` for 'unet': unknown option 'upsampel' for UNet; did you mean 'upsample'",
        _case("-m", "upsampel=bilinear"),
    ),
    Case(
        "unknown-enum-value",
        r"`optimizer` must be one of 'adam', 'adamw', 'sgd', got 'adamm'; did you mean",
        _case("--optimizer", "adamm"),
    ),
    Case(
        "unknown-flag",
        r"unrecognized arguments: --learning-rate 0.1; did you mean --lr\?",
        _case("--learning-rate", "0.1"),
    ),
    Case("bad-number", r"`lr` must be a number, got 'fast'", _case("--set", "lr=fast")),
    Case(
        "value-out-of-range",
        r"`val_fraction` must be a finite number in \[0, 1\), got 1.5",
        _case("--set", "val_fraction=1.5"),
    ),
    Case("bad-device", r"`device` must be auto, cpu, cuda or cuda:N, got 'gpu'", _case("--device", "gpu")),
    Case(
        "device-not-here",
        r"`--device` cuda:99: this machine has \d+ CUDA device\(s\)",
        lambda t, m: _predict(t, _grey(t), "--device", "cuda:99"),
    ),
    Case(
        "predict-overlap",
        r"`--overlap` must be in \[0, 1\), got 1.0",
        lambda t, m: _predict(t, _grey(t), "--overlap", "1.0"),
    ),
    # config files
    Case(
        "config-malformed-yaml",
        r"config\.yaml: malformed YAML at line 2",
        _config("epochs: 2\n  lr: 0.1\nmodel: unet\n"),
    ),
    Case("config-not-text", r"config\.yaml: not a UTF-8 text file", _config(b"\x89PNG\r\n\x1a\n\xff\xfe")),
    Case(
        "config-unknown-key",
        r"config\.yaml: unknown key 'learning_rate'; did you mean 'lr'\?",
        _config("epochs: 2\nlearning_rate: 0.1\n"),
    ),
    Case(
        "config-not-a-mapping", r"config\.yaml: expected a mapping of config keys, got list", _config("- lr\n- 0.1\n")
    ),
    Case(
        "config-missing",
        r"nope\.yaml: no such config file",
        lambda t, m: (["train", "--config", str(t / "nope.yaml")], t / "runs"),
    ),
    # checkpoints
    Case(
        "checkpoint-other-model",
        r"model\.safetensors: weights do not fit model 'sa_unet'",
        _checkpoint_case(_edit_config(model="sa_unet", model_config={"in_channels": 1})),
    ),
    Case(
        "checkpoint-newer-version",
        rf"config\.json: checkpoint format version {FORMAT_VERSION + 1} is newer .* upgrade unetkit",
        _checkpoint_case(_edit_config(format_version=FORMAT_VERSION + 1)),
    ),
    Case(
        "checkpoint-unknown-model",
        r"config\.json: unknown model 'unet_v9'",
        _checkpoint_case(_edit_config(model="unet_v9")),
    ),
    Case(
        "checkpoint-corrupted-weights",
        r"model\.safetensors: corrupted weights file",
        _checkpoint_case(_cut_file("model.safetensors", 100)),
    ),
    Case(
        "checkpoint-corrupted-config",
        r"config\.json: corrupted checkpoint config",
        _checkpoint_case(lambda c: (c / "config.json").write_text("{not json")),
    ),
    Case("checkpoint-not-one", r"in: not a checkpoint: no config\.json here nor in best/ or last/", _no_checkpoint),
    Case("resume-corrupted-state", r"state\.pt: corrupted training state", lambda t, m: _broken_state(t)),
    Case(
        "resume-not-a-run",
        r"no training state to resume from \(is .*empty a run directory\?\)",
        lambda t, m: (["train", "--resume", str(t / "empty")], t / "empty"),
    ),
    Case(
        "resume-with-other-settings",
        r"`--resume` continues .* with its saved config; only --epochs may be given with it, got --lr",
        lambda t, m: (["train", "--resume", str(t / "run"), "--lr", "0.1"], t / "run"),
    ),
    # outputs
    Case("output-under-a-file", r"out\.txt.*cannot write \(.*is a file, expected a folder\)", _under_a_file),
    Case("output-not-writable", r"ro/run: cannot write \(Permission denied\)", _unwritable_out),
    Case(
        "output-exists",
        r"already holds a run; pass --resume .* to continue it, or choose another --out",
        lambda t, m: (["train", *TINY_RUN, "--out", str(_trained_run(t))], t / "run"),
    ),
    Case(
        "disk-full-during-a-training-save",
        NO_SPACE + r"; .*last still holds epoch 1; free some space, then: unetkit train --resume",
        _disk_full_training,
    ),
    Case("disk-full-during-predict", r"pred/img\.png: " + NO_SPACE, _disk_full_predict),
    Case(
        "checkpoint-preprocess-std-zero",
        r"ckpt/config\.json: `preprocess\.std` must be > 0",
        _checkpoint_case(_edit_config(preprocess=_spec(low=0.0, std=0.0))),
    ),
    Case(
        "checkpoint-preprocess-nan-mean",
        r"ckpt/config\.json: `preprocess\.mean` must be a list of finite numbers",
        lambda t, m: _damaged_checkpoint(t, _nan_mean),
    ),
    Case(
        "checkpoint-preprocess-low-above-high",
        r"ckpt/config\.json: `preprocess\.low` must not exceed `preprocess\.high`",
        _checkpoint_case(_edit_config(preprocess=_spec(low=5.0, std=1.0))),
    ),
    Case(
        "checkpoint-label-values-beyond-16-bit",
        r"ckpt/config\.json: `mask\.label_values` must be integers in \[0, 65535\]",
        _checkpoint_case(_edit_config(mask={"mode": "classes", "num_classes": 2, "label_values": [0, 70000]})),
    ),
    Case(
        "checkpoint-preprocess-null",
        r"ckpt/config\.json: `preprocess` must be a mapping, got NoneType",
        _checkpoint_case(_edit_config(preprocess=None)),
    ),
    Case(
        "checkpoint-mask-not-a-mapping",
        r"ckpt/config\.json: `mask` must be a mapping, got str",
        _checkpoint_case(_edit_config(mask="classes")),
    ),
    Case(
        "checkpoint-unknown-mask-entry",
        r"ckpt/config\.json: unknown entry `mask\.labels`; `mask` holds mode, num_classes, label_values, ignore_index",
        _checkpoint_case(_edit_config(mask={"mode": "classes", "num_classes": 2, "labels": [0, 255]})),
    ),
    Case(
        "checkpoint-label-values-not-one-per-class",
        r"ckpt/config\.json: `mask\.label_values` must hold one value per class \(3\), got \[0, 255\]",
        _checkpoint_case(_edit_config(mask={"mode": "classes", "num_classes": 3, "label_values": [0, 255]})),
    ),
    Case(
        "checkpoint-unknown-task",
        r"ckpt/config\.json: `task` must be one of segmentation, denoise, superres, diffusion, got 'segment'",
        _checkpoint_case(_edit_config(task="segment")),
    ),
    Case(
        "checkpoint-percentiles-reversed",
        r"ckpt/config\.json: `preprocess\.percentiles` must be two increasing numbers, got \[99\.5, 0\.5\]",
        _checkpoint_case(_edit_config(preprocess={"scheme": "image", "percentiles": [99.5, 0.5]})),
    ),
    Case(
        "checkpoint-instance-method-unknown",
        r"ckpt/config\.json: `instances\.method` must be one of components, watershed, distance, got 'magic'",
        _checkpoint_case(_edit_config(instances={"method": "magic", "min_size": 0})),
    ),
    Case(
        "checkpoint-format-version-not-an-integer",
        r"ckpt/config\.json: `format_version` must be an integer >= 1, got 1\.0",
        _checkpoint_case(_edit_config(format_version=1.0)),
    ),
    Case(
        "nifti-header-claims-32000-cubed",
        r"bomb\.nii: its header claims 32,768,000,000,352 bytes of header and voxels, more than the 416 bytes the "
        r"file holds; the file is truncated or damaged",
        lambda t, m: _predict3d(t, _nifti_claiming(t, 32000, gz=False)),
    ),
    Case(
        "nifti-gz-header-claims-32000-cubed",
        r"bomb\.nii\.gz: its header claims 32,768,000,000,352 bytes .* more than the 416 bytes the file holds",
        lambda t, m: _predict3d(t, _nifti_claiming(t, 32000, gz=True)),
    ),
    Case(
        "checkpoint-config-nested-100000-deep",
        r"ckpt/config\.json: corrupted checkpoint config \(RecursionError\)",
        _checkpoint_case(lambda ckpt: (ckpt / "config.json").write_text("[" * 100_000 + "]" * 100_000)),
    ),
    Case(
        "model-depth-99",
        r"`model_options` for 'unet': `depth` must be at most 12, got 99",
        lambda t, m: _train(t, "synthetic:cells", "-m", "depth=99"),
    ),
    Case(
        "model-width-1e12",
        r"`base_channels` 1000000000000 with `depth` 4 gives 32000000000000 channels at the deepest level",
        lambda t, m: _train(t, "synthetic:cells", "-m", "base_channels=1000000000000"),
    ),
    Case(
        "checkpoint-config-depth-99",
        r"ckpt/config\.json: `depth` must be at most 12, got 99",
        _checkpoint_case(_edit_config(model="unet", model_config={"in_channels": 1, "depth": 99})),
    ),
    Case(
        "ignore-index-is-the-foreground",
        r"data: ignore_index \(--ignore-index\) 255 is the only label other than background in every mask",
        lambda t, m: _train(t, _tiny_images(t, 16), "--ignore-index", "255", *SMALL[:4]),
    ),
    Case(
        "ignore-index-beyond-8-bit-masks",
        r"data: ignore_index \(--ignore-index\) 300 cannot occur in 8-bit masks",
        lambda t, m: _train(t, _tiny_images(t, 16), "--ignore-index", "300", *SMALL[:4]),
    ),
    Case(
        "time-budget-beyond-a-month",
        r"`time_budget` must be at most 30 days, got '1000000000h'",
        lambda t, m: _train(t, _tiny_images(t, 16), "--time-budget", "1000000000h"),
    ),
    Case(
        "separation-distance-on-class-masks",
        r"`separation` 'distance' needs instance labels, and the masks of .*data read as binary",
        lambda t, m: _train(t, _tiny_images(t, 16), "--separation", "distance", "--plan", "off", *SMALL[:4]),
    ),
    Case(
        "instances-distance-without-the-head",
        r"`--instances distance` needs a model trained with separation 'distance' .*ckpt has none",
        lambda t, m: _with(_damaged_checkpoint(t, lambda p: None), "--instances", "distance"),
    ),
]


def _nan_mean(ckpt: Path) -> None:
    """A preprocessing mean of NaN, as JSON writers spell it."""
    text = (ckpt / "config.json").read_text()
    config = json.loads(text)
    config["preprocess"] = {"scheme": "dataset", "low": [0.0], "high": [1.0], "mean": [0.5], "std": [1.0]}
    (ckpt / "config.json").write_text(json.dumps(config).replace('"mean": [0.5]', '"mean": [NaN]'))


def _with(case: tuple[list[str], Path], *extra: str) -> tuple[list[str], Path]:
    """A case's command with more arguments."""
    argv, out = case
    return [*argv, *extra], out


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, tmp_path, monkeypatch, capsys):
    check_case(case, tmp_path, monkeypatch, capsys)


def test_the_catalogue_has_25_cases_each_in_the_docs():
    assert len(CASES) >= 25
    assert len({c.id for c in CASES}) == len(CASES)
    missing = missing_from_docs(CASES)
    assert not missing, f"docs/errors.md lacks {missing}"


def test_a_failed_save_keeps_the_previous_checkpoint_and_resume_still_works(tmp_path, monkeypatch, capsys):
    argv, last = _disk_full_training(tmp_path, monkeypatch)
    assert main(argv) == 2
    assert "No space left on device" in capsys.readouterr().err
    monkeypatch.undo()  # space freed
    assert json.loads((last / "config.json").read_text())["epoch"] == 1
    assert main(argv) == 0
    assert json.loads((last / "config.json").read_text())["epoch"] == 2


# --- real processes ----------------------------------------------------------------------------------------


def _unetkit(*args: str, env: dict[str, str] | None = None, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "unetkit", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        **kwargs,  # type: ignore[arg-type]
    )


def test_console_script_pixel_limit_from_the_environment_and_debug_traceback(tmp_path):
    data = folder(tmp_path / "data")
    args = ["train", "--data", str(data), "--out", str(tmp_path / "run")]
    result = _unetkit(*args, env={"UNETKIT_MAX_PIXELS": "1000"})
    assert result.returncode == 2
    assert _lines(result.stderr) == [
        f"unetkit train: error: {data / 'images' / 'img0.png'}: 40x40 is larger than the pixel limit 1000 "
        "(raise it with UNETKIT_MAX_PIXELS)"
    ]
    debug = _unetkit("--debug", *args, env={"UNETKIT_MAX_PIXELS": "1000"})
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "DataError" in debug.stderr
    assert not (tmp_path / "run").exists()


def test_console_script_mislabelled_image(tmp_path):
    ckpt = checkpoint(tmp_path / "ckpt")
    image = _image_case(tmp_path, "scan.tif", png_bytes(np.zeros((20, 20), np.uint8)))
    result = _unetkit("predict", str(ckpt), str(image), "--out", str(tmp_path / "pred"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert _lines(result.stderr) == [
        f"unetkit predict: error: {image}: holds PNG data but its name says TIFF; rename it to scan.png"
    ]
    assert not (tmp_path / "pred").exists() or not any((tmp_path / "pred").iterdir())


def test_console_script_a_real_write_failure_during_a_save(tmp_path):
    """The kernel refuses the write (RLIMIT_FSIZE: EFBIG, as a full disk refuses with ENOSPC) inside torch /
    safetensors serialisation: one line, status 2, `last/` still the previous epoch's and loadable."""
    run = tmp_path / "run"
    assert main(["train", *TINY_RUN, "--out", str(run)]) == 0
    before = tree(run / "last")
    weights = (run / "last" / "model.safetensors").stat().st_size

    limited = (  # files may not grow beyond half the weights; SIGXFSZ ignored, so the write fails with EFBIG
        "import os, resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({weights // 2}, resource.RLIM_INFINITY)); "
        "os.execv(sys.executable, [sys.executable, '-m', 'unetkit', *sys.argv[1:]])"
    )
    result = subprocess.run(
        [sys.executable, "-c", limited, "train", "--resume", str(run), "--epochs", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 2, result.stderr
    errors = [line for line in _lines(result.stderr) if "error" in line]
    assert "Traceback" not in result.stderr and len(errors) == 1, result.stderr
    assert re.search(rf"{run}/(best|last): cannot write \(File too large\); {run}/last still holds epoch 1", errors[0])
    assert _lines(result.stderr)[-1] == errors[0]
    assert tree(run / "last") == before
    assert not [p for p in run.iterdir() if p.name.startswith(".")]
    from unetkit import load_model

    load_model(run / "last")
