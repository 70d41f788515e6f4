"""``orchestrate bench-serve``: the service under load, as a team meets it. A real ``orchestrate serve`` on loopback
(a process of its own, data under ``--out``) runs a sweep (``sweeps/demo.yaml`` by default) twice: once alone, for
its wall, then while ``clients`` poll its API (the sweep, its trials, the queue, in turn, ``interval`` apart) and
``followers`` follow its server-sent events, for ``seconds``. The figures: requests, errors, the API's latency as the
clients see it (p50 / p90 / p99 / max), events received, the CPU seconds the server and the clients (this process,
on the same machine: they compete with the sweep too) used during the load, the sweep's wall loaded against
unloaded, and the server process's memory (RSS) before the load, 10 s into it, at most, and after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from orchestrator.errors import SegsweepError
from orchestrator.pool.resident import stop_holder
from orchestrator.service.db import ServiceDB


@dataclass(frozen=True)
class ServeBench:
    spec: Path = Path("sweeps/demo.yaml")
    sets: tuple[str, ...] = ()  # after the benchmark's own data.root=<out>/datasets/<spec>
    clients: int = 50
    followers: int = 20
    seconds: float = 60.0
    interval: float = 1.0  # a polling client's pause between calls
    baseline: bool = True  # run the sweep alone first, for its wall
    timeout_s: float = 1800.0


def run_bench_serve(b: ServeBench, out: Path) -> dict[str, Any]:
    out = out.absolute()
    data, datasets = out / f"service-{time.strftime('%H%M%S')}", out / "datasets"
    datasets.mkdir(parents=True, exist_ok=True)
    token = ServiceDB(data / "service.db").add_user("bench")
    spec_text = Path(b.spec).read_text()
    submit = {"spec": spec_text, "sets": [f"data.root={datasets / Path(b.spec).stem}", *b.sets],
              "filename": str(b.spec)}
    server, url = _start_server(data, datasets)
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as api:
            result: dict[str, Any] = {"spec": str(b.spec), "clients": b.clients, "followers": b.followers,
                                      "seconds": b.seconds, "interval_s": b.interval, "machine": _machine()}
            if b.baseline:
                result["wall_unloaded_s"] = _wall(_finish(api, _submit(api, submit), b.timeout_s))
            sweep = _submit(api, submit)
            _wait(api, sweep, ("running", "finished", "failed"), b.timeout_s)
            memory = _Memory(server.pid)
            memory.sample()
            cpu = _cpu_seconds(server.pid), _cpu_seconds(os.getpid())
            load = asyncio.run(_load(url, token, sweep, b, memory))
            load["cpu_s"] = {"server": round(_cpu_seconds(server.pid) - cpu[0], 1),
                             "clients": round(_cpu_seconds(os.getpid()) - cpu[1], 1)}
            row = _finish(api, sweep, b.timeout_s)
            memory.sample()
        result |= load | {"wall_loaded_s": _wall(row), "server_rss_mb": memory.figures()}
        if "wall_unloaded_s" in result:
            result["wall_ratio"] = round(result["wall_loaded_s"] / result["wall_unloaded_s"], 3)
        return result
    finally:
        _stop(server, data)


def _start_server(data: Path, datasets: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(data / "serve.log", "w")  # noqa: SIM115 - the server's own output, for as long as it runs
    server = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "serve", "--data", str(data), "--port",
                               str(port), "--data-root", str(datasets)], stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if server.poll() is not None:
            raise SegsweepError(f"the server ended at start (exit {server.returncode}); see {data / 'serve.log'}")
        try:
            httpx.get(url + "/login", timeout=2)
            return server, url
        except httpx.HTTPError:
            time.sleep(0.3)
    _stop(server, data)
    raise SegsweepError(f"the server did not answer in 120 s; see {data / 'serve.log'}")


def _stop(server: subprocess.Popen, data: Path) -> None:
    """The benchmark's server, any sweep it still runs (each runner is a session of its own) and the service's pool
    (which outlives a server by design)."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(30)
    for row in ServiceDB(data / "service.db").sweeps(where="state = 'running'"):
        if row.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(row.pid, signal.SIGKILL)
    stop_holder(data / "pool.json")


def _submit(api: httpx.Client, body: dict[str, Any]) -> str:
    response = api.post("/api/sweeps", json=body)
    if response.status_code != 201:
        raise SegsweepError(f"the server refused the sweep: {response.json().get('error', response.text)}")
    return response.json()["id"]


def _wait(api: httpx.Client, sweep: str, states: tuple[str, ...], timeout: float) -> dict[str, Any]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        row = api.get(f"/api/sweeps/{sweep}").json()
        if row["state"] in states:
            return row
        time.sleep(0.5)
    raise SegsweepError(f"sweep {sweep} not {' or '.join(states)} within {timeout:.0f} s")


