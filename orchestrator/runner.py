"""The driver: run directory, data preparation, Ray Tune (Optuna | random | grid, ASHA), store callbacks, resume.

Failure policy lives here: a trial that raises is recorded as ``failed`` with its last exception line and the sweep
goes on; ASHA stops become ``early_stopped``; a killed driver is resumed from Tune's experiment state.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import SegsweepError
from orchestrator.spec import Sweep, expand_groups, load_spec
from orchestrator.store import STORE_FILE, TERMINAL, Store, best_of

# Tune snapshots its experiment state at most this often; small, so that a killed driver loses little. Its warning
# that snapshots come often (one per checkpointing epoch) is then expected, and 0 silences it.
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

SPEC_FILE, OPTUNA_FILE, TUNE_DIR = "spec.yaml", "optuna.db", "tune"
_ERROR_LINE = re.compile(r"^(?:[\w.]+\.)?(\w*(?:Error|Exception|Exit|Interrupt))(?::\s*(.*))?$")


def error_line(trace: str | None) -> str:
    """The last ``SomeError: message`` line of a traceback (Ray wraps trial errors in several layers)."""
    if not trace:
        return "trial failed (no error recorded)"
    lines = [line.strip() for line in trace.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        match = _ERROR_LINE.match(line)
        if match and not line.startswith(("ray::", "File ")) and match.group(1) not in ("RayTaskError", "TuneError"):
            return line[:300]
    return lines[-1][:300]


# ---------------------------------------------------------------------------------------------------- callbacks
def _tune_callback_base() -> type:
    from ray import tune

    return tune.Callback


class StoreCallback(_tune_callback_base()):
    """Writes every trial event to the results store. Picklable (holds a path), as Tune pickles it for resume."""

    def __init__(self, store_path: str, max_epochs: int, groups: dict | None = None) -> None:
        self.store_path, self.max_epochs, self.groups = store_path, max_epochs, groups or {}
        self._known: set[str] = set()
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.store_path)
        return self._store

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_known": set(), "_store": None}

    def config(self, trial) -> dict[str, Any]:
        return expand_groups(trial.config, self.groups)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        new = [t for t in trials if t.trial_id not in self._known]
        for trial in new:
            if trial.status == "PENDING":
                self.store.add_trial(trial.trial_id, self.config(trial), "pending")
            self._known.add(trial.trial_id)

    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._known.add(trial.trial_id)
        self.store.add_trial(trial.trial_id, self.config(trial), "running")

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info: Any) -> None:
        if "epoch" in result:
            self.store.record_epoch(trial.trial_id, result)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        epochs = int((trial.last_result or {}).get("epoch", 0))
        self.store.finish_trial(trial.trial_id, "completed" if epochs >= self.max_epochs else "early_stopped")

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        # Tune writes the error into the trial's driver-side staging folder first and syncs it to storage later
        staged = Path(trial.error_file) if trial.error_file else None
        trace = staged.read_text() if staged is not None and staged.is_file() else trial.get_error()
        self.store.add_trial(trial.trial_id, self.config(trial), "running")
        self.store.finish_trial(trial.trial_id, "failed", error_line(trace))


class CheckpointCallback(_tune_callback_base()):
    """A finished trial's Tune checkpoint becomes a stub (``release_checkpoint``): a sweep keeps per trial its
    ``best.pt`` (1x the model) instead of also weights and optimiser state (3x with Adam). A failed trial keeps its
    checkpoint, for the post-mortem."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        from orchestrator.trial import release_checkpoint

        try:
            release_checkpoint(self.run_dir, trial.trial_id)
        except OSError as e:  # freeing space is no outcome of the trial: it keeps its whole checkpoint instead
            print(f"[segsweep] trial {trial.trial_id}: its checkpoint under {Path(self.run_dir) / TUNE_DIR} stays "
                  f"whole ({e.strerror or e}); delete it by hand once the run has ended", file=sys.stderr, flush=True)


