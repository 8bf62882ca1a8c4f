"""`unetkit serve RUN_OR_RUNS_DIR`: the local page (predict, compare with ground truth, look at runs)."""

from __future__ import annotations

import argparse

from unetkit.cli._common import check_device, instances_flag

__all__ = ["add_parser"]


def _run(args: argparse.Namespace) -> int:
    from unetkit.serve import ServeOptions, serve

    if not 0 <= args.port <= 65535:
        raise ValueError(f"`--port` must be in [0, 65535], got {args.port}")
    if args.max_upload_mb <= 0:
        raise ValueError(f"`--max-upload-mb` must be > 0, got {args.max_upload_mb}")
    device = None if args.device == "auto" else check_device(args.device)
    options = ServeOptions(
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        device=device,
        engine=args.engine,
        instances=args.instances,
    )

    def ready(url: str) -> None:
        print(f"unetkit serve: {args.root} at {url} (Ctrl-C stops)", flush=True)

    serve(args.root, host=args.host, port=args.port, options=options, ready=ready)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "serve",
        help="the local page: predict, compare with ground truth, look at runs",
        description="A local web page over a run directory (or a folder of runs): drop images to predict them "
        "with the run's checkpoint (the tiled predictor of `unetkit predict`), see the mask, probabilities and "
        "instances over the image, zoom into large images, download the outputs; with ground truth, the metrics "
        "of `unetkit evaluate` and an error overlay; and the runs' curves, validation overlays and configs.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("root", metavar="RUN_OR_RUNS_DIR", help="a run directory, or a folder of run directories")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (others than localhost expose it)")
    parser.add_argument("--port", type=int, default=8765, help="port (0: a free one)")
    parser.add_argument("--max-upload-mb", type=float, default=1024, help="largest file accepted, in MiB")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (as unetkit predict)")
    parser.add_argument(
        "--engine", default="auto", choices=("auto", "torch", "onnxruntime"), help="as `unetkit predict --engine`"
    )
    instances_flag(parser, "also find objects and draw their outlines (the page can switch it per image)")
    parser.set_defaults(func=_run)
