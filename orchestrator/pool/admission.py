"""Admission: which trials run where, and when. The rules, in the order they apply:

1. **CUDA MPS** (``use_mps``): ``resources.mps: auto`` runs a GPU pool's workers under the sweep's own MPS daemon
   where the sweep starts its own Ray on a machine with GPUs and no MPS of the user's is set up; ``true`` insists,
   ``false`` never. Under MPS the worker processes of one GPU run their kernels side by side.
2. **Packing** (``gpu_placements``): per GPU, ``trials_per_gpu`` trial slots (auto: 8 under MPS, else 4; a fraction
   ``gpus_per_trial`` f: 1/f) split over ``workers_per_gpu`` processes (auto: 4 under MPS, else 2), each holding an
   equal share of the GPU; a trial of whole GPUs: one worker of one slot. On CPUs: one one-slot worker per
   ``cpus_per_trial`` CPUs of each node (``cpu_workers``).
3. **Stated memory** (``stated_limit``): with ``trial_gpu_memory_gb`` and ``gpu_memory_gb`` given, fewer trials per
   GPU start at once when that many do not fit (``slots_for``).
4. **Dispatch** (``choose_worker``): a new trial goes to the live worker with the most free room (its slots less its
   trials), the same one when asked again.
5. **In a worker** (``WorkerAdmission``): the next trial starts when fewer than ``limit`` run and, with
   ``resources.memory_aware``, the GPU has room for the largest per-trial footprint seen so far (plus ``HEADROOM``).
6. **Out of memory** (``WorkerAdmission.out_of_memory``): a trial that runs out of GPU memory beside others starts
   again from its start once fewer run (the worker's limit drops to the trials still running); alone, it fails
   (``orchestrator.failures``).

Torch-free: the driver places the workers, the workers admit their trials.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from orchestrator.errors import SegsweepError
from orchestrator.mps import CONTROL
from orchestrator.mps import PIPE_ENV as MPS_PIPE_ENV  # set: an MPS daemon of the user's own, which the workers use
from orchestrator.spec.schema import ResourcesSpec

HEADROOM = 0.15  # allocator fragmentation and cuDNN workspaces beyond a trial's measured peak
PACKING = {False: (4, 2), True: (8, 4)}  # (trials_per_gpu, workers_per_gpu) for auto, without and with CUDA MPS


# ------------------------------------------------------------------------------------------------ 1. CUDA MPS
def use_mps(setting: bool | Literal["auto"], own_ray: bool, gpu_trials: bool) -> bool:
    """Whether to try the sweep's own MPS daemon: ``false`` never; ``auto`` for GPU trials with GPUs visible; either
    only on a Ray this sweep starts here (a joined cluster's workers run on other machines, whose GPUs this driver
    does not own) and where no MPS is set up already (``CUDA_MPS_PIPE_DIRECTORY`` given: the workers use that one)."""
    if setting is False or (setting == "auto" and not (gpu_trials and gpus_visible())):
        return False
    if not own_ray:
        if setting is True:
            raise SegsweepError("resources.mps: true needs the sweep's own Ray on this machine; on a cluster start "
                                f"'{CONTROL} -d' on each GPU node yourself, or set resources.mps=auto")
        return False
    if MPS_PIPE_ENV in os.environ:
        if setting is True:
            raise SegsweepError(f"resources.mps: true, but {MPS_PIPE_ENV} is set already (an MPS daemon of your "
                                "own): unset it, or set resources.mps=auto to use that daemon")
        return False
    return True


def gpus_visible() -> bool:
    """False where ``CUDA_VISIBLE_DEVICES`` hides every GPU (a CPU run on a GPU machine)."""
    return os.environ.get("CUDA_VISIBLE_DEVICES", "0").strip() not in ("", "-1")


# ------------------------------------------------------------------------------------------------ 2. packing
def gpu_slots(resources: ResourcesSpec, mps: bool = False) -> int:
    """Trials sharing one GPU: ``trials_per_gpu`` (auto), ``1/gpus_per_trial`` below one GPU, else one."""
    share = resources.gpus_per_trial
    if share == "auto":
        return PACKING[mps][0] if resources.trials_per_gpu == "auto" else resources.trials_per_gpu
    return max(1, math.floor(1 / share + 1e-9)) if share < 1 else 1


def gpu_placements(res: ResourcesSpec, mps: bool = False) -> list[tuple[int, int, float]]:
    """The workers of one GPU as (slots, trials admitted at the start, GPU share): the GPU's slots and its stated
    memory limit split as evenly as may be over ``workers_per_gpu`` processes (fewer where there are fewer slots or
    fewer trials fit), each holding an equal share of the GPU. A trial of whole GPUs: one worker of one slot.
    ``mps``: the workers run under CUDA MPS (the ``auto`` packing differs)."""
    slots = gpu_slots(res, mps)
    limit = stated_limit(res, slots)
    workers = PACKING[mps][1] if res.workers_per_gpu == "auto" else res.workers_per_gpu
    n = max(1, min(workers, limit))
    share = math.floor(10_000 / n) / 10_000  # Ray keeps four decimals of a fractional GPU; n shares fit in one
    return [(split(slots, n, i), split(limit, n, i), share) for i in range(n)]


def cpu_workers(cpus: float, res: ResourcesSpec) -> int:
    """One-slot workers on a node of ``cpus`` CPUs: a trial on CPUs is Python-bound as much as compute-bound, so a
    process each, not threads sharing one interpreter lock (measured on 2 cores: the demo's epochs 1.2-2.1 s in two
    threads, 0.9 s apart)."""
    return math.floor(cpus / res.cpus_per_trial) if cpus >= res.cpus_per_trial else 0


def split(total: int, parts: int, index: int) -> int:
    """Part ``index`` of ``total`` split into ``parts`` near-equal whole parts, the larger ones first."""
    return total // parts + (1 if index < total % parts else 0)


# ------------------------------------------------------------------------------------------------ 3. stated memory
def stated_limit(res: ResourcesSpec, slots: int) -> int:
    """Trials per GPU by the stated memory figures (both given), with one line when that is fewer than the slots."""
    if res.trial_gpu_memory_gb is None or res.gpu_memory_gb is None:
        return slots
    limit = slots_for(res.trial_gpu_memory_gb, res.gpu_memory_gb, slots)
    if limit < slots:
        print(f"[segsweep] a trial needs {res.trial_gpu_memory_gb:.1f} GiB of a {res.gpu_memory_gb:.0f} GiB GPU: "
              f"{limit} trial(s) per GPU at once instead of {slots}", file=sys.stderr, flush=True)
    return limit


def slots_for(trial_bytes: float, gpu_bytes: float, slots: int, headroom: float = HEADROOM) -> int:
    """How many trials of ``trial_bytes`` peak GPU memory (plus headroom) share one GPU of ``gpu_bytes``, at most
    ``slots`` and at least one (a trial too large for the GPU runs alone, and may fail as a trial)."""
    need = trial_bytes * (1 + headroom)
    return max(1, min(slots, math.floor(gpu_bytes / need))) if need > 0 else slots


# ------------------------------------------------------------------------------------------------ 4. dispatch
def choose_worker(slots: list[int], load: dict[int, int], dead: set[int]) -> int | None:
    """The live worker with the most free room (slots less assigned trials; the first on a tie); None when every
    worker has died."""
    alive = [i for i in range(len(slots)) if i not in dead]
    if not alive:
        return None
    return max(alive, key=lambda i: (slots[i] - load.get(i, 0), -i))


# ------------------------------------------------------------------------------------------------ 5-6. in a worker
@dataclass
class WorkerAdmission:
    """A worker's count of running trials and what it admits; the worker calls it under its own lock."""

    limit: int  # trials at once: the slots, or fewer by stated memory, or after an out-of-memory restart
    memory_aware: bool  # a GPU worker with resources.memory_aware
    running: int = 0
    per_trial_bytes: float = 0.0  # the largest footprint of one trial seen so far

    def may_start(self, room_bytes: Callable[[], float]) -> bool:
        """Whether the next trial may start now; ``room_bytes``: the GPU's free memory plus its allocator's cache
        (read only when it matters)."""
        if self.running >= self.limit:
            return False
        if not self.memory_aware or self.running == 0 or not self.per_trial_bytes:
            return True
        return room_bytes() >= self.per_trial_bytes * (1 + HEADROOM)

    def observe(self, reserved_bytes: float) -> None:
        """At a trial's first epoch: the worker's reserved memory shared among its running trials."""
        self.per_trial_bytes = max(self.per_trial_bytes, reserved_bytes / max(1, self.running))

    def out_of_memory(self) -> bool:
        """A running trial ran out of GPU memory: True to start it again once fewer run (the limit drops to the others
        still running), False when it ran alone (it fails)."""
        if self.running <= 1:
            return False
        self.limit = max(1, self.running - 1)
        return True
