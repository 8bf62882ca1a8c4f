"""Peak memory of the page (`unetkit serve`) against `unetkit predict` on one large image (8000 x 8000 by default).

    python benchmarks/serve_memory.py [--run RUN] [--size 8000] [--engine auto]

Both run in their own process on the same image, with the same checkpoint, engine and outputs (the mask and
`--probs`, which the page always writes for its probability map; the ONNX export, where the engine is ONNX
Runtime, is made beforehand, so that neither pays for it). The CLI's peak resident set is its `ru_maxrss`; the
server's is the `VmHWM` of its process after the page's whole round: the upload (streamed to disk), the
prediction, the view's pyramids, the tiles the page fetches at the first view and after zooming in, and the
download of the mask, which must equal the CLI's byte for byte. The server's resident set is also sampled
while it works, by stage. Without `--run`, a small `unet` is trained first on `synthetic:cells`.
Writes benchmarks/results/serve-memory-<device>.json and .md.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch

from unetkit.bench._measure import machine, proc_kib, versions

MIB = 2**20


def _image(path: Path, size: int) -> None:
    """A cells-like grey picture: bright blobs on a dark, noisy background (written once)."""
    if path.exists():
        return
    from PIL import Image
    from scipy import ndimage

    rng = np.random.default_rng(0)
    coarse = ndimage.gaussian_filter(rng.random((size // 16 + 1, size // 16 + 1)), 1.5)
    blobs = np.kron(coarse > np.quantile(coarse, 0.7), np.ones((16, 16), np.uint8))[:size, :size]
    pixels = blobs * 150 + 40 + rng.integers(0, 40, (size, size), dtype=np.uint8)
    Image.fromarray(pixels.astype(np.uint8)).save(path)


def _train(run: Path) -> None:
    from unetkit.train import TrainConfig, train

    if not (run / "best").is_dir():
        train(TrainConfig(data="synthetic:cells", model="unet", model_options={"base_channels": 8, "depth": 2},
                          epochs=2, steps_per_epoch=8, patch_size=64, synthetic_size=64, out=str(run)))  # fmt: skip


def _sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def run_cli(run: Path, image: Path, out: Path, engine: str, env: dict[str, str]) -> dict[str, Any]:
    argv = [sys.executable, "-m", "unetkit", "predict", str(run), str(image), "--out", str(out), "--probs"]
    start = time.perf_counter()
    process = subprocess.Popen([*argv, "--engine", engine], env=env, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise RuntimeError(f"unetkit predict exited with {status}")
    return {"peak_mib": usage.ru_maxrss * 1024 / MIB, "seconds": time.perf_counter() - start}


class _Sampler(threading.Thread):
    """The server's resident set every 0.1 s, by the job's stage."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.stage, self.peaks, self.stop = pid, "idle", {}, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                rss = proc_kib("VmRSS", f"/proc/{self.pid}/status") / MIB
            except OSError:
                return
            self.peaks[self.stage] = max(self.peaks.get(self.stage, 0.0), rss)
            time.sleep(0.1)


