"""The driver of one sweep: make the run directory, decode the data once, start Ray, admit and run the trials with
Tune, and record everything in the results store (its one writer). ``orchestrator.study`` adds what comes after.

Failure policy lives here and in ``callbacks``: a trial that raises is recorded as ``failed`` with its last
exception line and the sweep goes on; ASHA stops become ``early_stopped``; a killed driver is resumed from Tune's
experiment state.
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import ray
from ray import tune

from orchestrator.budgets import INFEASIBLE
from orchestrator.data.prepare import prepare_data, resolve_pairs, split_pairs
from orchestrator.driver.callbacks import SPENT, release_checkpoint
from orchestrator.driver.tuner import build_tuner, init_ray, saved_trial_ids
from orchestrator.errors import SegsweepError
from orchestrator.mps import MpsStart
from orchestrator.pool.admission import use_mps
from orchestrator.pool.launch import Pool, decisions, find_pool, scheduled_epochs, start_pool, warm_configs
from orchestrator.pool.resident import USER_ENV, pool_key
from orchestrator.rundir import RunDir
from orchestrator.spec.keys import group_label
from orchestrator.spec.load import Sweep, count_trials, load_spec
from orchestrator.store import SETTLED, TERMINAL, Store
from orchestrator.trial.config import TrialContext


@dataclass(frozen=True)
class Run:
    """A sweep ready for Tune: its run directory, the trials' context, the pool that trains them and the number of
    trials."""

    sweep: Sweep
    run_dir: Path
    context: TrialContext
    pool: Pool
    total: int  # trials of this experiment (the study's are the store's meta "trials")
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase of the driver, kept in the store
    experiment: int = 1  # Tune's experiment of the run: 1, then one more per ``orchestrate extend``
    seed_offset: int = 0  # for a random search's extension: new points
    # on resume: trials the store holds finished, with their last metrics (``PoolContext.finished``)
    finished: dict[str, dict[str, float]] = field(default_factory=dict)

    def timed(self, phase: str, seconds: float) -> None:
        self.timings[phase] = round(self.timings.get(phase, 0.0) + seconds, 3)
        Store(RunDir(self.run_dir).store).set_meta(timings=self.timings)


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


def domain_meta(sweep: Sweep) -> dict[str, dict]:
    """The searched keys as the report's analysis reads them: kind and values (a grouped choice by its labels)."""
    return {k: {"kind": d.kind, "values": [group_label(v) for v in d.values] if d.grouped else list(d.values)}
            for k, d in sweep.domains.items()}


def rung_epochs(sweep: Sweep) -> list[int]:
    """The scheduler's rungs as trial epochs (the report's analysis compares trials there): the full network's rung
    epochs after a fixed stage 1."""
    stage1 = sweep.spec.trainer.max_epochs - scheduled_epochs(sweep)
    return [stage1 + epoch for epoch in decisions(sweep)]


def trial_context(sweep: Sweep, run_dir: Path, prepared) -> TrialContext:
    spec = sweep.spec
    return TrialContext(run_dir=str(run_dir), sweep=spec.name, metric=spec.search.metric, mode=spec.search.mode,
                        data=prepared, groups=sweep.groups,
                        latency_proxy=spec.search.latency_proxy.model_dump() if spec.search.latency_proxy else None,
                        constraints=tuple(c.model_dump() for c in spec.search.constraints),
                        decisions=decisions(sweep), warm=warm_configs(sweep) if spec.resources.preload_workers else (),
                        user=os.environ.get(USER_ENV, "local"))


