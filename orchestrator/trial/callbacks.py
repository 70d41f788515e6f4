"""Lightning callbacks of a trial run by Tune: the end-of-trial visuals, then the epoch's report to Tune with the best
weights and a resumable checkpoint. Listed in that order: a scheduler may stop the trial inside the last report
(ASHA does at ``max_t``), and nothing after it would run."""

from __future__ import annotations

import math
import shutil
import time

import lightning.pytorch as L
import torch
from ray import tune

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


class ReportToTune(L.Callback):
    """Per epoch: the best weights to ``trials/<id>/best.pt`` when ``metric`` improved, then ``tune.report`` of the
    epoch's metrics (with ``constants``: size, GMACs, levers) and a resumable checkpoint (weights, optimiser,
    schedule, epoch, best), staged in the trial's folder and copied by Tune."""

    def __init__(self, metric: str, mode: str, trial_dir: TrialDir, constants: dict[str, float],
                 best: float | None = None) -> None:
        self.metric, self.mode, self.trial_dir, self.constants, self.best = metric, mode, trial_dir, constants, best
        self.last_save_s: float | None = None

    def on_train_epoch_end(self, trainer: L.Trainer, module: SegmentationModule) -> None:
        started = time.perf_counter()
        metrics = dict(module.epoch_metrics())
        if self.last_save_s is not None:
            metrics["perf/save_s"] = self.last_save_s  # the previous epoch's checkpoint saving
        if better(metrics.get(self.metric), self.best, self.mode):
            self.best = metrics[self.metric]
            torch.save(module.model.state_dict(), self.trial_dir.best_weights)
        staging = self.trial_dir.staging
        shutil.rmtree(staging, ignore_errors=True)  # left by a trial killed inside its report
        staging.mkdir()
        try:
            torch.save({**module.training_state(), "epoch": int(metrics["epoch"]), "best": self.best},
                       staging / STATE_FILE)
            self.last_save_s = time.perf_counter() - started  # reported with the next epoch; the report itself
            tune.report({**metrics, **self.constants}, checkpoint=tune.Checkpoint.from_directory(staging))
        finally:  # Tune has copied it, or the trial is stopping (a scheduler stops it inside the report)
            shutil.rmtree(staging, ignore_errors=True)
