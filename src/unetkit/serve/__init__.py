"""`unetkit serve`: a local web page over a run directory or a folder of runs (needs `unetkit[web]`).

Predict: drop or pick images (with ground truth beside them, or a folder with images/ and masks/); each is
predicted by the run's checkpoint with the tiled predictor and the output files of `unetkit predict`, drawn
over the image (mask, probabilities, instance outlines, errors against the ground truth) with zoom and pan
into large images (tiles of a pyramid kept on disk), scored as `unetkit evaluate` scores it, and downloadable.
Runs: the curves of `metrics.csv` side by side, the validation overlays across epochs, the configs and their
difference.
"""

from __future__ import annotations

import ipaddress
import logging
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from unetkit._deps import MissingDependency
from unetkit.serve.jobs import ServeOptions

__all__ = ["ServeOptions", "create_app", "serve"]

logger = logging.getLogger(__name__)
_INSTALL_HINT = "pip install 'unetkit[web]'"


def create_app(root: str | Path, work: Path, options: ServeOptions | None = None, **kwargs: Any) -> Any:
    """`unetkit.serve.app.create_app`: the Starlette application (imported on use: it needs the web extra)."""
    return _app_module().create_app(root, work, options, **kwargs)


def _app_module() -> ModuleType:
    try:
        from unetkit.serve import app
    except ImportError as err:
        raise MissingDependency(
            f"`unetkit serve` needs Starlette and uvicorn ({err.name} is missing): {_INSTALL_HINT}"
        ) from err
    return app


GRACE_SECONDS = 3  # open connections (a page left open) are given this long to finish when the server stops


def _stop(signum: int, frame: object) -> None:
    """SIGTERM stops the server as Ctrl-C does (the work folder is removed)."""
    raise KeyboardInterrupt


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    root: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    options: ServeOptions | None = None,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the page until interrupted (Ctrl-C or SIGTERM); uploads and predictions live in a temporary folder
    that is removed at the end. The web server runs in a thread; predictions run on the calling thread.

    Args:
        root: a run directory or a folder of runs.
        host: address to listen on; anything but a loopback address exposes the page (and the runs) to the
            network.
        port: port; 0 picks a free one.
        options: see `ServeOptions`.
        ready: called with the page's URL once the server listens.
    """
    app_module = _app_module()
    try:
        import uvicorn
    except ImportError as err:
        raise MissingDependency(f"`unetkit serve` needs uvicorn: {_INSTALL_HINT}") from err
    from unetkit.serve._infer import return_freed_memory

    return_freed_memory()  # the allocator setting of `unetkit predict`: band buffers are handed back when freed
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # SIGTERM is taken before the work folder exists (one sent as soon as the URL is printed stops the server as
    # Ctrl-C does), and ignored while the folder is being removed, so that a second one cannot leave it behind
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        _serve(app_module, uvicorn, root, host, port, family, options, ready)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _serve(
    app_module: Any,
    uvicorn: Any,
    root: str | Path,
    host: str,
    port: int,
    family: socket.AddressFamily,
    options: ServeOptions | None,
    ready: Callable[[str], None] | None,
) -> None:
    work = Path(tempfile.mkdtemp(prefix="unetkit-serve-"))
    try:
        hosts = ["127.0.0.1", "localhost", "[::1]", "::1"] if _loopback(host) else ["*"]
        app = app_module.create_app(root, work, options, allowed_hosts=hosts, worker_thread=False)
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            raise OSError(err.errno, f"cannot listen on {host}:{port} ({err.strerror})") from err
        sock.listen(128)
        bound = sock.getsockname()[1]
        if not _loopback(host):
            logger.warning(
                "listening on %s: anyone who can reach this machine can use the page and read the runs", host
            )
        shown = f"[{host}]" if family == socket.AF_INET6 else host
        if ready is not None:
            ready(f"http://{shown}:{bound}/")
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=GRACE_SECONDS
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="unetkit-serve-http", daemon=True)
        try:
            thread.start()
            app.state.store.work_forever()
        except KeyboardInterrupt:
            logger.info("unetkit serve: stopped")
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            server.should_exit = True
            thread.join(timeout=2 * GRACE_SECONDS)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        shutil.rmtree(work, ignore_errors=True)
