"""Self-contained latency agent: times an ONNX model with onnxruntime and prints one JSON object.

It needs only Python 3, numpy and onnxruntime, so the same file runs locally and on a remote target (a Jetson),
where segsweep copies it over SSH: ``python3 agent.py MODEL.onnx --shape 1x3x256x320 --warmup 10 --iters 100``.
Keep it free of segsweep imports.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time


def summarize(times_ms: list[float]) -> dict[str, float]:
    """mean, p50, p90, p99 (linear interpolation between order statistics, so p50 <= p90 <= p99)."""
    ordered = sorted(times_ms)

    def pct(q: float) -> float:
        pos = (len(ordered) - 1) * q
        lo = int(pos)
        hi = min(lo + 1, len(ordered) - 1)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)

    return {"mean_ms": sum(ordered) / len(ordered), "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99)}


MIN_WARMUP_S, MIN_TIMED_S = 1.0, 2.0  # like trtexec (200 ms warm-up, 3 s run): clocks ramp, short runs drift


def timed_loop(step, warmup: int, iters: int, sync=lambda: None, min_warmup_s: float = MIN_WARMUP_S,
               min_timed_s: float = MIN_TIMED_S) -> list[float]:
    """Warm up for at least ``warmup`` calls and ``min_warmup_s``; then time at least ``iters`` calls and
    ``min_timed_s``, synchronising after each call. Returns milliseconds per call."""
    start = time.perf_counter()
    done = 0
    while done < warmup or time.perf_counter() - start < min_warmup_s:
        step()
        done += 1
    sync()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < iters or time.perf_counter() - start < min_timed_s:
        t0 = time.perf_counter()
        step()
        sync()
        times.append((time.perf_counter() - t0) * 1000)
    return times


def measure_onnxruntime(model: str, shape: list[int], warmup: int, iters: int, provider: str = "CPUExecutionProvider",
                        fp16: bool = False, threads: int | None = None) -> dict:
    """``threads``: onnxruntime's intra-op threads (its default: one per physical core)."""
    # lazy: this file runs alone on a target (a Jetson) and in segsweep, where trtexec-only targets have no ort
    import numpy as np
    import onnxruntime as ort

    if provider not in ort.get_available_providers():
        raise RuntimeError(f"onnxruntime {ort.__version__} here has no {provider} "
                           f"(available: {', '.join(ort.get_available_providers())})")
    options = {"trt_fp16_enable": True} if fp16 and provider == "TensorrtExecutionProvider" else {}
    session_options = ort.SessionOptions()
    if threads:
        session_options.intra_op_num_threads = threads
    session = ort.InferenceSession(model, session_options,
                                   providers=[(provider, options)] if options else [provider])
    name = session.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float16 if fp16 and provider == "CPUExecutionProvider" else np.float32)
    # host input and output: data transfer included
    times = timed_loop(lambda: session.run(None, {name: x}), warmup, iters)
    stats = summarize(times)
    return {**stats, "throughput_fps": shape[0] * 1000 / stats["mean_ms"], "transfer": "included",
            "versions": {"onnxruntime": ort.__version__, "python": platform.python_version()},
            "device": device_name(provider), "threads": threads or "default"}


def device_name(provider: str) -> str:
    if provider == "CPUExecutionProvider":
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("model name"):
                        return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return platform.processor() or platform.machine()
    try:
        with open("/proc/device-tree/model") as f:
            return f.read().strip("\x00\n ")
    except OSError:
        return provider


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--shape", required=True, help="NxCxHxW")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--provider", default="CPUExecutionProvider")
    parser.add_argument("--fp16", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        result = measure_onnxruntime(args.model, [int(v) for v in args.shape.split("x")], args.warmup, args.iters,
                                     args.provider, args.fp16, args.threads)
    except Exception as e:  # noqa: BLE001 - the agent reports any failure as one JSON line to its caller
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
