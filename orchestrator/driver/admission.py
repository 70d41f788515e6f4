"""Admission: how much of a GPU a trial is given (Tune's resources callable, ``TrialResources``).

Packing: ``resources.gpus_per_trial: auto`` gives each trial ``1/trials_per_gpu`` of a GPU. Ray's GPU shares are
logical (nothing isolates memory), so with ``resources.memory_aware`` the driver measures a trial's peak GPU memory
before the trial is admitted (one short probe per distinct model/size/batch, in a child process:
``orchestrator.trial.probe``) and raises its share to what fits: alone on a GPU if need be, instead of running packed
trials out of memory.
"""

from __future__ import annotations

import json
import math
import os
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from ray.tune import PlacementGroupFactory

from orchestrator.data.cache import PreparedData
from orchestrator.gpu import gpu_identity
from orchestrator.rundir import RunDir
from orchestrator.trial.probe import probe_memory

HEADROOM = 0.15  # allocator fragmentation and cuDNN workspaces beyond the probe's peak


def gpus_per_trial(resources, cluster_gpus: float) -> float:
    """``resources``: a ResourcesSpec; ``auto`` packs ``trials_per_gpu`` trials per GPU where there are GPUs."""
    if resources.gpus_per_trial == "auto":
        return round(1.0 / resources.trials_per_gpu, 4) if cluster_gpus > 0 else 0.0
    return float(resources.gpus_per_trial)


def gpu_share(peak_bytes: float, gpu_bytes: float, requested: float, headroom: float = HEADROOM) -> float:
    """The GPU share a trial is admitted with: ``requested``, raised to ``1/k`` when fewer than ``1/requested``
    copies of its peak memory (plus headroom) fit in one GPU, where ``k`` copies do fit; 1.0 (alone) when not even
    two fit. Shares are rounded down to Ray's 1e-4 resolution so that ``k`` of them fit in 1.0."""
    if requested <= 0 or requested >= 1:
        return requested
    need = peak_bytes * (1 + headroom) / gpu_bytes
    fits = max(1, math.floor(1 / need)) if need > 0 else math.inf
    if fits * requested >= 1 - 1e-9 or fits == math.inf:
        return requested
    return math.floor(10_000 / fits) / 10_000


def memory_key(config: dict[str, Any]) -> str:
    """What a trial's GPU memory depends on: model, size, batch, precision, the levers, optimizer and loss names."""
    keep = ("model.", "data.size", "trainer.batch_size", "trainer.precision", "trainer.channels_last",
            "trainer.cuda_graphs", "trainer.fused_optimizer", "trainer.native_depthwise", "optimizer.name",
            "loss.name", "data.task")
    return json.dumps({k: v for k, v in sorted(config.items()) if k.startswith(keep)}, sort_keys=True, default=str)


class TrialResources:
    """Tune's resources callable (evaluated in the driver when a trial is created): CPUs and a GPU share per trial.

    Picklable: it holds settings and a path; measured peaks are kept in ``RUN_DIR/gpu_memory.json`` so that a resumed
    sweep does not probe again.
    """

    def __init__(self, cpus: float, gpus: float, memory_aware: bool, run_dir: str, groups: dict | None = None,
                 trial_gpu_memory_gb: float | None = None, gpu_memory_gb: float | None = None,
                 data: PreparedData | None = None, extra_bytes: int = 0) -> None:
        """``data``: the sweep's PreparedData (what the probe trains on); ``extra_bytes``: GPU memory a trial holds
        beyond its training step (its device-resident data)."""
        self.cpus, self.gpus, self.memory_aware, self.run_dir = cpus, gpus, memory_aware, run_dir
        self.extra_bytes = extra_bytes
        self.groups, self.data = groups or {}, data
        self.trial_gb, self.gpu_gb = trial_gpu_memory_gb, gpu_memory_gb

    def share(self, config: dict[str, Any]) -> float:
        if not (self.memory_aware and 0 < self.gpus < 1):
            return self.gpus
        peak, total = self.estimate(config)
        share = gpu_share(peak, total, self.gpus)
        if share != self.gpus:
            print(f"[segsweep] a trial needs {peak / 2**30:.1f} GiB of a {total / 2**30:.0f} GiB GPU: admitted with "
                  f"{share:g} GPU instead of {self.gpus:g}", file=sys.stderr, flush=True)
        return share

    def __call__(self, config: dict[str, Any]) -> PlacementGroupFactory:
        bundle = {"CPU": self.cpus}
        share = self.share(config)
        if share > 0:
            bundle["GPU"] = share
        return PlacementGroupFactory([bundle])

    def estimate(self, config: dict[str, Any]) -> tuple[float, float]:
        """(peak bytes of one trial, bytes of one GPU): stated in the spec, known to this run, measured on this machine
        before (``machine_memory_file``), or probed now."""
        if self.trial_gb is not None and self.gpu_gb is not None:
            return self.trial_gb * 2**30 + self.extra_bytes, self.gpu_gb * 2**30
        path = RunDir(self.run_dir).gpu_memory
        known = _read_json(path)
        key = memory_key(config)
        if key not in known:
            machine_key = self.machine_key(key)
            machine_file = machine_memory_file()
            earlier = _read_json(machine_file).get(machine_key) if machine_key else None
            known[key] = earlier or probe_memory(config, self.groups, self.data)
            _write_json(path, known)
            if machine_key and earlier is None:
                try:
                    _write_json(machine_file, {**_read_json(machine_file), machine_key: known[key]})
                except OSError as e:  # the run keeps its own copy; only later runs would probe again
                    print(f"[segsweep] the measured GPU memory is not kept for later runs ({machine_file}: "
                          f"{e.strerror or e}); set SEGSWEEP_CACHE_DIR to a writable folder", file=sys.stderr,
                          flush=True)
        peak, total = known[key]["peak_bytes"], known[key]["gpu_bytes"]
        if self.trial_gb is not None:
            peak = self.trial_gb * 2**30
        if self.gpu_gb is not None:
            total = self.gpu_gb * 2**30
        return peak + self.extra_bytes, total

    def machine_key(self, key: str) -> str | None:
        """``key`` on this machine: the GPU model and driver, torch, segsweep and the class count. None where the GPU
        cannot be named (then nothing is kept across runs)."""
        gpu = gpu_identity()
        if gpu is None:
            return None
        try:
            segsweep = version("segsweep")
        except PackageNotFoundError:
            segsweep = "source"
        classes = len(self.data.classes) if self.data is not None else None
        return json.dumps({"memory": key, "gpu": gpu, "torch": torch.__version__, "segsweep": segsweep,
                           "classes": classes}, sort_keys=True)


def machine_memory_file() -> Path:
    """Probed peaks kept across runs on this machine: ``$SEGSWEEP_CACHE_DIR`` or ``~/.cache/segsweep``."""
    root = os.environ.get("SEGSWEEP_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / \
        "segsweep"
    return Path(root) / "gpu_memory.json"



def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}  # an unreadable cache is a cache miss


def _write_json(path: Path, value: dict[str, Any]) -> None:
    """Written whole and renamed into place: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=1))
    tmp.replace(path)

