"""The training loop: patches -> batch augmentation on the training device -> loss -> optimiser, with
validation, best/last checkpoints, exact resume, early stopping and the run directory's reports.

Exact resume: every epoch re-seeds the global RNG (DropBlock), the patch generator and the
augmentation generator from `(seed, epoch)`, so a run resumed after epoch k draws exactly what an
uninterrupted run draws; model, optimiser, scheduler and scaler states come from `last/`. Ctrl-C saves
`last/` mid-epoch with the generators' states, and resume continues from that step (`interrupt.py`).

Several processes (torchrun, `unetkit train --devices N`): each trains on its rows of every global batch in
DDP; rank 0 alone writes. The split and why it equals one process are in `train/distributed.py`.
"""

from __future__ import annotations

import gc
import io
import logging
import math
import os
import shutil
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unetkit._fs import WriteError, atomic_write_bytes, check_writable, write_error
from unetkit.data.augment import AugmentConfig, augment_batch
from unetkit.layers.sync_batchnorm import convert_sync_batchnorm
from unetkit.losses import SegmentationLoss, compute_pos_weight
from unetkit.metrics import PixelMeter
from unetkit.models import create_model
from unetkit.models.checkpoint import load_model, replace_dir, save_model, unwrap_model
from unetkit.models.inference import context_margin, forward_whole
from unetkit.train import report
from unetkit.train.config import TrainConfig, save_config
from unetkit.train.data import PatchSampler, check_fit, prepare_data, steps_for_epoch, to_tensors
from unetkit.train.distributed import World, setup
from unetkit.train.interrupt import MidEpoch, StopFlag, TrainingInterrupted
from unetkit.train.resume import STATE, kept_checkpoint, load_state, resumed_config
from unetkit.train.step import TrainStep, resolve_amp, resolve_compile, set_fast_backends

__all__ = ["TrainResult", "TrainingDiverged", "TrainingInterrupted", "train"]

logger = logging.getLogger(__name__)
# losses that train one sigmoid channel on binary masks; `auto` trains two softmax channels with CE, which
# learned in one epoch where a sigmoid head sat at "everything foreground" (README, "BCE")
BCE_FAMILY = ("bce", "dice", "dice_bce")


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


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"`device` {name!r} asked for, but CUDA is not available here")
    return device


def _epoch_seed(seed: int, epoch: int, stream: int) -> int:
    return (seed * 1_000_003 + epoch * 101 + stream) % (2**63 - 1)


def _lr_lambda(config: TrainConfig, steps_per_epoch: int):  # type: ignore[no-untyped-def]
    total = config.epochs * steps_per_epoch
    warmup = round(config.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        if config.scheduler == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if config.scheduler == "poly":
            return (1.0 - progress) ** 0.9  # nnU-Net's polynomial decay
        return 1.0

    return factor


def _optimizer(config: TrainConfig, model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    fused = True if device.type == "cuda" else None
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)
    return torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, nesterov=True
    )


def _out_key(name: str) -> str:
    with torch.device("meta"):
        config: dict[str, Any] = create_model(name).model_config  # type: ignore[assignment]
        return "num_classes" if "num_classes" in config else "out_channels"


