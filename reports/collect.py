"""Results store -> pandas DataFrames. Reports read nothing else (not Tune's folders, not W&B files)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from orchestrator.store import Store


def load_results(run_dir: str | Path) -> pd.DataFrame:
    """One row per trial: ``id, status, epochs, error, params_m, size_mb, gmacs, train_seconds, config/<key>,
    metric/<name>``
    where ``metric/*`` is the trial's best value of each metric over its epochs."""
    rows = []
    for t in Store.of_run(run_dir).trials():
        row = {"id": t.id, "status": t.status, "epochs": t.epochs, "error": t.error,
               "params_m": t.params / 1e6 if t.params is not None else None, "size_mb": t.size_mb,
               "gmacs": t.gmacs, "train_seconds": t.train_seconds}
        row |= {f"config/{k}": v for k, v in t.config.items()}
        row |= {f"metric/{k}": v for k, v in t.best.items()}
        rows.append(row)
    return pd.DataFrame(rows)


def load_history(run_dir: str | Path) -> pd.DataFrame:
    """One row per trial and epoch: ``id, epoch, <metric>...``."""
    rows = [{"id": t.id, **epoch} for t in Store.of_run(run_dir).trials(history=True) for epoch in t.history]
    return pd.DataFrame(rows)
