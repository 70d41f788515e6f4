"""A finished run's trials as models: pick a trial, rebuild its network from the store, load its best weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from orchestrator.errors import SegsweepError
from orchestrator.store import Store, TrialRow, best_of


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


def trial_model(run_dir: str | Path, row: TrialRow) -> tuple[torch.nn.Module, object]:
    """The trial's network with its best weights (``trials/<id>/best.pt``), in eval mode, and its TrialConfig."""
    from models.registry import create_model
    from orchestrator.trial import TrialConfig

    weights = Path(run_dir) / "trials" / row.id / "best.pt"
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
    from orchestrator.data.cache import load_split
    from orchestrator.lit import normalise, to_model_input

    images, _ = load_split(Store.of_run(run_dir).meta()["data"]["val"]["path"])
    return normalise(to_model_input(torch.from_numpy(np.array(images[:count]))))
