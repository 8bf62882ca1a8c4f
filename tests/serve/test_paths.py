"""No file outside the served run directory is readable: `../` in every spelling a client can send (raw,
percent-encoded, double-encoded, backslashes), absolute names, and symbolic links planted in a run, checked on a
live server with raw HTTP requests (no client library normalises the paths on the way)."""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("starlette")

from unetkit.serve.paths import Refused, inside, plain_name

SECRET = "top secret: not part of any run\n"


def test_plain_names_only():
    for name in ("config.yaml", "epoch_001.png", "a b.png", "ü.png"):
        assert plain_name(name) == name
    for name in ("", ".", "..", "../x", "a/b", "a\\b", "/etc/passwd", ".hidden", "a\x00b", "x" * 256):
        with pytest.raises(Refused):
            plain_name(name)


def test_inside_follows_links_and_refuses_those_that_leave(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside.txt"
    (root / "run").mkdir(parents=True)
    (root / "run" / "ok.txt").write_text("ok")
    outside.write_text(SECRET)
    os.symlink(outside, root / "run" / "leak.txt")
    os.symlink(root / "run" / "ok.txt", root / "run" / "alias.txt")
    os.symlink(tmp_path, root / "run" / "up")
    assert inside(root, "run", "ok.txt") == (root / "run" / "ok.txt").resolve()
    assert inside(root, "run", "alias.txt") == (root / "run" / "ok.txt").resolve()  # a link within the root
    for names in (("run", "leak.txt"), ("run", "up", "outside.txt"), ("run", "missing.txt"), ("run", "..", "..")):
        with pytest.raises(Refused):
            inside(root, *names)


@pytest.fixture
def live(runs_root: Path, tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A served folder with a copy of one run, links out of it planted, on a live uvicorn server."""
    import uvicorn

    from unetkit.serve import create_app

    root = tmp_path / "served"
    shutil.copytree(runs_root / "narrow", root / "narrow")
    (tmp_path / "secret.txt").write_text(SECRET)
    elsewhere = tmp_path / "elsewhere"  # a run outside the served folder, linked into it
    shutil.copytree(runs_root / "wide", elsewhere)
    (elsewhere / "config.yaml").write_text(SECRET)
    os.symlink(tmp_path / "secret.txt", root / "narrow" / "samples" / "epoch_099.png")
    os.symlink(elsewhere, root / "linked")
    os.symlink(tmp_path / "secret.txt", root / "narrow" / "secret.txt")
    app = create_app(root, tmp_path / "work")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    yield sock.getsockname()[1], root
    server.should_exit = True
    thread.join(10)
    app.state.store.close()


def _raw_get(port: int, target: str) -> tuple[int, bytes]:
    """GET with the request target sent exactly as written."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


TRAVERSALS = [
    "/../secret.txt",
    "/static/../../secret.txt",
    "/static/..%2F..%2Fsecret.txt",
    "/static/%2e%2e/%2e%2e/secret.txt",
    "/static/%2e%2e%2f%2e%2e%2fsecret.txt",
    "/static/%252e%252e%252fsecret.txt",
    "/static/..\\..\\secret.txt",
    "/static/..%5c..%5csecret.txt",
    "/api/runs/../../secret.txt/config",
    "/api/runs/..%2F..%2Fsecret.txt/config",
    "/api/runs/%2e%2e/config",
    "/api/runs/narrow/samples/..%2F..%2F..%2Fsecret.txt",
    "/api/runs/narrow/samples/%2e%2e%2f%2e%2e%2fconfig.yaml",
    "/api/runs/narrow/samples/epoch_099.png",  # a link to a file outside
    "/api/runs/narrow/samples/%2Fetc%2Fpasswd",
    "/api/runs/linked/config",  # a link to a run outside
    "/api/runs/linked/metrics",
    "/api/diff?a=narrow&b=..",
    "/api/diff?a=narrow&b=linked",
    "/api/jobs/..%2F..%2Fsecret.txt",
    "/api/jobs/x/files/..%2F..%2F..%2Fsecret.txt",
    "//etc/passwd",
    "/static//etc/passwd",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_no_request_reads_outside_the_served_folder(live, target):
    port, _ = live
    status, body = _raw_get(port, target)
    assert status in (400, 404), (status, body[:200])
    assert b"secret" not in body and b"root:" not in body


def test_the_served_files_are_readable_and_links_inside_are_kept(live):
    port, root = live
    status, body = _raw_get(port, "/api/runs/narrow/config")
    assert status == 200 and body.decode() == (root / "narrow" / "config.yaml").read_text()
    status, body = _raw_get(port, "/api/runs/narrow/samples")
    assert status == 200 and b"epoch_001.png" in body and b"epoch_099" not in body  # the link out is not listed
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/api/runs")
    listed = conn.getresponse().read().decode()
    assert '"narrow"' in listed and "linked" not in listed
