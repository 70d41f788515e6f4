"""Ray and the Tuner of a sweep: joining or starting Ray, the searcher (Optuna | random | grid), the scheduler
(ASHA | FIFO), the trainable (the pool's proxy) and the driver's callbacks."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune.logger import JsonLoggerCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.basic_variant import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch

from orchestrator.budgets import judge
from orchestrator.driver.callbacks import (
    CheckpointCallback,
    PoolCallback,
    ProgressCallback,
    StoreCallback,
    WandbCallback,
)
from orchestrator.driver.space import to_tune_space
from orchestrator.errors import SegsweepError
from orchestrator.pool.launch import PROXY_CPUS, Pool, scheduled_epochs
from orchestrator.pool.protocol import REPLAYED
from orchestrator.pool.proxy import proxy_trial
from orchestrator.rundir import RunDir, experiment_name
from orchestrator.spec.load import Sweep
from orchestrator.spec.schema import SweepSpec
from orchestrator.store import FULL_EPOCH, ended_as, finite

# Ray's and Tune's environment settings of a sweep: orchestrator.driver's __init__, before Ray is imported


def init_ray(address: str | None, spec: SweepSpec) -> None:
    """Join ``address`` (or this process's Ray, or a new local one) and check that a trial fits in the cluster."""
    if ray.is_initialized():
        quiet_tune()
        check_resources(spec, ray.cluster_resources())
        return
    # Ray's own warnings of note become our one-line errors; the rest (token set-up) is noise on a sweep's console
    # without --address a Ray of the sweep's own ("local"): Ray would otherwise join any cluster that `ray start` left
    # running on the machine
    kwargs: dict[str, Any] = {"include_dashboard": False, "configure_logging": True, "logging_level": "ERROR",
                              "log_to_driver": True, "address": address or "local"}
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise SegsweepError(f"--address {address}: cannot join the Ray cluster ({str(e).splitlines()[0]})") from None
    quiet_tune()
    check_resources(spec, ray.cluster_resources())


def check_resources(spec: SweepSpec, available: dict[str, float]) -> None:
    """A trial that asks for more than the whole cluster has would wait forever: refuse it up front."""
    share = spec.resources.gpus_per_trial
    need = {"CPU": spec.resources.cpus_per_trial, "GPU": 0.0 if share == "auto" else float(share)}
    for kind, amount in need.items():
        if amount > available.get(kind, 0):
            key = f"resources.{kind.lower()}s_per_trial"
            raise SegsweepError(f"{key}: {amount:g} per trial, but the Ray cluster has {available.get(kind, 0):g} "
                                f"{kind}(s); lower it (e.g. --set {key}={available.get(kind, 0):g})")
    for name, amount in spec.resources.proxy_resources.items():
        if amount > available.get(name, 0):
            raise SegsweepError(f"resources.proxy_resources.{name}: {amount:g} per trial, but the Ray cluster has "
                                f"{available.get(name, 0):g}; start a node with --resources '{{\"{name}\": N}}' or "
                                f"remove the key")


def quiet_tune() -> None:
    """Tune logs a failed trial's whole traceback: the store keeps its one line, which the progress callback
    prints, so Tune's own logging stays off the console."""
    logging.getLogger("ray.tune").setLevel(logging.CRITICAL)


def cluster_gpus() -> float:
    return ray.cluster_resources().get("GPU", 0) if ray.is_initialized() else 0.0


def searcher(sweep: Sweep, run_dir: Path, concurrency: int, seed_offset: int = 0) -> Searcher:
    """Optuna (its study in the run's optuna.db, continued by ``extend``) or Tune's random/grid generator."""
    spec, search = sweep.spec, sweep.spec.search
    if search.algorithm != "optuna" or not sweep.domains:  # nothing searched: Optuna has nothing to sample
        # Tune applies max_concurrent_trials to Searchers only; the basic generator takes its own limit
        return BasicVariantGenerator(random_state=search.seed + seed_offset, max_concurrent=concurrency)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{RunDir(run_dir).optuna}")
    # several objectives: Optuna gets them all; Tune itself and ASHA keep the single search.metric
    objectives = {"metric": [o.metric for o in search.objectives], "mode": [o.mode for o in search.objectives]}
    # an extension's sampler starts from another seed: the same one would draw its first (random) points again
    return StudySearch(sampler=optuna.samplers.TPESampler(seed=search.seed + seed_offset), storage=storage,
                       study_name=spec.name, run_dir=str(run_dir), max_epochs=spec.trainer.max_epochs,
                       constraints=[c.model_dump() for c in search.constraints],
                       **(objectives if len(search.objectives) > 1 else {}))


class StudySearch(OptunaSearch):
    """Optuna's searcher, with its study (``optuna.db``) in agreement with the store, so that optuna-dashboard shows
    what the report does:

    - each trial carries user attributes ``segsweep_trial_id`` and ``run_dir``, and at its end ``status`` (the
      store's), ``best_value`` and ``best_epoch`` of the sweep's metric;
    - each epoch's metric is an intermediate value (step = the trial's epoch; single objective only, as Optuna allows),
      so the dashboard draws the curves; a staged model's first-stage epochs have no metric and report none;
    - a trial that ran every epoch ends COMPLETE with its best epoch's value (the figure the report ranks on; several
      objectives: each one's best); one stopped early by the scheduler ends PRUNED (Optuna then takes its last
      reported value, by its own rule); a failed one ends FAIL;
    - with budgets (``search.constraints``) every trial that was not a failure carries Optuna's own constraints
      (``Trial.set_constraint``, one per budget, named by it: how far over the budget, <= 0 within it), which its
      samplers read to learn where the feasible region is; a trial over budget was never trained and ends PRUNED
      (the state Optuna's TPE learns infeasibility from: a FAIL is left out of its model) with the user attributes
      ``status`` ``infeasible``, ``infeasible`` (the budgets it broke, one line) and ``budgets`` (its figures).
      (Optuna 5 deprecates the sampler's ``constraints_func`` for ``set_constraint``.)

    And for a run resumed after kill -9: Tune tells the searcher that a trial ended (stored at once) before its own
    callbacks and its next snapshot; a driver killed in between resumes that trial, whose reports Optuna refuses
    (UpdateFinishedTrialError, which Tune would raise as the sweep's error): its end stands as the study stored it."""

    def __init__(self, *args: Any, run_dir: str = "", max_epochs: int = 0,
                 constraints: list[dict[str, Any]] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.run_dir, self.max_epochs, self.constraints = run_dir, max_epochs, constraints or []
        self._best: dict[str, dict[str, tuple[float, int]]] = {}  # trial -> metric -> (best value, its epoch)
        self._reported: dict[str, set[int]] = {}  # trial -> epochs reported as intermediate values

    def _objectives(self) -> list[tuple[str, str]]:
        metrics, modes = self.metric, self.mode
        if isinstance(metrics, list):
            return list(zip(metrics, modes))
        return [(metrics, modes)]

    def suggest(self, trial_id: str) -> dict | None:
        config = super().suggest(trial_id)
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None and "segsweep_trial_id" not in ot_trial.user_attrs:
            ot_trial.set_user_attr("segsweep_trial_id", trial_id)
            ot_trial.set_user_attr("run_dir", self.run_dir)
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self._completed_trials:
            self._absorb(trial_id, result)

    def _absorb(self, trial_id: str, result: dict) -> None:
        """An epoch's result: each objective's best so far, and the metric as the epoch's intermediate value. Tune
        hands a trial's last result (the one its scheduler stops it at) to ``on_trial_complete`` alone."""
        if REPLAYED in result or "epoch" not in result:
            return
        epoch = int(result["epoch"])
        best = self._best.setdefault(trial_id, {})
        for metric, mode in self._objectives():
            value = result.get(metric)
            if not finite(value):
                continue  # a first-stage epoch (no metric), or a NaN
            if metric not in best or (value > best[metric][0] if mode == "max" else value < best[metric][0]):
                best[metric] = (float(value), epoch)
        reported = self._reported.setdefault(trial_id, set())
        metric = self._objectives()[0][0]
        if isinstance(self.metric, list) or not finite(result.get(metric)) or epoch in reported:
            return
        try:
            self._ot_trials[trial_id].report(float(result[metric]), epoch)
            reported.add(epoch)
        except optuna.exceptions.UpdateFinishedTrialError:
            self._completed_trials.add(trial_id)  # ended before a kill -9: its completion is then a no-op too

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        if result and not error:
            self._absorb(trial_id, result)
            if trial_id in self._completed_trials:
                return
        self._completed_trials.add(trial_id)
        ot_trial = self._ot_trials[trial_id]
        best = self._best.get(trial_id, {})
        status = "failed" if error else ended_as(result or {}, self.max_epochs)
        values = None
        if status == "completed" and all(m in best for m, _ in self._objectives()):
            values = [best[m][0] for m, _ in self._objectives()]
        state = {"failed": optuna.trial.TrialState.FAIL, "early_stopped": optuna.trial.TrialState.PRUNED,
                 "infeasible": optuna.trial.TrialState.PRUNED,
                 "completed": optuna.trial.TrialState.COMPLETE if values else optuna.trial.TrialState.FAIL}[status]
        try:
            ot_trial.set_user_attr("status", status)
            metric = self._objectives()[0][0]
            if metric in best:
                ot_trial.set_user_attr("best_value", best[metric][0])
                ot_trial.set_user_attr("best_epoch", best[metric][1])
            if self.constraints and status != "failed" and REPLAYED not in (result or {}):
                self._budgets(ot_trial, result or {})
            self._ot_study.tell(ot_trial, values if state == optuna.trial.TrialState.COMPLETE else None, state=state)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # stored before a kill -9; it stands

    def _budgets(self, ot_trial: optuna.trial.Trial, result: dict) -> None:
        """Optuna's constraints of a trial that trained or was over budget: every budget's figure is in each of its
        results (known before training)."""
        verdict = judge(self.constraints, result)
        for name, violation in verdict.violations.items():
            ot_trial.set_constraint(name, violation)
        ot_trial.set_user_attr("budgets", verdict.figures)
        if not verdict.feasible:
            ot_trial.set_user_attr("infeasible", verdict.line)


def scheduler(sweep: Sweep) -> TrialScheduler:
    search = sweep.spec.search
    if search.scheduler.name != "asha":
        return FIFOScheduler()
    own = {"metric": search.metric, "mode": search.mode} if len(search.objectives) > 1 else {}
    # ASHA counts the full network's epochs: a staged model's first-stage epochs carry no search metric
    max_t = scheduled_epochs(sweep)
    return ASHAScheduler(time_attr=FULL_EPOCH, max_t=max_t, grace_period=min(search.scheduler.grace_period, max_t),
                         reduction_factor=search.scheduler.reduction_factor, **own)


def build_tuner(sweep: Sweep, run_dir: Path, pool: Pool, total: int, restore: bool = False, experiment: int = 1,
                seed_offset: int = 0, finished: dict[str, dict[str, float]] | None = None) -> tune.Tuner:
    """The Tuner for a new run, or the restored one for ``resume``: each trial a proxy of the pool. ``experiment``:
    Tune's experiment of the run (``orchestrate extend`` starts the next); ``seed_offset``: added to a random
    search's seed (and Optuna's sampler's), so that an extension draws new points; ``finished``: on resume, the
    trials the store holds finished with their last metrics, whose proxies end at once."""
    spec, search, run = sweep.spec, sweep.spec.search, RunDir(run_dir)
    ctx = pool.context(str(run_dir), sweep.groups, finished)
    trainable = tune.with_resources(tune.with_parameters(proxy_trial, ctx=ctx),
                                    {"CPU": PROXY_CPUS, **spec.resources.proxy_resources})
    concurrency = pool.concurrency(spec.resources.max_concurrent)
    if restore:
        return tune.Tuner.restore(str(run.experiment(experiment)), trainable, resume_unfinished=True, resume_errored=False,
                                  restart_errored=False)
    multi = len(search.objectives) > 1
    store_path = str(run.store)
    return tune.Tuner(
        trainable,
        param_space=to_tune_space(sweep),
        tune_config=tune.TuneConfig(
            metric=None if multi else search.metric, mode=None if multi else search.mode,
            search_alg=searcher(sweep, run_dir, concurrency, seed_offset), scheduler=scheduler(sweep),
            num_samples=1 if search.algorithm == "grid" else total,
            max_concurrent_trials=concurrency if search.algorithm == "optuna" else None,
            reuse_actors=spec.resources.reuse_actors,
            trial_dirname_creator=lambda trial: trial.trial_id,
        ),
        run_config=tune.RunConfig(
            name=experiment_name(experiment), storage_path=str(run_dir), verbose=0,
            failure_config=tune.FailureConfig(max_failures=search.max_failures),
            # Tune deletes none (num_to_keep=1 left a killed driver's snapshot naming a checkpoint gone: "Could not
            # recover from checkpoint as it does not exist"); CheckpointCallback turns older ones into pointers
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
            callbacks=[StoreCallback(store_path, spec.trainer.max_epochs, sweep.groups,
                                     [c.model_dump() for c in search.constraints]),
                       WandbCallback(spec.tracking.wandb.model_dump(mode="json"), str(run_dir), spec.name,
                                     sweep.groups),
                       CheckpointCallback(str(run_dir)), PoolCallback(), ProgressCallback(store_path),
                       JsonLoggerCallback()],
        ),
    )


def saved_trial_ids(tune_dir: Path) -> set[str]:
    """Trial ids in Tune's latest experiment snapshot: the trials that a restore brings back."""
    snapshots = sorted(tune_dir.glob("experiment_state-*.json"))
    if not snapshots:
        return set()
    state = json.loads(snapshots[-1].read_text())
    return {json.loads(entry[0])["trial_id"] for entry in state["trial_data"]}
