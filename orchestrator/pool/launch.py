"""The pool's workers started and held: where each runs and with how many slots (the rules: ``pool.admission``), the
dispatcher, the sweep's context attached to every worker, the study's self-check on them, and their end. The driver
starts it (``driver.run``) and hands every proxy its ``PoolContext``.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import RayActorError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from orchestrator.errors import SegsweepError
from orchestrator.mps import MpsDaemon
from orchestrator.pool.actor import WorkerActor
from orchestrator.pool.admission import cpu_workers, gpu_placements
from orchestrator.pool.dispatch import Dispatcher, Lease
from orchestrator.pool.protocol import NAMESPACE, POOL_NAME, PoolContext, WorkerSettings, decision_epochs
from orchestrator.pool.ship import ShippedData, ship
from orchestrator.spec.load import Sweep
from orchestrator.spec.schema import ResourcesSpec
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
    """The workers a sweep trains on: started for it (``start_pool``, they go with it), or a pool that outlives it
    (``find_pool``: ``resident``, the sweep attaches to it and detaches at its end)."""

    workers: list[Any]
    dispatcher: Any
    limits: list[int]
    shipped: ShippedData | None = None  # the data in the object store for other nodes' workers (held while it runs)
    mps: MpsDaemon | None = None  # the sweep's own CUDA MPS daemon, which the workers are clients of
    resident: bool = False  # a pool that outlives the sweep: shutdown detaches the sweep, the workers stay
    run_dir: str = ""  # the sweep attached

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
        the reason, ``pool.proxy``). A pool that outlives sweeps keeps it too, for a worker Ray starts again."""
        self.run_dir = context.run_dir
        if self.resident:  # a driver killed with -9 cannot detach: its lease ends with it, and the workers see that
            context = dataclasses.replace(context, lease=ray.remote(Lease).options(num_cpus=0).remote())
        self.shipped = ship(context.data)
        for worker in self.workers:
            worker.attach.remote(context, self.shipped)
        if self.resident:
            self.dispatcher.attach.remote(context, self.shipped)

    def abandon(self, trial_id: str) -> None:
        """Tune ended ``trial_id`` (``PoolCallback``): if the pool still holds it, its proxy died without saying so,
        and its worker drops it now, freeing the slot (``Dispatcher.abandon``)."""
        index = ray.get(self.dispatcher.abandon.remote(trial_id))
        if index is not None:
            self.workers[index].stop.remote(trial_id)

    def revalidate(self, rows: list[Any]) -> list[dict[str, Any]]:
        """The study's self-check on the workers (``TrialWorker.revalidate``), the trials spread over them: one result
        per store row, in order."""
        calls = [self.workers[i % len(self.workers)].revalidate.remote(row.id, row.config, self.run_dir)
                 for i, row in enumerate(rows)]
        results = []
        for call in calls:
            try:
                results.append(ray.get(call))
            except RayActorError as e:
                results.append({"error": f"WorkerDied: the worker stopped while re-scoring ({str(e).splitlines()[0]})"})
        return results

    def shutdown(self) -> None:
        """The sweep's end: its own workers go (and its MPS daemon); a pool that outlives it only lets it go."""
        global _ACTIVE
        if _ACTIVE is self:
            _ACTIVE = None
        if self.resident:
            if self.run_dir:
                for worker in self.workers:
                    worker.detach.remote(self.run_dir)
                self.dispatcher.detach.remote(self.run_dir)
            return
        for actor in [*self.workers, self.dispatcher]:
            ray.kill(actor)
        if self.mps is not None:
            self.mps.stop()  # it ends once the killed workers, its clients, have gone


