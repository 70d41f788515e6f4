"""One trial: sampled flat config in, one ``tune.report`` per epoch out (metrics + a resumable checkpoint)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from orchestrator.data.cache import PreparedData
from orchestrator.spec import (
    TRIAL_SECTIONS,
    DataSpec,
    LossSpec,
    ModelSpec,
    OptimizerSpec,
    ScheduleSpec,
    TrainerSpec,
    expand_groups,
    unflatten,
)

# Tune's checkpoint of a trial: ``state.pt`` (weights, optimiser, schedule, epoch, best), staged in the trial's own
# folder (a hard-killed trial leaves it in the run, not in /tmp) and copied by Tune to ``tune/<id>/checkpoint_*``
STATE_FILE, STAGING_DIR = "state.pt", ".checkpoint"

SECTIONS = {"data": DataSpec, "model": ModelSpec, "loss": LossSpec, "optimizer": OptimizerSpec,
            "schedule": ScheduleSpec, "trainer": TrainerSpec}


@dataclass(frozen=True)
class TrialConfig:
    """The validated sections of one sampled configuration."""

    data: DataSpec
    model: ModelSpec
    loss: LossSpec
    optimizer: OptimizerSpec
    schedule: ScheduleSpec
    trainer: TrainerSpec

    @classmethod
    def from_flat(cls, config: dict[str, Any], groups: dict[str, dict[str, dict[str, Any]]] | None = None) -> TrialConfig:
        config = expand_groups(config, groups or {})
        # a grouped choice's label (``model``) stands beside the keys it expands to; only those keys are read
        labels = {k for k in config if any(other.startswith(k + ".") for other in config)}
        tree = unflatten({k: v for k, v in config.items() if k.split(".")[0] in TRIAL_SECTIONS and k not in labels})
        return cls(**{name: model.model_validate(tree.get(name, {})) for name, model in SECTIONS.items()})


@dataclass(frozen=True)
class TrialContext:
    """What the driver knows that every trial needs; passed with ``tune.with_parameters``."""

    run_dir: str
    sweep: str
    metric: str
    mode: str
    data: PreparedData
    gpus_per_trial: float = 0.0
    latency_proxy: dict[str, Any] | None = None
    groups: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)


def better(value: float, best: float | None, mode: str) -> bool:
    if value is None or not np.isfinite(value):
        return False
    return best is None or (value > best if mode == "max" else value < best)


class TuneReporter:
    """Per epoch: best weights to ``trials/<id>/best.pt``, then ``tune.report`` with a resumable checkpoint.

    Before the last epoch's report the example masks are saved: a scheduler may stop the trial inside that report
    (ASHA does at ``max_t``), and nothing after it would run.
    """

    def __init__(self, ctx: TrialContext, trial_dir: Path, constants: dict[str, float], best: float | None,
                 last_epoch: int, on_last_epoch=None):
        self.ctx, self.trial_dir, self.constants, self.best = ctx, trial_dir, constants, best
        self.last_epoch, self.on_last_epoch = last_epoch, on_last_epoch
        self.last_report_s: float | None = None

    def __call__(self, metrics: dict[str, float], module) -> None:
        import time

        from ray import tune

        started = time.perf_counter()
        if self.last_report_s is not None:
            metrics["perf/save_s"] = self.last_report_s  # the previous epoch's checkpoint saving
        epoch = int(metrics["epoch"])
        if better(metrics.get(self.ctx.metric), self.best, self.ctx.mode):
            self.best = metrics[self.ctx.metric]
            torch.save(module.model.state_dict(), self.trial_dir / "best.pt")
        if epoch >= self.last_epoch and self.on_last_epoch is not None:
            self.on_last_epoch(module, epoch)
        staging = self.trial_dir / STAGING_DIR
        shutil.rmtree(staging, ignore_errors=True)  # left by a trial killed inside its report
        staging.mkdir()
        try:
            torch.save({**module.training_state(), "epoch": epoch, "best": self.best}, staging / STATE_FILE)
            self.last_report_s = time.perf_counter() - started  # reported with the next epoch; the report itself
            tune.report({**metrics, **self.constants}, checkpoint=tune.Checkpoint.from_directory(staging))
        finally:  # Tune has copied it, or the trial is stopping (a scheduler stops it inside the report)
            shutil.rmtree(staging, ignore_errors=True)


def release_checkpoint(run_dir: str | Path, trial_id: str) -> int:
    """Once a trial has finished, nothing resumes it: its Tune checkpoint (weights and optimiser state, 3x the model
    for Adam) becomes a stub that says so, and its staging folder goes. ``trials/<id>/best.pt`` keeps the weights.

    A stub rather than nothing: a driver killed before Tune's next snapshot restores the trial as unfinished, and its
    resume then finds the stub and ends at once. Returns the bytes freed."""
    from orchestrator.runner import TUNE_DIR  # the driver's layout; only the driver calls this

    run_dir = Path(run_dir)
    shutil.rmtree(run_dir / "trials" / trial_id / STAGING_DIR, ignore_errors=True)
    freed = 0
    for state in (run_dir / TUNE_DIR / trial_id).glob(f"checkpoint_*/{STATE_FILE}"):
        size = state.stat().st_size
        stub = state.with_name(STATE_FILE + ".stub")
        try:
            with open(stub, "wb") as f:  # a file object: a failed write is an OSError, not torch's RuntimeError
                torch.save({"finished": True}, f)
        except OSError:
            if stub.is_file():
                stub.unlink()  # no half-written stub beside the whole checkpoint
            raise
        os.replace(stub, state)  # a kill here leaves either the whole checkpoint or the stub
        freed += size - state.stat().st_size
    return freed


@dataclass
class TrialRun:
    """One trial's built pieces, ready for ``trainer.fit(module, datamodule=datamodule)``."""

    cfg: TrialConfig
    levers: Any
    module: Any
    datamodule: Any
    trainer: Any
    constants: dict[str, float]


