"""One trial, as Tune runs it: sampled flat config in, one ``tune.report`` per epoch out (metrics + a resumable
checkpoint). Reads top to bottom: restore, build, measure the latency proxy, fit."""

from __future__ import annotations

import copy
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import psutil
import ray
import torch
from ray import tune

from models.depthwise import cudnn_depthwise
from orchestrator.latency.measure import Protocol, measure
from orchestrator.rundir import STATE_FILE, RunDir
from orchestrator.trial import preload
from orchestrator.trial.build import build_trial
from orchestrator.trial.callbacks import ReportToTune, SaveVisuals
from orchestrator.trial.config import TrialConfig, TrialContext

_PROCESS: dict[str, float | None] = {"last_end": None}
IDLE_S = 1.0  # a preloaded worker that got its trial sooner than this after preloading was started for it


def run_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    """Train one configuration. Raises on failure; the driver records the reason. ASHA stops arrive as SystemExit."""
    started = trial_origin()
    quiet_libraries()
    # torch's CPU threads: the trial's CPU share. Ray sets OMP_NUM_THREADS only in workers it starts for a task, and a
    # preloaded worker imported torch before it knew its share (measured: 4x slower epochs on 2 cores without this)
    torch.set_num_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
    trial_dir = RunDir(ctx.run_dir).trial(tune.get_context().get_trial_id())
    trial_dir.path.mkdir(parents=True, exist_ok=True)
    state = restored_state()
    if state is not None and (state.get("finished") or
                              state["epoch"] >= TrialConfig.from_flat(config, ctx.groups).trainer.max_epochs):
        return  # finished before a driver was killed: nothing resumes it
    cfg = TrialConfig.from_flat(config, ctx.groups)
    constants: dict[str, float] = {"perf/preloaded": float(preload.DONE_AT is not None)}
    report = ReportToTune(ctx.metric, ctx.mode, trial_dir, constants, state["best"] if state else None)
    run = build_trial(config, ctx.data, ctx.gpus_per_trial > 0, started, ctx.groups, state,
                      callbacks=[SaveVisuals(cfg, ctx.data, trial_dir), report])
    constants |= run.constants
    if ctx.latency_proxy:
        constants |= proxy_latency(run.module.model, ctx.latency_proxy, tuple(cfg.data.size))
    try:
        run.trainer.fit(run.module, datamodule=run.datamodule)
    finally:
        _PROCESS["last_end"] = time.time()


def quiet_libraries() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")


def restored_state() -> dict[str, Any] | None:
    """The trial's last checkpoint (``state.pt``: weights, optimiser, schedule, epoch, best), or a finished trial's
    stub (``{"finished": True}``), or None for a new trial."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as d:
        # our own file, written by ReportToTune: optimiser and schedule state are not plain tensors
        return torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=False)


def trial_origin() -> float:
    """When this trial started, as far as its process can tell (``perf/startup_s`` counts from here):

    - in a reused actor, the previous trial's end;
    - in a worker that preloaded the imports and then waited in Ray's pool, the trial function's entry: the imports
      overlapped the driver's own work, and what is left is Tune handing the trial over;
    - otherwise (a worker started for this trial), the process's own start, so that spawning it and importing torch
      count.
    """
    now = time.time()
    if _PROCESS["last_end"] is not None:
        return _PROCESS["last_end"]
    if preload.DONE_AT is not None and now - preload.DONE_AT > IDLE_S:
        return now
    return psutil.Process().create_time()


def proxy_latency(model: torch.nn.Module, proxy: dict[str, Any], size: tuple[int, int]) -> dict[str, float]:
    """The spec's latency proxy, measured before training (latency does not depend on the weights):
    ``latency/mean_ms``, ``latency/p50_ms``, ``latency/p90_ms``, ``latency/p99_ms``."""
    deployed = cudnn_depthwise(copy.deepcopy(model))  # the model as deployed, not as the trial trains it
    result = measure(proxy["backend"], [1, 3, *size], Protocol(proxy["warmup"], proxy["iters"], proxy["fp16"]),
                     model=deployed, target=proxy.get("target") or "local", remote_python=proxy["remote_python"],
                     ssh_options=tuple(proxy["ssh_options"]))
    return {f"latency/{k}": getattr(result, k) for k in ("mean_ms", "p50_ms", "p90_ms", "p99_ms")}
