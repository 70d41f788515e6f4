"""cuDNN's run-time kernels of a worker process, compiled while the process still imports: one forward and backward
of each of the study's architectures at its trials' batch and size, then validation's forward at its batch, in a
thread of its own on a stream of its own. Imports torch and the models only, not Lightning, so that the worker
starts it before it imports Lightning and torchmetrics (6-7 s on an H200 host), which runs beside the compilation
(10-17 s once per process for MobileNetV2's bf16 channels-last convolutions: ``docs/benchmarks.md``).

What it compiles serves every thread of the process; each thread still plans its own (cuDNN's plans are per
thread, about 2 s for a fresh thread's first trial).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

from models.depthwise import native_depthwise
from models.registry import create_model
from orchestrator.trial.config import TrialConfig
from orchestrator.trial.levers import balanced_batch, resolve_levers

VAL_WAIT_S = 300.0  # how long the thread waits for the sweep's data (validation's batch) before it gives up on it
log = logging.getLogger("segsweep.pool")


class KernelWarmUp:
    """Started with the study's warm configs (``WorkerSettings.warm``); ``validation(n)`` gives it the validation
    split's size once the worker has its data; ``done`` is set when it has finished (or failed: a warm-up is no
    trial, and the trials then compile what is left themselves). Each pass is reported to ``mark``
    (``warm-up`` events of the worker's timeline), which the worker sets once it exists."""

    def __init__(self, configs: tuple[dict[str, Any], ...]) -> None:
        self.configs = configs
        self.done = threading.Event()
        self._val_n: int | None = None
        self._val_known = threading.Event()
        self._lock = threading.Lock()
        self._marks: list[tuple[str, dict[str, Any]]] = []
        self._mark: Callable[..., None] | None = None
        self._thread = threading.Thread(target=self._run, name="segsweep-warm-up", daemon=True)
        self._thread.start()

    def validation(self, n: int) -> None:
        self._val_n = n
        self._val_known.set()

    def report_to(self, mark: Callable[..., None]) -> None:
        """Where the passes go: those done so far at once, later ones as they end."""
        with self._lock:
            self._mark = mark
            for event, details in self._marks:
                mark(event, **details)
            self._marks.clear()

    def _report(self, **details: Any) -> None:
        with self._lock:
            if self._mark is None:
                self._marks.append(("warm-up", details))
            else:
                self._mark("warm-up", **details)

    def _run(self) -> None:
        try:
            torch.backends.cudnn.benchmark = False  # as the trials have it: their plans come from cuDNN's heuristics
            with torch.cuda.stream(torch.cuda.Stream()):
                models = [self._train_pass(TrialConfig.from_flat(config)) for config in self.configs]
                if models and self._val_known.wait(VAL_WAIT_S) and self._val_n:
                    for cfg, model in models:
                        self._val_pass(cfg, model, self._val_n)
                torch.cuda.current_stream().synchronize()
        except Exception as e:  # noqa: BLE001 - the trials compile what is left themselves
            log.warning("kernel warm-up stopped: %s: %s", type(e).__name__, (str(e).splitlines() or [""])[0][:200])
        finally:
            self.done.set()

    def _train_pass(self, cfg: TrialConfig) -> tuple[TrialConfig, torch.nn.Module]:
        started = time.time()
        model = warm_model(cfg)
        for m in model.modules():
            if isinstance(m, torch.nn.modules.dropout._DropoutNd):
                # no draw from the default CUDA generator, which a trial's graph capture in another thread may hold
                # ("Offset increment outside graph capture"); dropout has no cuDNN kernel to compile
                m.eval()
        x = batch_input(cfg, cfg.trainer.batch_size)
        with autocast(cfg):
            out = model(x)
        out.float().mean().backward()
        torch.cuda.current_stream().synchronize()
        model.zero_grad(set_to_none=True)
        self._report(arch=cfg.model.arch, seconds=round(time.time() - started, 2), part="train")
        return cfg, model

    def _val_pass(self, cfg: TrialConfig, model: torch.nn.Module, n: int) -> None:
        if cfg.model.batchnorm == "batch":
            return  # validation runs at the training batch, done above
        started = time.time()
        model.eval()
        with torch.no_grad(), autocast(cfg):
            model(batch_input(cfg, balanced_batch(n, cfg.trainer.val_batch_size)))
        torch.cuda.current_stream().synchronize()
        self._report(arch=cfg.model.arch, seconds=round(time.time() - started, 2), part="validation")


def warm_model(cfg: TrialConfig) -> torch.nn.Module:
    """The trial's network with random weights (its weights do not change the kernels), on the GPU in the trial's
    memory format. The head's class count does not matter either: 1 for binary, else 8."""
    model = create_model(cfg.model.arch, cfg.model.encoder, classes=1 if cfg.data.task == "binary" else 8,
                         encoder_weights=None, batchnorm=cfg.model.batchnorm).cuda()
    if levers(cfg).native_depthwise:
        native_depthwise(model)
    return model.to(memory_format=torch.channels_last) if levers(cfg).channels_last else model


def batch_input(cfg: TrialConfig, n: int) -> torch.Tensor:
    h, w = cfg.data.size
    # a generator of its own, not CUDA's default one, which a trial's capture in another thread may hold
    x = torch.randn(n, 3, h, w, device="cuda", generator=torch.Generator(device="cuda").manual_seed(0))
    return x.contiguous(memory_format=torch.channels_last) if levers(cfg).channels_last else x


def levers(cfg: TrialConfig):
    return resolve_levers(cfg.trainer, True, torch.cuda.is_bf16_supported())


def autocast(cfg: TrialConfig):
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(levers(cfg).precision)
    return torch.autocast("cuda", dtype=dtype, enabled=dtype is not None)


def start_warm_up(configs: tuple[dict[str, Any], ...]) -> KernelWarmUp | None:
    """The warm-up thread of a GPU worker; None without CUDA or without configs."""
    if not configs or not torch.cuda.is_available():
        return None
    return KernelWarmUp(configs)