def build_module(cfg: TrialConfig, data: PreparedData, use_gpu: bool, state: dict[str, Any] | None = None):
    """The Lightning module of one configuration (model, loss, optimiser settings), its levers resolved for the
    device. Shared by ``build_trial`` and the driver's GPU-memory probe, so that the probe measures what trains."""
    from models.depthwise import native_depthwise
    from models.losses import create_loss, enet_weights, loss_graph_safe, loss_needs_class_weights
    from models.registry import create_model
    from orchestrator.lit import SegmentationModule
    from orchestrator.perf import resolve_levers

    levers = resolve_levers(cfg.trainer, use_gpu, use_gpu and torch.cuda.is_bf16_supported(),
                            graph_safe_loss=loss_graph_safe(cfg.loss.name))
    model = create_model(cfg.model.arch, cfg.model.encoder, classes=1 if data.task == "binary" else len(data.classes),
                         encoder_weights=cfg.model.encoder_weights, batchnorm=cfg.model.batchnorm)
    class_weights = None
    if loss_needs_class_weights(cfg.loss.name):
        class_weights = enet_weights(data.pixel_counts, cfg.loss.enet_c)
    loss = create_loss(cfg.loss.name, data.task, data.ignore_index, weights=cfg.loss.weights,
                       class_weights=class_weights, alpha=cfg.loss.alpha, beta=cfg.loss.beta, gamma=cfg.loss.gamma,
                       smooth=cfg.loss.smooth)
    if state is not None:
        model.load_state_dict(state["model"])
    if levers.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if levers.native_depthwise:
        native_depthwise(model)
    return SegmentationModule(
        model, loss, data.classes, data.ignore_index, data.positive,
        optim=cfg.optimizer.model_dump(), schedule=cfg.schedule.model_dump(), max_epochs=cfg.trainer.max_epochs,
        epoch_offset=state["epoch"] if state else 0, stage1_epochs=cfg.model.stage1_epochs, levers=levers,
        batch_size=cfg.trainer.batch_size,
    )