def start_run(sweep: Sweep, out: str | Path | None = None, address: str | None = None,
              max_trials: int | None = None) -> Run:
    """A new run directory with the resolved spec, the decoded data and the store's meta; Ray joined; the pool's
    workers started (they import and warm up while the data is decoded). Whatever fails before a trial starts leaves
    no run directory behind."""
    spec = sweep.spec
    total = count_trials(sweep, max_trials)
    if spec.data.dataset != "synthetic":
        resolve_pairs(spec.data)  # bad roots and splits fail here, before anything is written
        if spec.evaluate is not None:
            split_pairs(spec.data, spec.evaluate.split)  # and a held-out split that is not there
    run_dir = new_run_dir(sweep, out)
    run = RunDir(run_dir)
    marks = [time.perf_counter()]
    pool = start_cluster(sweep, address, marks)
    marks.append(time.perf_counter())
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        run.spec.write_text(sweep.resolved_yaml())
        print(f"[segsweep] preparing data ({spec.data.dataset}, {spec.data.size[0]}x{spec.data.size[1]})",
              file=sys.stderr, flush=True)
        prepared = prepare_data(spec.data, run.cache)
        marks.append(time.perf_counter())
        context = trial_context(sweep, run_dir, prepared)
        pool.attach(context)
    except BaseException:
        pool.shutdown()
        shutil.rmtree(run_dir, ignore_errors=True)  # nothing ran: leave no half-made run behind
        raise
    Store(run.store).set_meta(
        sweep=spec.name, metric=spec.search.metric, mode=spec.search.mode, trials=total,
        max_epochs=spec.trainer.max_epochs, algorithm=spec.search.algorithm, classes=list(prepared.classes),
        data=prepared.to_json(), source=sweep.source, created=time.time(),
        objectives=[o.model_dump() for o in spec.search.objectives], domains=domain_meta(sweep),
        constraints=[c.model_dump() for c in spec.search.constraints],
        rungs=rung_epochs(sweep), mps=pool.mps is not None)
    h, w = prepared.native_size
    print(f"[segsweep] run directory {run_dir}; {total} trials, train {prepared.train.images} / "
          f"val {prepared.val.images} images (native {h}x{w}); {len(pool.workers)} worker(s), "
          f"{sum(pool.limits)} trial(s) at once{' under CUDA MPS' if pool.mps else ''}", file=sys.stderr, flush=True)
    started = Run(sweep, run_dir, context, pool, total)
    for phase, (a, b) in zip(("ray_start", "pool_start", "data"), itertools.pairwise(marks)):
        started.timed(phase, b - a)
    return started


def restore_run(run_dir: str | Path, address: str | None = None) -> Run:
    """A killed or interrupted run, ready to continue: trials started after Tune's last snapshot are dropped from the
    store (Tune suggests them again under new ids), the data cache is reused, Ray joined."""
    run_dir, run, sweep, store = _existing(run_dir)
    meta = store.meta()
    experiment = meta.get("experiment", 1)
    if not tune.Tuner.can_restore(str(run.experiment(experiment))):
        raise SegsweepError(f"{run_dir}: Tune saved no experiment state before the driver stopped; start the sweep "
                            f"again with 'orchestrate run'")
    # Tune tells its callbacks of a trial's end one after another: a driver killed after the store recorded it and
    # before its checkpoints were released left them whole. The store is the truth: such a trial ends at once when
    # resumed (``PoolContext.finished``), and its checkpoints are released now.
    search = sweep.spec.search
    metrics = [search.metric, *(o.metric for o in search.objectives)]  # present, so that Tune accepts the end
    finished: dict[str, dict[str, float]] = {}
    for t in store.trials():
        if t.status in SETTLED:
            finished[t.id] = {**dict.fromkeys(metrics, math.nan), **t.last}
            if t.status == "infeasible":  # its end replayed as such: over budget, never trained
                finished[t.id][INFEASIBLE] = 1.0
    for trial_id in finished:
        release_checkpoint(run_dir, trial_id)
    dropped = store.drop_unfinished_except(saved_trial_ids(run.experiment(experiment)))
    if dropped:
        print(f"[segsweep] {len(dropped)} trial(s) started after Tune's last snapshot will run again under new ids: "
              f"{', '.join(dropped)}", file=sys.stderr, flush=True)
    context, pool = _rejoin(sweep, run_dir, address)
    print(f"[segsweep] resuming {run_dir}", file=sys.stderr, flush=True)
    return Run(sweep, run_dir, context, pool, meta.get("experiment_trials", meta.get("trials", 0)),
               dict(meta.get("timings", {})), experiment, meta.get("seed_offset", 0), finished)


