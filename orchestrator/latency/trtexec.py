"""trtexec: run TensorRT's own benchmark and parse its summary (TensorRT 7 "Host Latency" blocks and the
TensorRT 8/10 "Performance summary" lines)."""

from __future__ import annotations

import re

from orchestrator.errors import SegsweepError

_NUM = r"([0-9.]+(?:e[-+]?\d+)?)"
_STATS = {"min": rf"min = {_NUM} ms", "max": rf"max = {_NUM} ms", "mean": rf"mean = {_NUM} ms",
          "median": rf"median = {_NUM} ms", "p90": rf"percentile\(90%\) = {_NUM} ms",
          "p95": rf"percentile\(95%\) = {_NUM} ms", "p99": rf"percentile\(99%\) = {_NUM} ms"}


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


def trtexec_command(trtexec: str, onnx: str, warmup_ms: int, iters: int, fp16: bool) -> list[str]:
    command = [trtexec, f"--onnx={onnx}", f"--warmUp={warmup_ms}", f"--iterations={iters}", "--duration=0",
               "--percentile=99"]  # one value: older trtexec (TensorRT 7) takes no list
    return command + (["--fp16"] if fp16 else [])
