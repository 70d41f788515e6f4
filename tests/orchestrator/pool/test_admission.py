"""Admission's rules by hand (``pool.admission``): CUDA MPS or not, packing, stated memory, the dispatcher's choice and a
worker's admission of trials, out-of-memory restarts included."""

from __future__ import annotations

import pytest

from orchestrator.errors import SegsweepError
from orchestrator.pool.admission import (
    MPS_PIPE_ENV,
    WorkerAdmission,
    choose_worker,
    cpu_workers,
    gpu_placements,
    gpu_slots,
    slots_for,
    split,
    use_mps,
)
from orchestrator.spec.schema import ResourcesSpec

GiB = 2**30


def test_gpu_slots_by_hand():
    assert gpu_slots(ResourcesSpec()) == 4 and gpu_slots(ResourcesSpec(trials_per_gpu=3)) == 3
    assert gpu_slots(ResourcesSpec(gpus_per_trial=0.25)) == 4 and gpu_slots(ResourcesSpec(gpus_per_trial=0.3)) == 3
    assert gpu_slots(ResourcesSpec(gpus_per_trial=1)) == 1 and gpu_slots(ResourcesSpec(gpus_per_trial=2)) == 1


def test_a_gpus_slots_split_over_its_worker_processes_by_hand():
    assert [split(5, 2, i) for i in range(2)] == [3, 2] and [split(4, 3, i) for i in range(3)] == [2, 1, 1]
    assert gpu_placements(ResourcesSpec()) == [(2, 2, 0.5), (2, 2, 0.5)]  # 4 trials, 2 processes of half the GPU
    assert gpu_placements(ResourcesSpec(workers_per_gpu=1)) == [(4, 4, 1.0)]
    assert gpu_placements(ResourcesSpec(workers_per_gpu=3, trials_per_gpu=5)) == [(2, 2, 0.3333), (2, 2, 0.3333),
                                                                                   (1, 1, 0.3333)]
    assert gpu_placements(ResourcesSpec(workers_per_gpu=8, trials_per_gpu=2)) == [(1, 1, 0.5), (1, 1, 0.5)]
    assert gpu_placements(ResourcesSpec(gpus_per_trial=1)) == [(1, 1, 1.0)]
    assert gpu_placements(ResourcesSpec(gpus_per_trial=0.25, workers_per_gpu=4)) == [(1, 1, 0.25)] * 4
    # 10 GiB trials on a 24 GiB card: two at a time (with headroom), so two processes of one trial each, 4 slots kept
    stated = ResourcesSpec(trial_gpu_memory_gb=10, gpu_memory_gb=24, workers_per_gpu=4)
    assert gpu_placements(stated) == [(2, 1, 0.5), (2, 1, 0.5)]


def test_mps_is_used_only_for_gpu_trials_on_the_sweeps_own_ray(monkeypatch):
    monkeypatch.delenv(MPS_PIPE_ENV, raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert use_mps("auto", own_ray=True, gpu_trials=True)
    assert not use_mps(False, own_ray=True, gpu_trials=True)
    assert not use_mps("auto", own_ray=True, gpu_trials=False)  # gpus_per_trial: 0
    assert not use_mps("auto", own_ray=False, gpu_trials=True)  # a joined cluster: its nodes' GPUs are not ours
    with pytest.raises(SegsweepError, match="needs the sweep's own Ray"):
        use_mps(True, own_ray=False, gpu_trials=True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert not use_mps("auto", own_ray=True, gpu_trials=True)  # every GPU hidden: a CPU run
    assert use_mps(True, own_ray=True, gpu_trials=True)  # true tries, and start_mps says why it cannot


def test_an_mps_set_up_by_the_user_is_left_to_the_workers(monkeypatch):
    monkeypatch.setenv(MPS_PIPE_ENV, "/tmp/their-mps")
    assert not use_mps("auto", own_ray=True, gpu_trials=True)
    with pytest.raises(SegsweepError, match=f"{MPS_PIPE_ENV} is set already"):
        use_mps(True, own_ray=True, gpu_trials=True)


def test_auto_packing_is_eight_trials_in_four_processes_under_mps():
    assert gpu_slots(ResourcesSpec()) == 4 and gpu_slots(ResourcesSpec(), mps=True) == 8
    assert gpu_placements(ResourcesSpec(), mps=True) == [(2, 2, 0.25)] * 4
    # stated figures win over auto
    assert gpu_placements(ResourcesSpec(trials_per_gpu=4, workers_per_gpu=2), mps=True) == [(2, 2, 0.5)] * 2
    assert gpu_placements(ResourcesSpec(gpus_per_trial=0.5), mps=True) == [(1, 1, 0.5)] * 2


def test_slots_for_by_hand():
    # 10 GiB * 1.15 = 11.5 of 80: 6 fit, more than the 4 asked for -> 4
    assert slots_for(10 * GiB, 80 * GiB, 4) == 4
    # 30 GiB * 1.15 = 34.5 of 80: 2 fit
    assert slots_for(30 * GiB, 80 * GiB, 4) == 2
    # 25 GiB * 1.15 = 28.75 of 100: 3 fit
    assert slots_for(25 * GiB, 100 * GiB, 4) == 3
    # 60 GiB * 1.15 = 69 of 80: alone; larger than the GPU: alone too (it may still fail, as a trial)
    assert slots_for(60 * GiB, 80 * GiB, 4) == 1 and slots_for(90 * GiB, 80 * GiB, 4) == 1
    assert slots_for(30, 40, 4) == 1  # the units only need to agree

def test_cpu_workers_one_per_trials_cpus():
    assert cpu_workers(2, ResourcesSpec(cpus_per_trial=1)) == 2 and cpu_workers(7, ResourcesSpec(cpus_per_trial=2)) == 3
    assert cpu_workers(1, ResourcesSpec(cpus_per_trial=2)) == 0  # too small a node: none there


def test_choose_worker_the_roomiest_live_one():
    assert choose_worker([2, 4], {}, set()) == 1 and choose_worker([2, 4], {1: 2}, set()) == 0  # a tie: the first
    assert choose_worker([2, 4], {1: 3}, set()) == 0 and choose_worker([2, 4], {}, {1}) == 0
    assert choose_worker([2, 4], {}, {0, 1}) is None


def test_a_worker_admits_up_to_its_limit_and_by_the_room_for_its_largest_trial():
    room = {"bytes": 10 * GiB}
    a = WorkerAdmission(limit=3, memory_aware=True)
    assert a.may_start(lambda: 0)  # the first trial: nothing measured yet, it starts
    a.running = 1
    a.observe(4 * GiB)  # its first epoch: 4 GiB reserved by one trial
    assert a.per_trial_bytes == 4 * GiB and a.may_start(lambda: room["bytes"])  # 10 GiB >= 4.6
    room["bytes"] = 4 * GiB
    assert not a.may_start(lambda: room["bytes"])  # 4 GiB < 4 * 1.15
    a.running = 3
    assert not a.may_start(lambda: 100 * GiB)  # the limit
    unaware = WorkerAdmission(limit=2, memory_aware=False, running=1, per_trial_bytes=50 * GiB)
    assert unaware.may_start(lambda: 0)  # a CPU worker (or memory_aware: false) counts slots only


def test_out_of_memory_beside_others_restarts_alone_fails():
    a = WorkerAdmission(limit=4, memory_aware=True, running=3)
    assert a.out_of_memory() and a.limit == 2  # it starts again once two run beside... at most two from now
    a.running = 1
    assert not a.out_of_memory()  # alone: it fails
