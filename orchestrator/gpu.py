"""GPUs as NVML sees them: utilisation and SM clock sampling (``GpuSampler``), a process's GPU memory, the GPU's
identity, the machine's GPU count, and NVML's index of a CUDA device. No CUDA context is made here; without NVML
(``nvidia-ml-py``) it falls back to ``nvidia-smi``, and without either it records nothing and says so.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from typing import Any


def nvml() -> Any | None:
    """``pynvml``, initialised, or None where it is not installed or finds no driver."""
    try:
        import pynvml  # lazy: nvidia-ml-py is on GPU machines only, and only the samplers need it
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:  # no driver (a CPU machine with the package installed)
        return None
    return pynvml


def nvml_index(cuda_index: int = 0) -> int:
    """NVML's (and nvidia-smi's) index of this process's CUDA device ``cuda_index``: CUDA_VISIBLE_DEVICES renumbers
    the GPUs a process sees, NVML does not."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")]
    entry = visible[cuda_index] if cuda_index < len(visible) else ""
    return int(entry) if entry.isdigit() else cuda_index


def gpu_count() -> int:
    """The machine's GPUs (NVML's count, else ``nvidia-smi -L``'s), whatever CUDA_VISIBLE_DEVICES says; 0 without a
    driver."""
    pynvml = nvml()
    if pynvml is not None:
        return pynvml.nvmlDeviceGetCount()
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in out.stdout.splitlines()) if out.returncode == 0 else 0


def gpu_identity() -> str | None:
    """The model, memory and driver of this process's first CUDA device as ``nvidia-smi`` reports them, without a
    CUDA context here; None where there is no GPU to name."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader",
                              f"--id={nvml_index()}"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    line = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""
    return line or None


def process_bytes() -> int | None:
    """This process's GPU memory as NVML reports it (context included), or None without NVML."""
    pynvml = nvml()
    if pynvml is None:
        return None
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(nvml_index())
        for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if proc.pid == os.getpid() and proc.usedGpuMemory:
                return int(proc.usedGpuMemory)
    except pynvml.NVMLError:  # a driver that does not list processes (some virtualised GPUs): the caller estimates
        return None
    return None


class GpuSampler:
    """Samples every GPU's utilisation and SM clock (NVML, else ``nvidia-smi``) in a thread; ``busy`` is the
    mean utilisation in [0, 1] over the samples. With NVML it also collects why the clocks were held down (NVML's
    clock event reasons, e.g. ``gpu_idle``). Without either tool it records nothing and says so."""

    def __init__(self, interval_s: float = 0.2, index: int | None = None) -> None:
        self.interval_s = interval_s
        # one GPU (a benchmark's CUDA device, as NVML numbers it), else every GPU
        self.index = None if index is None else nvml_index(index)
        self.samples: list[list[float]] = []
        self.times: list[float] = []  # wall clock of each sample
        self.clocks: list[list[float]] = []
        self.reasons: set[str] = set()
        self.source = "none"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._read = self._reader()

    def _reader(self):
        pynvml = nvml()
        if pynvml is not None:
            indices = [self.index] if self.index is not None else range(pynvml.nvmlDeviceGetCount())
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in indices]
            self.source = "nvml"

            def read():
                for h in handles:
                    self.reasons |= clock_event_reasons(pynvml, h)
                return ([pynvml.nvmlDeviceGetUtilizationRates(h).gpu for h in handles],
                        [pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM) for h in handles])
            return read
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
            self.times.append(time.time())
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

    def busy(self, since: float | None = None, until: float | None = None) -> list[float] | None:
        """Mean utilisation per GPU in [0, 1], over the samples taken between ``since`` and ``until`` (wall clock;
        default: all)."""
        # read while sampling: the two lists may differ by one
        rows = [s for t, s in zip(self.times, self.samples)  # noqa: B905
                if (since is None or t >= since) and (until is None or t <= until)]
        if not rows:
            return None
        return [sum(r[i] for r in rows) / len(rows) / 100 for i in range(len(rows[0]))]

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
    except pynvml.NVMLError:  # not supported on this GPU or driver
        return set()