def _predict(logits: torch.Tensor) -> torch.Tensor:
    return (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(dim=1)


def _atomic_torch_save(obj: Any, path: Path) -> None:
    buffer = io.BytesIO()  # serialised in memory: torch's own file writer reports a full disk as RuntimeError
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


class _Trainer:
    def __init__(self, config: TrainConfig, run: Path, progress: bool, world: World | None = None) -> None:
        self.config = config
        self.run = run
        self.progress = progress
        self.world = world or World(_device(config.device))  # several processes: see train/distributed.py
        self.rows = self.world.batch_rows(config.batch_size)  # this process's rows of every global batch
        self.device = self.world.device
        self.amp_dtype = resolve_amp(config.amp, self.device)
        set_fast_backends(self.device, config.deterministic)
        prepared = prepare_data(
            config.data,
            mask_mode=config.mask_mode,
            val_fraction=config.val_fraction,
            seed=config.seed,
            synthetic_train=config.synthetic_train,
            synthetic_val=config.synthetic_val,
            synthetic_size=config.synthetic_size,
            separate_touching=config.separate_touching,
            ignore_index=config.ignore_index,
            normalize=config.normalize,
        )
        self.prepared = prepared
        binary = prepared.mask.num_classes == 2
        out_channels = config.out_channels or (1 if binary and config.loss in BCE_FAMILY else prepared.mask.num_classes)
        wmap = {"w0": config.w0, "sigma": config.sigma} if config.weight_map else None
        self.train_set = to_tensors(prepared.train, prepared.normalization, self.device, weight_map=wmap)
        self.val_set = to_tensors(prepared.val, prepared.normalization, self.device)
        check_fit(config, prepared, out_channels, _out_key(config.model))
        torch.manual_seed(config.seed)
        options = {"in_channels": prepared.in_channels, _out_key(config.model): out_channels, **config.model_options}
        self.model = create_model(config.model, **options).to(self.device)
        if config.sync_batchnorm and self.world.size > 1:
            self.model = convert_sync_batchnorm(self.model, self.device)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.out_channels = out_channels
        patch = config.patch_size
        margin = context_margin(self.model)
        if patch and margin:  # unpadded model: `patch_size` is the output tile; the input adds the context
            patch = int(self.model.valid_input_size(patch + 2 * margin))  # type: ignore[operator]
        elif patch:
            patch = int(self.model.valid_input_size(patch))  # type: ignore[operator]
        elif margin:
            raise ValueError("`patch_size` 0 (whole images) does not fit an unpadded model; give a patch size")
        self.sampler = PatchSampler(self.train_set, patch, margin, config.foreground_oversample)
        if config.head_init == "prior":  # start at the class prior, not a random constant (train/head_init.py)
            from unetkit.train.head_init import class_priors, init_head_to_prior

            probe = torch.Generator().manual_seed(_epoch_seed(config.seed, -1, 3))
            order = self.sampler.epoch_order(1, config.batch_size, probe)
            images = self.sampler.batch(order, probe)["image"]
            if config.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            classes = max(prepared.mask.num_classes, 2)
            priors = class_priors(self.train_set.targets, self.train_set.valid, classes)
            init_head_to_prior(self.model, images, priors, out_channels)
        self.steps = steps_for_epoch(config.steps_per_epoch, len(self.train_set), config.batch_size)
        pos_weight = config.pos_weight
        if pos_weight == "auto":
            pos_weight = compute_pos_weight(prepared.train.targets, prepared.train.fov)
        class_weights: list[float] | None = None
        if config.class_weights == "balanced":
            import numpy as np

            from unetkit.data.weightmap import class_balance_weights

            flat = np.concatenate([t.ravel() for t in prepared.train.targets])
            class_weights = class_balance_weights(flat, prepared.mask.num_classes).tolist()
        elif isinstance(config.class_weights, list):
            class_weights = [float(w) for w in config.class_weights]
        loss_name = "weighted_ce" if config.weight_map and config.loss == "auto" else config.loss
        self.loss_fn = SegmentationLoss(
            loss_name,
            out_channels,
            pos_weight=float(pos_weight) if pos_weight is not None else None,
            class_weights=class_weights,
        ).to(self.device)
        self.augment = (
            None
            if config.augment.get("enabled", True) is False
            else AugmentConfig(**{k: v for k, v in config.augment.items() if k != "enabled"})
        )
        self.optimizer = _optimizer(config, self.model, self.device)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_lambda(config, self.steps))
        self.step = TrainStep(
            self.model,
            self.loss_fn,
            self.optimizer,
            scheduler=self.scheduler,
            amp_dtype=self.amp_dtype,
            channels_last=config.channels_last,
            compile=resolve_compile(config.compile, self.device),
            compile_mode=None if config.compile_mode == "default" else config.compile_mode,
            grad_clip=config.grad_clip,
            net=self.world.wrap(self.model),  # DDP across processes; `self.model` stays the bare model
        )
        self.history: list[dict[str, Any]] = []
        self.best_score = -math.inf
        self.best_epoch = 0
        self.stale = 0
        self.start_epoch = 0
        self.stop = StopFlag()  # Ctrl-C: save at the next step boundary
        self.mid_epoch: MidEpoch | None = None  # resumed from a Ctrl-C save: where the epoch continues

    # --- checkpoints -------------------------------------------------------------------------------
    def _extra(self, epoch: int, metrics: dict[str, Any]) -> dict[str, Any]:
        mask = self.prepared.mask
        return {
            "task": "segmentation",
            "preprocess": self.prepared.normalization.to_dict(),
            "mask": {
                "mode": mask.mode,
                "num_classes": mask.num_classes,
                "label_values": mask.label_values,
                "ignore_index": mask.ignore_index,
            },
            "output": "sigmoid" if self.out_channels == 1 else "softmax",
            "epoch": epoch,
            "metrics": metrics,
            "train_config": self.config.to_dict(),
        }

    def save_last(self, epoch: int, metrics: dict[str, Any], mid_epoch: MidEpoch | None = None) -> None:
        try:
            tmp = Path(tempfile.mkdtemp(prefix=".last.tmp", dir=self.run))
        except OSError as err:
            raise write_error(err, self.run / "last") from err
        try:
            extra = self._extra(epoch, metrics) | ({"step": mid_epoch.step} if mid_epoch else {})
            save_model(self.model, tmp / "ckpt", extra=extra)
            for item in (tmp / "ckpt").iterdir():
                os.replace(item, tmp / item.name)
            (tmp / "ckpt").rmdir()
            state = {
                "epoch": epoch,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.step.state_dict(),
                "history": self.history,
                "best_score": self.best_score,
                "best_epoch": self.best_epoch,
                "stale": self.stale,
                "config": self.config.to_dict(),
                "mid_epoch": mid_epoch.to_state() if mid_epoch else None,
            }
            _atomic_torch_save(state, tmp / STATE)
            replace_dir(tmp, self.run / "last")
        except OSError as err:
            shutil.rmtree(tmp, ignore_errors=True)
            raise write_error(err, self.run / "last") from err
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def restore(self, run: Path) -> None:
        state_file = run / "last" / STATE
        if not state_file.is_file():
            raise FileNotFoundError(f"{state_file}: no training state to resume from")
        state = load_state(state_file, self.device)
        loaded = load_model(run / "last", map_location=self.device)
        unwrap_model(self.model).load_state_dict(loaded.state_dict())
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step.load_state_dict(state["scaler"])
        self.history = state["history"]
        self.best_score, self.best_epoch, self.stale = state["best_score"], state["best_epoch"], state["stale"]
        self.start_epoch = int(state["epoch"])
        self.mid_epoch = MidEpoch.from_state(state.get("mid_epoch"))

    def _stop(self, epoch: int, mid_epoch: MidEpoch, bar: Any) -> None:
        if bar is not None:
            bar.close()
        self.save_last(epoch, self.history[-1] if self.history else {}, mid_epoch)
        raise TrainingInterrupted(
            f"interrupted: saved {self.run / 'last'} at epoch {epoch + 1} step {mid_epoch.step}/{self.steps}; "
            f"continue exactly with: unetkit train --resume {self.run}"
        )

    # --- epochs ------------------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> float:
        config = self.config
        torch.manual_seed(self.world.seed(_epoch_seed(config.seed, epoch, 0)))  # DropBlock, per process
        gen = torch.Generator().manual_seed(_epoch_seed(config.seed, epoch, 1))
        aug_gen = torch.Generator(device=self.device).manual_seed(_epoch_seed(config.seed, epoch, 2))
        order = self.sampler.epoch_order(self.steps, config.batch_size, gen)
        self.model.train()
        _batchnorm_momentum(self.model, None if epoch < config.bn_average_epochs else BN_MOMENTUM)
        start = 0
        if self.mid_epoch is not None:  # resumed from a Ctrl-C save within this epoch: continue at its step
            start = self.mid_epoch.step
            self.step.reset(self.mid_epoch.restore(gen, aug_gen, self.device))
            self.mid_epoch = None
        else:
            self.step.reset()
        first_index, every = self.step.steps_taken, config.log_every or self.steps
        reduce = self.world.reduce_reading if self.world.size > 1 else None
        bar = _bar(self.steps, f"epoch {epoch + 1}/{config.epochs}", self.progress)
        for step in range(start, self.steps):
            if self.stop.requested:  # Ctrl-C: save this step's state and stop
                self._stop(epoch, MidEpoch.capture(step, self.step.loss_sum, gen, aug_gen), bar)
            batch = self.sampler.batch(order[step * config.batch_size : (step + 1) * config.batch_size], gen, self.rows)
            if self.augment is not None:
                extras = {k: v for k, v in batch.items() if k in ("valid", "weight")}
                image, target, extras = augment_batch(
                    batch["image"],
                    batch["target"],
                    config=self.augment,
                    generator=aug_gen,
                    extras=extras,
                    shard=(self.rows.start, config.batch_size),
                )
                batch = {"image": image, "target": target, **extras}
            self.step(batch)
            if bar is not None:
                bar.update(1)
            if (step + 1) % every == 0 or step == self.steps - 1:  # the only host read of the loss
                reading = self.step.read(reduce, reset=False)  # the epoch's running sum, in step order
                if reading.first_nonfinite is not None:
                    at = reading.first_nonfinite - first_index + start + 1
                    raise TrainingDiverged(f"epoch {epoch + 1}, step {at}")
                if bar is not None:
                    bar.set_postfix(loss=f"{reading.loss_sum / (step + 1):.4f}")
        if bar is not None:
            bar.close()
        return self.step.read(reduce).loss_sum / self.steps

    @torch.no_grad()
    def validate(self, epoch: int) -> dict[str, Any]:
        self.world.broadcast_buffers(self.model)  # validate what rank 0 saves (per-process BatchNorm statistics)
        self.model.eval()
        meter = PixelMeter(max(self.prepared.mask.num_classes, 2), self.device)
        losses = []
        samples = []
        for i in self.world.shard(len(self.val_set)):
            image = self.val_set.images[i][None]
            if self.config.channels_last:
                image = image.contiguous(memory_format=torch.channels_last)
            with self.step.autocast():
                logits = forward_whole(self.model, image).float()
            target, valid = self.val_set.targets[i][None], self.val_set.valid[i][None]
            weight = None
            if self.val_set.weights is not None:
                weight = self.val_set.weights[i][None]
            elif self.loss_fn.name == "weighted_ce":  # no weight map on validation images: plain CE
                weight = torch.ones_like(target, dtype=torch.float32)
            losses.append(self.loss_fn(logits, target, valid=valid, weight=weight))
            pred = _predict(logits)
            meter.update(pred, target, valid)
            if i < self.config.samples:
                samples.append(
                    report.overlay(
                        self.prepared.val.images[i],
                        pred[0].cpu().numpy(),
                        target[0].cpu().numpy(),
                        valid[0].cpu().numpy(),
                    )
                )
        metrics: dict[str, Any] = {}
        if len(self.val_set):
            metrics["val_loss"] = self.world.average(losses, len(self.val_set)).item()
            self.world.sum_(meter.counts)
            metrics.update(meter.compute())
        samples = [s for part in self.world.gather(samples) for s in part]  # on rank 0
        if samples:
            import numpy as np

            height = max(s.shape[0] for s in samples)
            row = np.concatenate([np.pad(s, ((0, height - s.shape[0]), (0, 4), (0, 0))) for s in samples], axis=1)
            report.save_png(row, self.run / "samples" / f"epoch_{epoch + 1:03d}.png")
        return metrics

    def fit(self) -> TrainResult:
        config = self.config
        main = self.world.is_main  # only rank 0 writes
        writer = _tensorboard(self.run) if main else None
        stopped_early = False
        for epoch in range(self.start_epoch, config.epochs):
            start = time.perf_counter()
            train_loss = self.train_epoch(epoch)
            metrics = self.validate(epoch)
            row = {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                **metrics,
                "lr": self.optimizer.param_groups[0]["lr"],
                "seconds": time.perf_counter() - start,
            }
            self.history.append(row)
            score = -metrics["val_loss"] if config.monitor == "loss" and metrics else metrics.get(config.monitor)
            improved = score is not None and score > self.best_score
            if improved or score is None:
                self.best_score = score if score is not None else self.best_score
                self.best_epoch = epoch + 1
                self.stale = 0
                if main:
                    save_model(self.model, self.run / "best", extra=self._extra(epoch + 1, row))
            else:
                self.stale += 1
            if main:
                self.save_last(epoch + 1, row)
            report.epoch_reports(self.history, self.run, writer, config.epochs, write=main)
            if config.early_stopping and self.stale >= config.early_stopping:
                if main:
                    logger.info("early stopping: no improvement of %s for %d epochs", config.monitor, self.stale)
                stopped_early = True
                break
        if main:
            frames = sorted((self.run / "samples").glob("epoch_*.png"))
            report.save_gif(frames, self.run / "samples" / "progress.gif")
        if writer is not None:
            writer.close()
        self.world.barrier()  # the others wait for rank 0's last write
        return TrainResult(self.run, self.best_epoch, self.best_score, self.history, stopped_early)


