"""trtexec, TensorRT's own benchmark: its command lines by TensorRT version, and its output parsed.

Formats, from TensorRT's own source (``samples/common/sampleReporting.cpp``, which trtexec prints its report with)
and the logs its users post (the fixtures under ``tests/fixtures/trtexec`` name each):

- the banner ``&&&& RUNNING TensorRT.trtexec [TensorRT v100300]``, read on the device (``agent.tensorrt_version``);
- the "Performance summary" (TensorRT 8, 10, 11): ``Throughput: X qps``, then for ``Latency`` (H2D + GPU compute +
  D2H), ``Enqueue Time``, ``H2D Latency``, ``GPU Compute Time`` and ``D2H Latency`` the line ``min = .. ms, max = ..
  ms, mean = .. ms, median = .. ms, percentile(P%) = .. ms`` (one percentile in TensorRT 8, the list ``--percentile``
  names in 10 and 11; its default there is 90, 95, 99); TensorRT 7 printed a "Host Latency" block instead;
- ``--exportTimes=FILE``: a JSON list with one object per timed iteration (``startEnqMs`` ... ``latencyMs``);
- ``--exportOutput=FILE``: ``[{"name", "dimensions": "1x4x64x96", "values": [...]}]``.

Command lines, as TensorRT's own benchmarking guide times a deployed engine: built once (``--saveEngine``, with
``--skipInference``, ``--buildOnly`` before TensorRT 8.6), then timed from the file (``--loadEngine``) with CUDA graphs,
no host-device copies and spin waits (``--useCudaGraph --noDataTransfers --useSpinWait``, TensorRT 8 and later), and
``--percentile=50,90,99`` where the version takes a list (10 and later; older ones one value, so p90 then comes from
the exported per-iteration times). TensorRT 11 removed weakly typed networks: ``--fp16`` and ``--int8`` are gone
(precision comes from the ONNX graph), so fp16 there is an fp16 graph made before the build (``engines.fp16_graph``).
"""

from __future__ import annotations

import json
import re
import struct

from orchestrator.errors import SegsweepError

_NUM = r"([0-9.]+(?:e[-+]?\d+)?)"
_STATS = {"min": rf"min = {_NUM} ms", "max": rf"max = {_NUM} ms", "mean": rf"mean = {_NUM} ms",
          "median": rf"median = {_NUM} ms", "p90": rf"percentile\(90%\) = {_NUM} ms",
          "p95": rf"percentile\(95%\) = {_NUM} ms", "p99": rf"percentile\(99%\) = {_NUM} ms"}
MARK = "Starting inference"  # trtexec's line before its warm-up and timed runs (the power window starts after it)


def _line_stats(text: str, label: str) -> dict[str, float] | None:
    match = re.search(rf"\] {re.escape(label)}: (.*)$", text, re.M)
    if not match:
        return None
    out = {}
    for key, pattern in _STATS.items():
        found = re.search(pattern, match.group(1))
        if found:
            out[key] = float(found.group(1))
    return out


def parse_trtexec(text: str) -> dict:
    """Throughput, and for "Latency" (host: H2D + compute + D2H) and "GPU Compute Time" their min / max / mean /
    median / p90 / p95 / p99 in ms where printed. Raises SegsweepError if no summary is found."""
    result: dict = {}
    throughput = re.search(rf"\] Throughput: {_NUM} qps", text)
    if throughput:
        result["throughput_qps"] = float(throughput.group(1))
    for label, key in (("Latency", "host_latency"), ("GPU Compute Time", "gpu_compute"),
                       ("H2D Latency", "h2d"), ("D2H Latency", "d2h"), ("Enqueue Time", "enqueue")):
        stats = _line_stats(text, label)
        if stats:
            result[key] = stats
    if "host_latency" not in result:  # TensorRT 7: a "Host Latency" block of "name: value ms (end to end ...)"
        block = re.search(r"\] Host Latency\s*\n(.*?)(?:\] [A-Z][A-Za-z ]+\s*\n|\Z)", text, re.S)
        if block:
            lines = block.group(1)
            stats = {}
            for key, word in (("min", "min"), ("max", "max"), ("mean", "mean"), ("median", "median")):
                found = re.search(rf"\] {word}: {_NUM} ms", lines)
                if found:
                    stats[key] = float(found.group(1))
            p99 = re.search(rf"\] percentile: {_NUM} ms at 99%", lines)
            if p99:
                stats["p99"] = float(p99.group(1))
            if stats:
                result["host_latency"] = stats
            qps = re.search(rf"\] throughput: {_NUM} qps", lines)
            if qps and float(qps.group(1)) > 0:
                result["throughput_qps"] = float(qps.group(1))
    if "host_latency" not in result:
        raise SegsweepError("trtexec printed no performance summary (did the engine build fail? see its log)")
    return result


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(v) for v in re.findall(r"\d+", version)[:3])


def parse_times(text: str) -> list[float]:
    """``--exportTimes``' JSON -> each timed iteration's latency in ms (H2D + compute + D2H; compute alone under
    ``--noDataTransfers``)."""
    try:
        rows = json.loads(text)
        return [float(row["latencyMs"]) for row in rows]
    except (ValueError, KeyError, TypeError) as e:
        raise SegsweepError(f"trtexec's exported times are not its JSON list ({type(e).__name__}: {e})") from None


def percentile(times: list[float], p: float) -> float:
    """trtexec's own percentile of per-iteration times (``findPercentile`` in sampleReporting.cpp: the value below
    which all but the slowest ``int((1 - p/100) * n)`` iterations fall, computed in float32 as there: 90 of 10
    excludes one), so a figure computed from exported times agrees with one trtexec printed."""
    ordered = sorted(times)
    exclude = int(_f32(_f32(1 - _f32(_f32(p) / 100)) * len(ordered)))
    return ordered[max(len(ordered) - 1 - exclude, 0)]


def _f32(value: float) -> float:
    return struct.unpack("f", struct.pack("f", value))[0]


def build_command(trtexec: str, version: str, onnx: str, fp16: bool) -> list[str]:
    """Build the engine once, into ``{engine}`` (the agent's temporary file): no timing. ``fp16`` asks for fp16
    kernels where TensorRT still takes the flag (before 11); from 11 the graph itself is fp16."""
    v = version_tuple(version)
    command = [trtexec, f"--onnx={onnx}", "--saveEngine={engine}", "--skipInference" if v >= (8, 6) else "--buildOnly"]
    return command + (["--fp16"] if fp16 and v < (11,) else [])


def timing_command(trtexec: str, version: str, warmup_ms: int, duration_s: float, iters: int,
                   times: str) -> list[str]:
    """Time the built engine (``{engine}``): at least ``iters`` iterations and ``duration_s`` after ``warmup_ms`` of
    warm-up, every iteration's times exported to ``times``."""
    v = version_tuple(version)
    command = [trtexec, "--loadEngine={engine}", f"--warmUp={warmup_ms}", f"--duration={duration_s:g}",
               f"--iterations={iters}", f"--exportTimes={times}"]
    if v >= (8,):
        command += ["--useCudaGraph", "--noDataTransfers", "--useSpinWait"]
    return command + ["--percentile=50,90,99" if v >= (10,) else "--percentile=99"]


def parity_command(trtexec: str, input_name: str) -> list[str]:
    """One run of the engine on the agent's input file (raw float32), its outputs exported as JSON: with data
    transfers, so the outputs come back to the host."""
    return [trtexec, "--loadEngine={engine}", f"--loadInputs={input_name}:{{input}}", "--exportOutput={output}",
            "--iterations=1", "--warmUp=0", "--duration=0"]

