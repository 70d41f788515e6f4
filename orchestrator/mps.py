"""CUDA MPS for a sweep's own trial workers: one control daemon per sweep, in a folder of its own, that only the
pool's workers are pointed at (``CUDA_MPS_PIPE_DIRECTORY`` in their environment). Under MPS the kernels of the
worker processes of one GPU run side by side instead of taking turns (measured on an H200: 840 training images/s
for 8 trials in 4 processes, against 602 for 4 in 2 without it, on the IDD-lite study).

Whether a sweep wants one is admission's rule (``pool.admission.use_mps``); this module starts, checks and stops the
daemon: ``true`` turns every reason it cannot into a one-line error, ``auto`` into a warning line. A daemon that starts but serves no client (a GPU in a compute mode that forbids it, another user's
server holding the GPU) is stopped again, and the sweep runs without it. Nothing here imports CUDA libraries: the
check is a child process that opens a context through the driver API (``libcuda``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from orchestrator.errors import SegsweepError

CONTROL = "nvidia-cuda-mps-control"
PIPE_ENV, LOG_ENV = "CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY"
CHECK_TIMEOUT_S = 60.0
# a context on device 0 and 1 MiB in it, through the driver API: under MPS this is a client of the server, which
# the daemon starts for it; any failure exits non-zero with CUDA's error name
CLIENT_CHECK = r"""
import ctypes, sys
cuda = ctypes.CDLL("libcuda.so.1")
def check(rc, what):
    if rc:
        name = ctypes.c_char_p()
        cuda.cuGetErrorName(rc, ctypes.byref(name))
        sys.exit(f"{what}: {name.value.decode() if name.value else rc}")
check(cuda.cuInit(0), "cuInit")
dev, ctx, ptr = ctypes.c_int(), ctypes.c_void_p(), ctypes.c_uint64()
check(cuda.cuDeviceGet(ctypes.byref(dev), 0), "cuDeviceGet")
check(cuda.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev), "cuDevicePrimaryCtxRetain")
check(cuda.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
check(cuda.cuMemAlloc_v2(ctypes.byref(ptr), 1 << 20), "cuMemAlloc")
check(cuda.cuMemFree_v2(ptr), "cuMemFree")
"""

Setting = bool | Literal["auto"]


@dataclass
class MpsDaemon:
    """A running control daemon of this sweep; ``env``: what its clients need; ``stop`` ends it (idempotent)."""

    folder: Path
    _stopped: bool = field(default=False, repr=False)

    @property
    def env(self) -> dict[str, str]:
        return {PIPE_ENV: str(self.folder / "pipe"), LOG_ENV: str(self.folder / "log")}

    def stop(self) -> None:
        """``quit``: the daemon stops taking clients and ends once its server's clients have gone; then its folder."""
        if self._stopped:
            return
        self._stopped = True
        try:
            subprocess.run([CONTROL], input="quit\n", text=True, env={**os.environ, **self.env},
                           capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.SubprocessError):
            pass  # a daemon that cannot be reached is gone already
        shutil.rmtree(self.folder, ignore_errors=True)

    def log_tail(self) -> str:
        """The daemon's last log line (why its server did not start), or ''."""
        for name in ("server.log", "control.log"):
            path = self.folder / "log" / name
            lines = path.read_text(errors="replace").strip().splitlines() if path.is_file() else []
            if lines:
                return lines[-1].strip()
        return ""


def start_mps(setting: Setting) -> MpsDaemon | None:
    """A daemon of this sweep's own, checked by one client; None where MPS cannot run here (``auto``: quietly where
    the machine has no MPS, with one line where it has but it failed). ``true`` turns every reason into the error."""
    def refuse(reason: str, warn: bool = True) -> None:
        if setting is True:
            raise SegsweepError(f"resources.mps: true, but {reason}; set resources.mps=false")
        if warn:
            print(f"[segsweep] warning: CUDA MPS not used: {reason}", file=sys.stderr, flush=True)

    control = shutil.which(CONTROL)
    if control is None or shutil.which("nvidia-smi") is None:
        refuse(f"{CONTROL} is not on PATH (no NVIDIA driver tools here)", warn=False)
        return None
    daemon = MpsDaemon(Path(tempfile.mkdtemp(prefix="segsweep-mps-")))  # short: the pipe is a Unix socket path
    for name in ("pipe", "log"):
        (daemon.folder / name).mkdir()
    env = {**os.environ, **daemon.env}
    try:
        started = subprocess.run([control, "-d"], env=env, capture_output=True, text=True, timeout=30, check=False)
        if started.returncode != 0:
            lines = (started.stderr or started.stdout).strip().splitlines()
            raise RuntimeError(lines[-1] if lines else f"{CONTROL} -d: exit status {started.returncode}")
        check = subprocess.run([sys.executable, "-c", CLIENT_CHECK], env=env, capture_output=True, text=True,
                               timeout=CHECK_TIMEOUT_S, check=False)
        if check.returncode != 0:
            line = (check.stderr.strip().splitlines() or [f"exit status {check.returncode}"])[-1]
            tail = daemon.log_tail()
            raise RuntimeError(f"a client could not open a context: {line}" + (f"; the log: {tail}" if tail else ""))
    except (OSError, subprocess.SubprocessError, RuntimeError) as e:
        daemon.stop()
        refuse(f"its daemon did not serve ({e})")
        return None
    return daemon


class MpsStart:
    """``start_mps`` in a thread, begun before Ray starts (the check's client takes a second or two) and joined
    where the workers are placed."""

    def __init__(self, setting: Setting) -> None:
        self.result: MpsDaemon | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(setting,), name="segsweep-mps", daemon=True)
        self._thread.start()

    def _run(self, setting: Setting) -> None:
        try:
            self.result = start_mps(setting)
        except BaseException as e:  # noqa: BLE001 - raised again in the driver's thread by join
            self.error = e

    def join(self) -> MpsDaemon | None:
        self._thread.join()
        if self.error is not None:
            raise self.error
        return self.result

    def stop(self) -> None:
        """After a failure elsewhere: wait for the start, then end the daemon it made, if any."""
        self._thread.join()
        if self.result is not None:
            self.result.stop()