BN_MOMENTUM = 0.1  # PyTorch's default moving average of BatchNorm's running statistics


def _batchnorm_momentum(model: nn.Module, momentum: float | None) -> None:
    """`None`: running statistics are the cumulative average of the batches (the first epochs)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = momentum


def _store_instance_tuning(trainer: _Trainer, run: Path) -> None:
    """Fit the instance post-processing on the validation split with the best weights and add it to the
    checkpoints' config.json (`predict --instances` reads it)."""
    import json

    from unetkit.train.plan import tune_instances

    val = trainer.prepared.val
    if val.instances is None or not len(val):
        raise ValueError("`tune_instances` needs instance masks and a validation split")
    best = load_model(run / "best", map_location=trainer.device)
    fitted = tune_instances(best, trainer.val_set.images, val.instances)
    logger.info("instances: watershed h %s, min_size %s fitted on the validation split (instance F1 %.4f)",
                fitted["h"], fitted["min_size"], fitted["f1"])  # fmt: skip
    for sub in ("best", "last"):
        path = run / sub / "config.json"
        config = json.loads(path.read_text())
        config["instances"] = fitted
        atomic_write_bytes(path, (json.dumps(config, indent=2) + "\n").encode("utf-8"))


def _bar(total: int, desc: str, enabled: bool):  # type: ignore[no-untyped-def]
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)


