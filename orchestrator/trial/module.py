"""The Lightning module of a trial: model + loss + optimiser, metrics over the whole validation split."""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.metrics import ConfusionMatrix, metrics_from_confusion
from models.optim import create_optimizer, create_schedule
from orchestrator.store import FULL_EPOCH, STAGE1
from orchestrator.trial.levers import CPU_LEVERS, Levers
from orchestrator.trial.step import TrainStep


def predict(logits: torch.Tensor, binary: bool) -> torch.Tensor:
    return (logits[:, 0] > 0).long() if binary else logits.argmax(1)


class SegmentationModule(L.LightningModule):
    """Model + loss + optimiser; metrics over the whole validation split; one row of ``history`` per epoch
    (``epoch_metrics``), which callbacks (``orchestrator.trial.callbacks``) report.

    Losses are summed on the device and read once per epoch (no per-step host sync); a non-finite training loss
    fails the trial at the end of that epoch with the epoch named.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        classes: tuple[str, ...],
        ignore_index: int,
        positive: int | None,
        optim: dict[str, Any],
        schedule: dict[str, Any],
        max_epochs: int,
        stage1_epochs: int = 0,
        levers: Levers = CPU_LEVERS,
        batch_size: int = 8,
        resume_state: dict[str, Any] | None = None,
        started: float | None = None,
    ) -> None:
        """``resume_state``: a checkpoint (``training_state`` + ``epoch``) to continue from; ``started``: when the
        trial started (wall clock), for ``perf/startup_s``."""
        super().__init__()
        self.automatic_optimization = False  # TrainStep runs the step (eager or a CUDA graph), schedules step here
        self.levers = levers
        self.model, self.loss = model, loss
        self.step = TrainStep(self, levers, batch_size)
        self.stage1_epochs = stage1_epochs
        self.classes, self.ignore_index, self.positive = classes, ignore_index, positive
        self.optim, self.schedule, self.max_epochs = optim, schedule, max_epochs
        self.resume_state = resume_state
        self.epoch_offset = resume_state["epoch"] if resume_state else 0
        self.history: list[dict[str, float]] = []
        self.val_metrics: dict[str, float] = {}  # the last validation's ``val/...`` metrics
        self.started = time.time() if started is None else started
        self.startup_s: float | None = None

    @property
    def binary(self) -> bool:
        return self.positive is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    @property
    def in_stage1(self) -> bool:
        """ENet's first stage: the encoder alone trains against labels downsampled x8 (nearest)."""
        return self.epoch_offset + self.current_epoch < self.stage1_epochs

    def logits(self, x: torch.Tensor, y: torch.Tensor, training: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The network's logits for a batch and the labels they are scored against (a first-stage batch: the
        encoder's, against labels downsampled to its output in training, upsampled to the labels' size in
        validation)."""
        if not self.in_stage1:
            return self(x), y
        logits = self.model.forward_encoder(x)
        if training:
            small = F.interpolate(y.unsqueeze(1).float(), size=logits.shape[-2:], mode="nearest")
            return logits, small[:, 0].long()
        # validation in stage 1 scores the encoder's output upsampled to full resolution, so curves stay comparable
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False), y

    def on_train_epoch_start(self) -> None:
        self._train_loss = torch.zeros((), device=self.device)
        self._train_batches = 0
        self._train_items = 0
        self._epoch_start = time.perf_counter()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        if self.startup_s is None:
            self.startup_s = time.time() - self.started
        x, y = batch
        optimizer = self.optimizers()
        optimizer = getattr(optimizer, "optimizer", optimizer)
        loss = self.step(x, y, optimizer)
        scheduler = self.lr_schedulers()
        scheduler.step()
        self.step.sync_lr(optimizer)
        self._train_loss += loss.float()
        self._train_batches += 1
        self._train_items += x.shape[0]

    def on_validation_epoch_start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.current_stream().synchronize()  # this trial's stream only: its training steps are done
        self._val_start = time.perf_counter()
        self._cm = ConfusionMatrix(len(self.classes), self.ignore_index, self.device)
        self._val_loss = torch.zeros((), device=self.device)
        self._val_items = 0

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        x, y, *valid = batch  # a batch padded to the full size says how many of its samples are real
        with self.step.autocast():
            logits, y = self.logits(x, y, training=False)
        if valid:
            logits, y = logits[:valid[0]], y[:valid[0]]
        logits = logits.float()
        self._val_loss += self.loss(logits, y).detach().float() * y.shape[0]
        self._val_items += y.shape[0]
        self._cm.update(predict(logits, self.binary), y)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        metrics = metrics_from_confusion(self._cm.compute(), self.classes, self.positive)
        self.val_metrics = {f"val/{k}": v for k, v in metrics.items()}
        self.val_metrics["val/loss"] = float(self._val_loss) / max(1, self._val_items)

    def on_train_epoch_end(self) -> None:
        self.epoch_metrics()  # every epoch is recorded, whether or not a callback asked first

    def epoch_metrics(self) -> dict[str, float]:
        """This epoch's row: training loss, learning rate, speed and the validation metrics. Computed once per epoch,
        on the first call (a callback's ``on_train_epoch_end`` runs before the module's); later calls return it.

        A stage-1 epoch (ENet's encoder alone) reports its losses and validation metrics as ``stage1/train/loss``,
        ``stage1/val/...``: they score another network than the one deployed, so no ``val/`` figure, best weights or
        scheduler decision comes from them. ``full_epoch`` counts the full network's epochs (absent in stage 1)."""
        epoch = self.epoch_offset + self.current_epoch + 1
        if self.history and self.history[-1]["epoch"] == epoch:
            return self.history[-1]
        stage1 = self.in_stage1
        train_loss = float(self._train_loss) / max(1, self._train_batches)
        if not np.isfinite(train_loss):
            raise FloatingPointError(f"training loss is {train_loss} at epoch {epoch}; lower optimizer.lr?")
        seconds = time.perf_counter() - self._epoch_start  # the loss read above waited for the GPU
        val_start = getattr(self, "_val_start", None)
        lr = float(self.trainer.optimizers[0].param_groups[0]["lr"])
        metrics = {"epoch": epoch, "lr": lr,
                   "perf/images_per_s": self._train_items / max(seconds, 1e-9), "perf/epoch_s": seconds,
                   "perf/train_s": (val_start or time.perf_counter()) - self._epoch_start,
                   "perf/val_s": time.perf_counter() - val_start if val_start else 0.0,
                   "perf/cuda_graphs": float(self.step.graphed > 0)}
        if self.startup_s is not None:
            metrics["perf/startup_s"] = self.startup_s
        if self.device.type == "cuda":
            metrics["perf/gpu_peak_gb"] = torch.cuda.max_memory_reserved(self.device) / 2**30
        scored = {"train/loss": train_loss, **self.val_metrics}
        if stage1:
            metrics |= {f"{STAGE1}{k}": v for k, v in scored.items()}
        else:
            metrics |= {FULL_EPOCH: epoch - self.stage1_epochs, **scored}
        self.history.append(metrics)
        return metrics

    def build_optimizer(self) -> torch.optim.Optimizer:
        return create_optimizer(params=self.model.parameters(), fused=self.levers.fused_optimizer,
                                capturable=self.levers.cuda_graphs, **self.optim)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.build_optimizer()
        steps_per_epoch = max(1, self.trainer.estimated_stepping_batches // max(1, self.trainer.max_epochs))
        scheduler = create_schedule(
            optimizer=optimizer, steps_per_epoch=steps_per_epoch, max_epochs=self.max_epochs,
            lr=self.optim["lr"], **self.schedule,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_fit_start(self) -> None:
        if self.resume_state:  # optimiser and schedule continue where the checkpoint left them
            self.trainer.optimizers[0].load_state_dict(self.resume_state["optimizer"])
            self.trainer.lr_scheduler_configs[0].scheduler.load_state_dict(self.resume_state["scheduler"])

    def training_state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.trainer.optimizers[0].state_dict(),
            "scheduler": self.trainer.lr_scheduler_configs[0].scheduler.state_dict(),
        }
