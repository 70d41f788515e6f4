"""What ``orchestrate run`` and ``orchestrate resume`` do, top to bottom: the driver runs the trials; the top trials'
saved weights are re-scored on the pool's workers (the self-check); then the chosen trials are evaluated on a
held-out split (``evaluate:``), exported and timed (``export:``), the report is written from the store, and the W&B
summary run holds the model-wise table."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from orchestrator.driver.run import Run, RunResult, extend_run, fit, restore_run, start_run
from orchestrator.rundir import RunDir
from orchestrator.spec.load import Sweep
from orchestrator.store import TERMINAL, Store, progress_line
from orchestrator.study.selfcheck import check_trials, unchecked_top
from orchestrator.tracking import Tracker
from reports.build import build_report, comparison_frame
from reports.collect import load_run


def run_sweep(sweep: Sweep, out: str | Path | None = None, address: str | None = None,
              max_trials: int | None = None) -> RunResult:
    """Run a validated sweep to the end and write its report. Returns the run directory and final counts."""
    return finish(start_run(sweep, out, address, max_trials))


def resume_sweep(run_dir: str | Path, address: str | None = None) -> RunResult:
    """Continue a killed or interrupted run: finished trials are kept, unfinished ones continue from checkpoints."""
    return finish(restore_run(run_dir, address), restore=True)


def extend_sweep(run_dir: str | Path, trials: int, address: str | None = None) -> RunResult:
    """``trials`` more trials for a finished study (an interrupted one finishes its own first, as ``resume``)."""
    store = Store.of_run(run_dir)
    counts, meta = store.counts(), store.meta()
    if counts["pending"] or counts["running"] or sum(counts[s] for s in TERMINAL) < meta.get("trials", 0):
        result = resume_sweep(run_dir, address)
        if result.interrupted:
            return result
    return finish(extend_run(run_dir, trials, address))


def finish(run: Run, restore: bool = False) -> RunResult:
    """The trials (``fit``), and the self-check on the pool's workers before they go; then, for a finished run,
    held-out evaluation, exports and latency; the report; the W&B summary run."""
    spec = run.sweep.spec
    try:
        result = fit(run, restore)
        if not result.interrupted:
            with timed(run, "check"):
                check_top_trials(run)
    finally:
        run.pool.shutdown()
    store = Store(RunDir(run.run_dir).store)
    # lazy, both: they import torch, which a driver without export: or evaluate: never needs, and which would hold
    # up every driver's start before its workers begin (``pool.actor``)
    if spec.export is not None and not result.interrupted:
        from orchestrator.study.exports import measure_exports  # lazy: torch (above)

        with timed(run, "exports"):
            measure_exports(run.run_dir, spec, store)
    if spec.evaluate is not None and not result.interrupted:
        from orchestrator.study.evaluate import evaluate_run  # lazy: torch (above)

        with timed(run, "evaluate"):
            evaluate_run(run.run_dir, spec.evaluate.split, spec.evaluate.top_k, tta=spec.evaluate.tta)
    with timed(run, "report"):
        build_report(run.run_dir)
    if not result.interrupted:
        with timed(run, "summary"):
            log_summary_run(run.run_dir, spec.tracking.wandb.model_dump(mode="json"), spec.name)
    print(progress_line(store), file=sys.stderr, flush=True)
    return result


def check_top_trials(run: Run) -> None:
    """The self-check: the top ``check.top_k`` trials (and those ``evaluate:`` will evaluate) re-scored on the pool."""
    spec = run.sweep.spec
    k = max(spec.check.top_k, spec.evaluate.top_k if spec.evaluate is not None else 0)
    rows = unchecked_top(Store(RunDir(run.run_dir).store), k)
    check_trials(run.run_dir, rows, run.pool.revalidate)


@contextmanager
def timed(run: Run, phase: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        run.timed(phase, time.perf_counter() - started)


def log_summary_run(run_dir: Path, wandb_spec: dict, sweep: str) -> None:
    """One more run in the sweep's group holding the model-wise comparison as a ``wandb.Table``."""
    tracker = Tracker(wandb_spec, RunDir(run_dir).summary, f"{sweep}-summary", sweep, {"sweep": sweep})
    tracker.log_table("comparison", lambda: comparison_frame(load_run(run_dir)))
    tracker.finish()
