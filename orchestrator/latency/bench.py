"""Latency backends and the benchmark protocol: warm-up (at least N calls and 1 s), then timed calls (at least N and
2 s) with device synchronisation after each; p50/p90/p99 over the timed calls.

Backends: ``torch`` (eager), ``torch-compile`` (CUDA graphs on a GPU), ``ort-cpu``, ``ort-cuda``, ``ort-tensorrt``
(onnxruntime execution providers) and ``trtexec`` (TensorRT's own tool, ``latency.engines``). Each reports mean / p50 /
p90 / p99 in ms, throughput, versions and the device; torch backends on a GPU also report compute alone (transfers
excluded). Where the device measures power (tegrastats on a Jetson; NVML on an NVIDIA GPU, for GPU backends) the
result carries ``energy``: mean power in the timed loop and energy per image (``latency.energy``).
"""

from __future__ import annotations

import json
import os
import platform
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import SegsweepError, UnknownNameError
from orchestrator.gpu import GpuSampler
from orchestrator.latency.agent import PowerSampler, device_name, measure_onnxruntime, summarize, timed_loop
from orchestrator.latency.energy import energy_figures

BACKENDS = {
    "torch": "PyTorch eager (GPU if there is one); transfers included and excluded",
    "torch-compile": "torch.compile (mode reduce-overhead: CUDA graphs on a GPU)",
    "ort-cpu": "onnxruntime CPUExecutionProvider",
    "ort-cuda": "onnxruntime CUDAExecutionProvider (where installed)",
    "ort-tensorrt": "onnxruntime TensorrtExecutionProvider (where installed)",
    "trtexec": "TensorRT's trtexec: engine built once per device, timed from the file (CUDA graph, no transfers)",
}
ORT_PROVIDERS = {"ort-cpu": "CPUExecutionProvider", "ort-cuda": "CUDAExecutionProvider",
                 "ort-tensorrt": "TensorrtExecutionProvider"}


@dataclass
class LatencyResult:
    backend: str
    target: str
    shape: list[int]
    fp16: bool
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    throughput_fps: float
    transfer: str  # "included" / "excluded" / "host (trtexec Latency)"
    device: str
    versions: dict[str, str]
    compute: dict[str, float] | None = None  # transfers excluded, where the backend allows
    energy: dict[str, Any] | None = None  # power_w, mj_per_image, source, rail, ... where the device measures power
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. trtexec's parsed summary, device facts

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_shape(text: str) -> list[int]:
    try:
        shape = [int(v) for v in text.lower().split("x")]
    except ValueError:
        shape = []
    if len(shape) != 4 or min(shape) <= 0:
        raise SegsweepError(f"--shape {text}: expected NxCxHxW, e.g. 1x3x256x320")
    return shape


def check_backend(name: str) -> None:
    if name not in BACKENDS:
        raise UnknownNameError("latency backend", name, BACKENDS)


@contextmanager
def _pinned_to_one_core(enabled: bool):
    """Launch-bound GPU timing moves with the host thread's migrations between cores: keep it on one."""
    allowed = os.sched_getaffinity(0) if enabled and hasattr(os, "sched_getaffinity") else None
    if allowed:
        os.sched_setaffinity(0, {max(allowed)})
    try:
        yield
    finally:
        if allowed:
            os.sched_setaffinity(0, allowed)


