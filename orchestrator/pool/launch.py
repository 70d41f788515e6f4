"""The pool's workers started and held: where each runs and with how many slots (the rules: ``pool.admission``), the
dispatcher, the sweep's context attached to every worker, the study's self-check on them, and their end. The driver
starts it (``driver.run``) and hands every proxy its ``PoolContext``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import RayActorError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from orchestrator.errors import SegsweepError
from orchestrator.mps import MpsDaemon
from orchestrator.pool.actor import WorkerActor
from orchestrator.pool.admission import cpu_workers, gpu_placements
from orchestrator.pool.dispatch import Dispatcher
from orchestrator.pool.protocol import PoolContext, WorkerSettings, decision_epochs
from orchestrator.pool.ship import ShippedData, ship
from orchestrator.spec.load import Sweep
from orchestrator.trial.config import TrialContext

MAX_CONCURRENCY = 256  # a worker's method threads: each waiting proxy holds one
PROXY_CPUS = 0.01  # a proxy holds no GPU and does next to nothing; Tune wants some resource per trial
WARM_LIMIT = 8  # architectures stepped once per slot before the first trial
_ACTIVE: Pool | None = None  # ``active_pool``


def warm_configs(sweep: Sweep) -> tuple[dict[str, Any], ...]:
    """One flat config per architecture the study can sample (its model keys' choices), the rest at their first
    values and the loss plain CE: what a worker steps once per slot to compile and plan its convolutions."""
    base = {**sweep.fixed_config(), "loss.name": "ce"}
    options: list[list[dict[str, Any]]] = []
    for key, domain in sweep.domains.items():
        if key == "model" and domain.grouped:
            options.append(list(domain.options(key).values()))
        elif key.startswith("model.") and domain.kind == "choice":
            options.append([{key: v} for v in domain.values])
    configs = [dict(base, **{k: v for part in combo for k, v in part.items()})
               for combo in itertools.product(*options)]
    return tuple(configs[:WARM_LIMIT])


@dataclass
class Pool:
    workers: list[Any]
    dispatcher: Any
    limits: list[int]
    shipped: ShippedData | None = None  # the data in the object store for other nodes' workers (held while it runs)
    mps: MpsDaemon | None = None  # the sweep's own CUDA MPS daemon, which the workers are clients of

    def concurrency(self, max_concurrent: int = 0) -> int:
        """Trials Tune runs at once: every slot that may start, plus one waiting per worker so that a slot that
        frees starts its next trial at once; at most ``resources.max_concurrent`` where set."""
        total = sum(self.limits) + len(self.workers)
        return min(total, max_concurrent) if max_concurrent else total

    def context(self, run_dir: str, groups: dict, finished: dict[str, dict[str, float]] | None = None) -> PoolContext:
        return PoolContext(run_dir=run_dir, workers=tuple(self.workers), dispatcher=self.dispatcher, groups=groups,
                           finished=finished or {})

    def attach(self, context: TrialContext) -> None:
        """The sweep's context for every worker, and on a cluster of several nodes the data through the object store.
        Not waited for: Tune starts while the workers still import (a worker that cannot start fails its trials with
        the reason, ``pool.proxy``)."""
        self.shipped = ship(context.data)
        for worker in self.workers:
            worker.attach.remote(context, self.shipped)

    def abandon(self, trial_id: str) -> None:
        """Tune ended ``trial_id`` (``PoolCallback``): if the pool still holds it, its proxy died without saying so,
        and its worker drops it now, freeing the slot (``Dispatcher.abandon``)."""
        index = ray.get(self.dispatcher.abandon.remote(trial_id))
        if index is not None:
            self.workers[index].stop.remote(trial_id)

    def revalidate(self, rows: list[Any]) -> list[dict[str, Any]]:
        """The study's self-check on the workers (``TrialWorker.revalidate``), the trials spread over them: one result
        per store row, in order."""
        calls = [self.workers[i % len(self.workers)].revalidate.remote(row.id, row.config) for i, row in enumerate(rows)]
        results = []
        for call in calls:
            try:
                results.append(ray.get(call))
            except RayActorError as e:
                results.append({"error": f"WorkerDied: the worker stopped while re-scoring ({str(e).splitlines()[0]})"})
        return results

    def shutdown(self) -> None:
        global _ACTIVE
        if _ACTIVE is self:
            _ACTIVE = None
        for actor in [*self.workers, self.dispatcher]:
            ray.kill(actor)
        if self.mps is not None:
            self.mps.stop()  # it ends once the killed workers, its clients, have gone


def start_pool(sweep: Sweep, mps: MpsDaemon | None = None) -> Pool:
    """The workers (starting now: they import torch and the models while the driver prepares the data); ``mps``: the
    sweep's CUDA MPS daemon, which the GPU workers are pointed at (the pool stops it at its shutdown)."""
    spec = sweep.spec
    res = spec.resources
    gpus = ray.cluster_resources().get("GPU", 0)
    warm = warm_configs(sweep) if res.preload_workers else ()
    placements: list[tuple[int, dict[str, Any]]] = []
    limits: list[int] = []
    if gpus > 0 and res.gpus_per_trial != 0:
        per_gpu = gpu_placements(res, mps is not None)
        extra = {"runtime_env": {"env_vars": mps.env}} if mps is not None else {}
        whole = 1 if res.gpus_per_trial == "auto" or res.gpus_per_trial <= 1 else int(res.gpus_per_trial)
        for _ in range(int(gpus // whole)):
            for slots, limit, share in per_gpu:
                placements.append((slots, {"num_gpus": share * whole, "num_cpus": 0, **extra}))
                limits.append(limit)
    else:
        for node in ray.nodes():
            strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
            placements += [(1, {"num_cpus": 0, "scheduling_strategy": strategy})] * cpu_workers(
                node["Resources"].get("CPU", 0) if node["Alive"] else 0, res)
        if mps is not None:
            mps.stop()  # CPU trials: no client for it
            mps = None
    if not placements:
        raise SegsweepError(f"no node of the Ray cluster has resources.cpus_per_trial ({res.cpus_per_trial:g}) CPUs")
    limits = limits or [slots for slots, _ in placements]
    actor = ray.remote(WorkerActor)
    workers = [actor.options(max_concurrency=MAX_CONCURRENCY, **options).remote(
        WorkerSettings(slots, limit, max(1, int(res.cpus_per_trial)), res.memory_aware, decisions(sweep), warm))
        for (slots, options), limit in zip(placements, limits)]
    # on the driver's node: it lives as long as the driver, whichever other node goes away
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    dispatcher = ray.remote(Dispatcher).options(num_cpus=0, scheduling_strategy=here).remote(limits)
    global _ACTIVE
    _ACTIVE = Pool(workers, dispatcher, limits, mps=mps)
    return _ACTIVE


def active_pool() -> Pool | None:
    """The pool this driver process runs its trials on (None before ``start_pool`` and after its shutdown): how
    Tune's callbacks reach it, which Tune pickles and restores on resume, so that they cannot hold its handles."""
    return _ACTIVE


def scheduled_epochs(sweep: Sweep) -> int:
    """The most epochs of the full network a trial trains: ``trainer.max_epochs`` less a fixed
    ``model.stage1_epochs`` (a staged model's first stage is no epoch of the network it deploys). ASHA's ``max_t``."""
    spec = sweep.spec
    searched = any(key in ("model", "model.stage1_epochs") for key in sweep.domains)
    return spec.trainer.max_epochs - (0 if searched else spec.model.stage1_epochs)


def decisions(sweep: Sweep) -> tuple[int, ...]:
    """The full network's epochs (``full_epoch``) at which the sweep's scheduler may stop a trial (ASHA's rungs; none
    without early stopping)."""
    scheduler = sweep.spec.search.scheduler
    return decision_epochs(scheduled_epochs(sweep), scheduler.grace_period if scheduler.name == "asha" else None,
                           scheduler.reduction_factor)
