"""A pool that outlives sweeps: the process that holds it (``python -m orchestrator.pool.resident``, started by
``orchestrate pool start`` and by ``orchestrate serve``), its Ray, and how the CLI starts, reads and stops it.

The holder starts a Ray head of its own in its process, on loopback, dashboard off, with a token of its own (only the
state file's owner can join it); the sweep's kind of CUDA MPS daemon where the machine has one; and the workers
(``pool.launch.start_resident_pool``). It waits until
every worker has done its imports, writes its state file (address, pid, key, workers), and holds the pool until
SIGTERM. A sweep run with ``--address <that address>`` trains on those workers; its results stay its own (run
directory, store, W&B, report). The pool's key is the installed versions (segsweep's source, torch, Ray, Python): a
sweep of other versions never uses it.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from orchestrator.errors import SegsweepError
from orchestrator.files import write_text_whole
from orchestrator.mps import start_mps
from orchestrator.pool.admission import use_mps
from orchestrator.pool.protocol import NAMESPACE, POOL_NAME
from orchestrator.spec.schema import ResourcesSpec

# Ray reads its token when it is imported: the environment must hold it first (``join_token``), so nothing here imports
# Ray at the module's top

USER_ENV = "SEGSWEEP_USER"  # the service's user of a sweep, for the pool's fair shares
STATE_ENV = "SEGSWEEP_POOL_STATE"  # the pool's state file, if not ~/.segsweep/pool.json
# Ray's single-machine switch: the node's address is 127.0.0.1, so its GCS, raylet, object manager and workers listen
# on loopback only (set for the holder and for every process that joins it)
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
READY_TIMEOUT_S = 600.0  # the workers' imports (and CUDA) on a cold machine


@functools.cache
def pool_key() -> str:
    """The installed versions a pool's workers run: segsweep's source files, torch, Ray, Python. A pool whose key
    differs is never used (its workers would train with other code)."""
    root = Path(__file__).resolve().parents[2]
    digest = hashlib.sha256()
    for package in ("orchestrator", "models", "reports"):
        for path in sorted((root / package).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    for name in ("torch", "ray", "segmentation-models-pytorch", "lightning"):
        try:
            digest.update(f"{name}={metadata.version(name)}".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{name}=none".encode())
    digest.update(sys.version.encode())
    return digest.hexdigest()[:16]


def default_state() -> Path:
    return Path(os.environ.get(STATE_ENV, Path.home() / ".segsweep" / "pool.json"))


def join_token(address: str, state: Path | None = None) -> None:
    """Joining the pool's Ray at ``address`` (``orchestrate run --address``): its token, from the pool's state file,
    into this process's environment, where Ray reads it at its import (so: before anything imports Ray). Nothing for
    another cluster."""
    info = read_state(state or default_state())
    if info is not None and info.get("address") == address and info.get("token"):
        os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": info["token"], **LOOPBACK})


def read_state(state: Path) -> dict[str, Any] | None:
    """The running holder's state, or None when there is none (no file, or its process is gone)."""
    try:
        info = json.loads(state.read_text())
        pid = int(info["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info if alive(pid) else None


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, ended but not yet reaped by its parent, does not)."""
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


# ------------------------------------------------------------------------------------------------ the CLI's side
def start_holder(state: Path, resources: dict[str, Any], cpus: int | None = None, gpus: int | None = None,
                 log: Path | None = None, visible_gpus: list[int] | None = None) -> dict[str, Any]:
    """Start the holder in a session of its own (it outlives this process) and wait until its workers are ready;
    its state comes back. A pool already running there is a one-line error. ``visible_gpus``: the only GPUs it
    uses (``CUDA_VISIBLE_DEVICES``)."""
    if read_state(state) is not None:
        raise SegsweepError(f"a pool is running already ({state}); 'orchestrate pool stop' ends it")
    state.parent.mkdir(parents=True, exist_ok=True)
    state.unlink(missing_ok=True)
    log = log or state.with_suffix(".log")
    command = [sys.executable, "-m", "orchestrator.pool.resident", "--state", str(state),
               "--resources", json.dumps(resources)]
    command += ["--cpus", str(cpus)] if cpus is not None else []
    command += ["--gpus", str(gpus)] if gpus is not None else []
    # the pool's own token: only who can read the state file (its owner) can join its Ray and run code on its workers;
    # and its Ray on loopback only
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16), **LOOPBACK}
    if visible_gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, visible_gpus))
    with open(log, "ab") as out:
        holder = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    deadline = time.time() + READY_TIMEOUT_S + 120
    while time.time() < deadline:
        info = read_state(state)
        if info is not None:
            return info
        if holder.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.is_file() else []
            raise SegsweepError(f"the pool did not start ({tail[0] if tail else f'exit {holder.returncode}'}); "
                                f"its log: {log}")
        time.sleep(0.5)
    holder.terminate()
    raise SegsweepError(f"the pool did not start within {READY_TIMEOUT_S + 120:.0f} s; its log: {log}")


def stop_holder(state: Path, timeout: float = 120.0) -> bool:
    """SIGTERM to the holder, which ends its workers, its MPS daemon and its Ray; False when none was running."""
    info = read_state(state)
    if info is None:
        state.unlink(missing_ok=True)
        return False
    pid = int(info["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.time() + timeout
    while time.time() < deadline and alive(pid):
        time.sleep(0.3)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)  # its shutdown hung: its Ray's processes end with it
    state.unlink(missing_ok=True)
    return True


def pool_status(state: Path) -> dict[str, Any]:
    """What the running pool's workers say now (``TrialWorker.ready``): device, slots, running, sweeps, GPU memory."""
    info = read_state(state)
    if info is None:
        raise SegsweepError(f"no pool is running ({state}); 'orchestrate pool start' starts one")
    join_token(info["address"], state)
    import ray  # lazy: after its token is in the environment (Ray reads it at its import)
    ray.init(address=info["address"], logging_level="ERROR", configure_logging=True, log_to_driver=False,
             namespace=NAMESPACE)
    try:
        dispatcher = ray.get_actor(POOL_NAME, namespace=NAMESPACE)
        pool = ray.get(dispatcher.info.remote(), timeout=30)
        workers = []
        for handle in pool["workers"]:
            try:
                workers.append(ray.get(handle.ready.remote(), timeout=30))
            except (ray.exceptions.RayError, TimeoutError) as e:
                workers.append({"error": str(e).splitlines()[0][:200]})
    finally:
        ray.shutdown()
    return {**info, "sweeps": pool["sweeps"], "workers": workers, "current": info["key"] == pool_key()}


# ------------------------------------------------------------------------------------------------ the holder
def hold(state: Path, resources: dict[str, Any], cpus: int | None, gpus: int | None) -> None:
    """The holder's life (its environment holds its Ray's token, ``start_holder``): Ray's head in this process, bound
    to loopback with its dashboard off, the pool, the state file; then wait for SIGTERM and end them all."""
    import ray  # lazy: after the token is in the environment (above)

    from orchestrator.pool.launch import start_resident_pool  # lazy: imports Ray (above)

    res = ResourcesSpec.model_validate(resources)
    stop = threading.Event()

    def stop_on_signals() -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())

    stop_on_signals()
    mps = start_mps(res.mps) if use_mps(res.mps, True, res.gpus_per_trial != 0) else None
    pool = None
    try:
        ray.init(address="local", num_cpus=cpus, num_gpus=gpus, include_dashboard=False, logging_level="ERROR",
                 configure_logging=True, log_to_driver=True)
        stop_on_signals()  # again: Ray's core worker installs a handler that dumps a stack trace on SIGTERM
        address = ray.get_runtime_context().gcs_address
        pool = start_resident_pool(res, pool_key(), mps)
        ready = ray.get([w.ready.remote() for w in pool.workers], timeout=READY_TIMEOUT_S)
        write_text_whole(state, json.dumps({"address": address, "pid": os.getpid(), "key": pool_key(),
                                            "started": time.time(), "workers": ready, "slots": sum(pool.limits),
                                            "mps": mps is not None,
                                            "token": os.environ["RAY_AUTH_TOKEN"]}), mode=0o600)
        print(f"[segsweep] pool ready on {address}: {len(ready)} worker(s), {sum(pool.limits)} trial(s) at once",
              flush=True)
        stop.wait()
    finally:
        if pool is not None:
            for actor in [*pool.workers, pool.dispatcher]:
                ray.kill(actor, no_restart=True)
        if ray.is_initialized():
            ray.shutdown()
        if mps is not None:
            mps.stop()
        state.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--resources", default="{}")
    parser.add_argument("--cpus", type=int)
    parser.add_argument("--gpus", type=int)
    args = parser.parse_args(argv)
    try:
        hold(args.state, json.loads(args.resources), args.cpus, args.gpus)
    except SegsweepError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