class ProgressCallback(_tune_callback_base()):
    """One line on stderr whenever a trial starts or ends: done / running / failed and the best so far."""

    def __init__(self, store_path: str, total: int) -> None:
        self.store_path, self.total = store_path, total

    def _print(self) -> None:
        store = Store(self.store_path)
        print(progress_line(store, self.total), file=sys.stderr, flush=True)

    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._print()

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._print()

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._print()


def progress_line(store: Store, total: int | None = None) -> str:
    meta, counts = store.meta(), store.counts()
    metric, mode = meta.get("metric", "val/miou"), meta.get("mode", "max")
    done = counts["completed"] + counts["early_stopped"] + counts["failed"]
    best = best_of(store.trials(), metric, mode)
    best_text = f", best {metric} {best.best[metric]:.4f} ({best.id})" if best else ""
    return (f"[segsweep] {done}/{total or meta.get('trials', '?')} done ({counts['completed']} completed, "
            f"{counts['early_stopped']} early-stopped, {counts['failed']} failed), {counts['running']} running"
            f"{best_text}")


# ---------------------------------------------------------------------------------------------------- driver
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


def ray_runtime_env(spec) -> dict[str, Any]:
    """The job's runtime environment: environment variables, and (``resources.preload_workers``) the hook that has
    every Ray worker import the trial's modules as it starts (``orchestrator.preload``)."""
    # a stopped trial gets time to finish its W&B run before its actor is reused or torn down
    env = {"TUNE_FUNCTION_THREAD_TIMEOUT_S": os.environ.get("TUNE_FUNCTION_THREAD_TIMEOUT_S", "15")}
    runtime_env: dict[str, Any] = {"env_vars": env}
    if spec.resources.preload_workers:
        runtime_env["worker_process_setup_hook"] = "orchestrator.preload.warm"
    return runtime_env


def init_ray(address: str | None, spec) -> None:
    import ray

    if ray.is_initialized():
        check_resources(spec, ray.cluster_resources())
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "configure_logging": True, "logging_level": "WARNING",
                              "log_to_driver": True, "runtime_env": ray_runtime_env(spec)}
    if address:
        kwargs["address"] = address
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise SegsweepError(f"--address {address}: cannot join the Ray cluster ({str(e).splitlines()[0]})") from None
    check_resources(spec, ray.cluster_resources())


def cluster_gpus() -> float:
    import ray

    return ray.cluster_resources().get("GPU", 0) if ray.is_initialized() else 0.0


def check_resources(spec, available: dict[str, float]) -> None:
    """A trial that asks for more than the whole cluster has would wait forever: refuse it up front."""
    from orchestrator.perf import gpus_per_trial

    need = {"CPU": spec.resources.cpus_per_trial, "GPU": gpus_per_trial(spec.resources, available.get("GPU", 0))}
    for kind, amount in need.items():
        if amount > available.get(kind, 0):
            key = f"resources.{kind.lower()}s_per_trial"
            raise SegsweepError(f"{key}: {amount:g} per trial, but the Ray cluster has {available.get(kind, 0):g} "
                                f"{kind}(s); lower it (e.g. --set {key}={available.get(kind, 0):g})")