def measure_torch(model, shape: list[int], warmup: int, iters: int, fp16: bool = False, compile: bool = False,
                  threads: int | None = None) -> LatencyResult:
    """Eager or compiled PyTorch. On a GPU: end to end (host input copied in, output copied out) and compute alone,
    with the GPU's SM clock sampled meanwhile (latency at batch 1 moves with it). ``threads``: CPU threads on a CPU."""
    import torch  # lazy: `orchestrate bench --backend ort-cpu MODEL.onnx` needs no torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if fp16 and device.type == "cuda" else torch.float32
    model = model.eval().to(device=device, dtype=dtype)
    extra: dict[str, Any] = {}
    if compile:
        start = time.perf_counter()
        try:
            model = torch.compile(model, mode="reduce-overhead" if device.type == "cuda" else "default")
            with torch.no_grad():
                model(torch.zeros(shape, device=device, dtype=dtype))
        except Exception as e:  # noqa: BLE001 - inductor raises many types; reported as this backend's failure
            raise SegsweepError(f"torch-compile: compilation failed: {type(e).__name__}: {str(e).splitlines()[0]}") from e
        extra["compile_seconds"] = round(time.perf_counter() - start, 2)
    host = torch.randn(shape, dtype=dtype).pin_memory() if device.type == "cuda" else torch.randn(shape, dtype=dtype)
    on_device = host.to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.inference_mode(), _pinned_to_one_core(device.type == "cuda"):
        if device.type == "cuda":
            # output copied into a preallocated pinned buffer, as a deployed pipeline does: a fresh pageable
            # tensor per call would time the host's page faults
            out = torch.empty_like(model(on_device), device="cpu").pin_memory()
            with GpuSampler(interval_s=0.1, index=device.index or 0) as sampler, PowerSampler("gpu") as power:
                end_to_end = timed_loop(lambda: out.copy_(model(host.to(device, non_blocking=True)), non_blocking=True),
                                        warmup, iters, sync, marks=power.marks)
                compute = timed_loop(lambda: model(on_device), warmup, iters, sync)
            extra["gpu"] = sampler.clock_summary()
        else:
            previous_threads = torch.get_num_threads()
            if threads:
                torch.set_num_threads(threads)  # restored: a sweep's driver measures in its own process
                extra["threads"] = threads
            try:
                end_to_end, compute = timed_loop(lambda: model(host), warmup, iters, sync), None
            finally:
                torch.set_num_threads(previous_threads)
    stats = summarize(end_to_end)
    energy = None
    if device.type == "cuda":
        energy, why = energy_figures(power.report(), (power.marks["start"], power.marks["end"]),
                                     shape[0] * 1000 / stats["mean_ms"])
        extra |= {"energy_note": f"local: {why}: latency recorded, no power or energy"} if why else {}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    if device.type == "cpu":
        name = device_name("CPUExecutionProvider")
    versions = {"torch": torch.__version__, "python": platform.python_version()}
    if device.type == "cuda":
        versions["cuda"] = torch.version.cuda or ""
    return LatencyResult(
        backend="torch-compile" if compile else "torch", target="local", shape=shape, fp16=dtype == torch.float16,
        **stats, throughput_fps=shape[0] * 1000 / stats["mean_ms"], transfer="included", device=name,
        versions=versions, compute=summarize(compute) if compute else None, energy=energy, extra=extra,
    )


def measure_onnx(backend: str, onnx_path: Path, shape: list[int], warmup: int, iters: int, fp16: bool = False,
                 threads: int | None = None) -> LatencyResult:
    """onnxruntime backends through the agent's code on this machine (power: the GPU's, for GPU providers)."""
    if not Path(onnx_path).is_file():
        raise SegsweepError(f"{onnx_path}: no such ONNX file")
    import onnxruntime as ort  # lazy: onnxruntime's import costs a second and the torch backends never need it

    if ORT_PROVIDERS[backend] not in ort.get_available_providers():
        raise SegsweepError(f"{backend}: not available here (onnxruntime {ort.__version__} has "
                            f"{', '.join(ort.get_available_providers())})")
    try:
        raw = measure_onnxruntime(str(onnx_path), shape, warmup, iters, ORT_PROVIDERS[backend], fp16, threads,
                                  power_kind(backend))
    except Exception as e:  # noqa: BLE001 - onnxruntime's errors are untyped; a corrupt or mismatched model
        raise SegsweepError(f"{backend}: onnxruntime cannot load it or run it on {onnx_path}: "
                            f"{str(e).strip().splitlines()[0]}") from None
    return result_from_agent(backend, "local", shape, fp16, raw)


def power_kind(backend: str) -> str:
    """What the agent samples while it times ``backend``: the whole board (tegrastats) for any backend on a Jetson;
    beyond a Jetson, the GPU's power (NVML) for a GPU backend only: a CPU backend's draw is not the GPU's."""
    return "board" if backend == "ort-cpu" else "gpu"


def result_from_agent(backend: str, target: str, shape: list[int], fp16: bool, raw: dict) -> LatencyResult:
    keys = ("mean_ms", "p50_ms", "p90_ms", "p99_ms", "throughput_fps", "transfer", "device", "versions")
    extra = {"threads": raw["threads"]} if "threads" in raw else {}
    energy, power = None, raw.get("power") or {}
    if power.get("source"):
        energy, why = energy_figures(power, (power["marks"]["start"], power["marks"]["end"]), raw["throughput_fps"])
        extra |= {"energy_note": f"{target}: {why}: latency recorded, no power or energy"} if why else {}
    return LatencyResult(backend=backend, target=target, shape=shape, fp16=fp16, **{k: raw[k] for k in keys},
                         energy=energy, extra=extra)


def format_result(result: LatencyResult) -> str:
    line = (f"{result.backend} on {result.target} ({result.device}), shape {'x'.join(map(str, result.shape))}"
            f"{' fp16' if result.fp16 else ''}: mean {result.mean_ms:.3f} ms, p50 {result.p50_ms:.3f}, "
            f"p90 {result.p90_ms:.3f}, p99 {result.p99_ms:.3f} ms, {result.throughput_fps:.1f} img/s "
            f"(transfers {result.transfer})")
    if result.compute and result.compute.get("p50_ms") is not None:
        line += f"; compute alone p50 {result.compute['p50_ms']:.3f} ms"
    if result.energy:
        line += (f"; {result.energy['power_w']:.2f} W, {result.energy['mj_per_image']:.2f} mJ/image "
                 f"({result.energy['source']}, {result.energy['rail']})")
    return line + f"; {json.dumps(result.versions)}"
