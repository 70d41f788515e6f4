"""TensorRT on a device, done as its users do: each engine built once per (model file, device, TensorRT version,
precision) and kept on the device, then timed from the file with trtexec, its outputs checked once against
onnxruntime's, the device's power sampled while it runs.

Where engines live: on the device, in ``~/.cache/segsweep/engines/`` (``agent.engine_dir``), each as
``<model>-<sha256 of the graph built, 16 hex>-trt<version>-<precision>.plan`` with a record beside it
(``.plan.json``: when and how long it was built, its TensorRT version, precision and output check). The name is the
key: the same bytes, TensorRT version and precision find the same engine; a model exported again with other weights
has other bytes, so another engine. A record of every engine a model has is kept beside the model, locally
(``MODEL.engines.json``: for a sweep, ``RUN_DIR/exports/<trial>.engines.json``), and in each measurement's result.

fp16: TensorRT before 11 builds fp16 kernels from the fp32 graph (``--fp16``). TensorRT 11 has strongly typed networks
only (``--fp16`` is gone: precision comes from the graph), so for it the graph is converted to fp16 here first, with
onnxruntime's float16 converter (``onnxruntime.transformers.float16``, shipped with onnxruntime, already a
dependency; inputs and outputs stay fp32, so the same input feeds both). NVIDIA's own recommendation, ModelOpt's
AutoCast, would add a GPU-sized dependency to every install for this one step.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Protocol

from orchestrator.errors import SegsweepError
from orchestrator.files import write_text_whole
from orchestrator.latency.agent import MIN_TIMED_S, MIN_WARMUP_S, summarize
from orchestrator.latency.bench import LatencyResult
from orchestrator.latency.energy import energy_figures
from orchestrator.latency.trtexec import (
    MARK,
    build_command,
    parity_command,
    parse_times,
    parse_trtexec,
    percentile,
    timing_command,
    version_tuple,
)

AGENT = Path(__file__).with_name("agent.py")


class Device(Protocol):
    """Where a model is measured: this machine, or an SSH target (``remote.RemoteDevice``)."""

    where: str  # "local" or the target's address, as the results name it

    def agent(self, *args: str, label: str | None = None) -> dict[str, Any]:
        """The agent's JSON answer to ``args`` on the device; its ``{"error": ...}`` raised as one line (``label``:
        what failed, in that line)."""

    def put(self, path: Path) -> str:
        """``path`` on the device (copied there once, where the device is another machine)."""

    def scratch(self, name: str) -> str:
        """A path on the device for a file a command writes (removed with the device's temporary folder)."""


class LocalDevice:
    """This machine: the agent runs under this interpreter, files are where they are."""

    where = "local"

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="segsweep-trt-")

    def __enter__(self) -> LocalDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self._tmp.cleanup()

    def agent(self, *args: str, label: str | None = None) -> dict[str, Any]:
        done = subprocess.run([sys.executable, str(AGENT), *args], capture_output=True, text=True)
        return agent_answer(self.where, label or args[0], done.stdout, done.stderr, failed=label is not None)

    def put(self, path: Path) -> str:
        return str(Path(path).absolute())

    def scratch(self, name: str) -> str:
        return str(Path(self._tmp.name) / name)


def agent_answer(where: str, what: str, stdout: str, stderr: str, failed: bool = False) -> dict[str, Any]:
    """The agent's last stdout line as JSON; its own error (or a crash's last line) raised as one line, ``what``
    failed (``failed``: said so even where the agent explained itself)."""
    lines = stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else None
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        last = (stderr.strip() or stdout.strip() or "no output").splitlines()[-1]
        raise SegsweepError(f"{where}: {what if failed else f'the agent ({what})'} failed: {last}")
    if "error" in answer:
        raise SegsweepError(f"{where}: {f'{what} failed: ' if failed else ''}{answer['error']}")
    return answer


def fp16_graph(onnx_path: Path, out: Path) -> Path:
    """An fp16 copy of an fp32 ONNX graph (for TensorRT 11): onnxruntime's float16 converter, inputs and outputs kept
    fp32. Written whole (a temporary file renamed)."""
    import onnx  # lazy: only TensorRT 11's fp16 needs the converter
    from onnxruntime.transformers.float16 import convert_float_to_float16  # lazy: as onnx, above

    converted = convert_float_to_float16(onnx.load(str(onnx_path)), keep_io_types=True)
    partial = out.with_suffix(".partial")
    onnx.save(converted, str(partial))
    partial.replace(out)
    return out


def engine_name(graph: Path, version: str, precision: str) -> tuple[str, str]:
    """The engine's name on the device (its cache key) and the sha256 of the graph it is built from."""
    sha = hashlib.sha256(Path(graph).read_bytes()).hexdigest()
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(graph).stem)[:40]
    return f"{stem}-{sha[:16]}-trt{version}-{precision}.plan", sha


def input_name(onnx_path: Path, shape: list[int]) -> str:
    """The model's input tensor (trtexec's ``--loadInputs`` names it); a dynamic model is a one-line error, as
    engines here are built for one static shape."""
    import onnx  # lazy, as above

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    first = graph.input[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in first.type.tensor_type.shape.dim]
    if dims != list(shape):
        raise SegsweepError(f"{onnx_path}: trtexec builds engines for the model's own static input shape "
                            f"({'x'.join(str(d or '?') for d in dims)}), not {'x'.join(map(str, shape))}: export "
                            f"it at that size, without --dynamic")
    return first.name


