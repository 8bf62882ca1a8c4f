"""The page's API without a browser: the same files as `unetkit predict`, the same metrics as `unetkit evaluate`,
the same one-line refusals, bounded uploads, and requests from other sites or for other hosts refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("starlette")

from tests.serve._client import HEADERS, client, predict, upload
from unetkit.cli.main import main


def cli_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one line the command prints for bad input, without its `unetkit VERB: error: ` prefix."""
    assert main(argv) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    prefix = f"unetkit {argv[0]}: error: "
    assert line.startswith(prefix), line
    return line[len(prefix) :]


def test_outputs_are_byte_for_byte_those_of_unetkit_predict(runs_root, cells, tmp_path):
    image = cells / "images" / "cells_0050.png"
    api = client(runs_root, tmp_path / "work")
    job = predict(api, image, instances="watershed")
    assert job["status"] == "done", job["message"]
    assert job["downloads"] == {
        "mask": "cells_0050.png",
        "probs": "cells_0050_probs.tif",
        "instances": "cells_0050_instances.tif",
    }
    out = tmp_path / "cli"
    argv = ["predict", str(runs_root / "narrow"), str(image), "--out", str(out), "--probs", "--instances", "watershed"]
    assert main(argv) == 0
    for kind, name in job["downloads"].items():
        got = api.get(f"/api/jobs/{job['id']}/files/{kind}")
        assert got.status_code == 200
        assert got.headers["content-disposition"] == f'attachment; filename="{name}"'
        assert got.content == (out / name).read_bytes(), kind
    view = job["view"]
    assert (view["height"], view["width"], view["levels"], view["num_classes"]) == (96, 96, 1, 2)
    assert view["layers"] == ["image", "classes", "probs", "instances"]


def test_metrics_are_those_of_unetkit_evaluate(runs_root, cells, tmp_path):
    image, truth = cells / "images" / "cells_0051.png", cells / "masks" / "cells_0051.png"
    api = client(runs_root, tmp_path / "work")
    job = predict(api, image, truth, run="wide")
    assert job["status"] == "done", job["message"]
    mask = tmp_path / "cells_0051.png"
    mask.write_bytes(api.get(f"/api/jobs/{job['id']}/files/mask").content)
    assert main(["evaluate", str(mask), str(truth), "--json", str(tmp_path / "scores.json")]) == 0
    expected = json.loads((tmp_path / "scores.json").read_text())["images"][0]
    assert job["metrics"] == expected
    assert expected["pixels"] == 96 * 96 and 0 < expected["dice"] < 1
    assert "truth" in job["view"]["layers"]


