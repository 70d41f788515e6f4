"""Results store -> what a report shows. Reports read nothing else (not Tune's folders, not W&B files), and read the
store once per report (``load_run``)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from orchestrator.store import Store, TrialRow
from reports.analysis import param_importances, searched_domains


@dataclass(frozen=True)
class RunData:
    """One read of a run's store: meta, trials (with their epochs), status counts, latency rows, and the frames."""

    run_dir: Path
    meta: dict[str, Any]
    trials: list[TrialRow]
    counts: dict[str, int]
    latencies: list[dict[str, Any]]
    evaluations: list[dict[str, Any]]  # held-out splits: trial_id, split, tta, images, metrics
    checks: dict[str, dict[str, Any]]  # the self-check per checked trial: recorded, measured, ok, ...

    @cached_property
    def results(self) -> pd.DataFrame:
        return results_frame(self.trials)

    @cached_property
    def history(self) -> pd.DataFrame:
        return history_frame(self.trials)

    @cached_property
    def domains(self) -> dict[str, dict[str, Any]]:
        return searched_domains(self.meta, self.trials)

    @cached_property
    def importances(self) -> dict[str, float]:
        """fANOVA importances of the searched keys for the sweep's metric (computed once per report)."""
        return param_importances(self.trials, self.domains, self.meta["metric"], self.meta["mode"])


def load_run(run_dir: str | Path) -> RunData:
    store = Store.of_run(run_dir)
    return RunData(Path(run_dir), store.meta(), store.trials(history=True), store.counts(), store.latencies(),
                   store.evaluations(), store.checks())


def results_frame(trials: list[TrialRow]) -> pd.DataFrame:
    """One row per trial: ``id, status, epochs, error, params_m, size_mb, gmacs, train_seconds, config/<key>,
    metric/<name>`` where ``metric/*`` is the trial's best value of each metric over its epochs."""
    rows = []
    for t in trials:
        row = {"id": t.id, "status": t.status, "epochs": t.epochs, "error": t.error,
               "params_m": t.params / 1e6 if t.params is not None else None, "size_mb": t.size_mb,
               "gmacs": t.gmacs, "train_seconds": t.train_seconds}
        row |= {f"config/{k}": v for k, v in t.config.items()}
        row |= {f"metric/{k}": v for k, v in t.best.items()}
        rows.append(row)
    return pd.DataFrame(rows)


def history_frame(trials: list[TrialRow]) -> pd.DataFrame:
    """One row per trial and epoch: ``id, epoch, <metric>...``."""
    return pd.DataFrame([{"id": t.id, **epoch} for t in trials for epoch in t.history])


def load_results(run_dir: str | Path) -> pd.DataFrame:
    return results_frame(Store.of_run(run_dir).trials())


def load_history(run_dir: str | Path) -> pd.DataFrame:
    return history_frame(Store.of_run(run_dir).trials(history=True))
