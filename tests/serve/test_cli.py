"""`unetkit serve`: bad arguments in one line with status 2, and the page served by the command itself."""

from __future__ import annotations

import http.client
import json
import socket
from urllib.parse import urlparse

import pytest

from unetkit.cli.main import main


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["serve", "{tmp}/missing"], "{tmp}/missing: no such folder; expected a run directory or a folder of runs"),
        (["serve", "{tmp}"], "{tmp}: no run here (a run directory from `unetkit train` holds config.yaml, metrics.csv"),
        (["serve", "{runs}", "--port", "70000"], "`--port` must be in [0, 65535], got 70000"),
        (["serve", "{runs}", "--max-upload-mb", "0"], "`--max-upload-mb` must be > 0, got 0.0"),
        (["serve", "{runs}", "--device", "cuda:7"], "`--device` cuda:7: this machine has 0 CUDA device(s)"),
    ],
)
def test_bad_arguments_are_one_line_errors(argv, expected, runs_root, tmp_path, capsys):
    fill = {"tmp": str(tmp_path), "runs": str(runs_root)}
    assert main([a.format(**fill) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(f"unetkit serve: error: {expected.format(**fill)}")


def test_a_port_in_use_is_one_line(runs_root, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["serve", str(runs_root), "--port", str(port)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"unetkit serve: error: cannot listen on 127.0.0.1:{port} (Address already in use)"
    )


def test_the_command_serves_the_page_on_localhost(serve_process, runs_root, tmp_path):
    temp = tmp_path / "tmp"
    temp.mkdir()
    served = serve_process(runs_root / "wide", "--instances", "--max-upload-mb", "5", env={"TMPDIR": str(temp)})
    url = urlparse(served.url)
    assert url.hostname == "127.0.0.1"
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    conn.request("GET", "/api/info")
    info = json.loads(conn.getresponse().read())
    assert info["runs"] == ["wide"] and info["instances"] == "auto" and info["max_upload_bytes"] == 5 * 2**20
    conn.request("GET", "/")
    page = conn.getresponse()
    assert page.status == 200 and b'<canvas id="view"' in page.read()
    assert [p.name[:14] for p in temp.iterdir()] == ["unetkit-serve-"]  # its work folder
    served.close()  # SIGTERM: stops as Ctrl-C does, and removes the work folder
    assert served.process.returncode == 0
    assert list(temp.iterdir()) == []


def _api(conn: http.client.HTTPConnection, method: str, path: str, body: object = None) -> dict:
    data = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
    conn.request(method, path, body=data, headers={"X-Unetkit": "1", "Content-Type": "application/json"})
    response = conn.getresponse()
    payload = response.read()
    assert response.status == 200, payload
    return dict(json.loads(payload))


def test_sigterm_during_a_prediction_stops_the_server_and_removes_the_uploads(serve_process, runs_root, tmp_path):
    # the issue: once, SIGTERM was ignored for 60 s and the uploads were left in the temporary folder
    import io

    import numpy as np
    from PIL import Image

    temp = tmp_path / "tmp"
    temp.mkdir()
    served = serve_process(runs_root / "narrow", env={"TMPDIR": str(temp)})
    url = urlparse(served.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    y, x = np.mgrid[0:3000, 0:3000]
    buffer = io.BytesIO()
    Image.fromarray(((np.sin(x / 40.0) * np.cos(y / 30.0) + 1) * 127).astype(np.uint8)).save(buffer, "PNG")
    data = buffer.getvalue()
    token = _api(conn, "POST", "/api/uploads", {"name": "big.png", "size": len(data)})["token"]
    _api(conn, "PUT", f"/api/uploads/{token}", data)
    job = _api(conn, "POST", "/api/jobs", {"run": "narrow", "image": token})
    while job["status"] == "queued":  # an event: the prediction has started
        job = _api(conn, "GET", f"/api/jobs/{job['id']}")
    conn.close()
    assert any(temp.rglob("*")), "the upload is kept while the job runs"
    served.process.terminate()
    assert served.process.wait(timeout=120) == 0, "".join(served.output)
    assert list(temp.iterdir()) == [], "the work folder (uploads, predictions) is removed"
