"""The page's web application (Starlette): the page itself, uploads, predictions, tiles, downloads and the
runs view's data.

Only names the server listed itself lead to files: a run is looked up among the served runs, a sample among
the run's samples, a job's file among its outputs (`unetkit.serve.paths`); anything else is answered 404.
Requests that change something (an upload, a job) must carry the header `X-Unetkit: 1`, which a page of
another site cannot send without the server's consent (a CORS preflight it never gives), and the Host header
must name the address served (no DNS rebinding).
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from unetkit._errors import USER_ERRORS, one_line
from unetkit.serve.jobs import JobStore, ServeOptions, UploadRefused
from unetkit.serve.paths import Refused
from unetkit.serve.render import class_colours, render_tile
from unetkit.serve.runs import RunIndex, config_diff

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

STATIC = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "viewer.js": "text/javascript",
    "runs.js": "text/javascript",
    "app.css": "text/css",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
CSRF_HEADER = "x-unetkit"


def _error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=SECURITY_HEADERS)


def _json(value: Any) -> JSONResponse:
    return JSONResponse(value, headers=SECURITY_HEADERS)


MAX_JSON_BYTES = 64 * 1024  # a request's JSON body: a few names and flags


async def _body(request: Request) -> Any:
    """The request's JSON body; a body too long, not JSON, or nested too deeply for the parser is a 400."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():  # read no further than the limit: a huge body is not held in memory
        size += len(chunk)
        if size > MAX_JSON_BYTES:
            raise ValueError(f"request body too long: more than the {MAX_JSON_BYTES} a JSON request may hold")
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("request body nested too deeply; expected a flat JSON object") from None


def _int(request: Request, key: str) -> int:
    try:
        return int(request.path_params[key])
    except (KeyError, ValueError) as err:
        raise Refused(f"{key}: not an integer") from err


