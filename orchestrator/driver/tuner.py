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
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.basic_variant import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch

from orchestrator.driver.callbacks import (CheckpointCallback, PoolCallback, ProgressCallback, StoreCallback,
                                          WandbCallback)
from orchestrator.driver.pool import PROXY_CPUS, Pool, check_resources
from orchestrator.driver.space import to_tune_space
from orchestrator.errors import SegsweepError
from orchestrator.pool.proxy import proxy_trial
from orchestrator.rundir import RunDir, experiment_name
from orchestrator.spec.load import Sweep
from orchestrator.spec.schema import SweepSpec

# Ray's and Tune's environment settings of a sweep: orchestrator.driver's __init__, before Ray is imported


def init_ray(address: str | None, spec: SweepSpec) -> None:
    """Join ``address`` (or this process's Ray, or a new local one) and check that a trial fits in the cluster."""
    if ray.is_initialized():
        quiet_tune()
        check_resources(spec, ray.cluster_resources())
        return
    # Ray's own warnings of note become our one-line errors; the rest (token set-up) is noise on a sweep's console
    kwargs: dict[str, Any] = {"include_dashboard": False, "configure_logging": True, "logging_level": "ERROR",
                              "log_to_driver": True}
    if address:
        kwargs["address"] = address
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise SegsweepError(f"--address {address}: cannot join the Ray cluster ({str(e).splitlines()[0]})") from None
    quiet_tune()
    check_resources(spec, ray.cluster_resources())


def quiet_tune() -> None:
    """Tune logs a failed trial's whole traceback: the store keeps its one line, which the progress callback
    prints, so Tune's own logging stays off the console."""
    logging.getLogger("ray.tune").setLevel(logging.CRITICAL)


def cluster_gpus() -> float:
    return ray.cluster_resources().get("GPU", 0) if ray.is_initialized() else 0.0


def searcher(sweep: Sweep, run_dir: Path, concurrency: int, seed_offset: int = 0) -> Searcher:
    """Optuna (its study in the run's optuna.db, continued by ``extend``) or Tune's random/grid generator."""
    spec, search = sweep.spec, sweep.spec.search
    if search.algorithm != "optuna":
        # Tune applies max_concurrent_trials to Searchers only; the basic generator takes its own limit
        return BasicVariantGenerator(random_state=search.seed + seed_offset, max_concurrent=concurrency)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{RunDir(run_dir).optuna}")
    # several objectives: Optuna gets them all; Tune itself and ASHA keep the single search.metric
    objectives = {"metric": [o.metric for o in search.objectives], "mode": [o.mode for o in search.objectives]}
    # an extension's sampler starts from another seed: the same one would draw its first (random) points again
    return ResumableOptunaSearch(sampler=optuna.samplers.TPESampler(seed=search.seed + seed_offset), storage=storage,
                                 study_name=spec.name, **(objectives if len(search.objectives) > 1 else {}))


class ResumableOptunaSearch(OptunaSearch):
    """Optuna's searcher, for a run that may be resumed after kill -9. Tune tells the searcher that a trial ended
    (Optuna's study in optuna.db stores it at once) before its own callbacks and its next snapshot; a driver killed in
    between resumes that trial, and Optuna refuses its reports with UpdateFinishedTrialError, which Tune raises as the
    whole sweep's error. The trial's end stands as the study stored it; its resumed reports go to Tune, the scheduler
    and the store only."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        try:
            super().on_trial_result(trial_id, result)
        except optuna.exceptions.UpdateFinishedTrialError:
            self._completed_trials.add(trial_id)  # and its completion is then a no-op too


def scheduler(sweep: Sweep) -> TrialScheduler:
    spec, search = sweep.spec, sweep.spec.search
    if search.scheduler.name != "asha":
        return FIFOScheduler()
    own = {"metric": search.metric, "mode": search.mode} if len(search.objectives) > 1 else {}
    return ASHAScheduler(max_t=spec.trainer.max_epochs, grace_period=min(search.scheduler.grace_period,
                         spec.trainer.max_epochs), reduction_factor=search.scheduler.reduction_factor, **own)


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
            callbacks=[StoreCallback(store_path, spec.trainer.max_epochs, sweep.groups),
                       WandbCallback(spec.tracking.wandb.model_dump(mode="json"), str(run_dir), spec.name,
                                     sweep.groups),
                       CheckpointCallback(str(run_dir)), PoolCallback(), ProgressCallback(store_path)],
        ),
    )


def saved_trial_ids(tune_dir: Path) -> set[str]:
    """Trial ids in Tune's latest experiment snapshot: the trials that a restore brings back."""
    snapshots = sorted(tune_dir.glob("experiment_state-*.json"))
    if not snapshots:
        return set()
    state = json.loads(snapshots[-1].read_text())
    return {json.loads(entry[0])["trial_id"] for entry in state["trial_data"]}
