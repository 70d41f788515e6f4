"""One optimizer step per batch: eager, or replayed from a CUDA graph of the whole step."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Protocol

import torch
from torch import nn

from orchestrator.trial.levers import Levers

log = logging.getLogger("segsweep.trial")


class Steppable(Protocol):
    """What a step needs of the trial's module (``trial.module.SegmentationModule``): its network and loss, its device,
    the stage it trains (a staged model's first stage has other shapes), and its logits for a batch."""

    model: nn.Module
    loss: nn.Module
    device: torch.device
    in_stage1: bool

    def logits(self, x: torch.Tensor, y: torch.Tensor, training: bool) -> tuple[torch.Tensor, torch.Tensor]: ...


class CaptureLock:
    """Trials that share a process (the trial pool's threads, each on its own CUDA stream) serialise what cannot
    overlap a CUDA-graph capture: a capture is exclusive (one at a time); every step of a model with dropout, eager
    or replayed, is shared. Steps of models without random ops take no lock at all.

    A capture puts the default CUDA generator into capture mode; a draw from it by another thread meanwhile fails
    with 'Offset increment outside graph capture encountered unexpectedly': an eager dropout, and the replay of a
    graph that holds one (its prologue advances the generator's offset; seen on an H200: 6 of 40 trials failed
    before replays of such graphs took the lock). Writers go first, so a capture waits only for the steps in
    flight."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting = 0

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


AUTOCAST_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}  # trainer.precision: autocast's dtype

STEP_LOCK = CaptureLock()  # one per process: every CUDA training step of the process goes through it


class TrainStep:
    """One optimizer step per batch: eager, or (``levers.cuda_graphs``) replayed from a CUDA graph of the whole step:
    forward, loss, backward and optimizer, captured once the shapes are known.

    Full batches of one shape are graphed after ``WARMUP`` eager steps on a side stream (cuDNN and cuBLAS set up
    outside capture); other shapes (a short last batch) run eagerly beside the graph. The learning rate reaches the
    graph through a device tensor filled after each schedule step, so schedules keep working and nothing reads the
    host. A configuration that cannot be captured (a loss with data-dependent shapes, a non-capturable optimizer)
    falls back to eager for the rest of the trial, with the reason logged and kept in ``fallback``.
    """

    WARMUP = 3

    def __init__(self, module: Steppable, levers: Levers, batch_size: int) -> None:
        self.module, self.batch_size = module, batch_size
        self.dtype = AUTOCAST_DTYPES.get(levers.precision)
        self.scaler = torch.amp.GradScaler("cuda") if levers.precision == "16-mixed" else None
        self.use_graphs = levers.cuda_graphs
        self.graph: torch.cuda.CUDAGraph | None = None
        self.key: tuple | None = None
        self.seen = 0
        self.graphed = 0  # replays so far
        self.fallback: str | None = None
        self.lr: list[torch.Tensor] = []
        # does an eager step draw from the default CUDA generator (dropout in training)? then it may not overlap a
        # capture of another trial of the process
        self.random = any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in module.model.modules())

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        # graphs must not keep autocast's weight-cast cache across captures
        return torch.autocast(self.module.device.type, dtype=self.dtype, cache_enabled=not self.use_graphs)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            logits, y = self.module.logits(x, y, training=True)
        return self.module.loss(logits.float(), y)

    def eager(self, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = self.loss(x, y)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            loss.backward()
            optimizer.step()
        return loss.detach()

    def __call__(self, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer) -> torch.Tensor:
        if not x.is_cuda:
            return self.eager(x, y, optimizer)  # CPU trials of one process run their steps side by side
        if self.use_graphs and self.graph is None and self.seen >= self.WARMUP and self.key == self._key(x, y):
            with STEP_LOCK.exclusive():
                return self._step(x, y, optimizer)
        with STEP_LOCK.shared() if self.random else contextlib.nullcontext():
            return self._step(x, y, optimizer)

    def _key(self, x: torch.Tensor, y: torch.Tensor) -> tuple:
        return (tuple(x.shape), tuple(y.shape), x.is_contiguous(memory_format=torch.channels_last),
                self.module.in_stage1)

    def _step(self, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer) -> torch.Tensor:
        if not self.use_graphs or x.shape[0] != self.batch_size:
            return self.eager(x, y, optimizer)
        key = self._key(x, y)
        if key != self.key:
            self.key, self.seen, self.graph = key, 0, None
        if self.graph is None:
            if self.seen < self.WARMUP:
                self.seen += 1
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    loss = self.eager(x, y, optimizer)
                torch.cuda.current_stream().wait_stream(side)
                return loss
            try:
                self.capture(x, y, optimizer)
            except Exception as e:  # noqa: BLE001 - any capture failure means: train eagerly
                self.use_graphs, self.graph = False, None
                root = e
                while root.__context__ is not None:  # the first error inside the capture, not capture_end's
                    root = root.__context__
                self.fallback = f"{type(root).__name__}: {(str(root).splitlines() or [''])[0]}"[:200]
                log.warning("CUDA graph capture failed, training eagerly: %s", self.fallback)
                torch.cuda.synchronize()
                return self.eager(x, y, optimizer)
        self.static_x.copy_(x)
        self.static_y.copy_(y)
        self.graph.replay()
        self.graphed += 1
        return self.static_loss.clone()

    def capture(self, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        groups = optimizer.param_groups
        self.static_x, self.static_y = x.clone(), y.clone()
        self.lr = [torch.tensor(float(g["lr"]), device=x.device) for g in groups]
        floats = [g["lr"] for g in groups]
        graph = torch.cuda.CUDAGraph()
        optimizer.zero_grad(set_to_none=True)
        try:
            for g, t in zip(groups, self.lr, strict=True):
                g["lr"] = t  # captured by address; schedules keep stepping the float
            # thread_local: the DataLoader's pin-memory thread may allocate while this thread captures
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                loss = self.loss(self.static_x, self.static_y)
                loss.backward()
                optimizer.step()
        finally:
            for g, f in zip(groups, floats, strict=True):
                g["lr"] = f
        self.static_loss, self.graph = loss.detach(), graph

    def sync_lr(self, optimizer: torch.optim.Optimizer) -> None:
        """After a schedule step: the graph's learning-rate tensors follow (no host read)."""
        if self.graph is not None:
            for g, t in zip(optimizer.param_groups, self.lr, strict=True):
                t.fill_(g["lr"])
