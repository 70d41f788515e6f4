"""A trial worker: one long-lived process per GPU (per node on a CPU cluster) that trains several trials at once.

Each of its ``slots`` is a thread with its own CUDA stream that takes trials one after another, so the process's
imports, its CUDA context, cuDNN's run-time compiled kernels and each thread's cuDNN plans serve every trial that
follows (measured on an H200: a fresh process's first step 15 s, a fresh thread's 2 s), and the kernels of
concurrent trials overlap on the GPU as the kernels of separate processes do not. A trial is the same Lightning fit
as ever (``trial.build``); the worker only decides when it starts and hands its epochs to the trial's proxy.

Which trial starts when, and what an out-of-memory error means, is admission's rule (``pool.admission``); a
trial's failure is its one line (``orchestrator.failures``), and the worker goes on.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import gc
import json
import logging
import math
import os
import queue
import socket
import threading
import time
import warnings
from contextlib import nullcontext
from typing import Any

import psutil
import ray
import torch

from models.depthwise import cudnn_depthwise
from orchestrator.budgets import INFEASIBLE, judge
from orchestrator.failures import failure
from orchestrator.files import write_text_whole
from orchestrator.latency.measure import Protocol, measure
from orchestrator.pool.admission import WorkerAdmission
from orchestrator.pool.protocol import WorkerSettings
from orchestrator.pool.ship import ShippedData, receive
from orchestrator.rundir import RunDir
from orchestrator.trial.build import build_module, complete_trial, trial_model
from orchestrator.trial.callbacks import ReportEpochs, SaveVisuals
from orchestrator.trial.config import TrialConfig, TrialContext
from orchestrator.trial.data import normalise, release_resident, to_model_input
from orchestrator.trial.revalidate import rescore
from orchestrator.trial.step import STEP_LOCK

DECISION_TIMEOUT_S = 900.0  # a trial waiting this long for its proxy's word is stopped (the proxy is gone)
LEASE_CHECK_S = 10.0  # how often a pool that outlives sweeps looks for sweeps whose driver has gone
BUILD_LOCK = threading.Lock()  # seeding and model initialisation use the process's global random state


class Job:
    """One trial in this worker: its sweep (``run_dir``), its events for the proxy and the proxy's word back."""

    def __init__(self, trial_id: str, config: dict[str, Any], state_path: str | None, run_dir: str = "") -> None:
        self.trial_id, self.config, self.state_path, self.run_dir = trial_id, config, state_path, run_dir
        self.user = "local"  # the sweep's user, known once its context is (fair shares between users)
        self.decisions: tuple[int, ...] = ()  # the sweep's scheduler's decision epochs
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.cond = threading.Condition()
        self.confirmed = 0  # the last epoch Tune let go on
        self.reported = 0  # the last epoch sent to the proxy (a restarted trial does not send its epochs twice)
        self.stopped = False
        self.restarts = 0
        self.submitted = self.started = time.time()
        self.max_epochs = 0  # known once the trial's config is read
        self.stage1_epochs = 0  # a staged model's first stage: the scheduler's decisions count the epochs after it
        self.waited_s: float | None = None  # the last wait for Tune's word, reported with the next epoch

    def decide(self, epoch: int) -> None:
        with self.cond:
            self.confirmed = max(self.confirmed, epoch)
            self.cond.notify_all()

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()

    def wait(self, epoch: int) -> bool:
        """After sending ``epoch``: at a decision epoch (``decisions`` counts the full network's epochs) wait for
        Tune's word on it; elsewhere run at most one epoch ahead of it. Returns whether the trial goes on."""
        target = epoch if epoch - self.stage1_epochs in self.decisions else epoch - 1
        with self.cond:
            self.cond.wait_for(lambda: self.stopped or self.confirmed >= target, timeout=DECISION_TIMEOUT_S)
            if self.confirmed < target:
                self.stopped = True
            return not self.stopped


