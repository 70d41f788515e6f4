"""A finished run's trials as models: pick a trial, rebuild its network from the store, load its best weights,
export it to ONNX with a parity check, or pick the model that ``orchestrate bench`` times."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.catalog import ARCHITECTURES
from models.export import export_onnx, onnx_parity
from models.registry import create_model
from orchestrator.data.cache import load_split
from orchestrator.errors import SegsweepError
from orchestrator.rundir import RunDir
from orchestrator.store import Store, TrialRow, best_of
from orchestrator.trial.config import TrialConfig
from orchestrator.trial.data import normalise, to_model_input


def pick_trial(store: Store, trial: str = "best") -> TrialRow:
    """``best`` (by the sweep's metric and mode, among trials with weights) or a trial id."""
    meta, trials = store.meta(), store.trials()
    if trial != "best":
        found = [t for t in trials if t.id == trial]
        if not found:
            raise SegsweepError(f"--trial {trial}: no such trial (trials: {', '.join(t.id for t in trials)})")
        return found[0]
    best = best_of(trials, meta["metric"], meta["mode"])
    if best is None:
        raise SegsweepError(f"no trial of this run has a {meta['metric']} yet")
    return best


def trial_model(run_dir: str | Path, row: TrialRow) -> tuple[torch.nn.Module, TrialConfig]:
    """The trial's network with its best weights (``trials/<id>/best.pt``), in eval mode, and its TrialConfig."""
    weights = RunDir(run_dir).trial(row.id).best_weights
    if not weights.is_file():
        raise SegsweepError(f"{weights}: missing; trial {row.id} ({row.status}) saved no weights")
    cfg = TrialConfig.from_flat(row.config)
    data = Store.of_run(run_dir).meta()["data"]
    classes = 1 if data["task"] == "binary" else len(data["classes"])
    model = create_model(cfg.model.arch, cfg.model.encoder, classes, batchnorm=cfg.model.batchnorm)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval(), cfg


def validation_inputs(run_dir: str | Path, count: int = 2) -> torch.Tensor:
    """The first ``count`` validation images from the run's cache, normalised as in training."""
    images, _ = load_split(Store.of_run(run_dir).meta()["data"]["val"]["path"])
    return normalise(to_model_input(torch.from_numpy(np.array(images[:count]))))


@dataclass(frozen=True)
class Exported:
    path: Path
    trial: str
    size: tuple[int, int]
    random_diff: float  # max abs difference to PyTorch on random input
    real_diff: float | None  # ... on a validation image, where the export's size is the training size


def export_trial(run_dir: str | Path, trial: str = "best", size: tuple[int, int] | None = None,
                 dynamic: bool = False, opset: int = 17) -> Exported:
    """A trial's best weights as ``RUN_DIR/exports/<trial>.onnx`` (checked), with onnxruntime parity measured."""
    row = pick_trial(Store.of_run(run_dir), trial)
    model, cfg = trial_model(run_dir, row)
    hw = size or tuple(cfg.data.size)
    path = export_onnx(model, RunDir(run_dir).export(row.id), hw, opset=opset, dynamic=dynamic)
    random_diff = onnx_parity(model, path, torch.randn(1, 3, *hw))
    real = validation_inputs(run_dir, 1)
    real_diff = onnx_parity(model, path, real) if tuple(real.shape[-2:]) == hw else None
    return Exported(path, row.id, hw, random_diff, real_diff)


def bench_model(source: Path | None, trial: str = "best", arch: str | None = None, encoder: str | None = None,
                classes: int = 2) -> tuple[torch.nn.Module | None, Path | None]:
    """What ``orchestrate bench`` times: ``(model, None)`` for a registry architecture (random weights) or a run's
    trial, ``(None, path)`` for an ONNX file."""
    if arch:
        if encoder is None and arch in ARCHITECTURES and ARCHITECTURES[arch].encoders:
            encoder = ARCHITECTURES[arch].encoders[0]
        return create_model(arch, encoder, classes).eval(), None
    if source is not None and source.suffix == ".onnx":
        if not source.is_file():
            raise SegsweepError(f"{source}: no such ONNX file")
        return None, source
    if source is not None:
        return trial_model(source, pick_trial(Store.of_run(source), trial))[0], None
    raise SegsweepError("give MODEL.onnx, a run directory, or --arch NAME")
