"""The training engine, one loop for every task (`unetkit.train.tasks`): epochs of `TrainStep`s on the task's
batches, validation, history, the monitored metric picking `best/`, early stopping, the run's reports, stops on
Ctrl-C and SIGTERM with a save, the deferred NaN check, DDP, and checkpoints with exact resume
(`unetkit.train.checkpointing`). After nnU-Net's `run_training`: tasks are hooks, the loop is written once.

Exact resume: every epoch re-seeds the global RNG (DropBlock), the task's data generator and its augmentation
(or noise) generator from `(seed, epoch)`, so a run resumed after epoch k draws exactly what an uninterrupted
run draws; model, optimiser, scheduler, scaler and EMA states come from `last/`. A stop saves `last/` mid-epoch
with the generators' states, and resume continues from that step (`unetkit.train.interrupt`).

Several processes (torchrun, `unetkit train --devices N`): each trains on its rows of every global batch in
DDP; rank 0 alone writes. The split and why it equals one process are in `train/distributed.py`.
"""

from __future__ import annotations

import gc
import logging
import math
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unetkit._device import resolve_device
from unetkit._fs import WriteError, check_writable
from unetkit.layers.sync_batchnorm import convert_sync_batchnorm
from unetkit.models import create_model
from unetkit.models.checkpoint import load_model, unwrap_model
from unetkit.models.inference import model_spatial_dims
from unetkit.train.checkpointing import (
    RunCheckpoints,
    RunLock,
    clean_run,
    kept_checkpoint,
    peek_config,
    resumed_config,
)
from unetkit.train.config import TrainConfig, parse_duration, save_config
from unetkit.train.data import steps_for_epoch
from unetkit.train.distributed import World, setup
from unetkit.train.interrupt import MidEpoch, StopFlag, TrainingInterrupted
from unetkit.train.optim import build_optimizer, build_scheduler
from unetkit.train.reporting import RunReport, progress_bar
from unetkit.train.step import EMA, TrainStep, channels_last_format, resolve_amp, resolve_compile, set_fast_backends
from unetkit.train.tasks import Forward, Task, epoch_seed, make_task

logger = logging.getLogger(__name__)