class TrialWorker:
    """One worker process of the pool, inside its Ray actor (``pool.actor.WorkerActor``, started with
    ``max_concurrency``: the actor's methods run in threads of their own, and this worker's slots in theirs).

    It trains for every sweep attached to it (``attach``: a sweep's run directory, data, metric, scheduler), so a pool
    that outlives a sweep serves the next one warm (imports done, cuDNN's kernels compiled); ``detach`` gives a
    finished sweep's GPU memory back. Its slots are shared fairly between the users of the sweeps it holds."""

    def __init__(self, settings: WorkerSettings, dispatcher: Any = None) -> None:
        """``dispatcher``: the pool's, when the pool outlives sweeps: a restarted worker process gets from it the
        sweeps attached so far."""
        # the process's own events, and each attached sweep's (dropped at its detach: a pool's life does not pile up)
        self.timeline: list[dict[str, Any]] = [{"event": "process", "at": psutil.Process().create_time()}]
        self.run_timelines: dict[str, list[dict[str, Any]]] = {}
        self.timeline_lock = threading.Lock()
        quiet_libraries()
        self.settings = settings
        torch.set_num_threads(settings.threads)
        self.cuda = torch.cuda.is_available()
        if self.cuda:
            torch.backends.cudnn.benchmark = False  # shared by the trials; captures need the warm-up's plans
        self.contexts: dict[str, TrialContext] = {}  # by run directory
        self.data_errors: dict[str, str] = {}  # a sweep whose data this node could not receive
        self.warmed = threading.Event()  # a warm-up has run (or nothing needed one)
        self.warmed_keys: set[str] = set()  # what cuDNN has planned and compiled here (``warm_key``)
        self.jobs: dict[str, Job] = {}
        self.pending: collections.deque[Job] = collections.deque()
        self.cond = threading.Condition()
        self.admission = WorkerAdmission(settings.limit, settings.memory_aware and self.cuda)
        self.running_by_user: collections.Counter[str] = collections.Counter()
        for index in range(settings.slots):
            threading.Thread(target=self._slot, args=(index,), name=f"segsweep-slot-{index}", daemon=True).start()
        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None  # None: made outside Ray
        self._mark("ready", node=node, host=socket.gethostname())
        self.dispatcher = dispatcher
        if dispatcher is not None:
            for context, shipped in ray.get(dispatcher.attached.remote()):
                self.attach(context, shipped, warm=False)
            threading.Thread(target=self.watch, name="segsweep-leases", daemon=True).start()

    # ---------------------------------------------------------------------------------------- the proxies' calls
    def ready(self) -> dict[str, Any]:
        with self.cond:
            return {"cuda": self.cuda, "device": torch.cuda.get_device_name(0) if self.cuda else "cpu",
                    "slots": self.settings.slots, "limit": self.admission.limit, "pid": os.getpid(),
                    "running": self.admission.running, "pending": len(self.pending), "sweeps": sorted(self.contexts),
                    "warmed": sorted(self.warmed_keys),
                    "gpu_reserved_gb": torch.cuda.memory_reserved() / 2**30 if self.cuda else 0.0}

    def attach(self, context: TrialContext, shipped: ShippedData | None = None, warm: bool = True) -> None:
        """A sweep's context (run directory, data, metric, scheduler): its trials may start; then, while no trial
        waits, one training step of each of its architectures this process has not planned yet (``warm``). On another
        node than the driver's, the data comes from Ray's object store into this node's folder (``pool.ship``)."""
        try:
            data, how = receive(context.data, shipped)
            context = dataclasses.replace(context, data=data)
        except Exception as e:  # noqa: BLE001 - every trial of this sweep here fails with it, as one line
            self.data_errors[context.run_dir] = f"this node could not receive the sweep's data ({failure(e)})"
            how = {"source": "failed", "error": self.data_errors[context.run_dir]}
        with self.cond:
            self.contexts[context.run_dir] = context
            self.cond.notify_all()
        self._mark("attached", run=context.run_dir, data=how)
        if warm:
            stream = torch.cuda.Stream() if self.cuda else None
            with torch.cuda.stream(stream) if stream is not None else nullcontext():
                self._warm_up(context)

    def detach(self, run_dir: str) -> None:
        """A sweep has ended (or its driver stopped): its trials still here are dropped, its context goes and with it
        its data on the GPU; once no trial runs, the allocator's cache goes back to the GPU too (the next sweep, or
        another process, may need it)."""
        with self.cond:
            context = self.contexts.pop(run_dir, None)
            self.data_errors.pop(run_dir, None)
            for trial_id in [t for t, job in self.jobs.items() if job.run_dir == run_dir]:
                self.jobs.pop(trial_id).stop()
            idle = self.admission.running == 0
            self.cond.notify_all()
        if context is not None:
            release_resident([context.data.train.path, context.data.val.path])
        if self.cuda and idle:
            gc.collect()
            with STEP_LOCK.shared():  # not while another trial captures its step
                torch.cuda.empty_cache()
        self._mark("detached", run=run_dir)

    def watch(self, every_s: float = LEASE_CHECK_S) -> None:
        """On a pool that outlives sweeps: a sweep whose driver has gone (its lease actor with it, ``kill -9``
        included) is detached, here and in the pool's dispatcher, so its trials stop holding slots."""
        while True:
            time.sleep(every_s)
            with self.cond:
                leases = {run: c.lease for run, c in self.contexts.items() if c.lease is not None}
            for run_dir, lease in leases.items():
                try:
                    ray.get(lease.alive.remote(), timeout=every_s)
                except ray.exceptions.RayActorError:
                    self.detach(run_dir)
                    self.dispatcher.detach.remote(run_dir)
                except ray.exceptions.GetTimeoutError:
                    pass  # a busy node: asked again next time

    def start(self, trial_id: str, config: dict[str, Any], state_path: str | None, run_dir: str = "") -> None:
        job = Job(trial_id, config, state_path, run_dir)
        with self.cond:
            self.jobs[trial_id] = job
            self.pending.append(job)
            self.cond.notify_all()

    def next_event(self, trial_id: str, timeout: float) -> dict[str, Any] | None:
        try:
            return self.jobs[trial_id].events.get(timeout=timeout)
        except queue.Empty:
            return None

    def decide(self, trial_id: str, epoch: int) -> None:
        if trial_id in self.jobs:
            self.jobs[trial_id].decide(epoch)

    def stop(self, trial_id: str) -> None:
        job = self.jobs.pop(trial_id, None)
        if job is not None:
            job.stop()
            with self.cond:
                self.cond.notify_all()

    def revalidate(self, trial_id: str, config: dict[str, Any], run_dir: str = "") -> dict[str, Any]:
        """The study's self-check of a finished trial: its saved best weights scored on the validation split as it
        validated (``trial.revalidate``), here where the data and the compiled kernels are. ``{"metrics": ...,
        "seconds": ...}``, or ``{"error": "one line"}``."""
        context = self._context(run_dir)
        if context is None:
            return {"error": f"the pool's worker holds no sweep {run_dir}"}
        return rescore(RunDir(context.run_dir).trial(trial_id).best_weights, config, context.data, self.cuda,
                       build_lock=BUILD_LOCK)

    def load(self) -> dict[str, int]:
        with self.cond:
            return {"running": self.admission.running, "pending": len(self.pending), "limit": self.admission.limit}

    # ---------------------------------------------------------------------------------------- the slots
    def _context(self, run_dir: str, timeout: float = 120.0) -> TrialContext | None:
        """The sweep's context; its ``attach`` and a trial's ``start`` come from different callers in no set order,
        so a trial may wait a little for it. ``run_dir`` empty: the only sweep (a worker made in a test)."""
        with self.cond:
            self.cond.wait_for(lambda: (run_dir in self.contexts) or (not run_dir and self.contexts), timeout=timeout)
            if not run_dir and len(self.contexts) == 1:
                return next(iter(self.contexts.values()))
            return self.contexts.get(run_dir)

    def _slot(self, index: int) -> None:
        stream = torch.cuda.Stream() if self.cuda else None
        with torch.cuda.stream(stream) if stream is not None else nullcontext():
            while True:
                job = self._take()
                try:
                    self._run(job)
                finally:
                    with self.cond:
                        self.admission.running -= 1
                        self.running_by_user[job.user] -= 1
                        self.cond.notify_all()

    def _warm_up(self, context: TrialContext) -> None:
        """One training step of each of a sweep's architectures this process has not stepped yet, while no trial
        waits: cuDNN compiles its run-time kernels once per process (a fresh process's first step: 15-17 s on an
        H200), here before the trials come (GPU only)."""
        try:
            for config in context.warm if self.cuda else ():
                cfg = TrialConfig.from_flat(config)
                key = warm_key(cfg)
                if self.pending:
                    break  # trials have come: they plan what is left themselves
                if key in self.warmed_keys:
                    continue
                started = time.time()
                with BUILD_LOCK:
                    module = build_module(cfg, context.data, use_gpu=self.cuda)
                device = torch.device("cuda" if self.cuda else "cpu")
                module = module.to(device)
                optimizer = module.build_optimizer()
                n, (h, w) = cfg.trainer.batch_size, cfg.data.size
                # a generator of its own: CUDA's default one may be held by a trial's capture in another slot
                draw = torch.Generator(device=device).manual_seed(0)
                images = torch.randint(0, 255, (n, h, w, 3), dtype=torch.uint8, device=device, generator=draw)
                labels = torch.randint(0, max(2, len(context.data.classes)), (n, h, w), device=device,
                                       generator=draw)
                module.step(normalise(to_model_input(images), module.levers.channels_last), labels, optimizer)
                module.step = None  # the step holds the module: no cycle left for the collector
                del module, optimizer
                self.warmed_keys.add(key)
                self._mark("warm-up", run=context.run_dir, arch=cfg.model.arch,
                           seconds=round(time.time() - started, 2))
        except Exception as e:  # noqa: BLE001 - a warm-up is no trial: the trial itself fails with the reason
            logging.getLogger("segsweep.pool").warning("warm-up skipped: %s", failure(e))
        finally:
            self.warmed.set()

    def _take(self) -> Job:
        """The next trial to start, when admission lets it (``WorkerAdmission.may_start``): of the users whose trials
        wait here, the one with the fewest running (so a slot that frees goes to whoever has least), its oldest."""
        with self.cond:
            while True:
                self.pending = collections.deque(job for job in self.pending if not job.stopped)
                if self.pending and self.admission.may_start(gpu_room):
                    for job in self.pending:
                        context = self.contexts.get(job.run_dir)
                        job.user = context.user if context is not None else job.user
                    job = min(self.pending, key=lambda j: (self.running_by_user[j.user], j.submitted))
                    self.pending.remove(job)
                    self.admission.running += 1
                    self.running_by_user[job.user] += 1
                    job.started = time.time()
                    return job
                self.cond.wait(timeout=0.5)

    def _run(self, job: Job) -> None:
        if job.stopped:
            return
        ctx = self._context(job.run_dir)
        if ctx is None or ctx.run_dir in self.data_errors:
            job.events.put({"kind": "failed", "error": self.data_errors.get(job.run_dir) or
                            f"WorkerDied: the pool's worker got no context for {job.run_dir}"})
            return
        job.decisions = ctx.decisions
        trial_dir = RunDir(ctx.run_dir).trial(job.trial_id)
        trial_dir.path.mkdir(parents=True, exist_ok=True)
        try:
            # our own file, written by ReportEpochs: optimiser and schedule state are not plain tensors
            state = torch.load(job.state_path, map_location="cpu", weights_only=False) if job.state_path else None
            cfg = TrialConfig.from_flat(job.config, ctx.groups)
            job.max_epochs, job.stage1_epochs = cfg.trainer.max_epochs, cfg.model.stage1_epochs
            if state is not None and state["epoch"] >= cfg.trainer.max_epochs:
                job.events.put({"kind": "done"})
                return
            with self.cond:
                concurrent = self.admission.running
            self._mark("start", run=ctx.run_dir, trial=job.trial_id)
            constants: dict[str, float] = {"perf/preloaded": float(self.warmed.is_set()),
                                           "perf/restarts": float(job.restarts), "perf/concurrent": float(concurrent),
                                           "perf/queued_s": job.started - job.submitted, "perf/started_at": job.started}
            report = ReportEpochs(ctx.metric, ctx.mode, trial_dir, constants, lambda m, c: self._send(job, m, c),
                                  state["best"] if state else None, cfg.trainer.checkpoint_every_s)
            with BUILD_LOCK:
                model = trial_model(job.config, ctx.data, self.cuda, job.started, ctx.groups, state)
            constants |= model.constants
            if ctx.latency_proxy:
                constants |= proxy_latency(model.module.model, ctx.latency_proxy, tuple(cfg.data.size))
            # a trial over budget stops here: no data module, no trainer, no fit. One that resumes from a checkpoint
            # was within its budgets when it started, and keeps its verdict
            verdict = judge(ctx.constraints, constants) if ctx.constraints and state is None else None
            if verdict is not None and not verdict.feasible:
                self._mark("infeasible", run=ctx.run_dir, trial=job.trial_id, broken=verdict.line)
                job.events.put({"kind": "infeasible", "metrics": {ctx.metric: math.nan, **constants, INFEASIBLE: 1.0}})
                return
            with BUILD_LOCK:
                run = complete_trial(model, ctx.data, state, callbacks=[SaveVisuals(cfg, ctx.data, trial_dir), report])
            try:
                run.trainer.fit(run.module, datamodule=run.datamodule)
            finally:
                run.module.step = None  # its CUDA graph and memory pool go with the module, not at the next collection
            job.events.put({"kind": "done"})
            self._mark("trial", run=ctx.run_dir, trial=job.trial_id, started=job.started, epochs=job.reported)
        except torch.OutOfMemoryError:
            self._out_of_memory(job)
        except Exception as e:  # noqa: BLE001 - the trial's failure, reported as its one line; the worker goes on
            job.events.put({"kind": "failed", "error": failure(e)})

    def _mark(self, event: str, run: str | None = None, **details: Any) -> None:
        """The worker's timeline (start, warm-up, sweeps, trials), kept beside each sweep it holds for the benchmarks:
        ``RUN_DIR/pool/worker-<pid>.json`` holds the process's own events and that sweep's, never another's.
        ``run``: the sweep an event belongs to (None: the process's, written to every sweep attached)."""
        entry = {"event": event, "at": time.time(), **({"run": run} if run else {}), **details}
        with self.timeline_lock:
            if not run:
                self.timeline.append(entry)
            else:
                self.run_timelines.setdefault(run, []).append(entry)
            for run_dir in [run] if run else [*self.run_timelines]:
                path = RunDir(run_dir).path / "pool" / f"worker-{os.getpid()}.json"
                if path.parent.parent.is_dir():  # a run directory that is still there
                    path.parent.mkdir(exist_ok=True)
                    events = sorted([*self.timeline, *self.run_timelines[run_dir]], key=lambda e: e["at"])
                    write_text_whole(path, json.dumps(events))  # read while it is written (bench-sweep)
            if event == "detached":
                self.run_timelines.pop(run, None)

    def _out_of_memory(self, job: Job) -> None:
        gc.collect()
        with STEP_LOCK.shared():  # not while another trial captures its step
            torch.cuda.empty_cache()
        with self.cond:
            if not self.admission.out_of_memory():
                job.events.put({"kind": "failed", "error": "OutOfMemoryError: the trial does not fit in its GPU even "
                                "alone; lower trainer.batch_size or data.size"})
                return
            job.restarts += 1  # it starts again, from its start, once fewer run beside it
            self.pending.appendleft(job)
            self.cond.notify_all()

    def _send(self, job: Job, metrics: dict[str, float], checkpoint) -> bool:
        """An epoch for the proxy; then wait as ``Job.wait`` says. Returns whether the trial goes on."""
        epoch = int(metrics["epoch"])
        if epoch == 1 and self.cuda:
            with self.cond:
                self.admission.observe(torch.cuda.memory_reserved())
        if epoch <= job.reported:  # a restarted trial retraining what it already reported
            return not job.stopped
        job.reported = epoch
        metrics["perf/at"] = time.time()  # when the epoch ended: the benchmark's timeline of running trials
        if job.waited_s is not None:
            metrics["perf/wait_s"] = job.waited_s  # the previous epoch's wait for Tune's word
        job.events.put({"kind": "epoch", "metrics": metrics, "checkpoint": str(checkpoint) if checkpoint else None})
        if epoch >= job.max_epochs:
            return True  # the last: nothing to wait for
        started = time.perf_counter()
        try:
            return job.wait(epoch)
        finally:
            job.waited_s = time.perf_counter() - started


