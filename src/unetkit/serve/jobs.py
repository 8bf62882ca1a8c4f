"""The page's predictions: uploads streamed to disk within a size bound, and jobs run one at a time by one
worker thread with the functions behind `unetkit predict` (the same checkpoint loading, engine choice,
tiled predictor and output files) and `unetkit evaluate` (the same mask reading and metrics).

A job's files live in its own folder under the server's work folder, never in a run directory. Errors that
`unetkit predict` or `unetkit evaluate` report in one line are reported with the same line, the work folder's
paths replaced by the names of the uploaded files; anything else is a bug and keeps its traceback in the log.
"""

from __future__ import annotations

import logging
import queue
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unetkit._errors import USER_ERRORS, one_line
from unetkit.serve import _infer
from unetkit.serve.paths import Refused, plain_name
from unetkit.serve.view import View, build_view

__all__ = ["MAX_JOBS", "Job", "JobStore", "ServeOptions", "Upload", "UploadRefused"]

logger = logging.getLogger(__name__)

MAX_JOBS = 24  # finished jobs kept (their files deleted beyond this, oldest first)
MAX_UPLOADS = 48  # uploads not (yet) used by a job kept
CHUNK = 1 << 20
_COPY_TILE = 256  # tile side of the tiled copy of an image decoded whole (`_region_copy`)


def _size(count: int) -> str:
    """Bytes in the binary unit that keeps the number readable: `1.5 KiB`, `5.0 MiB`, `2.1 GiB`."""
    for power, unit in ((3, "GiB"), (2, "MiB"), (1, "KiB")):
        if count >= 1024**power:
            return f"{count / 1024**power:.1f} {unit}"
    return f"{count} bytes"


@dataclass
class ServeOptions:
    """How the page predicts and what it accepts.

    Attributes:
        max_upload_bytes: largest file accepted.
        device: `unetkit predict --device` (None: auto).
        engine: `unetkit predict --engine`.
        instances: the instance method the page starts with (None: off).
    """

    max_upload_bytes: int = 1 << 30
    device: str | None = None
    engine: str = "auto"
    instances: str | None = None


