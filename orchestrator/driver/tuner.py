"""Ray and the Tuner of a sweep: joining or starting Ray, the searcher (Optuna | random | grid), the scheduler
(ASHA | FIFO), the trainable with its resources, and the driver's callbacks."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.basic_variant import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch

from orchestrator.driver.admission import TrialResources, gpus_per_trial
from orchestrator.driver.callbacks import CheckpointCallback, ProgressCallback, StoreCallback, WandbCallback
from orchestrator.driver.space import to_tune_space
from orchestrator.errors import SegsweepError
from orchestrator.rundir import TUNE_DIR, RunDir
from orchestrator.spec.load import Sweep
from orchestrator.spec.schema import SweepSpec
from orchestrator.trial import preload
from orchestrator.trial.config import TrialContext
from orchestrator.trial.run import run_trial

# Tune snapshots its experiment state at most this often; small, so that a killed driver loses little. Its warning
# that snapshots come often (one per checkpointing epoch) is then expected, and 0 silences it.
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def ray_runtime_env(spec: SweepSpec) -> dict[str, Any]:
    """The job's runtime environment: environment variables, and (``resources.preload_workers``) the hook that has
    every Ray worker import the trial's modules as it starts (``orchestrator.trial.preload``)."""
    # a stopped trial gets time to finish its W&B run before its actor is reused or torn down
    env = {"TUNE_FUNCTION_THREAD_TIMEOUT_S": os.environ.get("TUNE_FUNCTION_THREAD_TIMEOUT_S", "15")}
    runtime_env: dict[str, Any] = {"env_vars": env}
    if spec.resources.preload_workers:
        runtime_env["worker_process_setup_hook"] = preload.warm
    return runtime_env


def init_ray(address: str | None, spec: SweepSpec) -> None:
    """Join ``address`` (or this process's Ray, or a new local one) and check that a trial fits in the cluster."""
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
    return ray.cluster_resources().get("GPU", 0) if ray.is_initialized() else 0.0


def check_resources(spec: SweepSpec, available: dict[str, float]) -> None:
    """A trial that asks for more than the whole cluster has would wait forever: refuse it up front."""
    need = {"CPU": spec.resources.cpus_per_trial, "GPU": gpus_per_trial(spec.resources, available.get("GPU", 0))}
    for kind, amount in need.items():
        if amount > available.get(kind, 0):
            key = f"resources.{kind.lower()}s_per_trial"
            raise SegsweepError(f"{key}: {amount:g} per trial, but the Ray cluster has {available.get(kind, 0):g} "
                                f"{kind}(s); lower it (e.g. --set {key}={available.get(kind, 0):g})")


def trial_resources(sweep: Sweep, run_dir: Path, context: TrialContext) -> TrialResources:
    """Tune's resources callable for the sweep's trials (CPUs and a memory-checked GPU share)."""
    res = sweep.spec.resources
    data_bytes = context.data.cache_bytes()
    resident = sweep.spec.data.on_device(data_bytes)  # the trials' splits then count towards their GPU memory
    return TrialResources(res.cpus_per_trial, context.gpus_per_trial, res.memory_aware, str(run_dir), sweep.groups,
                          res.trial_gpu_memory_gb, res.gpu_memory_gb, context.data,
                          extra_bytes=data_bytes if resident else 0)


def searcher(sweep: Sweep, run_dir: Path) -> Searcher:
    spec, search = sweep.spec, sweep.spec.search
    if search.algorithm != "optuna":
        # Tune applies max_concurrent_trials to Searchers only; the basic generator takes its own limit
        return BasicVariantGenerator(random_state=search.seed, max_concurrent=spec.resources.max_concurrent)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{RunDir(run_dir).optuna}")
    # several objectives: Optuna gets them all; Tune itself and ASHA keep the single search.metric
    objectives = {"metric": [o.metric for o in search.objectives], "mode": [o.mode for o in search.objectives]}
    return OptunaSearch(sampler=optuna.samplers.TPESampler(seed=search.seed), storage=storage, study_name=spec.name,
                        **(objectives if len(search.objectives) > 1 else {}))


def scheduler(sweep: Sweep) -> TrialScheduler:
    spec, search = sweep.spec, sweep.spec.search
    if search.scheduler.name != "asha":
        return FIFOScheduler()
    own = {"metric": search.metric, "mode": search.mode} if len(search.objectives) > 1 else {}
    return ASHAScheduler(max_t=spec.trainer.max_epochs, grace_period=min(search.scheduler.grace_period,
                         spec.trainer.max_epochs), reduction_factor=search.scheduler.reduction_factor, **own)


def build_tuner(sweep: Sweep, run_dir: Path, context: TrialContext, total: int, restore: bool = False) -> tune.Tuner:
    """The Tuner for a new run, or the restored one for ``resume``."""
    spec, search, run = sweep.spec, sweep.spec.search, RunDir(run_dir)
    trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=context),
                                    trial_resources(sweep, run_dir, context))
    if restore:
        return tune.Tuner.restore(str(run.tune), trainable, resume_unfinished=True, resume_errored=False,
                                  restart_errored=False)
    multi = len(search.objectives) > 1
    store_path = str(run.store)
    return tune.Tuner(
        trainable,
        param_space=to_tune_space(sweep),
        tune_config=tune.TuneConfig(
            metric=None if multi else search.metric, mode=None if multi else search.mode,
            search_alg=searcher(sweep, run_dir), scheduler=scheduler(sweep),
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


def saved_trial_ids(tune_dir: Path) -> set[str]:
    """Trial ids in Tune's latest experiment snapshot: the trials that a restore brings back."""
    snapshots = sorted(tune_dir.glob("experiment_state-*.json"))
    if not snapshots:
        return set()
    state = json.loads(snapshots[-1].read_text())
    return {json.loads(entry[0])["trial_id"] for entry in state["trial_data"]}