def _bad_inputs(folder: Path) -> dict[str, Path]:
    (folder / "notes.png").write_text("not an image\n")
    Image.fromarray(np.full((40, 50, 3), 90, np.uint8)).save(folder / "colour.png")
    Image.fromarray(np.full((60, 60), 90, np.uint8)).save(folder / "big.png")
    data = (folder / "big.png").read_bytes()
    (folder / "cut.png").write_bytes(data[: len(data) // 2])
    (folder / "empty.tif").write_bytes(b"")
    return {p.stem: p for p in folder.iterdir()}


@pytest.mark.parametrize("case", ["notes", "colour", "big", "cut", "empty"])
def test_refusals_are_the_cli_lines(case, runs_root, tmp_path, capsys, monkeypatch):
    """Not an image, 3 channels for a 1-channel model, beyond the pixel limit, truncated, empty: the page's
    message is the line `unetkit predict` prints."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    path = _bad_inputs(folder)[case]
    if case == "big":
        monkeypatch.setattr("unetkit.data.io.MAX_PIXELS", 50 * 50)
    monkeypatch.chdir(folder)
    expected = cli_error(["predict", str(runs_root / "narrow"), path.name, "--out", str(tmp_path / "cli")], capsys)
    job = predict(client(runs_root, tmp_path / "work"), path)
    assert job["status"] == "error"
    assert job["message"] == expected
    assert job["message"].startswith(f"{path.name}: ") and str(tmp_path) not in job["message"]


def test_ground_truth_of_another_size_is_refused_in_one_line(runs_root, cells, tmp_path):
    truth = tmp_path / "truth.png"
    Image.fromarray(np.zeros((50, 40), np.uint8)).save(truth)
    job = predict(client(runs_root, tmp_path / "work"), cells / "images" / "cells_0050.png", truth)
    assert job["status"] == "error"
    assert job["message"] == (
        "1 prediction(s) differ in size from their ground truth: cells_0050.png (96, 96) vs truth.png (50, 40)"
    )


def test_uploads_are_bounded(runs_root, tmp_path):
    api = client(runs_root, tmp_path / "work", max_upload_bytes=1000)
    refused = api.post("/api/uploads", json={"name": "scan.tif", "size": 5 * 2**20})
    assert refused.status_code == 413
    assert refused.json()["error"] == (
        "scan.tif: 5.0 MiB is larger than the upload limit of 1000 bytes "
        "(raise it with `unetkit serve --max-upload-mb`)"
    )
    token = api.post("/api/uploads", json={"name": "a.png", "size": 10}).json()["token"]
    sent = api.put(f"/api/uploads/{token}", content=b"x" * 2000)  # more than announced and than the limit
    assert sent.status_code == 413
    assert not list((tmp_path / "work" / "uploads").rglob("a.png"))
    for name in ("../a.png", "a/b.png", "..", ".hidden.png", ""):
        bad = api.post("/api/uploads", json={"name": name, "size": 10})
        assert bad.status_code == 400, name
        assert "not a file name" in bad.json()["error"]
    incomplete = api.post("/api/uploads", json={"name": "b.png", "size": 10}).json()["token"]
    job = api.post("/api/jobs", json={"run": "narrow", "image": incomplete})
    assert job.status_code == 400 and job.json()["error"] == "b.png: the upload is incomplete"


def test_requests_from_other_sites_and_hosts_are_refused(runs_root, tmp_path):
    api = client(runs_root, tmp_path / "work")
    no_header = api.post("/api/uploads", json={"name": "a.png", "size": 1}, headers={"X-Unetkit": ""})
    assert no_header.status_code == 403
    rebound = api.get("/api/runs", headers={"Host": "evil.example:8765"})
    assert rebound.status_code == 400
    page = api.get("/")
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]


def test_runs_view_data(runs_root, tmp_path):
    api = client(runs_root, tmp_path / "work")
    runs = {run["name"]: run for run in api.get("/api/runs").json()}
    assert sorted(runs) == ["narrow", "wide"]
    assert runs["narrow"]["epochs"] == 3 and runs["narrow"]["samples"] == 3 and runs["wide"]["epochs"] == 2
    metrics = api.get("/api/runs/wide/metrics").json()
    header = (runs_root / "wide" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert metrics["columns"] == header and [row[0] for row in metrics["rows"]] == [1.0, 2.0]
    samples = api.get("/api/runs/narrow/samples").json()
    assert [s["epoch"] for s in samples] == [1, 2, 3]
    png = api.get(f"/api/runs/narrow/samples/{samples[0]['file']}")
    assert png.content == (runs_root / "narrow" / "samples" / "epoch_001.png").read_bytes()
    assert api.get("/api/runs/wide/config").text == (runs_root / "wide" / "config.yaml").read_text()
    diff = api.get("/api/diff", params={"a": "narrow", "b": "wide"}).json()
    changed = {c["key"]: (c["a"], c["b"]) for c in diff["changed"]}
    assert changed == {
        "out": (str(runs_root / "narrow"), str(runs_root / "wide")),
        "epochs": (3, 2),
        "lr": (0.01, 0.003),
    }
    assert "-lr: 0.01" in diff["lines"] and "+lr: 0.003" in diff["lines"]


def test_tiles_and_job_errors_refused_cleanly(runs_root, cells, tmp_path):
    api = client(runs_root, tmp_path / "work")
    job = predict(api, cells / "images" / "cells_0050.png")
    base = f"/api/jobs/{job['id']}/tiles"
    assert api.get(f"{base}/image/0/0/0").headers["content-type"] == "image/png"
    for bad in ("image/1/0/0", "image/0/1/0", "image/0/-1/0", "outlines/0/0/0", "errors/0/0/0", "probs/0/0/0?class=2",
                "nothing/0/0/0", "image/x/0/0"):  # fmt: skip
        assert api.get(f"{base}/{bad}").status_code == 404, bad
    assert api.get("/api/jobs/0123/tiles/image/0/0/0").status_code == 404
    assert api.get(f"/api/jobs/{job['id']}/files/instances").status_code == 404
    unknown = api.post("/api/jobs", json={"run": "nope", "image": upload(api, cells / "images" / "cells_0050.png")})
    assert unknown.status_code == 400 and unknown.json()["error"] == "`run` must be one of narrow, wide, got 'nope'"
    assert HEADERS["X-Unetkit"] == "1"


def test_a_deeply_nested_or_huge_json_body_is_a_400_not_a_500(runs_root, tmp_path):
    api = client(runs_root, tmp_path / "work")
    unclosed = api.post("/api/jobs", content=b"[" * 60_000)
    assert unclosed.status_code == 400, unclosed.text
    deep = ("[" * 20_000 + "]" * 20_000).encode()  # valid JSON, deeper than the parser's recursion limit
    response = api.post("/api/jobs", content=deep)
    assert response.status_code == 400 and "nested too deeply" in response.json()["error"]
    huge = api.post("/api/uploads", content=b'{"name": "' + b"a" * 100_000 + b'"}')
    assert huge.status_code == 400 and "more than the 65536 a JSON request may hold" in huge.json()["error"]


@pytest.mark.parametrize("shape", [(1, 1), (5, 1), (1, 7)])
def test_images_one_pixel_high_or_wide_are_predicted_as_the_cli_does(shape, runs_root, tmp_path):
    # a 1x1 PNG was refused ("one_probs.tif: of shape (1, 2, 1)"): tifffile wrote the 2x1x1 probabilities as one page
    image = tmp_path / "one.png"
    Image.fromarray(np.full(shape, 128, np.uint8)).save(image)
    api = client(runs_root, tmp_path / "work")
    job = predict(api, image)
    assert job["status"] == "done", job["message"]
    assert (job["view"]["height"], job["view"]["width"]) == shape
    out = tmp_path / "cli"
    assert main(["predict", str(runs_root / "narrow"), str(image), "--out", str(out), "--probs"]) == 0
    for kind, name in job["downloads"].items():
        assert api.get(f"/api/jobs/{job['id']}/files/{kind}").content == (out / name).read_bytes(), kind
    import tifffile

    assert tifffile.imread(out / "one_probs.tif").shape == (2, *shape)
