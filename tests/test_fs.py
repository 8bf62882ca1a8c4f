"""The atomic writers: a failed write leaves the target as it was and no temporary file; errors of the
machine become `WriteError` naming the target; folders are fsynced after renames; a checkpoint folder
always exists under its name or as `.NAME.old`."""

from __future__ import annotations

import errno
import os

import pytest

from unetkit import _fs
from unetkit._fs import WriteError, atomic_file, atomic_write_bytes, check_writable, preallocate, remove_stale_temps
from unetkit.models import checkpoint


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer crashed")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["out.csv"]


def test_a_full_disk_is_a_write_error_naming_the_target(tmp_path):
    target = tmp_path / "metrics.csv"
    with pytest.raises(WriteError) as caught, atomic_file(target):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert str(caught.value) == f"{target}: cannot write (No space left on device)"
    assert caught.value.errno == errno.ENOSPC and os.listdir(tmp_path) == []
    with pytest.raises(FileNotFoundError), atomic_file(target):  # not an error of the machine: unchanged
        raise FileNotFoundError(errno.ENOENT, "gone", "elsewhere")


def test_the_folder_is_fsynced_after_the_rename(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(_fs, "fsync_dir", lambda path: synced.append(path))
    atomic_write_bytes(tmp_path / "a.bin", b"x")
    assert synced == [tmp_path]


def test_check_writable_refuses_a_file_in_the_way_and_leaves_no_probe(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(WriteError, match=r"file/run: cannot write \(.*file is a file, expected a folder\)"):
        check_writable(tmp_path / "file" / "run")
    check_writable(tmp_path / "new" / "run")  # missing folders are fine: they will be created
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_preallocate_reports_a_full_disk(tmp_path, monkeypatch):
    path = tmp_path / "probs.tif"
    path.write_bytes(b"")

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full, raising=False)
    with pytest.raises(WriteError, match=r"probs\.tif: cannot write \(No space left on device\)"):
        preallocate(path, 1 << 20)


def test_remove_stale_temps_removes_only_temporaries(tmp_path):
    for name in (".last.tmpab12", ".metrics.x9.tmp.csv", ".probe.q.tmp"):
        (tmp_path / name).mkdir() if name.startswith(".last") else (tmp_path / name).write_text("x")
    for name in ("last", ".last.old", "notes.tmp", "metrics.csv"):
        (tmp_path / name).mkdir() if name in ("last", ".last.old") else (tmp_path / name).write_text("x")
    removed = {p.name for p in remove_stale_temps(tmp_path)}
    assert removed == {".last.tmpab12", ".metrics.x9.tmp.csv", ".probe.q.tmp"}
    assert sorted(os.listdir(tmp_path)) == [".last.old", "last", "metrics.csv", "notes.tmp"]


def test_replace_dir_keeps_a_copy_when_an_earlier_replace_was_cut(tmp_path, monkeypatch):
    """Killed between its two renames, a replace leaves only `.last.old`; the next replace must not
    delete it before the new folder is in place."""
    old = tmp_path / ".last.old"
    old.mkdir()
    (old / "model.safetensors").write_text("epoch 1")
    seen = []
    real = os.replace

    def replace(src, dst):  # type: ignore[no-untyped-def]
        seen.append(sorted(p.name for p in tmp_path.iterdir() if p.name in ("last", ".last.old")))
        real(src, dst)

    new = tmp_path / ".last.tmpx"
    new.mkdir()
    (new / "model.safetensors").write_text("epoch 2")
    monkeypatch.setattr(os, "replace", replace)
    checkpoint.replace_dir(new, tmp_path / "last")
    assert all(state for state in seen), seen  # at every rename, a checkpoint existed under one of its names
    assert (tmp_path / "last" / "model.safetensors").read_text() == "epoch 2"
    assert not old.exists()


# --- check_outputs: no output over an input ------------------------------------------------------------


def test_check_outputs_sees_the_same_file_through_a_hard_link_and_a_symbolic_link(tmp_path):
    from unetkit._fs import OutputOverInput, check_outputs

    (tmp_path / "gt").mkdir()
    mask = tmp_path / "gt" / "a.png"
    mask.write_bytes(b"mask")
    os.link(mask, tmp_path / "hard.png")
    (tmp_path / "soft.png").symlink_to(mask)
    for other in ("hard.png", "soft.png"):
        with pytest.raises(OutputOverInput, match=rf"`--json` .*{other} is one of the inputs \(.*gt/a\.png\)"):
            check_outputs(files={"--json": tmp_path / other}, inputs=[mask])
    assert mask.read_bytes() == b"mask"


def test_check_outputs_allows_new_files_beside_inputs_and_folders_that_hold_none(tmp_path):
    from unetkit._fs import check_outputs

    (tmp_path / "in").mkdir()
    image = tmp_path / "in" / "img.png"
    image.write_bytes(b"x")
    check_outputs(files={"--json": tmp_path / "in" / "new.json"}, inputs=[image, tmp_path / "in"])
    check_outputs(folders={"--out": tmp_path / "in" / "masks"}, inputs=[image, tmp_path / "in"])  # below, not over
    check_outputs(folders={"--out": tmp_path / "run"}, trees=[tmp_path / "data"])  # neither exists yet


def test_check_outputs_refuses_a_tree_reached_through_a_link(tmp_path):
    from unetkit._fs import OutputOverInput, check_outputs

    (tmp_path / "data").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "data", target_is_directory=True)
    with pytest.raises(OutputOverInput, match=r"`--out` .*alias/run is inside the input .*data"):
        check_outputs(folders={"--out": tmp_path / "alias" / "run"}, trees=[tmp_path / "data"])