def build_tuner(sweep: Sweep, run_dir: Path, context, total: int, restore: bool = False):
    """The Tuner for a new run, or the restored one for ``resume``."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from orchestrator.space import to_tune_space
    from orchestrator.tracking import WandbCallback
    from orchestrator.trial import run_trial

    spec = sweep.spec
    resources = trial_resources(sweep, run_dir, context)
    trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=context), resources)
    if restore:
        return tune.Tuner.restore(str(run_dir / TUNE_DIR), trainable, resume_unfinished=True, resume_errored=False,
                                  restart_errored=False)
    search = spec.search
    multi = len(search.objectives) > 1
    if search.algorithm == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = optuna.storages.RDBStorage(f"sqlite:///{run_dir / OPTUNA_FILE}")
        # several objectives: Optuna gets them all; Tune itself and ASHA keep the single search.metric
        objectives = {"metric": [o.metric for o in search.objectives], "mode": [o.mode for o in search.objectives]}
        searcher = OptunaSearch(sampler=optuna.samplers.TPESampler(seed=search.seed), storage=storage,
                                study_name=spec.name, **(objectives if multi else {}))
    else:
        # Tune applies max_concurrent_trials to Searchers only; the basic generator takes its own limit
        searcher = BasicVariantGenerator(random_state=search.seed, max_concurrent=spec.resources.max_concurrent)
    if search.scheduler.name == "asha":
        own = {"metric": search.metric, "mode": search.mode} if multi else {}
        scheduler = ASHAScheduler(max_t=spec.trainer.max_epochs, grace_period=min(search.scheduler.grace_period,
                                  spec.trainer.max_epochs), reduction_factor=search.scheduler.reduction_factor, **own)
    else:
        scheduler = FIFOScheduler()
    store_path = str(run_dir / STORE_FILE)
    return tune.Tuner(
        trainable,
        param_space=to_tune_space(sweep),
        tune_config=tune.TuneConfig(
            metric=None if multi else search.metric, mode=None if multi else search.mode, search_alg=searcher,
            scheduler=scheduler,
            num_samples=1 if search.algorithm == "grid" else total,
            max_concurrent_trials=(spec.resources.max_concurrent or None) if search.algorithm == "optuna" else None,
            reuse_actors=spec.resources.reuse_actors,
            trial_dirname_creator=lambda trial: trial.trial_id,
        ),
        run_config=tune.RunConfig(
            name=TUNE_DIR, storage_path=str(run_dir), verbose=0,
            failure_config=tune.FailureConfig(max_failures=search.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[StoreCallback(store_path, spec.trainer.max_epochs, sweep.groups),
                       WandbCallback(spec.tracking.wandb.model_dump(mode="json"), str(run_dir), spec.name,
                                     sweep.groups),
                       CheckpointCallback(str(run_dir)), ProgressCallback(store_path, total)],
        ),
    )


def trial_resources(sweep: Sweep, run_dir: Path, context):
    """Tune's resources callable for the sweep's trials (CPUs and a memory-checked GPU share)."""
    from orchestrator.perf import TrialResources

    res = sweep.spec.resources
    data_bytes = context.data.cache_bytes()
    resident = sweep.spec.data.on_device(data_bytes)  # the trials' splits then count towards their GPU memory
    return TrialResources(res.cpus_per_trial, context.gpus_per_trial, res.memory_aware, str(run_dir), sweep.groups,
                          res.trial_gpu_memory_gb, res.gpu_memory_gb, context.data,
                          extra_bytes=data_bytes if resident else 0)


def _context(sweep: Sweep, run_dir: Path, prepared):
    from orchestrator.perf import gpus_per_trial
    from orchestrator.trial import TrialContext

    spec = sweep.spec
    return TrialContext(run_dir=str(run_dir), sweep=spec.name, metric=spec.search.metric, mode=spec.search.mode,
                        data=prepared, gpus_per_trial=gpus_per_trial(spec.resources, cluster_gpus()),
                        groups=sweep.groups,
                        latency_proxy=spec.search.latency_proxy.model_dump() if spec.search.latency_proxy else None)


def run_sweep(sweep: Sweep, out: str | Path | None = None, address: str | None = None,
              max_trials: int | None = None) -> RunResult:
    """Run a validated sweep to the end and write its report. Returns the run directory and final counts."""
    from orchestrator.data import prepare_data, resolve_pairs
    from orchestrator.space import count_trials

    spec = sweep.spec
    total = count_trials(sweep, max_trials)
    if spec.data.dataset != "synthetic":
        resolve_pairs(spec.data)  # bad roots and splits fail here, before anything is written
    run_dir = new_run_dir(sweep, out)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        (run_dir / SPEC_FILE).write_text(sweep.resolved_yaml())
        print(f"[segsweep] preparing data ({spec.data.dataset}, {spec.data.size[0]}x{spec.data.size[1]})",
              file=sys.stderr, flush=True)
        prepared = prepare_data(spec.data, run_dir / "cache")
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)  # nothing ran: leave no half-made run behind
        raise
    store = Store(run_dir / STORE_FILE)
    store.set_meta(sweep=spec.name, metric=spec.search.metric, mode=spec.search.mode, trials=total,
                   max_epochs=spec.trainer.max_epochs, algorithm=spec.search.algorithm, classes=list(prepared.classes),
                   data=prepared.to_json(), source=sweep.source, created=time.time(),
                   objectives=[o.model_dump() for o in spec.search.objectives])
    h, w = prepared.native_size
    print(f"[segsweep] run directory {run_dir}; {total} trials, train {prepared.train.images} / "
          f"val {prepared.val.images} images (native {h}x{w})", file=sys.stderr, flush=True)
    init_ray(address, spec)
    context = _context(sweep, run_dir, prepared)
    try:
        # GPU memory is probed (and cached) before Tune starts, so that a probe that cannot run fails here
        trial_resources(sweep, run_dir, context).share(sweep.fixed_config())
    except SegsweepError:
        shutil.rmtree(run_dir, ignore_errors=True)  # no trial ran: leave no half-made run behind
        raise
    tuner = build_tuner(sweep, run_dir, context, total)
    return _fit(tuner, run_dir, sweep)


def resume_sweep(run_dir: str | Path, address: str | None = None) -> RunResult:
    """Continue a killed or interrupted run: finished trials are kept, unfinished ones continue from checkpoints."""
    from ray import tune

    from orchestrator.data import prepare_data

    run_dir = Path(run_dir).absolute()
    if not (run_dir / SPEC_FILE).is_file() or not (run_dir / STORE_FILE).is_file():
        raise SegsweepError(f"{run_dir}: not a segsweep run directory (no {SPEC_FILE} / {STORE_FILE})")
    if not tune.Tuner.can_restore(str(run_dir / TUNE_DIR)):
        raise SegsweepError(f"{run_dir}: Tune saved no experiment state before the driver stopped; start the sweep "
                            f"again with 'orchestrate run'")
    sweep = load_spec(run_dir / SPEC_FILE)
    store = Store(run_dir / STORE_FILE)
    meta = store.meta()
    dropped = store.drop_unfinished_except(saved_trial_ids(run_dir / TUNE_DIR))
    if dropped:
        print(f"[segsweep] {len(dropped)} trial(s) started after Tune's last snapshot will run again under new ids: "
              f"{', '.join(dropped)}", file=sys.stderr, flush=True)
    prepared = prepare_data(sweep.spec.data, run_dir / "cache")
    init_ray(address, sweep.spec)
    print(f"[segsweep] resuming {run_dir}", file=sys.stderr, flush=True)
    tuner = build_tuner(sweep, run_dir, _context(sweep, run_dir, prepared), meta.get("trials", 0), restore=True)
    return _fit(tuner, run_dir, sweep)


def saved_trial_ids(tune_dir: Path) -> set[str]:
    """Trial ids in Tune's latest experiment snapshot: the trials that a restore brings back."""
    snapshots = sorted(tune_dir.glob("experiment_state-*.json"))
    if not snapshots:
        return set()
    state = json.loads(snapshots[-1].read_text())
    return {json.loads(entry[0])["trial_id"] for entry in state["trial_data"]}


def _fit(tuner, run_dir: Path, sweep: Sweep) -> RunResult:
    from orchestrator.latency.sweep import measure_exports
    from orchestrator.tracking import log_summary_run
    from reports.build import build_report

    started = time.perf_counter()
    tuner.fit()
    store = Store(run_dir / STORE_FILE)
    store.set_meta(fit_seconds=store.meta().get("fit_seconds", 0) + time.perf_counter() - started)
    counts = store.counts()
    interrupted = any(t.status not in TERMINAL for t in store.trials()) or sum(
        counts[s] for s in TERMINAL) < store.meta().get("trials", 0)
    if sweep.spec.export is not None and not interrupted:
        measure_exports(run_dir, sweep.spec, store)
    build_report(run_dir)
    if not interrupted:
        log_summary_run(run_dir, sweep.spec.tracking.wandb.model_dump(mode="json"), sweep.spec.name)
    print(progress_line(store), file=sys.stderr, flush=True)
    return RunResult(run_dir=run_dir, counts=counts, interrupted=interrupted)