def build_trial(config: dict[str, Any], data: PreparedData, use_gpu: bool, started: float,
                groups: dict[str, dict[str, dict[str, Any]]] | None = None, state: dict[str, Any] | None = None
                ) -> TrialRun:
    """Model, loss, data, Lightning module and trainer of one configuration, with the speed levers resolved for the
    device. ``state``: a checkpoint to continue from. Shared by ``run_trial`` and ``orchestrate bench-train``."""
    import lightning.pytorch as L

    from orchestrator.lit import CachedData

    cfg = TrialConfig.from_flat(config, groups)
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    use_gpu = use_gpu and cfg.trainer.accelerator != "cpu" and torch.cuda.is_available()
    if use_gpu:
        torch.cuda.reset_peak_memory_stats()  # a reused actor's previous trial does not count
    module = build_module(cfg, data, use_gpu, state)
    levers = module.levers
    info = model_complexity(module.model, cfg)
    constants = {"model/params": info.params, "model/size_mb": info.size_mb, "model/gmacs": info.gmacs,
                 **levers.as_metrics()}
    done = state["epoch"] if state else 0
    aug = cfg.data.augment
    sets = {} if cfg.data.cache else file_datasets(cfg, data)
    datamodule = CachedData(data.train.path, data.val.path, cfg.trainer.batch_size, hflip=aug.hflip, scale=aug.scale,
                            jitter=aug.jitter, ignore_index=data.ignore_index, levers=levers,
                            num_workers=0 if cfg.data.cache else cfg.data.workers,
                            resident=device_resident(cfg, data, use_gpu, levers), **sets)
    module.resume_state = state
    module.started = started
    # precision is the module's own (TrainStep's autocast), so that a captured step and an eager one agree.
    # cuDNN autotuning only without graphs: a capture must find the very plans its warm-up built (measured on an H200:
    # autotuned warm-up, then capture -> CUDNN_STATUS_INTERNAL_ERROR)
    trainer = L.Trainer(
        max_epochs=max(1, cfg.trainer.max_epochs - done), accelerator="gpu" if use_gpu else "cpu", devices=1,
        benchmark=use_gpu and not levers.cuda_graphs, precision="32-true", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_train_batches=cfg.trainer.limit_train_batches,
    )
    return TrialRun(cfg, levers, module, datamodule, trainer, constants)


def run_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    """Train one configuration. Raises on failure; the runner records the reason. ASHA stops arrive as SystemExit."""
    import time

    import ray
    from ray import tune

    from orchestrator import preload

    started = trial_origin()
    for name in ("lightning.pytorch", "lightning.fabric", "ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
    # torch's CPU threads: the trial's CPU share. Ray sets OMP_NUM_THREADS only in workers it starts for a task, and a
    # preloaded worker imported torch before it knew its share (measured: 4x slower epochs on 2 cores without this)
    torch.set_num_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
    trial_id = tune.get_context().get_trial_id()
    trial_dir = Path(ctx.run_dir) / "trials" / trial_id
    trial_dir.mkdir(parents=True, exist_ok=True)
    state = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=False)
    if state is not None and (state.get("finished") or
                              state["epoch"] >= TrialConfig.from_flat(config, ctx.groups).trainer.max_epochs):
        return
    run = build_trial(config, ctx.data, ctx.gpus_per_trial > 0, started, ctx.groups, state)
    cfg, constants = run.cfg, run.constants
    constants["perf/preloaded"] = float(preload.DONE_AT is not None)  # did Ray hand this trial a preloaded worker
    if ctx.latency_proxy:
        constants |= proxy_latency(run.module.model, ctx.latency_proxy, tuple(cfg.data.size), trial_dir)
    run.module.report = TuneReporter(
        ctx, trial_dir, constants, state["best"] if state else None, last_epoch=cfg.trainer.max_epochs,
        on_last_epoch=lambda module, epoch: save_visuals(module, run.datamodule, cfg, ctx.data, epoch, trial_dir),
    )
    try:
        run.trainer.fit(run.module, datamodule=run.datamodule)
    finally:
        _PROCESS["last_end"] = time.time()


_PROCESS: dict[str, float | None] = {"last_end": None}
IDLE_S = 1.0  # a preloaded worker that got its trial sooner than this after preloading was started for it


def trial_origin() -> float:
    """When this trial started, as far as its process can tell (``perf/startup_s`` counts from here):

    - in a reused actor, the previous trial's end;
    - in a worker that preloaded the imports and then waited in Ray's pool, the trial function's entry: the imports
      overlapped the driver's own work, and what is left is Tune handing the trial over;
    - otherwise (a worker started for this trial), the process's own start, so that spawning it and importing torch
      count.
    """
    import time

    from orchestrator import preload

    now = time.time()
    if _PROCESS["last_end"] is not None:
        return _PROCESS["last_end"]
    if preload.DONE_AT is not None and now - preload.DONE_AT > IDLE_S:
        return now
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:  # noqa: BLE001 - psutil comes with Ray; without it the trial function's start counts
        return now



_COMPLEXITY: dict[tuple, object] = {}


def model_complexity(model, cfg: TrialConfig):
    """Params, MB and GMACs, counted once per model and size in a process (a reused actor skips the count)."""
    from models.complexity import complexity

    key = (cfg.model.arch, cfg.model.encoder, cfg.model.batchnorm, tuple(cfg.data.size),
           sum(p.numel() for p in model.parameters()))
    if key not in _COMPLEXITY:
        _COMPLEXITY[key] = complexity(model, tuple(cfg.data.size))
    return _COMPLEXITY[key]


