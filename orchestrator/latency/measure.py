"""``measure``: the one way to time a model, used by ``orchestrate bench``, a sweep's ``export:`` step and the
in-trial latency proxy. It picks the backend (PyTorch, onnxruntime, trtexec) and the target (this machine, or an SSH
target), and exports the model to ONNX first where the backend needs a file and none is given. A device that should
report power and does not (no tegrastats on a Jetson target, no NVML beside a GPU) is one line on stderr; the
latency is recorded all the same."""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from models.export import export_onnx
from orchestrator.errors import SegsweepError
from orchestrator.latency.bench import LatencyResult, check_backend, measure_onnx, measure_torch
from orchestrator.latency.engines import LocalDevice, measure_trtexec
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
    if backend.startswith("torch"):
        if model is None:
            raise SegsweepError(f"{backend} needs the PyTorch model: give a run directory or --arch, not an ONNX file")
        if target != "local":
            raise SegsweepError(f"{backend}: remote targets run onnxruntime or trtexec; "
                                f"use --backend ort-cpu or trtexec")
        result = measure_torch(model, shape, protocol.warmup, protocol.iters, protocol.fp16,
                               compile=backend == "torch-compile", threads=protocol.threads)
    else:
        with tempfile.TemporaryDirectory(prefix="segsweep-bench-") as tmp:
            if onnx_path is None:
                if model is None:
                    raise SegsweepError(f"{backend} needs a model: give MODEL.onnx, a run directory, or --arch NAME")
                onnx_path = export_onnx(model, Path(tmp) / "model.onnx", (shape[2], shape[3]))
            result = _measure_file(backend, Path(onnx_path), shape, protocol, target, remote_python, ssh_options)
    if "energy_note" in result.extra:  # a device that should measure power and did not: said, the latency kept
        print(f"[segsweep] {result.extra['energy_note']}", file=sys.stderr, flush=True)
    return result


def _measure_file(backend: str, onnx_path: Path, shape: list[int], p: Protocol, target: str, remote_python: str,
                  ssh_options: tuple[str, ...]) -> LatencyResult:
    if target != "local":
        return measure_remote(target, backend, onnx_path, shape, p.warmup, p.iters, p.fp16, remote_python,
                              list(ssh_options), p.threads)
    if backend != "trtexec":
        return measure_onnx(backend, onnx_path, shape, p.warmup, p.iters, p.fp16, p.threads)
    if not onnx_path.is_file():
        raise SegsweepError(f"{onnx_path}: no such ONNX file")
    with LocalDevice() as device:
        return measure_trtexec(device, onnx_path, shape, p.iters, p.fp16)
