"""Speed: which fast paths a trial takes (the levers), and how much of a GPU a trial may share.

Every lever is on by default where it helps (a GPU) and can be turned off in the spec (``trainer.*``,
``data.cache``, ``resources.*``); ``resolve_levers`` is the one place that decides.

Packing: ``resources.gpus_per_trial: auto`` gives each trial ``1/trials_per_gpu`` of a GPU. Ray's GPU shares are
logical (nothing isolates memory), so with ``resources.memory_aware`` the driver measures a trial's peak GPU memory
before the trial is admitted (one short probe per distinct model/size/batch, in a child process) and raises its share
to what fits: alone on a GPU if need be, instead of running packed trials out of memory.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import SegsweepError

MEMORY_FILE = "gpu_memory.json"
HEADROOM = 0.15  # allocator fragmentation and cuDNN workspaces beyond the probe's peak
CONTEXT_BYTES = 600 * 2**20  # a CUDA context where the per-process figure cannot be read


@dataclass(frozen=True)
class Levers:
    """The fast paths one trial takes (resolved for its device)."""

    precision: str  # "32" | "bf16-mixed" | "16-mixed"
    channels_last: bool
    fused_optimizer: bool
    cuda_graphs: bool
    device_augment: bool
    native_depthwise: bool

    def as_metrics(self) -> dict[str, float]:
        return {"perf/bf16": float(self.precision == "bf16-mixed"), "perf/channels_last": float(self.channels_last),
                "perf/fused_optimizer": float(self.fused_optimizer),
                "perf/native_depthwise": float(self.native_depthwise)}


def resolve_levers(trainer, on_gpu: bool, bf16_supported: bool = True, graph_safe_loss: bool = True) -> Levers:
    """``trainer``: a TrainerSpec. On a CPU only the settings that help there stay on. A loss that cannot be
    captured (data-dependent shapes: focal, lovasz) keeps the step eager rather than failing a capture."""
    precision = trainer.precision
    if precision == "auto" or (precision == "16-mixed" and not on_gpu):
        precision = "bf16-mixed" if on_gpu and bf16_supported else "32"
    return Levers(
        precision=precision,
        channels_last=trainer.channels_last and on_gpu,
        fused_optimizer=trainer.fused_optimizer and on_gpu,
        # GradScaler's inf check reads the host every step: fp16 stays eager
        cuda_graphs=trainer.cuda_graphs and on_gpu and precision != "16-mixed" and graph_safe_loss,
        device_augment=trainer.device_augment,
        native_depthwise=trainer.native_depthwise and on_gpu,
    )


def gpus_per_trial(resources, cluster_gpus: float) -> float:
    """``resources``: a ResourcesSpec; ``auto`` packs ``trials_per_gpu`` trials per GPU where there are GPUs."""
    if resources.gpus_per_trial == "auto":
        return round(1.0 / resources.trials_per_gpu, 4) if cluster_gpus > 0 else 0.0
    return float(resources.gpus_per_trial)


def gpu_share(peak_bytes: float, gpu_bytes: float, requested: float, headroom: float = HEADROOM) -> float:
    """The GPU share a trial is admitted with: ``requested``, raised to ``1/k`` when fewer than ``1/requested``
    copies of its peak memory (plus headroom) fit in one GPU, where ``k`` copies do fit; 1.0 (alone) when not even
    two fit. Shares are rounded down to Ray's 1e-4 resolution so that ``k`` of them fit in 1.0."""
    if requested <= 0 or requested >= 1:
        return requested
    need = peak_bytes * (1 + headroom) / gpu_bytes
    fits = max(1, math.floor(1 / need)) if need > 0 else math.inf
    if fits * requested >= 1 - 1e-9 or fits == math.inf:
        return requested
    return math.floor(10_000 / fits) / 10_000