def extend_run(run_dir: str | Path, trials: int, address: str | None = None) -> Run:
    """A finished run, ready for ``trials`` more in a new Tune experiment of its own (``tune-<k>``): Optuna goes on
    with the same study (its trials so far are its history), a random search draws new points."""
    run_dir, run, sweep, store = _existing(run_dir)
    if sweep.spec.search.algorithm == "grid":
        raise SegsweepError(f"{run_dir}: a grid search has run every combination of its domains; add values to them "
                            f"and start a new sweep, or search with optuna or random")
    meta = store.meta()
    experiment, offset = meta.get("experiment", 1) + 1, len(store.trials())
    context, pool = _rejoin(sweep, run_dir, address)
    store.set_meta(trials=meta.get("trials", 0) + trials, experiment=experiment, experiment_trials=trials,
                   seed_offset=offset)
    print(f"[segsweep] extending {run_dir} by {trials} trial(s) (experiment {run.experiment(experiment).name})",
          file=sys.stderr, flush=True)
    return Run(sweep, run_dir, context, pool, trials, dict(meta.get("timings", {})), experiment, offset)


def _existing(run_dir: str | Path) -> tuple[Path, RunDir, Sweep, Store]:
    run_dir = Path(run_dir).absolute()
    run = RunDir(run_dir)
    if not run.spec.is_file() or not run.store.is_file():
        raise SegsweepError(f"{run_dir}: not a segsweep run directory (no {run.spec.name} / {run.store.name})")
    return run_dir, run, load_spec(run.spec), Store(run.store)


def start_cluster(sweep: Sweep, address: str | None, marks: list[float] | None = None) -> Pool:
    """Ray joined (or started here) and the pool: the one already running on a joined Ray (``orchestrate pool
    start``, ``orchestrate serve``: warm workers of this installation's versions), else workers of the sweep's own;
    where the sweep starts its own Ray for GPU trials, its CUDA MPS daemon too (``resources.mps``), begun before Ray
    so that its check overlaps Ray's start. ``marks``: gets the time Ray was up."""
    res = sweep.spec.resources
    own_ray = address is None and not ray.is_initialized()
    mps = MpsStart(res.mps) if use_mps(res.mps, own_ray, res.gpus_per_trial != 0) else None
    try:
        init_ray(address, sweep.spec)
        if marks is not None:
            marks.append(time.perf_counter())
        running = None if own_ray else find_pool(pool_key())
        if running is not None:
            print(f"[segsweep] training on the pool already running on this Ray: {len(running.workers)} warm "
                  f"worker(s), {sum(running.limits)} trial(s) at once (its packing, not this spec's resources)",
                  file=sys.stderr, flush=True)
            return running
        return start_pool(sweep, mps.join() if mps is not None else None)
    except BaseException:
        if mps is not None:
            mps.stop()  # Ray or the pool failed: a daemon begun for them goes too (once its start has finished)
        raise


def _rejoin(sweep: Sweep, run_dir: Path, address: str | None) -> tuple[TrialContext, Pool]:
    """Ray joined, the pool started and given the run's data (its cache, decoded when the run began)."""
    pool = start_cluster(sweep, address)
    try:
        context = trial_context(sweep, run_dir, prepare_data(sweep.spec.data, RunDir(run_dir).cache))
        pool.attach(context)
    except BaseException:
        pool.shutdown()
        raise
    return context, pool


def fit(run: Run, restore: bool = False) -> RunResult:
    """Tune's fit of the run's trials; the store then says how many ended and whether the run was interrupted. The
    pool's workers stay (the study's self-check uses them); whoever started the run shuts the pool down."""
    started = time.perf_counter()
    SPENT.clear()
    build_tuner(run.sweep, run.run_dir, run.pool, run.total, restore, run.experiment, run.seed_offset,
                run.finished).fit()
    run.timed("fit", time.perf_counter() - started)
    Store(RunDir(run.run_dir).store).set_meta(fit_window=(time.time() - (time.perf_counter() - started), time.time()))
    for kind, seconds in SPENT.items():
        run.timed(f"callbacks/{kind}", seconds)
    store = Store(RunDir(run.run_dir).store)
    meta = store.meta()
    store.set_meta(fit_seconds=meta.get("fit_seconds", 0) + time.perf_counter() - started)
    counts = store.counts()
    interrupted = any(t.status not in TERMINAL for t in store.trials()) or sum(
        counts[s] for s in TERMINAL) < meta.get("trials", 0)
    return RunResult(run_dir=run.run_dir, counts=counts, interrupted=interrupted)