def measure_trtexec(device: Device, onnx_path: Path, shape: list[int], iters: int, fp16: bool = False,
                    device_name: str | None = None, versions: dict[str, str] | None = None) -> LatencyResult:
    """Time ``onnx_path`` with trtexec on ``device``: its engine found or built once (and checked), then timed from
    the file with CUDA graphs, no host-device copies and spin waits, power sampled meanwhile."""
    info = device.agent("probe")
    trtexec, version = info.get("trtexec"), info.get("tensorrt")
    if not trtexec:
        where = "here" if device.where == "local" else "on the target"
        raise SegsweepError(f"{device.where}: trtexec: not found {where} (not on PATH nor in /usr/src/tensorrt/bin); "
                            f"install TensorRT there or use --backend ort-cpu")
    if not version:
        raise SegsweepError(f"{device.where}: {trtexec} --help printed no TensorRT version banner")
    name = input_name(onnx_path, shape)
    precision = "fp16" if fp16 else "fp32"
    converted = fp16 and version_tuple(version) >= (11,)
    with tempfile.TemporaryDirectory(prefix="segsweep-fp16-") as tmp:
        graph = fp16_graph(onnx_path, Path(tmp) / f"{Path(onnx_path).stem}-fp16.onnx") if converted else onnx_path
        engine, sha = engine_name(graph, version, precision)
        record = device.agent("engine", engine)["record"]
        if record is None:
            spec = {"name": engine, "shape": "x".join(map(str, shape)), "reference": device.put(onnx_path),
                    "build": build_command(trtexec, version, device.put(graph), fp16),
                    "parity": parity_command(trtexec, name),
                    "record": {"onnx_sha256": sha, "tensorrt": version, "precision": precision,
                               "graph": "fp16 graph (onnxruntime float16)" if converted else "the model's graph"}}
            record = device.agent("build", json.dumps(spec))
        else:
            record = {**record, "built": False}
    times = device.scratch("times.json")
    command = [a.replace("{engine}", record["engine"])
               for a in timing_command(trtexec, version, int(MIN_WARMUP_S * 1000), MIN_TIMED_S, iters, times)]
    run = device.agent("sample", json.dumps({"argv": command, "power": "gpu", "mark": MARK, "attach": [times]}))
    if run["returncode"] != 0:
        last = run["output"].strip().splitlines()[-1:] or ["no output"]
        raise SegsweepError(f"{device.where}: trtexec failed (exit {run['returncode']}): {last[0]}")
    result = trtexec_result(device.where, shape, fp16, run, times, device_name or device.where,
                            {"tensorrt": version, **(versions or {})})
    result.extra |= {"engine": record, "device_tools": info}
    note_engine(onnx_path, device.where, record)
    return result


def trtexec_result(target: str, shape: list[int], fp16: bool, run: dict[str, Any], times_file: str, device: str,
                   versions: dict[str, str]) -> LatencyResult:
    """trtexec's summary (p50 = its median, p90 and p99 as it printed them, or from its exported per-iteration times
    where this version prints no p90) and the power sampled in its timed window."""
    parsed = parse_trtexec(run["output"])
    times = parse_times(run["attached"][times_file]) if times_file in run["attached"] else []
    host = parsed["host_latency"]
    p50 = host.get("median", host.get("mean"))
    stats = {"mean_ms": host.get("mean", p50), "p50_ms": p50,
             "p90_ms": host.get("p90", percentile(times, 90) if times else host.get("p99", p50)),
             "p99_ms": host.get("p99", percentile(times, 99) if times else p50)}
    gpu = parsed.get("gpu_compute")
    compute = ({"mean_ms": gpu.get("mean"), "p50_ms": gpu.get("median"), "p90_ms": gpu.get("p90"),
                "p99_ms": gpu.get("p99")} if gpu else None)
    throughput = parsed.get("throughput_qps", 1000 / stats["mean_ms"]) * shape[0]
    # the timed window: after trtexec's "Starting inference" and its warm-up, to its end
    start = run["marked"] + MIN_WARMUP_S if run.get("marked") else run["started"]
    energy, why = energy_figures(run["power"], (start, run["ended"]), throughput)
    extra: dict[str, Any] = {"trtexec": parsed}
    if times:
        extra["times"] = {"iterations": len(times), **summarize(times)}
    if why:
        extra["energy_note"] = f"{target}: {why}: latency recorded, no power or energy"
    return LatencyResult(backend="trtexec", target=target, shape=shape, fp16=fp16, **stats, throughput_fps=throughput,
                         transfer="excluded (trtexec --noDataTransfers, CUDA graph, spin wait)", device=device,
                         versions=versions, compute=compute, energy=energy, extra=extra)


def engine_records(onnx_path: Path) -> Path:
    """The local record of the engines a model has on devices: beside the model."""
    return Path(onnx_path).with_suffix(".engines.json")


def note_engine(onnx_path: Path, where: str, record: dict[str, Any]) -> None:
    """Keep ``record`` (the device's engine record) in the model's local record, one entry per device and engine."""
    path = engine_records(onnx_path)
    try:
        records = json.loads(path.read_text()) if path.is_file() else []
    except ValueError:
        records = []  # a record is a convenience, rebuilt from the devices' own: a broken one is replaced
    entry = {"device": where, **{k: v for k, v in record.items() if k != "built"}}
    records = [r for r in records if (r.get("device"), r.get("name")) != (where, record.get("name"))] + [entry]
    try:
        write_text_whole(path, json.dumps(records, indent=1))
    except OSError as e:
        print(f"[segsweep] {path}: engine record not written ({e.strerror or e})", file=sys.stderr, flush=True)