def memory_key(config: dict[str, Any]) -> str:
    """What a trial's GPU memory depends on: model, size, batch, precision, the levers, optimizer and loss names."""
    keep = ("model.", "data.size", "trainer.batch_size", "trainer.precision", "trainer.channels_last",
            "trainer.cuda_graphs", "trainer.fused_optimizer", "trainer.native_depthwise", "optimizer.name",
            "loss.name", "data.task")
    return json.dumps({k: v for k, v in sorted(config.items()) if k.startswith(keep)}, sort_keys=True, default=str)


class TrialResources:
    """Tune's resources callable (evaluated in the driver when a trial is created): CPUs and a GPU share per trial.

    Picklable: it holds settings and a path; measured peaks are kept in ``RUN_DIR/gpu_memory.json`` so that a resumed
    sweep does not probe again.
    """

    def __init__(self, cpus: float, gpus: float, memory_aware: bool, run_dir: str, groups: dict | None = None,
                 trial_gpu_memory_gb: float | None = None, gpu_memory_gb: float | None = None,
                 data=None, extra_bytes: int = 0) -> None:
        """``data``: the sweep's PreparedData (what the probe trains on); ``extra_bytes``: GPU memory a trial holds
        beyond its training step (its device-resident data)."""
        self.cpus, self.gpus, self.memory_aware, self.run_dir = cpus, gpus, memory_aware, run_dir
        self.extra_bytes = extra_bytes
        self.groups, self.data = groups or {}, data
        self.trial_gb, self.gpu_gb = trial_gpu_memory_gb, gpu_memory_gb

    def share(self, config: dict[str, Any]) -> float:
        if not (self.memory_aware and 0 < self.gpus < 1):
            return self.gpus
        peak, total = self.estimate(config)
        share = gpu_share(peak, total, self.gpus)
        if share != self.gpus:
            print(f"[segsweep] a trial needs {peak / 2**30:.1f} GiB of a {total / 2**30:.0f} GiB GPU: admitted with "
                  f"{share:g} GPU instead of {self.gpus:g}", file=sys.stderr, flush=True)
        return share

    def __call__(self, config: dict[str, Any]):
        from ray.tune import PlacementGroupFactory

        bundle = {"CPU": self.cpus}
        share = self.share(config)
        if share > 0:
            bundle["GPU"] = share
        return PlacementGroupFactory([bundle])

    def estimate(self, config: dict[str, Any]) -> tuple[float, float]:
        """(peak bytes of one trial, bytes of one GPU): stated in the spec, known to this run, measured on this machine
        before (``machine_memory_file``), or probed now."""
        if self.trial_gb is not None and self.gpu_gb is not None:
            return self.trial_gb * 2**30 + self.extra_bytes, self.gpu_gb * 2**30
        path = Path(self.run_dir) / MEMORY_FILE
        known = _read_json(path)
        key = memory_key(config)
        if key not in known:
            machine_key = self.machine_key(key)
            machine_file = machine_memory_file()
            earlier = _read_json(machine_file).get(machine_key) if machine_key else None
            known[key] = earlier or probe_memory(config, self.groups, self.data)
            _write_json(path, known)
            if machine_key and earlier is None:
                try:
                    _write_json(machine_file, {**_read_json(machine_file), machine_key: known[key]})
                except OSError as e:  # the run keeps its own copy; only later runs would probe again
                    print(f"[segsweep] the measured GPU memory is not kept for later runs ({machine_file}: "
                          f"{e.strerror or e}); set SEGSWEEP_CACHE_DIR to a writable folder", file=sys.stderr,
                          flush=True)
        peak, total = known[key]["peak_bytes"], known[key]["gpu_bytes"]
        if self.trial_gb is not None:
            peak = self.trial_gb * 2**30
        if self.gpu_gb is not None:
            total = self.gpu_gb * 2**30
        return peak + self.extra_bytes, total


    def machine_key(self, key: str) -> str | None:
        """``key`` on this machine: the GPU model and driver, torch, segsweep and the class count. None where the GPU
        cannot be named (then nothing is kept across runs)."""
        gpu = gpu_identity()
        if gpu is None:
            return None
        from importlib.metadata import PackageNotFoundError, version

        import torch

        try:
            segsweep = version("segsweep")
        except PackageNotFoundError:
            segsweep = "source"
        classes = len(self.data.classes) if self.data is not None else None
        return json.dumps({"memory": key, "gpu": gpu, "torch": torch.__version__, "segsweep": segsweep,
                           "classes": classes}, sort_keys=True)


