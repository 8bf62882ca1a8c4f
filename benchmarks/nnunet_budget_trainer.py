"""nnU-Net's default trainer within a wall-clock budget: copied by benchmarks/nnunet_peer.py into the nnU-Net
environment's `nnunetv2/training/nnUNetTrainer/` (nnU-Net finds trainers by class name there) and run by
`nnUNetv2_train -tr nnUNetTrainer_unetkitBudget`. It runs in nnU-Net's environment: it imports nnunetv2, which
unetkit's does not have.

Settings come from environment variables: UNETKIT_NNUNET_BUDGET_S (seconds from UNETKIT_NNUNET_START, a Unix time
taken before the process started), UNETKIT_NNUNET_ITERS (training steps per epoch, 0: fitted to the budget),
UNETKIT_NNUNET_VAL_ITERS (validation steps per epoch, 0: a fifth of the training steps, nnU-Net's 50 / 250),
UNETKIT_NNUNET_FINAL_VAL ("1": run nnU-Net's final validation).
"""

import json
import os
import time
from os.path import join

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

FIRST_EPOCH_ITERS = 5  # fitted epochs: the first one measures the step time
TARGET_EPOCHS = 20  # fitted epochs: about this many fill the budget (more once an epoch has 250 steps)
MIN_ITERS, MAX_ITERS = 5, 250  # nnU-Net's own epoch: 250 steps
CUDA = torch.device("cuda")  # nnU-Net's default device, overridden by `-device cpu`
RESERVE_S = 3.0  # of the budget kept for saving checkpoint_final and leaving the process


class BudgetSpent(Exception):
    pass