class UploadRefused(ValueError):
    """An upload the server does not take (too large, a name that is not a file name); `status` is the HTTP one."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Upload:
    """A file sent by the page: its name (as the user's file was called) and where it was stored."""

    token: str
    name: str
    path: Path
    size: int
    complete: bool = False
    created: float = field(default_factory=time.monotonic)


@dataclass
class Job:
    """One image to predict, with optional ground truth, and what came of it."""

    id: str
    run: str
    image: Upload
    truth: Upload | None
    tta: bool
    instances: str | None
    folder: Path
    status: str = "queued"  # queued, predicting, drawing, scoring, done, error
    done: int = 0
    total: int = 0
    message: str = ""
    view: View | None = None
    outputs: dict[str, Path] = field(default_factory=dict)
    metrics: dict[str, Any] | None = None
    seconds: float | None = None
    pixels: Path | None = None  # the tiled copy of an image decoded whole (`_region_copy`), removed after the job

    def as_dict(self) -> dict[str, Any]:
        """The job as the page polls it."""
        return {
            "id": self.id,
            "run": self.run,
            "name": self.image.name,
            "truth": self.truth.name if self.truth is not None else None,
            "tta": self.tta,
            "instances": self.instances,
            "status": self.status,
            "done": self.done,
            "total": self.total,
            "message": self.message,
            "view": self.view.as_dict() if self.view is not None and self.status == "done" else None,
            "downloads": {k: p.name for k, p in self.outputs.items()} if self.status == "done" else {},
            "metrics": self.metrics,
            "counts": [k for k, v in (self.metrics or {}).items() if isinstance(v, int) and not isinstance(v, bool)],
            "seconds": self.seconds,
        }

    def user_message(self, err: BaseException) -> str:
        """The one line `unetkit predict` / `evaluate` would print, naming the uploaded files by their names."""
        text = one_line(err)
        if self.pixels is not None:
            text = text.replace(str(self.pixels), self.image.name)
        for upload in (self.image, self.truth):
            if upload is not None:
                text = text.replace(str(upload.path), upload.name)
        return text.replace(f"{self.folder}/", "")


class JobStore:
    """Uploads and jobs of one server, in `work`, run one at a time by `work_forever`.

    Args:
        work: a folder owned by the server (created; its content is the store's).
        runs: run name -> run directory (the checkpoints a job may use).
        options: see `ServeOptions`.
        thread: run `work_forever` in a thread of its own; `serve` runs it on the main thread instead (as
            `unetkit predict` predicts: the large buffers then come from the same heap, and Ctrl-C reaches it).
    """

    def __init__(self, work: Path, runs: dict[str, Path], options: ServeOptions, *, thread: bool = True) -> None:
        self.work, self.runs, self.options = work, runs, options
        (work / "uploads").mkdir(parents=True, exist_ok=True)
        (work / "jobs").mkdir(parents=True, exist_ok=True)
        self.uploads: dict[str, Upload] = {}
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()
        self.queue: queue.Queue[Job | None] = queue.Queue()
        self.worker: threading.Thread | None = None
        if thread:
            self.worker = threading.Thread(target=self.work_forever, name="unetkit-serve-worker", daemon=True)
            self.worker.start()

    # --- uploads ----------------------------------------------------------------------------------

    def too_large(self, name: str, size: int) -> UploadRefused:
        return UploadRefused(
            f"{name}: {_size(size)} is larger than the upload limit of {_size(self.options.max_upload_bytes)} "
            "(raise it with `unetkit serve --max-upload-mb`)",
            status=413,
        )

    def new_upload(self, name: str, size: int) -> Upload:
        """Reserve an upload of `size` bytes called `name`, or refuse it."""
        try:
            plain_name(name)
        except Refused as err:
            raise UploadRefused(f"{name!r}: not a file name (expected a name like image.png)") from err
        if size < 0:
            raise UploadRefused(f"{name}: `size` must be >= 0, got {size}")
        if size > self.options.max_upload_bytes:
            raise self.too_large(name, size)
        token = uuid.uuid4().hex
        folder = self.work / "uploads" / token
        folder.mkdir()
        upload = Upload(token, name, folder / name, size)
        with self.lock:
            self.uploads[token] = upload
            stale = [u for u in self.uploads.values() if not self._claimed(u)][:-MAX_UPLOADS]
            for old in stale:
                self.uploads.pop(old.token, None)
                shutil.rmtree(old.path.parent, ignore_errors=True)
        return upload

    def _claimed(self, upload: Upload) -> bool:
        return any(job.image is upload or job.truth is upload for job in self.jobs.values())

    def upload(self, token: str) -> Upload:
        upload = self.uploads.get(token)
        if upload is None:
            raise Refused(f"upload {token!r}: no such upload")
        return upload

    # --- jobs -------------------------------------------------------------------------------------

    def submit(self, run: str, image: str, truth: str | None, tta: bool, instances: str | None) -> Job:
        """Queue a prediction of the upload `image` (with the upload `truth` as ground truth) by `run`."""
        if run not in self.runs:
            raise ValueError(f"`run` must be one of {', '.join(self.runs)}, got {run!r}")
        if instances not in (None, "auto", "components", "watershed", "distance"):
            raise ValueError(f"`instances` must be null, auto, components, watershed or distance, got {instances!r}")
        image_upload, truth_upload = self.upload(image), None if truth is None else self.upload(truth)
        for upload in (image_upload, truth_upload):
            if upload is not None and not upload.complete:
                raise ValueError(f"{upload.name}: the upload is incomplete")
        job_id = uuid.uuid4().hex
        job = Job(job_id, run, image_upload, truth_upload, bool(tta), instances, self.work / "jobs" / job_id)
        job.folder.mkdir()
        with self.lock:
            self.jobs[job_id] = job
            finished = [j for j in self.jobs.values() if j.status in ("done", "error")]
            for old in finished[:-MAX_JOBS]:
                self._drop(old)
        self.queue.put(job)
        return job

    def _drop(self, job: Job) -> None:
        self.jobs.pop(job.id, None)
        shutil.rmtree(job.folder, ignore_errors=True)
        for upload in (job.image, job.truth):
            if upload is not None and not self._claimed(upload):
                self.uploads.pop(upload.token, None)
                shutil.rmtree(upload.path.parent, ignore_errors=True)

    def job(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise Refused(f"job {job_id!r}: no such job")
        return job

    def close(self) -> None:
        """Stop the worker once the job it runs (if any) is finished."""
        self.queue.put(None)
        if self.worker is not None:
            self.worker.join(timeout=60)

    def work_forever(self) -> None:
        """Run the queued jobs one after the other, until `close`."""
        while True:
            job = self.queue.get()
            if job is None:
                return
            start = time.perf_counter()
            try:
                self._run(job)
                job.status = "done"
            except USER_ERRORS as err:
                job.status, job.message = "error", job.user_message(err)
            except Exception:  # a bug: its traceback in the server's log, a line on the page
                logger.exception("job %s (%s) failed", job.id, job.image.name)
                job.status, job.message = "error", "internal error (a bug: the traceback is in the server's log)"
            job.seconds = time.perf_counter() - start

    def _progress(self, job: Job, status: str) -> Any:
        def update(done: int, total: int) -> None:
            job.status, job.done, job.total = status, done, total

        return update

    def _run(self, job: Job) -> None:
        """Predict exactly as `unetkit predict RUN IMAGE --out DIR --probs [--instances M] [--tta]` does."""
        job.status = "predicting"
        try:
            self._predict(job)
        finally:
            if job.pixels is not None:  # the path stays known: error messages name the upload in its place
                shutil.rmtree(job.pixels.parent, ignore_errors=True)

    def _predict(self, job: Job) -> None:
        options = self.options
        _infer.trim_heap()  # what the upload and the previous job freed goes back before this prediction
        image = job.image.path
        job.pixels = _region_copy(image, job.folder / "pixels")
        if job.pixels is not None:
            image = job.pixels
            _infer.trim_heap()  # the decoded image goes back before the model comes
        pixels = _infer.image_pixels([image]) if options.engine == "auto" else 0
        loaded = _infer.prediction_model(
            self.runs[job.run], device=options.device, engine=options.engine, pixels=pixels
        )
        if loaded.task != "segmentation":
            raise ValueError(f"{self.runs[job.run]}: a {loaded.task} checkpoint; the page predicts segmentation runs")
        model = loaded.model
        predictor = _infer.Predictor(model, device=options.device, tta=job.tta)
        job.outputs = _infer.predict_file(
            predictor,
            image,
            job.folder / "out",
            probs=True,
            instances=job.instances,
            progress=self._progress(job, "predicting"),
        )
        config = predictor.config
        num_classes = int(config.get("mask", {}).get("num_classes") or 0)
        del loaded, model, predictor  # the model and its session go before the drawing
        truth = None
        if job.truth is not None:
            job.status = "scoring"
            truth, job.metrics = _score(job, job.outputs["mask"], job.truth.path)
        job.status, job.done, job.total = "drawing", 0, 0
        if num_classes < 2:  # a checkpoint without mask metadata: the probabilities say
            import tifffile

            with tifffile.TiffFile(job.outputs["probs"]) as tif:
                num_classes = int(tif.series[0].shape[0])
        job.view = build_view(
            image,
            job.outputs,
            job.folder / "view",
            num_classes=num_classes,
            label_values=config.get("mask", {}).get("label_values"),
            truth=truth,
            progress=self._progress(job, "drawing"),
        )


def _region_copy(image: Path, folder: Path) -> Path | None:
    """For an image that `unetkit predict` decodes whole (PNG, JPEG, BMP, or a TIFF layout not read by region):
    the same pixels written once as a tiled, uncompressed TIFF of the same stem in `folder`, which the
    prediction and the drawing then read band by band, so that neither holds the whole image (an 8000² grey PNG:
    64 MB less at the prediction's peak than the CLI on the PNG). The outputs are the CLI's, byte for byte: the
    same names (from the stem), formats (from the size) and pixel values. None for a file read by region
    already, and for pixel types other than 8 and 16-bit integers (predicted from the upload itself)."""
    import numpy as np
    import tifffile

    with _infer.open_source(image, None) as source:
        array = getattr(source, "array", None)  # only a source decoded whole holds one
        if array is None or array.dtype not in (np.uint8, np.uint16) or array.shape[0] not in (1, 3, 4):
            return None
        folder.mkdir()
        copy = folder / f"{image.stem}.tif"
        data = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)
        tifffile.imwrite(
            copy, data, tile=(_COPY_TILE, _COPY_TILE), photometric="minisblack" if data.ndim == 2 else "rgb",
            extrasamples=[2] if data.ndim == 3 and data.shape[-1] == 4 else None,  # 2: unassociated alpha
        )  # fmt: skip
    return copy


def _score(job: Job, mask: Path, truth: Path) -> tuple[Any, dict[str, Any]]:
    """`unetkit evaluate MASK TRUTH [--instances]` on the prediction: the ground truth as class indices, and
    the metrics (the image's row of `evaluate_dataset`)."""
    import numpy as np

    from unetkit.metrics import evaluate_dataset
    from unetkit.metrics.masks import binary_side, read_mask

    pred, target = read_mask(mask), read_mask(truth)
    if pred.shape != target.shape:
        raise ValueError(
            f"1 prediction(s) differ in size from their ground truth: {mask.name} {pred.shape} vs {truth} "
            f"{target.shape}"
        )
    sides = [pred, target]
    for i, side in enumerate(sides):
        if binary_side([side]):
            sides[i] = (side > 0).astype(np.int64)
    pred, target = sides
    result = evaluate_dataset([pred], [target], names=[mask.stem], instances=job.instances is not None)
    return target, result["images"][0]