def warm_key(cfg: TrialConfig) -> str:
    """What a warm-up step plans and compiles cuDNN's kernels for: the model, its input's shape and precision."""
    return json.dumps([cfg.model.arch, cfg.model.encoder, cfg.model.batchnorm, list(cfg.data.size),
                       cfg.trainer.batch_size, cfg.trainer.precision, cfg.trainer.channels_last])


def gpu_room() -> float:
    """The GPU's free memory plus what this process's allocator holds unused (admission's room for another trial)."""
    free, _ = torch.cuda.mem_get_info()
    return free + torch.cuda.memory_reserved() - torch.cuda.memory_allocated()


def proxy_latency(model: torch.nn.Module, proxy: dict[str, Any], size: tuple[int, int]) -> dict[str, float]:
    """The spec's latency proxy, measured before training (latency does not depend on the weights):
    ``latency/mean_ms``, ``latency/p50_ms``, ``latency/p90_ms``, ``latency/p99_ms``, and where the device measured
    them, ``power/mean_w`` and ``energy/mj_per_image``."""
    deployed = cudnn_depthwise(copy.deepcopy(model))  # the model as deployed, not as the trial trains it
    result = measure(proxy["backend"], [1, 3, *size], Protocol(proxy["warmup"], proxy["iters"], proxy["fp16"]),
                     model=deployed, target=proxy.get("target") or "local", remote_python=proxy["remote_python"],
                     ssh_options=tuple(proxy["ssh_options"]))
    figures = {f"latency/{k}": getattr(result, k) for k in ("mean_ms", "p50_ms", "p90_ms", "p99_ms")}
    if result.energy:
        figures |= {"power/mean_w": result.energy["power_w"], "energy/mj_per_image": result.energy["mj_per_image"]}
    return figures


def quiet_libraries() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
    warnings.filterwarnings("ignore", message=".*GPU available.*")
    # the capture's warm-up steps run on a side stream, as CUDA graphs require, and later eager steps (a short last
    # batch) on the slot's: the gradient accumulators' stream then differs by design, and autograd's two-line
    # warning about it (seen once in a 40-trial study on an H200) says only that it synchronises
    quiet_streams = getattr(torch.autograd.graph, "set_warn_on_accumulate_grad_stream_mismatch", None)
    if quiet_streams is not None:
        quiet_streams(False)