class nnUNetTrainer_unetkitBudget(nnUNetTrainer):
    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = CUDA,
    ):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.budget_s = float(os.environ["UNETKIT_NNUNET_BUDGET_S"])
        self.started_at = float(os.environ["UNETKIT_NNUNET_START"])
        self.fixed_iters = int(os.environ["UNETKIT_NNUNET_ITERS"])
        self.fixed_val_iters = int(os.environ["UNETKIT_NNUNET_VAL_ITERS"])
        self.final_validation = os.environ.get("UNETKIT_NNUNET_FINAL_VAL") == "1"
        self._set_iters(self.fixed_iters or FIRST_EPOCH_ITERS)
        self.max_epochs = self.num_epochs
        self.steps_done = 0
        self.val_steps_done = 0
        self.marks = {}
        self.compute_s = 0.0  # in train_step: forward, backward, update
        self.data_s = 0.0  # between train steps: loading and augmenting the next batch
        self.last_step_end = 0.0
        self.costs = []  # per epoch: (s per train step, s per val step, s outside the steps)
        self.epoch_log = []
        self.stopped_by = "max_epochs"

    def _set_iters(self, iters: int) -> None:
        self.num_iterations_per_epoch = iters
        self.num_val_iterations_per_epoch = self.fixed_val_iters or max(1, round(iters / 5))

    def _left(self) -> float:
        return self.budget_s - (time.time() - self.started_at) - RESERVE_S

    def on_epoch_start(self):
        self.marks = {"epoch": time.time()}
        super().on_epoch_start()

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        self.marks["train"] = self.last_step_end = time.time()

    def train_step(self, batch: dict) -> dict:
        self.data_s += time.time() - self.last_step_end
        if self._left() <= 0:  # an epoch longer than planned (a load spike): stop mid-epoch
            self.stopped_by = "budget (mid-epoch)"
            raise BudgetSpent
        start = time.time()
        out = super().train_step(batch)
        self.last_step_end = time.time()
        self.compute_s += self.last_step_end - start
        self.steps_done += 1
        return out

    def validation_step(self, batch: dict) -> dict:
        self.val_steps_done += 1
        return super().validation_step(batch)

    def on_validation_epoch_start(self):
        self.marks["val"] = time.time()
        super().on_validation_epoch_start()

    def on_validation_epoch_end(self, val_outputs):
        self.marks["val_end"] = time.time()
        super().on_validation_epoch_end(val_outputs)

    def on_epoch_end(self):
        super().on_epoch_end()  # logs, checkpoint_best, current_epoch += 1
        m, now = self.marks, time.time()
        train, val = m["val"] - m["train"], m["val_end"] - m["val"]
        self.costs.append(
            (
                train / self.num_iterations_per_epoch,
                val / self.num_val_iterations_per_epoch,
                now - m["epoch"] - train - val,
            )
        )
        self.epoch_log.append(
            {
                "steps": self.num_iterations_per_epoch,
                "val_steps": self.num_val_iterations_per_epoch,
                "lr": float(self.optimizer.param_groups[0]["lr"]),
                "s_per_step": round(self.costs[-1][0], 3),
                "s_per_val_step": round(self.costs[-1][1], 3),
                "s_other": round(self.costs[-1][2], 3),
            }
        )
        step, val_step, overhead = np.median(np.asarray(self.costs[-3:]), axis=0)  # the machine's load of late
        left = self._left()
        if not self.fixed_iters:  # about TARGET_EPOCHS epochs in what is left, each of MIN_ITERS..MAX_ITERS steps
            epochs_left = max(1, TARGET_EPOCHS - self.current_epoch)
            per_epoch_s = left / epochs_left - overhead - self.fixed_val_iters * val_step
            iters = int(per_epoch_s / (step + (0 if self.fixed_val_iters else val_step / 5)))
            self._set_iters(min(MAX_ITERS, max(MIN_ITERS, iters)))
        per_epoch = self.num_iterations_per_epoch * step + self.num_val_iterations_per_epoch * val_step + overhead
        more = max(0, int(left // per_epoch))
        if more == 0 and not self.fixed_iters:  # a last, shorter epoch in what is left
            fit = int((left - overhead - val_step) / (step + val_step / 5))
            if fit >= 1:
                self._set_iters(fit)
                more = 1
        # the poly schedule ends at lr 0 on the last epoch the budget allows (nnU-Net's own end of training)
        self.num_epochs = min(self.max_epochs, self.current_epoch + more)
        self.lr_scheduler.max_steps = max(self.num_epochs, 1)
        self.print_to_log_file(
            f"unetkit budget: {step:.2f} s per step, {val_step:.2f} s per val step, {overhead:.1f} s more per "
            f"epoch; {left:.0f} s left: {more} more epochs of {self.num_iterations_per_epoch} steps, schedule "
            f"over {self.num_epochs} epochs"
        )
        if self.current_epoch >= self.num_epochs:
            self.stopped_by = "budget" if more == 0 else "max_epochs"
            raise BudgetSpent

    def run_training(self):
        try:
            super().run_training()
        except BudgetSpent:
            self.on_train_end()

    def on_train_end(self):
        super().on_train_end()
        ema = self.logger.get_value("ema_fg_dice", step=None) or [None]
        summary = {
            "epochs": self.current_epoch,
            "train_iterations": self.steps_done,
            "val_iterations": self.val_steps_done,
            "last_iterations_per_epoch": self.num_iterations_per_epoch,
            "scheduled_epochs": self.num_epochs,
            "stopped_by": self.stopped_by,
            "last_lr": float(self.optimizer.param_groups[0]["lr"]),
            "best_ema_pseudo_dice": None if self._best_ema is None else float(self._best_ema),
            "last_ema_pseudo_dice": None if ema[-1] is None else float(ema[-1]),
            "batch_size": int(self.batch_size),
            "patch_size": [int(s) for s in self.configuration_manager.patch_size],
            "train_compute_s": round(self.compute_s, 1),
            "train_data_s": round(self.data_s, 1),
            "startup_s": round(self.logger.get_value("epoch_start_timestamps", step=0) - self.started_at, 1),
            "seconds_at_end": round(time.time() - self.started_at, 1),
            "per_epoch": self.epoch_log,
        }
        with open(join(self.output_folder, "unetkit_budget.json"), "w") as f:
            json.dump(summary, f, indent=2)

    def perform_actual_validation(self, save_probabilities: bool = False):
        if self.final_validation:
            super().perform_actual_validation(save_probabilities)
        else:
            self.print_to_log_file("unetkit budget: final validation skipped")