class _CsrfGuard:
    """ASGI middleware: a request other than GET / HEAD without `X-Unetkit: 1` is refused (403)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] not in ("GET", "HEAD"):
            headers = dict(scope.get("headers") or [])
            if headers.get(CSRF_HEADER.encode()) != b"1":
                response = _error(f"requests that change something must carry the header {CSRF_HEADER}: 1", 403)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(
    root: str | Path,
    work: Path,
    options: ServeOptions | None = None,
    *,
    allowed_hosts: list[str] | None = None,
    worker_thread: bool = True,
) -> Starlette:
    """The page over the run directory (or folder of runs) `root`, keeping its uploads and jobs in `work`.

    Args:
        root: a run directory or a folder of runs.
        work: a folder owned by the server (uploads, predictions, pyramids).
        options: see `ServeOptions`.
        allowed_hosts: Host header values accepted (default: localhost and 127.0.0.1; `["*"]` for any).
        worker_thread: run the predictions in a thread of their own (else the caller runs
            `app.state.store.work_forever()`).
    """
    options = options or ServeOptions()
    index = RunIndex(Path(root))
    store = JobStore(work, {name: index.folder(name) for name in index.names}, options, thread=worker_thread)

    def static(request: Request) -> Response:
        name = request.path_params.get("name", "index.html")
        if name not in STATIC:
            raise Refused(f"{name!r}: no such page file")
        data = resources.files("unetkit.serve").joinpath("static", name).read_bytes()
        return Response(data, media_type=STATIC[name], headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})

    def info(request: Request) -> Response:
        return _json(
            {
                "root": str(index.root),
                "runs": index.names,
                "max_upload_bytes": options.max_upload_bytes,
                "instances": options.instances,
                "engine": options.engine,
            }
        )

    def runs(request: Request) -> Response:
        return _json([index.summary(name) for name in index.names])

    def run_metrics(request: Request) -> Response:
        return _json(index.metrics(request.path_params["run"]))

    def run_samples(request: Request) -> Response:
        return _json(index.samples(request.path_params["run"]))

    def run_sample(request: Request) -> Response:
        run, file = request.path_params["run"], request.path_params["file"]
        if file not in {s["file"] for s in index.samples(run)}:
            raise Refused(f"{file!r}: no such sample in run {run!r}")
        return FileResponse(index.file(run, "samples", file), media_type="image/png", headers=SECURITY_HEADERS)

    def run_config(request: Request) -> Response:
        return PlainTextResponse(index.config_text(request.path_params["run"]), headers=SECURITY_HEADERS)

    def diff(request: Request) -> Response:
        a, b = request.query_params.get("a", ""), request.query_params.get("b", "")
        for name in (a, b):
            index.folder(name)
        return _json(config_diff(index.config_text(a), index.config_text(b), a, b))

    async def new_upload(request: Request) -> Response:
        body = await _body(request)
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object {name, size}")
        size = body.get("size")
        if not isinstance(size, int) or isinstance(size, bool):
            raise ValueError(f"`size` must be an integer, got {size!r}")
        upload = store.new_upload(str(body.get("name", "")), size)
        return _json({"token": upload.token, "name": upload.name})

    async def put_upload(request: Request) -> Response:
        upload = store.upload(request.path_params["token"])
        if upload.complete:
            raise UploadRefused(f"{upload.name}: already uploaded", status=409)
        received = 0
        try:
            with open(upload.path, "wb") as handle:
                async for chunk in request.stream():
                    received += len(chunk)
                    if received > upload.size:  # more than announced (and so maybe more than the limit)
                        raise (
                            store.too_large(upload.name, received)
                            if received > options.max_upload_bytes
                            else (UploadRefused(f"{upload.name}: more than the {upload.size} bytes announced"))
                        )
                    handle.write(chunk)
        except BaseException:
            upload.path.unlink(missing_ok=True)
            raise
        if received != upload.size:
            upload.path.unlink(missing_ok=True)
            raise UploadRefused(f"{upload.name}: {received} bytes received, {upload.size} announced")
        upload.complete = True
        return _json({"token": upload.token, "name": upload.name, "size": received})

    async def submit(request: Request) -> Response:
        body = await _body(request)
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object {run, image, truth, tta, instances}")
        job = store.submit(
            str(body.get("run", "")),
            str(body.get("image", "")),
            None if body.get("truth") is None else str(body["truth"]),
            bool(body.get("tta", False)),
            body.get("instances"),
        )
        return _json(job.as_dict())

    def job_status(request: Request) -> Response:
        job = store.job(request.path_params["job"])
        payload = job.as_dict()
        if job.view is not None and payload["view"] is not None:
            payload["view"]["colours"] = class_colours(job.view.num_classes).tolist()
        return _json(payload)

    def tile(request: Request) -> Response:
        job = store.job(request.path_params["job"])
        if job.view is None or job.status != "done":
            raise Refused(f"job {job.id}: no view yet")
        channel = request.query_params.get("class", "1")
        png = render_tile(
            job.view, request.path_params["layer"], _int(request, "level"), _int(request, "ty"), _int(request, "tx"),
            int(channel) if channel.isdigit() else 0,
        )  # fmt: skip
        return Response(
            png, media_type="image/png", headers={**SECURITY_HEADERS, "Cache-Control": "private, max-age=3600"}
        )

    def download(request: Request) -> Response:
        job = store.job(request.path_params["job"])
        kind = request.path_params["kind"]
        if job.status != "done" or kind not in job.outputs:
            raise Refused(f"{kind!r}: no such output of job {job.id}")
        path = job.outputs[kind]
        return FileResponse(path, filename=path.name, headers=SECURITY_HEADERS)

    routes = [
        Route("/", static),
        Route("/static/{name}", static),
        Route("/api/info", info),
        Route("/api/runs", runs),
        Route("/api/runs/{run}/metrics", run_metrics),
        Route("/api/runs/{run}/samples", run_samples),
        Route("/api/runs/{run}/samples/{file}", run_sample),
        Route("/api/runs/{run}/config", run_config),
        Route("/api/diff", diff),
        Route("/api/uploads", new_upload, methods=["POST"]),
        Route("/api/uploads/{token}", put_upload, methods=["PUT"]),
        Route("/api/jobs", submit, methods=["POST"]),
        Route("/api/jobs/{job}", job_status),
        Route("/api/jobs/{job}/tiles/{layer}/{level}/{ty}/{tx}", tile),
        Route("/api/jobs/{job}/files/{kind}", download),
    ]

    async def refused(request: Request, exc: Exception) -> Response:
        return _error("not found", 404)

    async def bad_request(request: Request, exc: Exception) -> Response:
        if isinstance(exc, UploadRefused):
            return _error(str(exc), exc.status)
        return _error(one_line(exc), 400)

    hosts = allowed_hosts or ["127.0.0.1", "localhost", "[::1]", "::1"]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(TrustedHostMiddleware, allowed_hosts=hosts),
            Middleware(_CsrfGuard),
        ],
        exception_handlers={Refused: refused, **{err: bad_request for err in USER_ERRORS}},
    )
    app.state.store = store
    app.state.index = index
    return app
