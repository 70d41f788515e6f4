"""Tried and not kept (issue 11): cuDNN's run-time compiled depthwise kernels compiled before a process's first trial,
on several threads at once. ``benchmarks/startup_profile.py``'s ``warm*`` variants use it; docs/benchmarks.md has
the figures: the first training step stayed at 6.5-10.2 s (12.7 s without), because PyTorch keeps cuDNN's execution
plans, and the kernels compiled for them, per thread, and autograd runs every CUDA backward on its own thread.

``depthwise_convs`` finds a model's depthwise convolutions and their inputs' shapes on the meta device;
``compile_depthwise`` runs each, forward and backward, on a pool of threads.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.depthwise import is_depthwise
from models.registry import create_model
from orchestrator.data.cache import PreparedData
from orchestrator.trial.build import output_classes, trial_levers, validation_batching
from orchestrator.trial.config import TrialConfig
from orchestrator.trial.data import balanced_batch
from orchestrator.trial.step import AUTOCAST_DTYPES


@dataclass(frozen=True)
class DepthwiseConv:
    """One depthwise convolution of a model as it runs: its parameters and the channels and size of its input."""

    in_channels: int
    out_channels: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    height: int
    width: int


@dataclass(frozen=True)
class DepthwiseRun:
    """A depthwise convolution as one trial runs it: its batch, dtype and memory format, and whether its backward
    runs too (training) or only its forward (validation)."""

    conv: DepthwiseConv
    batch: int
    dtype: torch.dtype
    channels_last: bool
    backward: bool


def depthwise_convs(model: nn.Module, size: tuple[int, int], in_channels: int = 3) -> tuple[DepthwiseConv, ...]:
    """The distinct depthwise convolutions of ``model`` for an input of ``size`` (height, width), in the order the
    forward pass meets them. The forward runs on whatever device the model is: on ``meta`` it costs no memory and
    runs no kernel (``with torch.device("meta"): create_model(...)``)."""
    found: dict[DepthwiseConv, None] = {}

    def record(conv: nn.Conv2d, args: tuple, output: torch.Tensor) -> None:
        h, w = args[0].shape[-2:]
        found.setdefault(DepthwiseConv(conv.in_channels, conv.out_channels, tuple(conv.kernel_size),
                                       tuple(conv.stride), tuple(conv.padding), tuple(conv.dilation), int(h), int(w)))

    hooks = [m.register_forward_hook(record) for m in model.modules() if is_depthwise(m)]
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            model(torch.zeros(2, in_channels, *size, device=device))  # two: training BatchNorm needs more than one
    finally:
        for hook in hooks:
            hook.remove()
    return tuple(found)


def run_depthwise(run: DepthwiseRun, device: torch.device) -> tuple[torch.Tensor, ...]:
    """One depthwise convolution as a trial's step runs it: the forward, and for training the backward to the input
    and to the weight (``aten.convolution_backward`` straight from this thread: autograd would hand it to its one
    thread per device). Tensors laid out as a trial's are: a channels-last input, the weight made channels-last in
    fp32 and then cast, as autocast casts it. Returns the output and, with ``backward``, both gradients."""
    c = run.conv
    layout = torch.channels_last if run.channels_last else torch.contiguous_format
    generator = torch.Generator(device=device).manual_seed(0)  # not CUDA's default one: a capture may hold it
    x = torch.randn(run.batch, c.in_channels, c.height, c.width, device=device, generator=generator)
    x = x.to(run.dtype).contiguous(memory_format=layout)
    w = torch.randn(c.out_channels, 1, *c.kernel, device=device, generator=generator)
    w = w.contiguous(memory_format=layout).to(run.dtype)
    args = (c.stride, c.padding, c.dilation)
    with torch.no_grad():
        y = F.conv2d(x, w, None, *args, c.in_channels)
        if not run.backward:
            return (y,)
        gx, gw, _ = torch.ops.aten.convolution_backward(torch.ones_like(y), x, w, None, *map(list, args), False,
                                                        [0, 0], c.in_channels, [True, True, False])
    return y, gx, gw


_COMPILERS: list[ThreadPoolExecutor] = []  # compile_depthwise's threads, kept for the process's life (see there)
_COMPILERS_LOCK = threading.Lock()


def compile_depthwise(runs: Iterable[DepthwiseRun], device: torch.device, threads: int) -> int:
    """Each run once, on ``threads`` threads at once (0: in the calling thread), each on a CUDA stream of its own (a
    GPU), and wait for them.

    On a GPU this is where cuDNN compiles its run-time kernels for these convolutions (NVRTC, 10-17 s per process
    when a trial's first step meets them one after another: docs/benchmarks.md). The threads stay alive, parked,
    for the rest of the process: PyTorch keeps cuDNN's execution plans per thread, and a thread's plans (which hold
    the kernels compiled for them) go with it. Returns the number of runs."""
    runs = list(dict.fromkeys(runs))

    def one(run: DepthwiseRun) -> None:
        stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            run_depthwise(run, device)
        if stream is not None:
            stream.synchronize()

    # the largest first: a thread that draws them late would finish last
    order = sorted(runs, key=lambda r: -r.batch * r.conv.in_channels * r.conv.height * r.conv.width)
    if threads <= 0:
        for run in order:
            one(run)
        return len(runs)
    with _COMPILERS_LOCK:
        if not _COMPILERS or _COMPILERS[0]._max_workers < threads:
            _COMPILERS[:] = [ThreadPoolExecutor(threads, thread_name_prefix="segsweep-depthwise")]
        pool = _COMPILERS[0]
    list(pool.map(one, order))
    return len(runs)


def depthwise_runs(config: dict[str, Any], data: PreparedData,
                   groups: dict[str, dict[str, dict[str, Any]]] | None = None) -> tuple[DepthwiseRun, ...]:
    """The depthwise convolutions that a trial of ``config`` runs through cuDNN on a GPU, for ``compile_depthwise``
    before the first trials: each at the training batch, forward and backward, and at validation's batch, forward.
    The model is built on the meta device (no memory, no weights read). None where the trial takes PyTorch's own
    kernels for them (``trainer.native_depthwise``) or has no depthwise convolution (ENet, ResNets)."""
    cfg = TrialConfig.from_flat(config, groups)
    levers = trial_levers(cfg, use_gpu=torch.cuda.is_available())
    if levers.native_depthwise:
        return ()
    with torch.device("meta"):
        model = create_model(cfg.model.arch, cfg.model.encoder, classes=output_classes(data),
                             batchnorm=cfg.model.batchnorm)
    dtype = AUTOCAST_DTYPES.get(levers.precision, torch.float32)
    val = validation_batching(cfg, use_gpu=True)  # build_trial's validation batches on a GPU
    val_batch = balanced_batch(data.val.images, val["val_batch_size"]) if val["balanced_val"] else val["val_batch_size"]
    convs = depthwise_convs(model, tuple(cfg.data.size))
    return tuple(DepthwiseRun(conv, batch, dtype, levers.channels_last, backward)
                 for batch, backward in ((cfg.trainer.batch_size, True), (val_batch, False)) for conv in convs)