def _request(conn: http.client.HTTPConnection, method: str, url: str, body: Any = None) -> Any:
    headers = {"X-Unetkit": "1"}
    if isinstance(body, dict):
        body, headers["Content-Type"] = json.dumps(body), "application/json"
    conn.request(method, url, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError(f"{method} {url}: {response.status} {data[:300]!r}")
    return json.loads(data) if response.getheader("content-type", "").startswith("application/json") else data


def run_server(run: Path, image: Path, engine: str, env: dict[str, str], download: Path) -> dict[str, Any]:
    argv = [sys.executable, "-m", "unetkit", "serve", str(run), "--port", "0", "--engine", engine]
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        url = urlparse(process.stdout.readline().split(" at ", 1)[1].split()[0])
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=600)
        _request(conn, "GET", "/api/info")
        sampler = _Sampler(process.pid)
        sampler.start()
        time.sleep(1)
        idle = proc_kib("VmRSS", f"/proc/{process.pid}/status") / MIB
        start = time.perf_counter()
        sampler.stage = "upload"
        reserved = _request(conn, "POST", "/api/uploads", {"name": image.name, "size": image.stat().st_size})
        with open(image, "rb") as handle:
            _request(conn, "PUT", f"/api/uploads/{reserved['token']}", handle)
        job = _request(conn, "POST", "/api/jobs", {"run": run.name, "image": reserved["token"]})
        while job["status"] not in ("done", "error"):
            sampler.stage = job["status"]
            time.sleep(0.2)
            job = _request(conn, "GET", f"/api/jobs/{job['id']}")
        if job["status"] == "error":
            raise RuntimeError(job["message"])
        seconds = time.perf_counter() - start
        sampler.stage = "tiles"
        view, base = job["view"], f"/api/jobs/{job['id']}/tiles"
        top = view["levels"] - 1
        side = -(-max(view["height"], view["width"]) // 2**top // view["tile"])
        tiles = [
            f"{layer}/{top}/{ty}/{tx}"
            for layer in ("image", "mask", "probs")
            for ty in range(side)
            for tx in range(side)
        ]
        rows, cols = -(-view["height"] // view["tile"]), -(-view["width"] // view["tile"])
        zoomed = [(ty, tx) for ty in range(rows // 2 - 2, rows // 2 + 2) for tx in range(cols // 2 - 2, cols // 2 + 3)]
        tiles += [
            f"{layer}/0/{ty}/{tx}"
            for layer in ("image", "mask")
            for ty, tx in zoomed
            if 0 <= ty < rows and 0 <= tx < cols
        ]
        for tile in tiles:
            _request(conn, "GET", f"{base}/{tile}")
        sampler.stage = "download"
        conn.request("GET", f"/api/jobs/{job['id']}/files/mask")
        response = conn.getresponse()
        with open(download, "wb") as handle:
            while block := response.read(MIB):
                handle.write(block)
        time.sleep(0.5)
        sampler.stop.set()
        peak = proc_kib("VmHWM", f"/proc/{process.pid}/status") / MIB
        return {"peak_mib": peak, "idle_mib": idle, "seconds": seconds, "tiles": len(tiles), "stages": sampler.peaks,
                "levels": view["levels"]}  # fmt: skip
    finally:
        process.terminate()
        process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None, help="run directory (default: train a small unet)")
    parser.add_argument("--size", type=int, default=8000, help="image side")
    parser.add_argument("--engine", default="auto", choices=("auto", "torch", "onnxruntime"))
    parser.add_argument("--work", type=Path, default=None, help="folder for the image and outputs (default: temporary)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="serve-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    run = args.run or work / "run"
    _train(run)
    image = work / f"image_{args.size}.png"
    _image(image, args.size)
    env = {**os.environ, "UNETKIT_CACHE": str(work / "cache")}
    os.environ["UNETKIT_CACHE"] = env["UNETKIT_CACHE"]
    from unetkit.infer.engine import choose_engine, image_pixels
    from unetkit.models.checkpoint import resolve_checkpoint

    engine = choose_engine(args.engine, torch.device("cpu"), resolve_checkpoint(run), image_pixels([image]))
    if engine == "onnxruntime":  # export once, before either is measured
        from unetkit.export import cached_onnx

        cached_onnx(run)
    load = [round(v, 2) for v in os.getloadavg()]
    cli = run_cli(run, image, work / "cli", args.engine, env)
    server = run_server(run, image, args.engine, env, work / "page_mask.png")
    same = _sha(work / "cli" / f"{image.stem}.png") == _sha(work / "page_mask.png")
    device = machine(torch.device("cpu"))
    result = {
        "command": " ".join(["python", "benchmarks/serve_memory.py", *sys.argv[1:]]),
        "device": device,
        "versions": versions(),
        "load_average_at_start": load,
        "image": {"side": args.size, "file_mib": image.stat().st_size / MIB, "format": "PNG, 8-bit grey"},
        "run": str(run),
        "engine": engine,
        "cli": cli,
        "server": server,
        "mask_equal": same,
        "server_le_cli": server["peak_mib"] <= cli["peak_mib"],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"serve-memory-{device['type']}"
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    stages = ", ".join(f"{k} {v:.0f}" for k, v in server["stages"].items())
    lines = [
        f"# Page vs CLI: peak memory on one {args.size} x {args.size} image, {device['name']}",
        "",
        f"`{result['command']}` (engine {engine}; load average at the start {load}, a machine shared with other jobs)",
        "",
        "| | peak RSS (MiB) | seconds |",
        "|---|---|---|",
        f"| `unetkit predict RUN IMAGE --out DIR --probs` | {cli['peak_mib']:.0f} | {cli['seconds']:.1f} |",
        f"| `unetkit serve RUN`: upload, predict, pyramids, {server['tiles']} tiles, mask download "
        f"| {server['peak_mib']:.0f} (idle {server['idle_mib']:.0f}) | {server['seconds']:.1f} |",
        "",
        f"Server resident set by stage (MiB, sampled every 0.1 s): {stages}. The view has {server['levels']} levels. "
        f"The mask downloaded from the page {'equals' if same else 'DIFFERS from'} the CLI's byte for byte; "
        f"server peak {'<=' if result['server_le_cli'] else '>'} CLI peak.",
    ]
    (args.out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