def machine_memory_file() -> Path:
    """Probed peaks kept across runs on this machine: ``$SEGSWEEP_CACHE_DIR`` or ``~/.cache/segsweep``."""
    root = os.environ.get("SEGSWEEP_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / \
        "segsweep"
    return Path(root) / MEMORY_FILE


def gpu_identity() -> str | None:
    """The model, memory and driver of the GPU the probe measures on (this process's first CUDA device) as
    ``nvidia-smi`` reports them, without a CUDA context here."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader",
                              f"--id={_nvml_index()}"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    line = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""
    return line or None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}  # an unreadable cache is a cache miss


def _write_json(path: Path, value: dict[str, Any]) -> None:
    """Written whole and renamed into place: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=1))
    tmp.replace(path)


def probe_memory(config: dict[str, Any], groups: dict, data) -> dict[str, float]:
    """Peak GPU memory of a few training steps of ``config`` on ``data`` (a PreparedData; graph capture included),
    measured in a child process so that the driver holds no CUDA context."""
    payload = json.dumps({"config": config, "groups": groups, "data": data.to_json()}, default=str)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "orchestrator.perf"], input=payload, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SegsweepError(f"GPU memory probe failed ({last}); set resources.trial_gpu_memory_gb and "
                            f"resources.gpu_memory_gb, or resources.memory_aware: false")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["probe_s"] = round(time.perf_counter() - t0, 2)
    return result


def _probe_main() -> None:
    """Child side of ``probe_memory``: the trial's own module (``build_module``), 5 steps on random data of its shape,
    graph capture included."""
    import torch

    from orchestrator.data.cache import PreparedData
    from orchestrator.lit import normalise, to_model_input
    from orchestrator.trial import TrialConfig, build_module

    request = json.loads(sys.stdin.read())
    cfg = TrialConfig.from_flat(request["config"], request["groups"])
    data = PreparedData.from_json(request["data"])
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device in the driver's process")
    device = torch.device("cuda")
    module = build_module(cfg, data, use_gpu=True).to(device)
    levers, step, optimizer = module.levers, module.step, module.build_optimizer()
    classes = max(2, len(data.classes))
    n, (h, w) = cfg.trainer.batch_size, cfg.data.size
    before = _process_bytes()
    for _ in range(step.WARMUP + 2):
        images = torch.randint(0, 255, (n, h, w, 3), dtype=torch.uint8, device=device)
        labels = torch.randint(0, classes, (n, h, w), device=device)
        x = to_model_input(images)
        step(normalise(x, levers.channels_last), labels, optimizer)
    torch.cuda.synchronize()
    used = _process_bytes()
    peak = torch.cuda.max_memory_reserved()
    if used is not None:  # the whole process as the driver sees it: context + allocator peak
        peak = max(used, peak + (before or 0))
    else:
        peak += CONTEXT_BYTES
    total = torch.cuda.get_device_properties(device).total_memory
    print(json.dumps({"peak_bytes": peak, "gpu_bytes": total, "graphs": step.graphed,
                      "device": torch.cuda.get_device_name(device)}))


def _process_bytes() -> int | None:
    """This process's GPU memory as NVML reports it (context included), or None without NVML."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(_nvml_index())
        for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if proc.pid == os.getpid() and proc.usedGpuMemory:
                return int(proc.usedGpuMemory)
    except Exception:
        return None
    return None


def _nvml_index(cuda_index: int = 0) -> int:
    """NVML's (and nvidia-smi's) index of this process's CUDA device ``cuda_index``: CUDA_VISIBLE_DEVICES renumbers
    the GPUs a process sees, NVML does not."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")]
    entry = visible[cuda_index] if cuda_index < len(visible) else ""
    return int(entry) if entry.isdigit() else cuda_index


