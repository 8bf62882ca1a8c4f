"""What a run writes besides checkpoints, after every epoch (rank 0 only): `metrics.csv` (one row per epoch),
`curves.png`, the validation picture `samples/epoch_NNN.png` and, at the end, `samples/progress.gif`; with the
TensorBoard extra (`pip install 'unetkit[tensorboard]'`) the same scalars and pictures as events under
`tensorboard/`. Every file is written atomically; the drawing is `unetkit.viz`'s.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from unetkit import viz
from unetkit._fs import atomic_write_bytes

__all__ = ["RunReport", "progress_bar", "write_metrics_csv"]

logger = logging.getLogger("unetkit.train")
TENSORBOARD_HINT = "pip install 'unetkit[tensorboard]'"


def write_metrics_csv(history: list[dict[str, Any]], path: Path) -> Path:
    """One row per epoch, columns in first-seen order."""
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return atomic_write_bytes(path, buffer.getvalue().encode())


def progress_bar(total: int, desc: str, enabled: bool):  # type: ignore[no-untyped-def]
    """A tqdm bar over an epoch's steps, or None."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)


def _tensorboard(run: Path) -> Any:
    """A `SummaryWriter` under `run/tensorboard`, or None (and a log line naming the extra) without TensorBoard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.info("TensorBoard events are off: the tensorboard package is not installed (%s)", TENSORBOARD_HINT)
        return None
    return SummaryWriter(str(run / "tensorboard"))


class RunReport:
    """The per-epoch files of a run directory; does nothing where `write` is False (ranks other than 0).

    Args:
        run: the run directory.
        epochs: the run's epochs (for the log line).
        curve_metrics: validation metrics drawn beside the losses.
        write: whether this process writes.
    """

    def __init__(self, run: Path, epochs: int, curve_metrics: tuple[str, ...], *, write: bool) -> None:
        self.run = run
        self.epochs = epochs
        self.curve_metrics = curve_metrics
        self.write = write
        self.writer = _tensorboard(run) if write else None

    def picture(self, epoch: int, picture: np.ndarray | None) -> None:
        """The epoch's validation picture: `samples/epoch_NNN.png` and a TensorBoard image beside the scalars."""
        if not self.write or picture is None:
            return
        viz.save_png(picture, self.run / "samples" / f"epoch_{epoch:03d}.png")
        if self.writer is not None:
            self.writer.add_image("validation/samples", picture, epoch, dataformats="HWC")

    def epoch(self, history: list[dict[str, Any]]) -> None:
        """After an epoch: metrics.csv, curves.png, TensorBoard scalars and the epoch's log line."""
        if not self.write:
            return
        row = history[-1]
        write_metrics_csv(history, self.run / "metrics.csv")
        viz.plot_curves(history, self.run / "curves.png", metrics=self.curve_metrics)
        if self.writer is not None:
            for key, value in row.items():
                if isinstance(value, float):
                    self.writer.add_scalar(key, value, row["epoch"])
            self.writer.flush()
        shown = ", ".join(f"{k} {v:.4f}" for k, v in row.items() if isinstance(v, float) and k != "seconds")
        logger.info("epoch %d/%d: %s (%.1f s)", row["epoch"], self.epochs, shown, row["seconds"])

    def log(self, message: str) -> None:
        """A line of the run log (rank 0 only)."""
        if self.write:
            logger.info("%s", message)

    def close(self) -> None:
        """The animation across epochs, and the TensorBoard writer closed."""
        if self.write:
            frames = sorted((self.run / "samples").glob("epoch_*.png"))
            viz.save_gif(frames, self.run / "samples" / "progress.gif")
        if self.writer is not None:
            self.writer.close()
            self.writer = None