def device_resident(cfg: TrialConfig, data: PreparedData, use_gpu: bool, levers) -> bool:
    """``data.device_cache``: the decoded splits on the GPU (auto: when small enough); needs the cache and
    augmentation on the device."""
    return use_gpu and levers.device_augment and cfg.data.on_device(data.cache_bytes())


def file_datasets(cfg: TrialConfig, data: PreparedData) -> dict[str, object]:
    """``data.cache: false``: datasets that decode the files themselves, in the DataLoader workers."""
    from orchestrator.data.files import FilePairs
    from orchestrator.data.prepare import adapter_for, resolve_pairs

    adapter = adapter_for(cfg.data)
    train, val = resolve_pairs(cfg.data)
    args = (adapter, tuple(cfg.data.size), cfg.data.resize, cfg.data.task)
    return {"train_set": FilePairs(train, *args), "val_set": FilePairs(val, *args)}


def proxy_latency(model, proxy: dict[str, Any], size: tuple[int, int], trial_dir: Path) -> dict[str, float]:
    """The spec's latency proxy, measured before training (latency does not depend on the weights):
    ``latency/mean_ms``, ``latency/p50_ms``, ``latency/p90_ms``, ``latency/p99_ms``."""
    import copy

    from models.depthwise import cudnn_depthwise
    from orchestrator.latency.bench import measure_onnx, measure_torch

    shape = [1, 3, *size]
    backend, warmup, iters, fp16 = proxy["backend"], proxy["warmup"], proxy["iters"], proxy["fp16"]
    probe = cudnn_depthwise(copy.deepcopy(model))  # the model as deployed, not as the trial trains it
    if backend.startswith("torch"):
        result = measure_torch(probe, shape, warmup, iters, fp16, compile=backend == "torch-compile")
    else:
        from models.export import export_onnx

        path = export_onnx(probe, trial_dir / "proxy.onnx", size)
        if proxy.get("target"):
            from orchestrator.latency.remote import measure_remote

            result = measure_remote(proxy["target"], backend, path, shape, warmup, iters, fp16,
                                    proxy["remote_python"], list(proxy["ssh_options"]))
        else:
            result = measure_onnx(backend, path, shape, warmup, iters, fp16)
    return {f"latency/{k}": getattr(result, k) for k in ("mean_ms", "p50_ms", "p90_ms", "p99_ms")}


def save_visuals(module, datamodule, cfg: TrialConfig, data: PreparedData, epoch: int, trial_dir: Path) -> None:
    """At the end of a full trial: the first ``log_images`` validation images with their masks (for W&B), and the
    ``best_worst`` best and worst validation images by per-image mIoU as image | truth | prediction panels."""
    from orchestrator.lit import predict
    from orchestrator.tracking import EXAMPLES_FILE  # imports Ray: only where a trial saves its visuals
    from orchestrator.visuals import rank_images, save_panels

    count = max(cfg.trainer.log_images, 1 if cfg.trainer.best_worst else 0)
    if count == 0:
        return
    images, labels = datamodule.val_set.images, datamodule.val_set.labels
    n = len(labels) if cfg.trainer.best_worst else min(count, len(labels))
    preds = []
    was_training = module.training
    module.eval()
    with torch.no_grad():
        for start in range(0, n, cfg.trainer.batch_size):
            chunk = slice(start, min(n, start + cfg.trainer.batch_size))
            x, _ = datamodule.prepare(
                (torch.from_numpy(np.array(images[chunk])), torch.from_numpy(np.array(labels[chunk]))), augment=False)
            preds.append(predict(module(x.to(module.device)), module.binary).cpu().numpy().astype(np.uint8))
    module.train(was_training)
    preds = np.concatenate(preds)
    k = cfg.trainer.log_images
    if k:
        np.savez_compressed(trial_dir / EXAMPLES_FILE, images=np.array(images[:k]), truths=np.array(labels[:k]),
                            preds=preds[:k], classes=np.array(data.classes), ignore_index=data.ignore_index, epoch=epoch)
    if cfg.trainer.best_worst:
        names = json.loads((Path(data.val.path) / "names.json").read_text())
        scores = rank_images(np.asarray(labels[:n]), preds, data.classes, data.ignore_index)
        save_panels(trial_dir / "best_worst", scores, cfg.trainer.best_worst, images, labels, preds, names,
                    data.palette, data.ignore_index)