def _tensorboard(run: Path):  # type: ignore[no-untyped-def]
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard is optional
        return None
    return SummaryWriter(str(run / "tensorboard"))


def train(
    config: TrainConfig | None,
    *,
    resume: str | Path | None = None,
    progress: bool = False,
    given: set[str] | None = None,
) -> TrainResult:
    """Train a model as `config` says and write the run directory `config.out`.

    Ctrl-C stops at the next step boundary, saves `last/` and raises `TrainingInterrupted`; `resume`
    then continues from that step exactly (see `unetkit.train.interrupt`).

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
        WriteError: the run directory cannot be written (disk full, read-only); `last/` keeps the
            previous checkpoint.
        TrainingDiverged: the loss became NaN; `last/` and `best/` keep the last good epoch.
        TrainingInterrupted: Ctrl-C; `last/` holds the step reached.
    """
    has_checkpoint = False
    if resume is not None:
        config, has_checkpoint = resumed_config(Path(resume), config)
    if config is None:
        raise ValueError("`config` is required unless `resume` names a run directory")
    config.validate()
    plan = None
    if resume is None:  # a folder's unset settings from its fingerprint (`plan: auto`); a resumed run keeps its own
        from unetkit.train.plan import resolve_plan

        config, plan = resolve_plan(config, given)
    run = Path(config.out)
    if resume is None and (run / "last").exists():
        raise FileExistsError(
            f"{run}: already holds a run; pass --resume {run} to continue it, or choose another --out"
        )
    check_writable(run)  # before the data is read: an unwritable --out fails in a second, not after loading
    previous = torch.are_deterministic_algorithms_enabled()
    threads = torch.get_num_threads()
    world = setup(_device(config.device), timeout_s=config.dist_timeout)  # a torchrun job, or one process
    try:
        if config.deterministic:
            torch.use_deterministic_algorithms(True)
        if config.threads:
            torch.set_num_threads(config.threads)
        # reads the data and builds the model: fails before writing
        if config.task == "segmentation":
            trainer = _Trainer(config, run, progress and world.is_main, world)
        elif world.size > 1:
            raise ValueError(f"task {config.task!r} trains in one process only (no DDP for image-to-image yet)")
        else:  # denoise / superres / diffusion
            from unetkit.train.image2image import ImageTrainer

            trainer = ImageTrainer(config, run, progress)  # type: ignore[assignment]
        if world.is_main:
            try:
                run.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise write_error(err, run) from err
        if has_checkpoint:
            trainer.restore(run)
        if world.is_main:
            save_config(config, run / "config.yaml")
            if plan is not None:
                plan.save(run / "plan.json")
        try:
            stop = getattr(trainer, "stop", None)  # the image-to-image trainer has no Ctrl-C save (yet)
            with stop.installed() if stop is not None else nullcontext():
                result = trainer.fit()
            if config.tune_instances and world.is_main:
                _store_instance_tuning(trainer, run)
            return result
        except TrainingDiverged as err:
            last = run / "last"
            kept = f"{last} (epoch {trainer.history[-1]['epoch']})" if trainer.history else "none (first epoch)"
            raise TrainingDiverged(
                f"loss became NaN or infinite at {err}; stopped. Last good checkpoint: {kept}"
            ) from None
        except WriteError as err:  # a full disk or a folder gone read-only: the previous checkpoint is intact
            err.note = kept_checkpoint(run, err)
            raise
    finally:
        if world.owns_group:  # free the DDP wrapper and its gradient reducer before the group they use goes
            trainer = None  # type: ignore[assignment]
            gc.collect()
        world.close()
        torch.use_deterministic_algorithms(previous)
        torch.set_num_threads(threads)
