"""The service's queue: which sweep runs next (priority within a per-user fair share), on which GPUs, in which
runner process; what became of each runner; and, after the server itself was killed, what it left running.

A sweep takes one GPU of ``--gpus`` (several run at once when there are GPUs for them); without ``--gpus`` at most
``max_running`` run at once (a Ray cluster's, with ``--address``). Next is the queued sweep of the user with the
fewest running, then the highest priority, then the oldest. Without ``--address`` a runner starts a Ray of its own
(never one it finds running on the machine), listening on the loopback address only, its dashboard off (the
driver's ``init_ray``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from orchestrator.pool.resident import LOOPBACK, USER_ENV
from orchestrator.service.db import ServiceDB, SweepRow
from orchestrator.service.runner import status_file

TICK_S = 0.5
CANCEL_GRACE_S = 30.0  # a cancelled runner's time to stop Tune cleanly (SIGINT) before it is killed


def next_sweep(queued: list[SweepRow], running: list[SweepRow]) -> SweepRow | None:
    """Fair share: the user with the fewest sweeps running goes first; then priority (higher first), then age."""
    if not queued:
        return None
    load = {}
    for row in running:
        load[row.user] = load.get(row.user, 0) + 1
    return min(queued, key=lambda r: (load.get(r.user, 0), -r.priority, r.created_at, r.id))


class Scheduler:
    def __init__(self, db: ServiceDB, data: Path, gpus: list[int] | None = None, max_running: int = 1,
                 address: str | None = None, max_hours: float | None = None) -> None:
        """``max_hours``: a sweep running longer is stopped as a cancel would (it can be resumed), so that no sweep
        holds the service's workers for ever (``serve --max-sweep-hours``)."""
        self.db, self.data, self.gpus, self.max_running, self.address = db, data, gpus, max_running, address
        self.max_hours = max_hours
        self.procs: dict[str, subprocess.Popen] = {}
        self.cancelling: dict[str, float] = {}
        self.overtime: set[str] = set()
        self.lock = threading.Lock()
        self._stop = threading.Event()

    # ---------------------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self.recover()
        threading.Thread(target=self._loop, name="segsweep-queue", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(TICK_S):
            with self.lock:
                self.reap()
                self.launch()

    def recover(self) -> None:
        """After a restart: a runner still alive is adopted; one that ended while the server was down has its outcome
        in its status file; one that died with the server goes back to the queue to resume its run directory."""
        for row in self.db.sweeps(where="state = 'running'"):
            if self._alive(row):
                continue
            if status_file(self.data, row.id).is_file():
                self._finish(row)
            else:
                self.db.requeue(row.id, "resume")

    # ---------------------------------------------------------------------------------------- each tick
    def reap(self) -> None:
        for row in self.db.sweeps(where="state = 'running'"):
            proc = self.procs.get(row.id)
            ended = proc.poll() is not None if proc is not None else not self._alive(row)
            if ended:
                self.procs.pop(row.id, None)
                self._finish(row)
            elif row.id in self.cancelling and time.time() - self.cancelling[row.id] > CANCEL_GRACE_S:
                self._kill(row, signal.SIGKILL)
            elif (self.max_hours and row.started_at and row.id not in self.cancelling
                  and time.time() - row.started_at > self.max_hours * 3600):
                self.overtime.add(row.id)
                self.cancelling[row.id] = time.time()
                self._kill(row, signal.SIGINT)  # as a cancel: Tune saves its state, the run can be resumed

    def launch(self) -> None:
        while True:
            running = self.db.sweeps(where="state = 'running'")
            gpus = self._free_gpus(running)
            if (self.gpus is None and len(running) >= self.max_running) or (self.gpus is not None and not gpus):
                return
            row = next_sweep(self.db.sweeps(where="state = 'queued'"), running)
            if row is None:
                return
            self._spawn(row, gpus[:1] if self.gpus is not None else [])

    def _free_gpus(self, running: list[SweepRow]) -> list[int]:
        held = {g for row in running for g in row.gpus}
        return [g for g in self.gpus or [] if g not in held]

    def _spawn(self, row: SweepRow, gpus: list[int]) -> None:
        log = self.data / "logs" / f"{row.id}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        status_file(self.data, row.id).unlink(missing_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if not self.address:
            # a Ray of the sweep's own (not whatever `ray start` cluster runs on this machine, which ray.init would
            # join), on 127.0.0.1 (Ray's single-machine switch): its GCS, raylet, object manager and workers listen
            # on loopback, not on every interface
            env |= {"RAY_ADDRESS": "local", **LOOPBACK}
        if self.gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpus))
        env[USER_ENV] = row.user  # a pool shares its slots fairly between users
        command = [sys.executable, "-m", "orchestrator.service.runner", str(self.data), row.id]
        command += [self.address] if self.address else []
        with open(log, "ab") as out:
            # its own session: a sweep outlives a killed server (which adopts it again when it starts)
            proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.procs[row.id] = proc
        self.db.update(row.id, state="running", pid=proc.pid, gpus=gpus, started_at=time.time(), error=None)

    def _finish(self, row: SweepRow) -> None:
        path = status_file(self.data, row.id)
        outcome = _read(path)
        state = outcome.get("state", "failed")
        error = outcome.get("error") or (None if state == "finished" else "the runner ended without an outcome; "
                                         f"see {self.data / 'logs' / (row.id + '.log')}")
        if row.id in self.cancelling:
            state, error = "cancelled", None
            self.cancelling.pop(row.id)
            if row.id in self.overtime:
                self.overtime.discard(row.id)
                error = (f"stopped after the server's limit of {self.max_hours:g} h a sweep (serve "
                         "--max-sweep-hours); resume it to go on")
        self.db.update(row.id, state=state, error=error, pid=None, gpus=[], ended_at=time.time())

    # ---------------------------------------------------------------------------------------- requests
    def cancel(self, row: SweepRow) -> None:
        with self.lock:
            if row.state == "queued":
                self.db.update(row.id, state="cancelled", ended_at=time.time())
            elif row.state == "running":
                self.cancelling[row.id] = time.time()
                self._kill(row, signal.SIGINT)  # Tune stops and saves its state: the run can be resumed

    def _kill(self, row: SweepRow, sig: signal.Signals) -> None:
        if row.pid is None:
            return
        try:
            if sig == signal.SIGKILL:
                os.killpg(row.pid, sig)  # the runner and the Ray it started
            else:
                os.kill(row.pid, sig)
        except ProcessLookupError:
            pass  # it has ended on its own: the next tick records it

    def _alive(self, row: SweepRow) -> bool:
        """Whether the sweep's runner runs (and is ours: a recycled pid is not)."""
        if row.pid is None:
            return False
        try:
            proc = psutil.Process(row.pid)
            cmdline, status = proc.cmdline(), proc.status()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False
        return "orchestrator.service.runner" in cmdline and row.id in cmdline and status != psutil.STATUS_ZOMBIE


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
