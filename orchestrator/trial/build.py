"""A trial's pieces from its flat config: model, loss, levers, data module, Lightning module and trainer. Shared by
the pool's workers (a trial, and their warm-up steps) and ``orchestrate bench-train``, so that each measures what
trains."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.accelerators import CUDAAccelerator

from models.complexity import Complexity, complexity
from models.depthwise import native_depthwise
from models.losses import create_loss, enet_weights, loss_graph_safe, loss_needs_class_weights
from models.registry import create_model
from orchestrator.data.cache import PreparedData
from orchestrator.data.files import FilePairs
from orchestrator.data.prepare import adapter_for, resolve_pairs
from orchestrator.trial.config import TrialConfig
from orchestrator.trial.data import CachedData
from orchestrator.trial.levers import Levers, resolve_levers
from orchestrator.trial.module import SegmentationModule


class SharedCUDA(CUDAAccelerator):
    """Lightning's CUDA accelerator for trials that share a process (the pool's threads): its set-up and teardown
    leave the process's memory alone. Lightning's own empty the allocator's cache and free every stream's cuBLAS
    workspace, which the captured CUDA graphs of the trials still running would then write into."""

    def setup(self, trainer: L.Trainer) -> None:
        self.set_nvidia_flags(trainer.local_rank)

    def teardown(self) -> None:
        pass


@dataclass
class TrialRun:
    """One trial's built pieces, ready for ``trainer.fit(module, datamodule=datamodule)``."""

    cfg: TrialConfig
    levers: Levers
    module: SegmentationModule
    datamodule: CachedData
    trainer: L.Trainer
    constants: dict[str, float]


def trial_levers(cfg: TrialConfig, use_gpu: bool) -> Levers:
    """The configuration's speed levers on its device (bf16 where the GPU has it; graphs only for a capturable loss)."""
    return resolve_levers(cfg.trainer, use_gpu, use_gpu and torch.cuda.is_bf16_supported(),
                          graph_safe_loss=loss_graph_safe(cfg.loss.name))


def output_classes(data: PreparedData) -> int:
    """The model's output channels: one logit for the binary task, else one per class."""
    return 1 if data.task == "binary" else len(data.classes)


def validation_batching(cfg: TrialConfig, use_gpu: bool) -> dict[str, Any]:
    """``CachedData``'s validation batches: balanced on a GPU (batches of one shape); with batch statistics in
    evaluation (model.batchnorm: batch) the training batch, unbalanced, so that it validates as it trains."""
    batch_stats = cfg.model.batchnorm == "batch"
    return {"val_batch_size": cfg.trainer.batch_size if batch_stats else cfg.trainer.val_batch_size,
            "balanced_val": use_gpu and not batch_stats}


def build_module(cfg: TrialConfig, data: PreparedData, use_gpu: bool, state: dict[str, Any] | None = None,
                 started: float | None = None) -> SegmentationModule:
    """The Lightning module of one configuration (model, loss, optimiser settings), its levers resolved for the
    device; ``state``: a checkpoint to continue from."""
    levers = trial_levers(cfg, use_gpu)
    model = create_model(cfg.model.arch, cfg.model.encoder, classes=output_classes(data),
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
        stage1_epochs=cfg.model.stage1_epochs, levers=levers, batch_size=cfg.trainer.batch_size, resume_state=state,
        started=started,
    )


@dataclass
class TrialModel:
    """A trial before anything trains: its configuration, Lightning module and figures (params, MB, GMACs, levers),
    which its budgets are checked against (``orchestrator.budgets``)."""

    cfg: TrialConfig
    use_gpu: bool
    module: SegmentationModule
    constants: dict[str, float]


def trial_model(config: dict[str, Any], data: PreparedData, use_gpu: bool, started: float,
                groups: dict[str, dict[str, dict[str, Any]]] | None = None,
                state: dict[str, Any] | None = None) -> TrialModel:
    """Seeded, the configuration's Lightning module with its speed levers resolved for the device, and its figures.
    ``state``: a checkpoint to continue from."""
    cfg = TrialConfig.from_flat(config, groups)
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    use_gpu = use_gpu_for(cfg, use_gpu)
    if use_gpu:
        torch.cuda.reset_peak_memory_stats()  # a reused actor's previous trial does not count
    module = build_module(cfg, data, use_gpu, state, started)
    info = model_complexity(module.model, cfg)
    constants = {"model/params": info.params, "model/size_mb": info.size_mb, "model/gmacs": info.gmacs,
                 **module.levers.as_metrics()}
    return TrialModel(cfg, use_gpu, module, constants)


