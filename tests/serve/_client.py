"""The page's API driven from Python (Starlette's TestClient, the app in this process), as the page drives it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from unetkit.serve import ServeOptions, create_app

HEADERS = {"X-Unetkit": "1"}


def client(root: Path, work: Path, **options: Any) -> TestClient:
    app = create_app(root, work, ServeOptions(**options))
    return TestClient(app, base_url="http://127.0.0.1:8765", headers=HEADERS)


def upload(api: TestClient, path: Path, name: str | None = None) -> str:
    data = path.read_bytes()
    reserved = api.post("/api/uploads", json={"name": name or path.name, "size": len(data)})
    assert reserved.status_code == 200, reserved.text
    token = reserved.json()["token"]
    put = api.put(f"/api/uploads/{token}", content=data)
    assert put.status_code == 200, put.text
    return str(token)


def predict(api: TestClient, image: Path, truth: Path | None = None, run: str = "narrow", **job: Any) -> dict[str, Any]:
    """Upload, submit and wait for the job; its final status."""
    body = {"run": run, "image": upload(api, image), "truth": upload(api, truth) if truth else None, **job}
    submitted = api.post("/api/jobs", json=body)
    assert submitted.status_code == 200, submitted.text
    status = submitted.json()
    deadline = time.monotonic() + 120
    while status["status"] not in ("done", "error"):
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
        status = api.get(f"/api/jobs/{status['id']}").json()
    return dict(status)