def _finish(api: httpx.Client, sweep: str, timeout: float) -> dict[str, Any]:
    row = _wait(api, sweep, ("finished", "failed", "cancelled"), timeout)
    if row["state"] != "finished":
        raise SegsweepError(f"sweep {sweep} ended {row['state']}: {row['error']}")
    return row


def _wall(row: dict[str, Any]) -> float:
    return round(row["ended_at"] - row["started_at"], 1)


def _cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


class _Memory:
    """The server process's resident memory, sampled before the load, every second of it, and after: ``warm`` is
    the sample 10 s in (the server's imports and caches done), so that ``after - warm`` is its growth under load."""

    def __init__(self, pid: int) -> None:
        self.process, self.samples = psutil.Process(pid), []

    def sample(self) -> None:
        self.samples.append(self.process.memory_info().rss / 2**20)

    def figures(self) -> dict[str, float]:
        warm = self.samples[min(11, len(self.samples) - 1)]
        return {"before": round(self.samples[0], 1), "warm": round(warm, 1), "max": round(max(self.samples), 1),
                "after": round(self.samples[-1], 1)}


async def _load(url: str, token: str, sweep: str, b: ServeBench, memory: _Memory) -> dict[str, Any]:
    latencies: list[float] = []
    errors: list[str] = []
    events = [0]
    paths = [f"/api/sweeps/{sweep}", f"/api/sweeps/{sweep}/trials", "/api/sweeps"]
    end = time.monotonic() + b.seconds
    connections = b.clients + b.followers
    limits = httpx.Limits(max_connections=connections + 1, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30,
                                 limits=limits) as client:

        async def poll(i: int) -> None:
            await asyncio.sleep(b.interval * i / max(1, b.clients))  # spread over one interval
            turn = i
            while time.monotonic() < end:
                started = time.perf_counter()
                try:
                    response = await client.get(paths[turn % len(paths)])
                    if response.status_code != 200:
                        errors.append(f"{response.status_code} {response.text[:100]}")
                except httpx.HTTPError as e:
                    errors.append(f"{type(e).__name__}: {e}")
                latencies.append(time.perf_counter() - started)
                turn += 1
                await asyncio.sleep(b.interval)

        async def follow() -> None:
            while time.monotonic() < end:  # a stream ends with the sweep; then it is followed again
                try:
                    async with client.stream("GET", f"/api/sweeps/{sweep}/events",
                                             timeout=httpx.Timeout(30, read=None)) as response:
                        if response.status_code != 200:
                            errors.append(f"events: {response.status_code}")
                        async for line in response.aiter_lines():
                            events[0] += line.startswith("data: ")
                            if time.monotonic() >= end:
                                return
                except httpx.HTTPError as e:
                    errors.append(f"events: {type(e).__name__}: {e}")
                await asyncio.sleep(b.interval)

        async def watch_memory() -> None:
            while time.monotonic() < end:
                memory.sample()
                await asyncio.sleep(1.0)

        await asyncio.gather(*(poll(i) for i in range(b.clients)), *(follow() for _ in range(b.followers)),
                             watch_memory())
    ms = sorted(1000 * v for v in latencies)
    quantile = (lambda q: round(ms[min(len(ms) - 1, int(q * len(ms)))], 1)) if ms else (lambda q: None)
    return {"requests": len(ms), "errors": len(errors), "first_errors": errors[:5], "events": events[0],
            "latency_ms": {"p50": round(statistics.median(ms), 1) if ms else None, "p90": quantile(0.9),
                           "p99": quantile(0.99), "max": round(ms[-1], 1) if ms else None}}


def _machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}


def markdown(r: dict[str, Any]) -> str:
    lat, machine = r["latency_ms"], r["machine"]
    first_error = f" (first: {r['first_errors'][0]})" if r["errors"] else ""
    alone = f", {r['wall_unloaded_s']} s alone (ratio {r['wall_ratio']})" if "wall_unloaded_s" in r else ""
    return "\n".join([
        f"# bench-serve: {r['spec']}", "",
        (f"{r['clients']} clients polling the API every {r['interval_s']} s and {r['followers']} following its "
         f"events, for {r['seconds']} s, while the sweep runs ({machine['cpus']} CPUs, {machine['platform']})."), "",
        f"- requests: {r['requests']}, errors: {r['errors']}{first_error}",
        f"- API latency ms: p50 {lat['p50']}, p90 {lat['p90']}, p99 {lat['p99']}, max {lat['max']}",
        f"- events received: {r['events']}",
        f"- CPU seconds during the load: server {r['cpu_s']['server']}, clients {r['cpu_s']['clients']}",
        f"- sweep wall: {r['wall_loaded_s']} s under load{alone}",
        "- server memory (RSS MB): " + ", ".join(f"{k} {v}" for k, v in r["server_rss_mb"].items())])