def complete_trial(model: TrialModel, data: PreparedData, state: dict[str, Any] | None = None,
                   callbacks: list[L.Callback] | None = None) -> TrialRun:
    """The rest of a trial around its model: data module and trainer (``callbacks``: reporting, timing)."""
    cfg, module = model.cfg, model.module
    done = state["epoch"] if state else 0
    trainer = build_trainer(cfg, model.use_gpu, max_epochs=max(1, cfg.trainer.max_epochs - done), callbacks=callbacks)
    return TrialRun(cfg, module.levers, module, build_datamodule(cfg, data, model.use_gpu, module.levers), trainer,
                    model.constants)


def build_trial(config: dict[str, Any], data: PreparedData, use_gpu: bool, started: float,
                groups: dict[str, dict[str, dict[str, Any]]] | None = None, state: dict[str, Any] | None = None,
                callbacks: list[L.Callback] | None = None) -> TrialRun:
    """Model, loss, data, Lightning module and trainer of one configuration, with the speed levers resolved for the
    device (``trial_model``, then ``complete_trial``)."""
    return complete_trial(trial_model(config, data, use_gpu, started, groups, state), data, state, callbacks)


def use_gpu_for(cfg: TrialConfig, use_gpu: bool) -> bool:
    """Whether this configuration trains on the GPU its worker has (``trainer.accelerator: cpu`` keeps it off)."""
    return use_gpu and cfg.trainer.accelerator != "cpu" and torch.cuda.is_available()


def build_datamodule(cfg: TrialConfig, data: PreparedData, use_gpu: bool, levers: Levers) -> CachedData:
    """The trial's batches: from the decode-once cache (on the GPU where it fits), or from the files."""
    aug = cfg.data.augment
    sets = {} if cfg.data.cache else file_datasets(cfg)
    return CachedData(data.train.path, data.val.path, cfg.trainer.batch_size, hflip=aug.hflip, scale=aug.scale,
                      jitter=aug.jitter, ignore_index=data.ignore_index, levers=levers,
                      num_workers=0 if cfg.data.cache else cfg.data.workers,
                      resident=device_resident(cfg, data, use_gpu, levers), seed=cfg.trainer.seed,
                      full_batches=use_gpu, **validation_batching(cfg, use_gpu), **sets)


def build_trainer(cfg: TrialConfig, use_gpu: bool, max_epochs: int = 1,
                  callbacks: list[L.Callback] | None = None) -> L.Trainer:
    """Lightning's trainer of a trial (or of its validation alone)."""
    # precision is the module's own (TrainStep's autocast), so that a captured step and an eager one agree.
    # benchmark=None leaves cuDNN's autotuning as the process has it (off): the trials of a worker share the flag, and
    # a capture must find the very plans its warm-up built (measured on an H200: autotuned warm-up, then capture ->
    # CUDNN_STATUS_INTERNAL_ERROR)
    return L.Trainer(
        max_epochs=max_epochs, accelerator=SharedCUDA() if use_gpu else "cpu", devices=1,
        benchmark=None, precision="32-true", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        limit_train_batches=cfg.trainer.limit_train_batches, callbacks=callbacks or [],
    )


_COMPLEXITY: dict[tuple, Complexity] = {}


def model_complexity(model: torch.nn.Module, cfg: TrialConfig) -> Complexity:
    """Params, MB and GMACs, counted once per model and size in a process (a reused actor skips the count)."""
    key = (cfg.model.arch, cfg.model.encoder, cfg.model.batchnorm, tuple(cfg.data.size),
           sum(p.numel() for p in model.parameters()))
    if key not in _COMPLEXITY:
        _COMPLEXITY[key] = complexity(model, tuple(cfg.data.size))
    return _COMPLEXITY[key]


def device_resident(cfg: TrialConfig, data: PreparedData, use_gpu: bool, levers: Levers) -> bool:
    """``data.device_cache``: the decoded splits on the GPU (auto: when small enough); needs the cache and
    augmentation on the device."""
    return use_gpu and levers.device_augment and cfg.data.on_device(data.cache_bytes())


def file_datasets(cfg: TrialConfig) -> dict[str, FilePairs]:
    """``data.cache: false``: datasets that decode the files themselves, in the DataLoader workers."""
    train, val = resolve_pairs(cfg.data)
    args = (adapter_for(cfg.data), tuple(cfg.data.size), cfg.data.resize, cfg.data.task)
    return {"train_set": FilePairs(train, *args), "val_set": FilePairs(val, *args)}
