"""The driver of one sweep: make the run directory, decode the data once, start Ray, admit and run the trials with
Tune, and record everything in the results store (its one writer). ``orchestrator.study`` adds what comes after.

Failure policy lives here and in ``callbacks``: a trial that raises is recorded as ``failed`` with its last
exception line and the sweep goes on; ASHA stops become ``early_stopped``; a killed driver is resumed from Tune's
experiment state.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ray import tune

from orchestrator.data.prepare import prepare_data, resolve_pairs
from orchestrator.driver.admission import gpus_per_trial
from orchestrator.driver.tuner import build_tuner, cluster_gpus, init_ray, saved_trial_ids, trial_resources
from orchestrator.errors import SegsweepError
from orchestrator.rundir import RunDir
from orchestrator.spec.load import Sweep, count_trials, load_spec
from orchestrator.store import TERMINAL, Store
from orchestrator.trial.config import TrialContext


@dataclass(frozen=True)
class Run:
    """A sweep ready for Tune: its run directory, the trials' context and the number of trials."""

    sweep: Sweep
    run_dir: Path
    context: TrialContext
    total: int


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    counts: dict[str, int]
    interrupted: bool


def new_run_dir(sweep: Sweep, out: str | Path | None) -> Path:
    if out is not None:
        run_dir = Path(out)
        if run_dir.exists() and any(run_dir.iterdir()):
            raise SegsweepError(f"--out {run_dir}: already holds a run; resume it with 'orchestrate resume {run_dir}' "
                                f"or choose another directory")
    else:
        run_dir = Path("runs") / f"{sweep.spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        while run_dir.exists():
            run_dir = run_dir.with_name(run_dir.name + "-1")
    return run_dir.absolute()


def trial_context(sweep: Sweep, run_dir: Path, prepared) -> TrialContext:
    spec = sweep.spec
    return TrialContext(run_dir=str(run_dir), sweep=spec.name, metric=spec.search.metric, mode=spec.search.mode,
                        data=prepared, gpus_per_trial=gpus_per_trial(spec.resources, cluster_gpus()),
                        groups=sweep.groups,
                        latency_proxy=spec.search.latency_proxy.model_dump() if spec.search.latency_proxy else None)


def start_run(sweep: Sweep, out: str | Path | None = None, address: str | None = None,
              max_trials: int | None = None) -> Run:
    """A new run directory with the resolved spec, the decoded data and the store's meta; Ray joined; the first
    GPU-memory probe done. Whatever fails before a trial starts leaves no run directory behind."""
    spec = sweep.spec
    total = count_trials(sweep, max_trials)
    if spec.data.dataset != "synthetic":
        resolve_pairs(spec.data)  # bad roots and splits fail here, before anything is written
    run_dir = new_run_dir(sweep, out)
    run = RunDir(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        run.spec.write_text(sweep.resolved_yaml())
        print(f"[segsweep] preparing data ({spec.data.dataset}, {spec.data.size[0]}x{spec.data.size[1]})",
              file=sys.stderr, flush=True)
        prepared = prepare_data(spec.data, run.cache)
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)  # nothing ran: leave no half-made run behind
        raise
    Store(run.store).set_meta(
        sweep=spec.name, metric=spec.search.metric, mode=spec.search.mode, trials=total,
        max_epochs=spec.trainer.max_epochs, algorithm=spec.search.algorithm, classes=list(prepared.classes),
        data=prepared.to_json(), source=sweep.source, created=time.time(),
        objectives=[o.model_dump() for o in spec.search.objectives])
    h, w = prepared.native_size
    print(f"[segsweep] run directory {run_dir}; {total} trials, train {prepared.train.images} / "
          f"val {prepared.val.images} images (native {h}x{w})", file=sys.stderr, flush=True)
    init_ray(address, spec)
    context = trial_context(sweep, run_dir, prepared)
    try:
        # GPU memory is probed (and cached) before Tune starts, so that a probe that cannot run fails here
        trial_resources(sweep, run_dir, context).share(sweep.fixed_config())
    except SegsweepError:
        shutil.rmtree(run_dir, ignore_errors=True)  # no trial ran: leave no half-made run behind
        raise
    return Run(sweep, run_dir, context, total)


def restore_run(run_dir: str | Path, address: str | None = None) -> Run:
    """A killed or interrupted run, ready to continue: trials started after Tune's last snapshot are dropped from the
    store (Tune suggests them again under new ids), the data cache is reused, Ray joined."""
    run_dir = Path(run_dir).absolute()
    run = RunDir(run_dir)
    if not run.spec.is_file() or not run.store.is_file():
        raise SegsweepError(f"{run_dir}: not a segsweep run directory (no {run.spec.name} / {run.store.name})")
    if not tune.Tuner.can_restore(str(run.tune)):
        raise SegsweepError(f"{run_dir}: Tune saved no experiment state before the driver stopped; start the sweep "
                            f"again with 'orchestrate run'")
    sweep = load_spec(run.spec)
    store = Store(run.store)
    dropped = store.drop_unfinished_except(saved_trial_ids(run.tune))
    if dropped:
        print(f"[segsweep] {len(dropped)} trial(s) started after Tune's last snapshot will run again under new ids: "
              f"{', '.join(dropped)}", file=sys.stderr, flush=True)
    prepared = prepare_data(sweep.spec.data, run.cache)
    init_ray(address, sweep.spec)
    print(f"[segsweep] resuming {run_dir}", file=sys.stderr, flush=True)
    return Run(sweep, run_dir, trial_context(sweep, run_dir, prepared), store.meta().get("trials", 0))


def fit(run: Run, restore: bool = False) -> RunResult:
    """Tune's fit of the run's trials; the store then says how many ended and whether the run was interrupted."""
    tuner = build_tuner(run.sweep, run.run_dir, run.context, run.total, restore=restore)
    started = time.perf_counter()
    tuner.fit()
    store = Store(RunDir(run.run_dir).store)
    meta = store.meta()
    store.set_meta(fit_seconds=meta.get("fit_seconds", 0) + time.perf_counter() - started)
    counts = store.counts()
    interrupted = any(t.status not in TERMINAL for t in store.trials()) or sum(
        counts[s] for s in TERMINAL) < meta.get("trials", 0)
    return RunResult(run_dir=run.run_dir, counts=counts, interrupted=interrupted)
