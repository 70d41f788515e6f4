"""The study checks its own numbers: the top trials' saved best weights (``trials/<id>/best.pt``) are scored on the
validation split again, as each trial validated (``trial.revalidate``), and must reproduce the best the store
recorded for the sweep's metric. A trial that does not gets one warning line, a failed row in the store's ``checks``
table, and a mark in every report beside its figures, held-out ones included.

Tolerance: 0.005 (or 0.5% of a figure above 1, such as a loss). On a CPU a check reproduces the recorded figure to
float rounding; on a GPU it runs as the trial validated (bf16 autocast, the same batches), so the difference is
that of nondeterministic kernels, well inside it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.rundir import RunDir
from orchestrator.store import Store, TrialRow, top_trials

TOLERANCE = 0.005

# rows -> one result per row: {"metrics": {...}, "seconds": s} or {"error": "one line"}
Revalidator = Callable[[list[TrialRow]], list[dict[str, Any]]]


@dataclass(frozen=True)
class Check:
    trial: str
    metric: str
    recorded: float | None
    measured: float | None
    tolerance: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return (self.error is None and self.recorded is not None and self.measured is not None
                and abs(self.measured - self.recorded) <= self.tolerance)


def tolerance_for(recorded: float | None) -> float:
    """0.005 for figures in [0, 1]; 0.5% of a larger one (a loss)."""
    return TOLERANCE * max(1.0, abs(recorded or 0.0))


def to_check(row: TrialRow, metric: str, result: dict[str, Any]) -> Check:
    """A trial's recorded best against its re-scored ``metric`` (pure)."""
    recorded = row.best.get(metric)
    measured = (result.get("metrics") or {}).get(metric)
    error = result.get("error")
    if error is None and measured is None:
        error = f"re-scoring gave no {metric}"
    return Check(row.id, metric, recorded, measured, tolerance_for(recorded), error)


def unchecked_top(store: Store, k: int) -> list[TrialRow]:
    """The ``k`` best finished trials that have no self-check yet (a trial's best weights never change once it has
    finished, so one check stands)."""
    checked = store.checks()
    return [row for row in top_trials(store, k) if row.id not in checked]


def check_trials(run_dir: str | Path, rows: list[TrialRow], revalidate: Revalidator) -> list[Check]:
    """Re-score ``rows`` (``revalidate``: on the pool's workers, or in this process), record each check in the store,
    and print one warning line per trial that does not reproduce, then one summary line."""
    if not rows:
        return []
    store = Store.of_run(run_dir)
    metric = store.meta()["metric"]
    started = time.perf_counter()
    checks = []
    for row, result in zip(rows, revalidate(rows), strict=True):
        check = to_check(row, metric, result)
        store.record_check(row.id, metric, check.recorded, check.measured, check.tolerance, check.ok, check.error,
                           result.get("seconds"))
        checks.append(check)
        if not check.ok:
            print(f"[segsweep] warning: trial {row.id} does not reproduce its {metric}: {mismatch(check)}; "
                  f"its figures are marked unverified in the report ({RunDir(run_dir).trial(row.id).best_weights})",
                  file=sys.stderr, flush=True)
    bad = sum(not c.ok for c in checks)
    print(f"[segsweep] self-check: {len(checks)} trial(s) re-scored on the validation split from their saved best "
          f"weights in {time.perf_counter() - started:.1f} s: "
          + (f"every one within {TOLERANCE} of its recorded {metric}" if not bad else
             f"{bad} NOT reproduced"), file=sys.stderr, flush=True)
    return checks


def mismatch(check: Check) -> str:
    """What a failed check found, in a few words."""
    if check.error:
        return f"could not re-score it ({check.error})"
    return (f"{check.recorded:.4f} recorded, {check.measured:.4f} from its saved weights "
            f"(tolerance {check.tolerance:.3g})")


def in_process(run_dir: str | Path) -> Revalidator:
    """Re-scoring in this process (``orchestrate evaluate``; on its GPU if it has one)."""
    def revalidate(rows: list[TrialRow]) -> list[dict[str, Any]]:
        # lazy, all three: the driver's start imports this module and must not import torch
        import torch  # lazy (above)

        from orchestrator.data.cache import PreparedData  # lazy (above)
        from orchestrator.trial.revalidate import rescore  # lazy (above)

        data = PreparedData.from_json(Store.of_run(run_dir).meta()["data"])
        return [rescore(RunDir(run_dir).trial(row.id).best_weights, row.config, data, torch.cuda.is_available())
                for row in rows]
    return revalidate
