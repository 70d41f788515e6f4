"""Lightning callbacks of a trial: the end-of-trial visuals, then the epoch's report (best weights, a resumable
checkpoint now and then, the metrics handed on to the trial's proxy and so to Tune). Listed in that order: a
scheduler may stop the trial at its last report, and nothing after it would run."""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as L
import torch

from orchestrator.data.cache import PreparedData
from orchestrator.rundir import STATE_FILE, TrialDir
from orchestrator.trial.config import TrialConfig
from orchestrator.trial.module import SegmentationModule
from orchestrator.trial.visuals import save_visuals


def better(value: float | None, best: float | None, mode: str) -> bool:
    if value is None or not math.isfinite(value):
        return False
    return best is None or (value > best if mode == "max" else value < best)


class SaveVisuals(L.Callback):
    """At the trial's last epoch (``trainer.max_epochs``): examples and best / worst panels (``save_visuals``)."""

    def __init__(self, cfg: TrialConfig, data: PreparedData, trial_dir: TrialDir) -> None:
        self.cfg, self.data, self.trial_dir = cfg, data, trial_dir

    def on_train_epoch_end(self, trainer: L.Trainer, module: SegmentationModule) -> None:
        epoch = int(module.epoch_metrics()["epoch"])
        if epoch >= self.cfg.trainer.max_epochs:
            save_visuals(module, trainer.datamodule, self.cfg, self.data, epoch, self.trial_dir)


class ReportEpochs(L.Callback):
    """Per epoch: the best weights to ``trials/<id>/best.pt`` when ``metric`` improved, a resumable checkpoint
    (weights, optimiser, schedule, epoch, best) at most every ``checkpoint_every_s`` seconds (0: every epoch; never
    after the last epoch), then the epoch's metrics (with ``constants``: size, GMACs, levers) handed to ``send``.
    ``send`` answers whether the trial goes on (Tune's scheduler may stop it); if not, the fit ends after this
    epoch."""

    def __init__(self, metric: str, mode: str, trial_dir: TrialDir, constants: dict[str, float],
                 send: Callable[[dict[str, float], Path | None], bool], best: float | None = None,
                 checkpoint_every_s: float = 30.0) -> None:
        self.metric, self.mode, self.trial_dir, self.constants, self.best = metric, mode, trial_dir, constants, best
        self.send, self.checkpoint_every_s = send, checkpoint_every_s
        self.last_save_s: float | None = None
        self.last_checkpoint = time.monotonic()

    def on_train_epoch_end(self, trainer: L.Trainer, module: SegmentationModule) -> None:
        started = time.perf_counter()
        metrics = {**module.epoch_metrics(), **self.constants}
        epoch = int(metrics["epoch"])
        if self.last_save_s is not None:
            metrics["perf/save_s"] = self.last_save_s  # the previous epoch's saving
        if better(metrics.get(self.metric), self.best, self.mode):
            self.best = metrics[self.metric]
            torch.save(module.model.state_dict(), self.trial_dir.best_weights)
        checkpoint = None
        due = time.monotonic() - self.last_checkpoint >= self.checkpoint_every_s
        if epoch < module.max_epochs and (self.checkpoint_every_s == 0 or due):
            checkpoint = self.trial_dir.checkpoint(epoch)
            shutil.rmtree(checkpoint, ignore_errors=True)  # left by a trial killed while writing it
            checkpoint.mkdir(parents=True)
            torch.save({**module.training_state(), "epoch": epoch, "best": self.best}, checkpoint / STATE_FILE)
            self.last_checkpoint = time.monotonic()
        self.last_save_s = time.perf_counter() - started
        if not self.send(metrics, checkpoint):
            trainer.should_stop = True
