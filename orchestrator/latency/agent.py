"""Self-contained latency agent: runs on the device that is measured (this machine, or a remote target such as a
Jetson, where segsweep copies it over SSH) and prints one JSON object.

- ``python3 agent.py MODEL.onnx --shape 1x3x256x320 --warmup 10 --iters 100``: times the model with onnxruntime
  (needs numpy and onnxruntime there), sampling the device's power meanwhile (``--power``).
- ``probe``: what the device has: trtexec and its TensorRT version, tegrastats, numpy and onnxruntime, the engine
  cache (``~/.cache/segsweep/engines``).
- ``engine NAME``: the record of a cached TensorRT engine, or null.
- ``build SPEC``: builds an engine once (a lock, a temporary file renamed into place: no half-written engine is ever
  found), checks its outputs against onnxruntime's on one input, and keeps a record beside it.
- ``sample SPEC``: runs a command (trtexec's timing) while sampling the device's power, and says when the command
  printed a mark (trtexec's "Starting inference").

Power: ``tegrastats`` on a Jetson (the whole board: NVML reports no power there), else NVML on an NVIDIA GPU
(``nvidia-ml-py``: power and the energy counter). Commands come as argument lists, never through a shell. Keep it free
of segsweep imports: it runs with Python 3 alone (numpy and onnxruntime only where it times or checks with them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
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
               min_timed_s: float = MIN_TIMED_S, marks: dict | None = None) -> list[float]:
    """Warm up for at least ``warmup`` calls and ``min_warmup_s``; then time at least ``iters`` calls and
    ``min_timed_s``, synchronising after each call. Returns milliseconds per call; ``marks`` gets the timed loop's
    start and end (wall clock: the window a power sampler's samples are read in)."""
    start = time.perf_counter()
    done = 0
    while done < warmup or time.perf_counter() - start < min_warmup_s:
        step()
        done += 1
    sync()
    times: list[float] = []
    if marks is not None:
        marks["start"] = time.time()
    start = time.perf_counter()
    while len(times) < iters or time.perf_counter() - start < min_timed_s:
        t0 = time.perf_counter()
        step()
        sync()
        times.append((time.perf_counter() - t0) * 1000)
    if marks is not None:
        marks["end"] = time.time()
    return times


def measure_onnxruntime(model: str, shape: list[int], warmup: int, iters: int, provider: str = "CPUExecutionProvider",
                        fp16: bool = False, threads: int | None = None, power: str = "none") -> dict:
    """``threads``: onnxruntime's intra-op threads (its default: one per physical core); ``power``: what to sample
    while timing (``PowerSampler``): the timed loop's window comes back with the samples."""
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
    sampler = PowerSampler(power)
    with sampler:
        times = timed_loop(lambda: session.run(None, {name: x}), warmup, iters, marks=sampler.marks)
    stats = summarize(times)
    return {**stats, "throughput_fps": shape[0] * 1000 / stats["mean_ms"], "transfer": "included",
            "versions": {"onnxruntime": ort.__version__, "python": platform.python_version()},
            "device": device_name(provider), "threads": threads or "default", "power": sampler.report()}


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


TEGRASTATS_MS = 100  # tegrastats' interval: about 20 samples in the shortest timed loop (2 s)
NVML_S = 0.05


class PowerSampler:
    """The device's power while something runs, sampled in the background: ``tegrastats`` lines on a Jetson (the whole
    board), else NVML's power and energy counter on an NVIDIA GPU. ``kind``: ``board`` (tegrastats only: a CPU
    backend on a desktop draws no GPU power worth reporting), ``gpu`` (tegrastats, else NVML) or ``none``."""

    def __init__(self, kind: str = "none") -> None:
        self.kind, self.marks = kind, {}
        self.lines: list[list] = []  # [time, tegrastats line]
        self.nvml: list[list] = []  # [time, mW, mJ since the driver loaded or None]
        self.source, self.why = None, None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._process = None

    def __enter__(self) -> PowerSampler:
        if self.kind == "none":
            self.why = "not asked for"
            return self
        tegrastats = find_tool("tegrastats", "/usr/bin/tegrastats")
        if tegrastats:
            self._process = subprocess.Popen([tegrastats, "--interval", str(TEGRASTATS_MS)], stdout=subprocess.PIPE,
                                             stderr=subprocess.DEVNULL, text=True)
            self.source = "tegrastats"
            self._start(self._read_tegrastats)
        elif self.kind == "gpu" and self._nvml_handle() is not None:
            self.source = "nvml"
            self._start(self._read_nvml)
        else:
            self.why = ("no tegrastats on this device" + ("" if self.kind == "board" else
                                                          " and no NVML power (nvidia-ml-py and a GPU's driver)"))
        time.sleep(2 * TEGRASTATS_MS / 1000 if self.source == "tegrastats" else 0)  # its first lines: before the run
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)
        for thread in self._threads:
            thread.join(10)

    def _start(self, target) -> None:
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _read_tegrastats(self) -> None:
        for line in self._process.stdout:
            self.lines.append([time.time(), line.strip()])

    def _nvml_handle(self):
        try:
            import pynvml  # lazy: nvidia-ml-py, on NVIDIA GPU machines only

            pynvml.nvmlInit()
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
            self._pynvml = pynvml
            return pynvml.nvmlDeviceGetHandleByIndex(int(visible) if visible.isdigit() else 0)
        except Exception:  # noqa: BLE001 - no package, no driver, no device: no NVML power, said in the report
            return None

    def _read_nvml(self) -> None:
        pynvml, handle = self._pynvml, self._nvml_handle()
        while not self._stop.is_set():
            try:
                power = pynvml.nvmlDeviceGetPowerUsage(handle)  # mW
            except pynvml.NVMLError:
                return
            try:
                energy = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)  # mJ since the driver loaded (Volta+)
            except pynvml.NVMLError:
                energy = None
            self.nvml.append([time.time(), float(power), float(energy) if energy is not None else None])
            self._stop.wait(NVML_S)

    def report(self) -> dict:
        if self.source == "tegrastats":
            return {"source": "tegrastats", "lines": self.lines, "marks": self.marks}
        if self.source == "nvml":
            return {"source": "nvml", "samples": self.nvml, "marks": self.marks}
        return {"source": None, "why": self.why, "marks": self.marks}


