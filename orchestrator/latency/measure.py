"""``measure``: the one way to time a model, used by ``orchestrate bench``, a sweep's ``export:`` step and the
in-trial latency proxy. It picks the backend (PyTorch, onnxruntime, trtexec) and the target (this machine, or an SSH
target), and exports the model to ONNX first where the backend needs a file and none is given."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from models.export import export_onnx
from orchestrator.errors import SegsweepError
from orchestrator.latency.bench import LatencyResult, check_backend, measure_onnx, measure_torch
from orchestrator.latency.remote import measure_remote
from orchestrator.latency.targets import resolve_target


@dataclass(frozen=True)
class Protocol:
    """How long to time: at least ``warmup`` calls and 1 s, then at least ``iters`` calls and 2 s."""

    warmup: int = 10
    iters: int = 100
    fp16: bool = False
    threads: int | None = None  # CPU threads: onnxruntime intra-op, torch on a CPU


def measure(backend: str, shape: list[int], protocol: Protocol = Protocol(), *, model: nn.Module | None = None,
            onnx_path: Path | None = None, target: str = "local", remote_python: str = "python3",
            ssh_options: tuple[str, ...] = ()) -> LatencyResult:
    """Time ``model`` (torch backends, this machine only) or ``onnx_path`` (onnxruntime backends and trtexec, here or
    on ``target``: ``ssh://user@host[:port]`` or a registered target's name) at input ``shape`` (NxCxHxW)."""
    check_backend(backend)
    if target != "local":
        resolve_target(target, ssh_options, remote_python)  # a bad target or ssh option: refused before any export
    p = protocol
    if backend.startswith("torch"):
        if model is None:
            raise SegsweepError(f"{backend} needs the PyTorch model: give a run directory or --arch, not an ONNX file")
        if target != "local":
            raise SegsweepError(f"{backend}: remote targets run onnxruntime or trtexec; "
                                f"use --backend ort-cpu or trtexec")
        return measure_torch(model, shape, p.warmup, p.iters, p.fp16, compile=backend == "torch-compile",
                             threads=p.threads)
    with tempfile.TemporaryDirectory(prefix="segsweep-bench-") as tmp:
        if onnx_path is None:
            if model is None:
                raise SegsweepError(f"{backend} needs a model: give MODEL.onnx, a run directory, or --arch NAME")
            onnx_path = export_onnx(model, Path(tmp) / "model.onnx", (shape[2], shape[3]))
        if target == "local":
            return measure_onnx(backend, onnx_path, shape, p.warmup, p.iters, p.fp16, p.threads)
        return measure_remote(target, backend, onnx_path, shape, p.warmup, p.iters, p.fp16, remote_python,
                              list(ssh_options), p.threads)
