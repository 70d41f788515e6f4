"""A trial's saved best weights scored on the validation split again, exactly as the trial validated them: the same
model build and levers (bf16 autocast and channels_last on a GPU), the same batches, the same metrics. The study's
self-check compares the result with the figure the store recorded (``orchestrator.study.selfcheck``)."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch

from orchestrator.data.cache import PreparedData
from orchestrator.failures import failure
from orchestrator.trial.build import build_datamodule, build_module, build_trainer, use_gpu_for
from orchestrator.trial.config import TrialConfig


def revalidate(config: dict[str, Any], data: PreparedData, weights: str | Path, use_gpu: bool,
               groups: dict[str, dict[str, dict[str, Any]]] | None = None,
               build_lock: contextlib.AbstractContextManager | None = None) -> dict[str, float]:
    """The ``val/...`` metrics of ``weights`` (a trial's ``best.pt``) for the trial's flat ``config``.
    ``build_lock``: held while the model is built (seeding and initialisation use the process's global state)."""
    cfg = TrialConfig.from_flat(config, groups)
    use_gpu = use_gpu_for(cfg, use_gpu)
    with build_lock or contextlib.nullcontext():
        L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
        module = build_module(cfg, data, use_gpu)
    module.model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    module.stage1_epochs = 0  # best weights are the full network's (a staged model's first stage saves none)
    trainer = build_trainer(cfg, use_gpu)
    try:
        trainer.validate(module, datamodule=build_datamodule(cfg, data, use_gpu, module.levers), verbose=False)
    finally:
        module.step = None  # its CUDA memory goes with the module
    return dict(module.val_metrics)


def rescore(weights: Path, config: dict[str, Any], data: PreparedData, use_gpu: bool,
            build_lock: contextlib.AbstractContextManager | None = None) -> dict[str, Any]:
    """The self-check's answer for one trial, wherever it runs (a pool's worker, ``orchestrate evaluate``):
    ``{"metrics": ..., "seconds": ...}``, or ``{"error": "one line"}`` for weights missing or that do not load."""
    if not weights.is_file():
        return {"error": f"{weights.name} missing"}
    started = time.perf_counter()
    try:
        metrics = revalidate(config, data, weights, use_gpu, build_lock=build_lock)
    except Exception as e:  # noqa: BLE001 - weights that do not load are a failed check, with the reason
        return {"error": failure(e)}
    return {"metrics": metrics, "seconds": time.perf_counter() - started}