__all__ = ["Engine", "TrainResult", "TrainingDiverged", "TrainingInterrupted", "train"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    """What a finished run reports."""

    run_dir: Path
    best_epoch: int
    best_score: float
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    monitor: str = "dice"


class Engine:
    """One run: the task's data and model, the optimiser, and the loop (see the module docstring).

    Args:
        config: the run's settings, validated.
        run: the run directory (rank 0 writes it; `train()` locks it).
        progress: show a progress bar per epoch.
        world: this process's place in a DDP job (default: one process on `config.device`).
        task: the task object (default: built from `config.task`, reading the data).
    """

    def __init__(
        self,
        config: TrainConfig,
        run: Path,
        *,
        progress: bool = False,
        world: World | None = None,
        task: Task | None = None,
    ) -> None:
        self.config = config
        self.run = run
        self.progress = progress
        self.world = world or World(resolve_device(config.device))
        self.device = self.world.device
        self.rows = self.world.batch_rows(config.batch_size)  # this process's rows of every global batch
        set_fast_backends(self.device, config.deterministic)
        self.task = task or make_task(config, self.device)  # reads the data: fails before anything is written
        torch.manual_seed(config.seed)
        self.model = self._build_model()
        self.task.attach(self.model)
        self.steps = steps_for_epoch(config.steps_per_epoch, self.task.train_size, config.batch_size)
        if config.epochs * self.steps < FEW_STEPS and self.world.is_main:
            logger.warning(
                "%d training steps in all (%d epoch(s) of %d step(s) of %d patches): likely too few to learn; an epoch "
                "is %s, so give --steps-per-epoch, more --epochs, or --time-budget with the plan on to fit them",
                config.epochs * self.steps, config.epochs, self.steps, config.batch_size,
                "one pass over the training images" if not config.steps_per_epoch else "--steps-per-epoch steps",
            )  # fmt: skip
        self.budget = parse_duration(config.time_budget) if config.time_budget else None  # seconds, or no limit
        self.optimizer = build_optimizer(config, self.model, self.device)
        self.scheduler = build_scheduler(config, self.optimizer, self.steps)
        self.ema = EMA(self.model, config.ema_decay) if config.ema_decay > 0 else None
        self.step = TrainStep(
            self.model,
            self.task.loss(),
            self.optimizer,
            scheduler=self.scheduler,
            amp_dtype=resolve_amp(config.amp, self.device),
            channels_last=config.channels_last,
            compile=resolve_compile(config.compile, self.device),
            compile_mode=None if config.compile_mode == "default" else config.compile_mode,
            grad_clip=config.grad_clip,
            net=self.world.wrap(self.model),  # DDP across processes; `self.model` stays the bare model
            ema=self.ema,
        )
        self.checkpoints = RunCheckpoints(run)
        self.history: list[dict[str, Any]] = []
        self.best_score = -math.inf
        self.best_epoch = 0
        self.stale = 0
        self.start_epoch = 0
        self.stop = StopFlag()  # SIGINT / SIGTERM: save at the next step boundary
        self.mid_epoch: MidEpoch | None = None  # resumed from a stop's save: where the epoch continues

    def _build_model(self) -> nn.Module:
        config = self.config
        options = {**self.task.model_options(), **config.model_options}
        model = create_model(config.model, **options).to(self.device)
        if config.sync_batchnorm and self.world.size > 1:
            model = convert_sync_batchnorm(model, self.device)
        if config.channels_last:
            rank = 2 + model_spatial_dims(model)  # NHWC weights for 2-D models, NDHWC for 3-D ones
            model = model.to(memory_format=channels_last_format(rank))  # type: ignore[call-overload]
        if config.grad_checkpointing:
            enable = getattr(model, "set_grad_checkpointing", None)
            if not callable(enable):
                raise ValueError(
                    f"`grad_checkpointing`: model {config.model!r} does not support gradient checkpointing"
                )
            enable(True)
        return model

    @property
    def evaluated(self) -> nn.Module:
        """The weights validation, pictures and `best/` use: the moving average when kept."""
        return self.ema.module if self.ema is not None else self.model

    # --- checkpoints -------------------------------------------------------------------------------
    def _extra(self, epoch: int, metrics: dict[str, Any]) -> dict[str, Any]:
        return {**self.task.extra(), "epoch": epoch, "metrics": metrics, "train_config": self.config.to_dict()}

    def save_last(self, epoch: int, metrics: dict[str, Any], mid_epoch: MidEpoch | None = None) -> None:
        extra = self._extra(epoch, metrics) | ({"step": mid_epoch.step} if mid_epoch else {})
        state = {
            "epoch": epoch,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.step.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "history": self.history,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "stale": self.stale,
            "config": self.config.to_dict(),
            "mid_epoch": mid_epoch.to_state() if mid_epoch else None,
        }
        self.checkpoints.save_last(self.model, extra, state)

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from `last/`: its weights and the training `state` loaded (once) by `resumed_config`."""
        loaded = load_model(self.run / "last", map_location=self.device)
        unwrap_model(self.model).load_state_dict(loaded.state_dict())
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.history = state["history"]
        self.best_score, self.best_epoch, self.stale = state["best_score"], state["best_epoch"], state["stale"]
        self.start_epoch = int(state["epoch"])
        self.mid_epoch = MidEpoch.from_state(state.get("mid_epoch"))

    def _stop(self, epoch: int, mid_epoch: MidEpoch | None, bar: Any) -> None:
        """Save where the run stands (rank 0) and raise `TrainingInterrupted`; every process calls it together."""
        if bar is not None:
            bar.close()
        if mid_epoch is not None and self.world.size > 1:  # every process's loss sum and layer generators
            parts = self.world.gather(MidEpoch.own(self.step.loss_sum))
            mid_epoch.per_rank = parts if self.world.is_main else None
        if self.world.is_main and mid_epoch is not None:
            self.save_last(epoch, self.history[-1] if self.history else {}, mid_epoch)
        self.world.barrier()
        signum = self.stop.signum or signal.SIGINT
        how = "interrupted" if signum == signal.SIGINT else "terminated (SIGTERM)"
        where = f"epoch {epoch + 1} step {mid_epoch.step}/{self.steps}" if mid_epoch else f"the end of epoch {epoch}"
        raise TrainingInterrupted(
            f"{how}: saved {self.run / 'last'} at {where}; continue exactly with: unetkit train --resume {self.run}",
            signum,
        )

    # --- epochs ------------------------------------------------------------------------------------
    def train_epoch(self, epoch: int, steps: int | None = None) -> float:
        """Train epoch `epoch` (0-based): `steps` global batches (default: the run's); returns the mean loss."""
        config, steps = self.config, steps or self.steps
        torch.manual_seed(self.world.seed(epoch_seed(config.seed, epoch, 0)))  # DropBlock, per process
        gen = torch.Generator().manual_seed(epoch_seed(config.seed, epoch, 1))
        aug_gen = torch.Generator(device=self.device).manual_seed(epoch_seed(config.seed, epoch, 2))
        order = self.task.epoch_order(steps, config.batch_size, gen)
        self.model.train()
        _batchnorm_momentum(self.model, None if epoch < self.task.bn_average_epochs else BN_MOMENTUM)
        start = 0
        if self.mid_epoch is not None:  # resumed from a stop's save within this epoch: continue at its step
            start = self.mid_epoch.step
            self.step.reset(self.mid_epoch.restore(gen, aug_gen, self.device, self.world.rank, self.world.size))
            self.mid_epoch = None
        else:
            self.step.reset()
        first_index, every = self.step.steps_taken, config.log_every or steps
        alone = self.world.size == 1
        reduce = None if alone else self.world.reduce_reading
        bar = progress_bar(steps, f"epoch {epoch + 1}/{config.epochs}", self.progress)
        for step in range(start, steps):
            if alone and self.stop.requested:  # one process: stop at this step boundary
                self._stop(epoch, MidEpoch.capture(step, self.step.loss_sum, gen, aug_gen), bar)
            indices = order[step * config.batch_size : (step + 1) * config.batch_size]
            self.step(self.task.batch(indices, gen, aug_gen, self.rows))
            if bar is not None:
                bar.update(1)
            if (step + 1) % every == 0 or step == steps - 1:  # the only host read of the loss
                reading = self.step.read(reduce, reset=False)  # the epoch's running sum, in step order
                if reading.first_nonfinite is not None:
                    at = reading.first_nonfinite - first_index + start + 1
                    raise TrainingDiverged(f"epoch {epoch + 1}, step {at}")
                if bar is not None:
                    bar.set_postfix(loss=f"{reading.loss_sum / (step + 1):.4f}")
                if not alone and step + 1 < steps and self.world.agree(self.stop.requested):  # processes agree
                    self._stop(epoch, MidEpoch.capture(step + 1, self.step.loss_sum, gen, aug_gen), bar)
        if bar is not None:
            bar.close()
        return self.step.read(reduce).loss_sum / steps

    @torch.no_grad()
    def validate(self) -> tuple[dict[str, Any], Any]:
        """The task's validation of the evaluated weights: (metrics, picture)."""
        self.world.broadcast_buffers(self.model)  # validate what rank 0 saves (per-process BatchNorm statistics)
        if self.ema is not None:
            self.world.broadcast_buffers(self.ema.module)
        model = self.evaluated.eval()
        result = self.task.validate(model, Forward(self.step.autocast, self.config.channels_last), self.world)
        return result.metrics, result.picture

    def fit(self) -> TrainResult:
        """Train from `start_epoch` to `config.epochs` (or an early stop); rank 0 writes checkpoints and reports."""
        config, main, monitor = self.config, self.world.is_main, self.task.monitor
        report = RunReport(self.run, config.epochs, self.task.curve_metrics, write=main)
        stopped_early = False
        began = time.perf_counter()
        for epoch in range(self.start_epoch, config.epochs):
            start = time.perf_counter()
            train_loss = self.train_epoch(epoch)
            metrics, picture = self.validate()
            report.picture(epoch + 1, picture)
            row = {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                **metrics,
                "lr": self.optimizer.param_groups[0]["lr"],
                "seconds": time.perf_counter() - start,
            }
            self.history.append(row)
            score = -metrics["val_loss"] if monitor == "loss" and "val_loss" in metrics else metrics.get(monitor)
            if score is None or score > self.best_score:  # no validation data: the latest epoch is the best
                self.best_score = score if score is not None else self.best_score
                self.best_epoch, self.stale = epoch + 1, 0
                if main:
                    self.checkpoints.save_best(self.evaluated, self._extra(epoch + 1, row))
            else:
                self.stale += 1
            if main:
                self.save_last(epoch + 1, row)
            report.epoch(self.history)
            if config.early_stopping and self.stale >= config.early_stopping:
                report.log(f"early stopping: no improvement of {monitor} for {self.stale} epochs")
                stopped_early = True
                break
            if epoch + 1 < config.epochs and self._budget_spent(began, epoch + 1 - self.start_epoch):
                report.log(
                    f"time budget {config.time_budget} spent after epoch {epoch + 1} of {config.epochs} (the machine "
                    f"ran slower than the plan's timed trial); the best epoch so far is kept"
                )
                stopped_early = True
                break
            if self.world.size > 1 and epoch + 1 < config.epochs and self.world.agree(self.stop.requested):
                self._stop(epoch + 1, None, None)
        report.close()
        self.world.barrier()  # the others wait for rank 0's last write
        return TrainResult(self.run, self.best_epoch, self.best_score, self.history, stopped_early, monitor)

    def _budget_spent(self, began: float, epochs_done: int) -> bool:
        """Whether another epoch would end past the training share of `time_budget` (every process agrees)."""
        if self.budget is None:
            return False
        elapsed = time.perf_counter() - began
        spent = elapsed + elapsed / epochs_done > self.budget * BUDGET_TRAINING_SHARE
        return self.world.agree(spent) if self.world.size > 1 else spent


BN_MOMENTUM = 0.1  # PyTorch's default moving average of BatchNorm's running statistics
FEW_STEPS = 100  # fewer training steps than this in all: warned as likely too few to learn
BUDGET_TRAINING_SHARE = 0.9
# the share of `time_budget` the epochs may take (the plan fits them into 0.85 of it; the rest is start-up, the
# last saves and post-training work): past it, the run stops at an epoch boundary


def _batchnorm_momentum(model: nn.Module, momentum: float | None) -> None:
    """`None`: running statistics are the cumulative average of the batches (`bn_average_epochs`)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = momentum


def train(
    config: TrainConfig | None,
    *,
    resume: str | Path | None = None,
    progress: bool = False,
    given: set[str] | None = None,
) -> TrainResult:
    """Train a model as `config` says and write the run directory `config.out`.

    Ctrl-C and SIGTERM stop at the next step boundary, save `last/` and raise `TrainingInterrupted`; `resume`
    then continues from that step exactly (see `unetkit.train.interrupt`). The run directory is locked while
    training: a second process training into it fails with `RunLocked` naming the first.

    Args:
        config: the run's settings (the CLI builds the same object); `None` with `resume`: the saved ones.
        resume: a run directory to continue exactly from its `last/` checkpoint; its saved config is
            used, with `epochs` taken from `config` when larger.
        progress: show a progress bar per epoch (rank 0 only when several processes train).
        given: the settings the user gave (the CLI's flags and YAML keys), which `plan: auto` keeps;
            None: those that differ from the `TrainConfig` defaults (`unetkit.train.plan`).

    Under torchrun (`RANK`, `WORLD_SIZE` set) every process calls this and they train one model together
    with DDP (`train/distributed.py`); only rank 0 writes the run directory.

    Raises:
        ValueError / FileNotFoundError: bad config or data (the message names it).
        RunLocked: another process trains in the run directory.
        WriteError: the run directory cannot be written (disk full, read-only); `last/` keeps the
            previous checkpoint.
        TrainingDiverged: the loss became NaN; `last/` and `best/` keep the last good epoch.
        TrainingInterrupted: Ctrl-C or SIGTERM; `last/` holds the step reached.
    """
    plan = None
    if resume is not None:
        run = Path(resume)
        settings = peek_config(run)  # device and process-group settings, read without changing the run
    elif config is None:
        raise ValueError("`config` is required unless `resume` names a run directory")
    else:
        config.validate()
        from unetkit.train.plan import resolve_plan

        config, plan = resolve_plan(config, given)  # a folder's unset settings from its fingerprint (`plan: auto`)
        run, settings = Path(config.out), config
        check_writable(run)  # before the data is read: an unwritable --out fails in a second, not after loading
    previous = torch.are_deterministic_algorithms_enabled()
    threads = torch.get_num_threads()
    world = setup(resolve_device(settings.device), timeout_s=settings.dist_timeout)  # a torchrun job, or one
    engine: Engine | None = None
    try:
        with RunLock(run) if world.is_main else nullcontext():
            state = None
            if resume is not None:
                if world.is_main:
                    clean_run(run)  # under the lock: what a killed save left
                world.barrier()
                config, state = resumed_config(run, config)
            elif (run / "last").exists():
                raise FileExistsError(
                    f"{run}: already holds a run; pass --resume {run} to continue it, or choose another --out"
                )
            assert config is not None
            if config.deterministic:
                torch.use_deterministic_algorithms(True)
            if config.threads:
                torch.set_num_threads(config.threads)
            engine = Engine(config, run, progress=progress and world.is_main, world=world)
            if state is not None:
                engine.restore(state)
            if world.is_main:
                save_config(config, run / "config.yaml")
                if plan is not None:
                    plan.save(run / "plan.json")
            try:
                with engine.stop.installed():
                    result = engine.fit()
                if world.is_main:
                    engine.task.finish(run)  # e.g. segmentation's instance tuning on the best weights
                return result
            except TrainingDiverged as err:
                last = run / "last"
                history = engine.history
                kept = f"{last} (epoch {history[-1]['epoch']})" if history else "none (first epoch)"
                raise TrainingDiverged(
                    f"loss became NaN or infinite at {err}; stopped. Last good checkpoint: {kept}"
                ) from None
            except WriteError as err:  # a full disk or a folder gone read-only: the previous checkpoint is intact
                err.note = kept_checkpoint(run, err)
                raise
    finally:
        if world.owns_group:  # free the DDP wrapper and its gradient reducer before the group they use goes
            engine = None
            gc.collect()
        world.close()
        torch.use_deterministic_algorithms(previous)
        torch.set_num_threads(threads)