def find_tool(name: str, *places: str) -> str | None:
    """A program on PATH, or at one of ``places`` (TensorRT's and L4T's own folders are often not on PATH)."""
    return shutil.which(name) or next((p for p in places if os.path.isfile(p) and os.access(p, os.X_OK)), None)


def engine_dir() -> str:
    """Where this device keeps segsweep's TensorRT engines: beside the user's other caches, not in /tmp (gone at the
    next boot, and engines take minutes to build on a Jetson)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "segsweep", "engines")


def tensorrt_version(banner: str) -> str | None:
    """trtexec's banner ``[TensorRT v100300]`` -> ``10.3.0``: TensorRT 10 and later write major * 10000 + minor *
    100 + patch, TensorRT 8 and before major * 1000 + minor * 100 + patch (``v8601`` is 8.6.1)."""
    found = re.search(r"\[TensorRT v(\d+)\]", banner)
    if not found:
        return None
    n = int(found.group(1))
    major, rest = (n // 10000, n % 10000) if n >= 100000 else (n // 1000, n % 1000)
    return f"{major}.{rest // 100}.{rest % 100}"


def probe() -> dict:
    trtexec = find_tool("trtexec", "/usr/src/tensorrt/bin/trtexec")
    out = {"trtexec": trtexec, "tensorrt": None, "banner": None, "engines": engine_dir(),
           "tegrastats": find_tool("tegrastats", "/usr/bin/tegrastats"), "python": platform.python_version()}
    if trtexec:
        # --help: TensorRT 11's --version prints its banner but exits 1 (it then wants a model)
        done = subprocess.run([trtexec, "--help"], capture_output=True, text=True, timeout=120)
        banner = next((line for line in (done.stdout + done.stderr).splitlines() if "TensorRT v" in line), "")
        out |= {"banner": banner.strip() or None, "tensorrt": tensorrt_version(banner)}
    for module in ("numpy", "onnxruntime"):
        try:
            out[module] = __import__(module).__version__
        except ImportError:
            out[module] = None
    return out


def engine_record(name: str) -> dict | None:
    """The record of a built engine, or None: an engine counts only with its record, written after it."""
    path = os.path.join(engine_dir(), name)
    if not (os.path.isfile(path) and os.path.isfile(path + ".json")):
        return None
    with open(path + ".json") as f:
        return json.load(f)


def build_engine(spec: dict) -> dict:
    """Build ``spec["name"]`` once on this device: under a lock (two sweeps exporting to one device build it once),
    into a temporary file renamed into place, then its outputs checked (``check_parity``) and its record written.
    ``spec["build"]``: trtexec's argument list, ``{engine}`` standing for the file it writes."""
    import fcntl  # lazy: POSIX only, and only a build needs it

    folder = engine_dir()
    os.makedirs(folder, exist_ok=True)
    final = os.path.join(folder, spec["name"])
    with open(final + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = engine_record(spec["name"])
        if found is not None:
            return {**found, "built": False}
        partial = f"{final}.partial-{os.getpid()}"
        started = time.time()
        done = subprocess.run([a.replace("{engine}", partial) for a in spec["build"]], capture_output=True, text=True)
        if done.returncode != 0 or not os.path.isfile(partial):
            if os.path.exists(partial):
                os.remove(partial)
            last = (done.stdout + done.stderr).strip().splitlines()[-1:] or ["no output"]
            return {"error": f"trtexec could not build the engine (exit {done.returncode}): {last[0]}"}
        record = {"name": spec["name"], "engine": final, "built_at": started, "build_seconds": time.time() - started,
                  **spec.get("record", {}), "parity": check_parity(spec, partial)}
        with open(final + ".json.partial", "w") as f:
            json.dump(record, f)
        os.replace(partial, final)
        os.replace(final + ".json.partial", final + ".json")
        return {**record, "built": True}


def check_parity(spec: dict, engine: str) -> dict:
    """The engine's outputs against onnxruntime's (CPU, on the fp32 graph ``spec["reference"]``) for one input
    (standard normal, seed 0): trtexec loads it (``--loadInputs``) and writes its outputs (``--exportOutput``, JSON:
    ``[{"name", "dimensions": "1x4x64x96", "values": [...]}]``). Needs numpy and onnxruntime here; without them the
    check is skipped and says so."""
    try:
        import numpy as np  # lazy: a device without numpy and onnxruntime builds and times engines, unchecked
        import onnxruntime as ort  # lazy: as numpy, above
    except ImportError as e:
        return {"skipped": f"no {e.name} on this device: install numpy and onnxruntime there for the check"}
    folder = os.path.dirname(engine)
    shape = [int(v) for v in spec["shape"].split("x")]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    inputs, outputs = engine + ".input.bin", engine + ".outputs.json"
    x.tofile(inputs)
    try:
        argv = [a.replace("{engine}", engine).replace("{input}", inputs).replace("{output}", outputs)
                for a in spec["parity"]]
        done = subprocess.run(argv, capture_output=True, text=True, cwd=folder)
        if done.returncode != 0 or not os.path.isfile(outputs):
            last = (done.stdout + done.stderr).strip().splitlines()[-1:] or ["no output"]
            return {"error": f"trtexec could not run the engine on the check's input: {last[0]}"}
        with open(outputs) as f:
            got = {o["name"]: o for o in json.load(f)}
        session = ort.InferenceSession(spec["reference"], providers=["CPUExecutionProvider"])
        expected = session.run(None, {session.get_inputs()[0].name: x})
        diffs = {}
        for meta, want in zip(session.get_outputs(), expected):
            values = np.asarray(got[meta.name]["values"], dtype=np.float32).reshape(want.shape)
            diffs[meta.name] = float(np.max(np.abs(values - want)))
    finally:
        for path in (inputs, outputs):
            if os.path.exists(path):
                os.remove(path)
    return {"max_abs_diff": max(diffs.values()), "outputs": diffs, "input": "standard normal, seed 0",
            "reference": f"onnxruntime {ort.__version__} CPU, fp32 graph"}


def sample(spec: dict) -> dict:
    """Run ``spec["argv"]`` while sampling power (``spec["power"]``); the wall-clock times of its start, of the first
    output line holding ``spec["mark"]``, and of its end; its output, and the text of the files in ``spec["attach"]``
    (trtexec's exported per-iteration times)."""
    sampler = PowerSampler(spec.get("power", "none"))
    lines, marked = [], None
    with sampler:
        started = time.time()
        process = subprocess.Popen(spec["argv"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in process.stdout:
            lines.append(line)
            if marked is None and spec.get("mark") and spec["mark"] in line:
                marked = time.time()
        code = process.wait()
        ended = time.time()
    attached = {}
    for path in spec.get("attach", []):
        if os.path.isfile(path):
            with open(path) as f:
                attached[path] = f.read()
    return {"returncode": code, "output": "".join(lines), "started": started, "marked": marked, "ended": ended,
            "power": sampler.report(), "attached": attached}


COMMANDS = {"probe": lambda args: probe(), "engine": lambda args: {"record": engine_record(args[0])},
            "build": lambda args: build_engine(json.loads(args[0])), "sample": lambda args: sample(json.loads(args[0]))}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in COMMANDS:
        try:
            result = COMMANDS[argv[0]](argv[1:])
        except Exception as e:  # noqa: BLE001 - the agent reports any failure as one JSON line to its caller
            print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
            return 1
        print(json.dumps(result))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--shape", required=True, help="NxCxHxW")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--provider", default="CPUExecutionProvider")
    parser.add_argument("--fp16", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--power", choices=("board", "gpu", "none"), default="none")
    args = parser.parse_args(argv)
    try:
        result = measure_onnxruntime(args.model, [int(v) for v in args.shape.split("x")], args.warmup, args.iters,
                                     args.provider, args.fp16, args.threads, args.power)
    except Exception as e:  # noqa: BLE001 - the agent reports any failure as one JSON line to its caller
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