def placements(res: ResourcesSpec, mps: MpsDaemon | None) -> tuple[list[tuple[int, int, dict[str, Any]]],
                                                                     MpsDaemon | None]:
    """Where each worker goes, by admission's packing: (slots, trials admitted at the start, Ray options) per worker
    over the cluster's GPUs (or, for CPU trials, its nodes' CPUs); the MPS daemon back, or None where the trials run
    on CPUs (then it is stopped: no client for it)."""
    gpus = ray.cluster_resources().get("GPU", 0)
    out: list[tuple[int, int, dict[str, Any]]] = []
    if gpus > 0 and res.gpus_per_trial != 0:
        extra = {"runtime_env": {"env_vars": mps.env}} if mps is not None else {}
        whole = 1 if res.gpus_per_trial == "auto" or res.gpus_per_trial <= 1 else int(res.gpus_per_trial)
        for _ in range(int(gpus // whole)):
            for slots, limit, share in gpu_placements(res, mps is not None):
                out.append((slots, limit, {"num_gpus": share * whole, "num_cpus": 0, **extra}))
        return out, mps
    for node in ray.nodes():
        strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        out += [(1, 1, {"num_cpus": 0, "scheduling_strategy": strategy})] * cpu_workers(
            node["Resources"].get("CPU", 0) if node["Alive"] else 0, res)
    if mps is not None:
        mps.stop()
    return out, None


def start_pool(sweep: Sweep, mps: MpsDaemon | None = None) -> Pool:
    """The sweep's own workers (starting now: they import torch and the models while the driver prepares the data);
    ``mps``: the sweep's CUDA MPS daemon, which the GPU workers are pointed at (the pool stops it at its shutdown)."""
    res = sweep.spec.resources
    placed, mps = placements(res, mps)
    if not placed:
        raise SegsweepError(f"no node of the Ray cluster has resources.cpus_per_trial ({res.cpus_per_trial:g}) CPUs")
    actor = ray.remote(WorkerActor)
    workers = [actor.options(max_concurrency=MAX_CONCURRENCY, **options).remote(
        WorkerSettings(slots, limit, max(1, int(res.cpus_per_trial)), res.memory_aware))
        for slots, limit, options in placed]
    limits = [limit for _, limit, _ in placed]
    # on the driver's node: it lives as long as the driver, whichever other node goes away
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    dispatcher = ray.remote(Dispatcher).options(num_cpus=0, scheduling_strategy=here).remote(limits)
    return activate(Pool(workers, dispatcher, limits, mps=mps))


def start_resident_pool(res: ResourcesSpec, key: str, mps: MpsDaemon | None = None) -> Pool:
    """A pool that outlives sweeps, named in Ray (``POOL_NAME`` in ``NAMESPACE``) so that every sweep on this Ray
    finds it: workers that Ray starts again when they die (each gets the sweeps attached from the dispatcher), and a
    dispatcher that holds the pool's ``key`` (the installed versions: ``pool.resident.pool_key``)."""
    placed, mps = placements(res, mps)
    if not placed:
        raise SegsweepError(f"no node of the Ray cluster has resources.cpus_per_trial ({res.cpus_per_trial:g}) CPUs")
    limits = [limit for _, limit, _ in placed]
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    dispatcher = ray.remote(Dispatcher).options(num_cpus=0, scheduling_strategy=here, name=POOL_NAME,
                                                namespace=NAMESPACE).remote(limits, key, [], True)
    actor = ray.remote(WorkerActor)
    workers = [actor.options(max_concurrency=MAX_CONCURRENCY, max_restarts=-1, name=f"{POOL_NAME}-worker-{i}",
                             namespace=NAMESPACE, **options).remote(
        WorkerSettings(slots, limit, max(1, int(res.cpus_per_trial)), res.memory_aware), dispatcher)
        for i, (slots, limit, options) in enumerate(placed)]
    ray.get(dispatcher.set_workers.remote(workers))
    return Pool(workers, dispatcher, limits, mps=mps, resident=True)


def find_pool(key: str) -> Pool | None:
    """The pool already running on this Ray (``start_resident_pool``), if its key is this installation's; a pool of
    other versions is never used (one line says so) and None comes back."""
    try:
        dispatcher = ray.get_actor(POOL_NAME, namespace=NAMESPACE)
        info = ray.get(dispatcher.info.remote(), timeout=30)
    except (ValueError, ray.exceptions.RayError):
        return None
    if info["key"] != key:
        print(f"[segsweep] the pool on this Ray runs other versions (key {info['key'][:12]}, this installation "
              f"{key[:12]}): not used; the sweep starts workers of its own", file=sys.stderr, flush=True)
        return None
    return activate(Pool(list(info["workers"]), dispatcher, list(info["limits"]), resident=True))


def activate(pool: Pool) -> Pool:
    global _ACTIVE
    _ACTIVE = pool
    return pool


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