class GpuSampler:
    """Samples every GPU's utilisation and SM clock (NVML, else ``nvidia-smi``) in a thread; ``busy`` is the
    mean utilisation in [0, 1] over the samples. With NVML it also collects why the clocks were held down (NVML's
    clock event reasons, e.g. ``gpu_idle``). Without either tool it records nothing and says so."""

    def __init__(self, interval_s: float = 0.2, index: int | None = None) -> None:
        self.interval_s = interval_s
        # one GPU (a benchmark's CUDA device, as NVML numbers it), else every GPU
        self.index = None if index is None else _nvml_index(index)
        self.samples: list[list[float]] = []
        self.clocks: list[list[float]] = []
        self.reasons: set[str] = set()
        self.source = "none"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._read = self._reader()

    def _reader(self):
        try:
            import pynvml

            pynvml.nvmlInit()
            indices = [self.index] if self.index is not None else range(pynvml.nvmlDeviceGetCount())
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in indices]
            self.source = "nvml"

            def read():
                for h in handles:
                    self.reasons |= clock_event_reasons(pynvml, h)
                return ([pynvml.nvmlDeviceGetUtilizationRates(h).gpu for h in handles],
                        [pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM) for h in handles])
            return read
        except Exception:
            pass
        try:
            subprocess.run(["nvidia-smi", "-L"], capture_output=True, check=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        self.source = "nvidia-smi"
        select = [] if self.index is None else [f"--id={self.index}"]

        def read():
            out = subprocess.run(["nvidia-smi", *select, "--query-gpu=utilization.gpu,clocks.sm",
                                  "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10).stdout
            rows = [[float(v) for v in line.split(",")] for line in out.strip().splitlines()]
            return [r[0] for r in rows], [r[1] for r in rows]
        return read

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            util, clock = self._read()
            self.samples.append(util)
            self.clocks.append(clock)

    def __enter__(self) -> GpuSampler:
        if self._read is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def busy(self) -> list[float] | None:
        """Mean utilisation per GPU in [0, 1]."""
        if not self.samples:
            return None
        return [sum(s[i] for s in self.samples) / len(self.samples) / 100 for i in range(len(self.samples[0]))]

    def clock_summary(self) -> dict[str, Any] | None:
        """The first GPU's SM clock over the samples (MHz: min, median, max) and the reasons NVML gave for holding it
        below its maximum, if any."""
        if not self.clocks:
            return None
        mhz = sorted(c[0] for c in self.clocks)
        return {"sm_clock_mhz": {"min": mhz[0], "p50": mhz[len(mhz) // 2], "max": mhz[-1]},
                "samples": len(mhz), "clock_event_reasons": sorted(self.reasons)}


# NVML's clock event (formerly "throttle") reason bits, by the names nvidia-smi -q prints
_CLOCK_REASONS = {0x1: "gpu_idle", 0x2: "applications_clocks_setting", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
                  0x10: "sync_boost", 0x20: "sw_thermal_slowdown", 0x40: "hw_thermal_slowdown",
                  0x80: "hw_power_brake_slowdown", 0x100: "display_clock_setting"}


def decode_clock_reasons(bits: int) -> set[str]:
    return {name for bit, name in _CLOCK_REASONS.items() if bits & bit}


def clock_event_reasons(pynvml, handle) -> set[str]:
    read = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
        getattr(pynvml, "nvmlDeviceGetCurrentClocksThrottleReasons")
    try:
        return decode_clock_reasons(int(read(handle)))
    except Exception:  # noqa: BLE001 - not supported on this GPU or driver
        return set()


if __name__ == "__main__":
    _probe_main()
