"""A real ``orchestrate serve`` on loopback, in a process of its own, with users made by ``orchestrate token add`` and
a data root (``--data-root``) that the tests' datasets live under."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from orchestrator.pool.resident import stop_holder
from tests.conftest import ROOT
from tests.orchestrator.conftest import free_port

ORCHESTRATE = [sys.executable, "-m", "orchestrator.cli"]
__all__ = ["ORCHESTRATE", "free_port", "start_server", "tiny_sweep", "token", "wait_for"]


def token(data: Path, name: str, admin: bool = False) -> str:
    done = subprocess.run([*ORCHESTRATE, "token", "add", name, "--data", str(data), *(["--admin"] if admin else [])],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[-1]  # the last word


@dataclass
class Server:
    url: str
    data: Path
    proc: subprocess.Popen
    log: Path
    datasets: Path  # its data root

    def client(self, tok: str | None) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {tok}"} if tok else {}, timeout=30)

    def kill(self) -> None:
        """kill -9 the server alone (its runners and its pool go on, by design)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """The server, and the service's pool, which outlives a server by design."""
        self.kill()
        stop_holder(self.data / "pool.json")


def start_server(data: Path, port: int, datasets: Path, max_running: int = 2,
                 env: dict[str, str] | None = None) -> Server:
    log = data / f"serve-{time.time():.0f}.log"
    data.mkdir(parents=True, exist_ok=True)
    datasets.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        proc = subprocess.Popen([*ORCHESTRATE, "serve", "--data", str(data), "--port", str(port), "--max-running",
                                 str(max_running), "--data-root", str(datasets)], stdout=out, stderr=subprocess.STDOUT,
                                cwd=ROOT, start_new_session=True,
                                env={**os.environ, "WANDB_MODE": "offline", **(env or {})})
    server = Server(f"http://127.0.0.1:{port}", data, proc, log, datasets)
    deadline = time.time() + 240  # the service's pool starts first: its workers' imports
    while time.time() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            httpx.get(server.url + "/login", timeout=2)
            return server
        except httpx.HTTPError:
            time.sleep(0.3)
    pytest.fail(f"the server did not answer in 240 s: {log.read_text()[-2000:]}")


def tiny_sweep(root: Path, epochs: int = 1, lrs: tuple[float, ...] = (0.003, 0.001)) -> str:
    spec = {"name": "svc", "data": {"dataset": "synthetic", "root": str(root), "size": [32, 64], "resize": "resize",
                                    "synthetic": {"train": 8, "val": 4, "height": 40, "width": 72, "seed": 1}},
            "model": {"arch": "unet", "encoder": "resnet18"}, "loss": {"name": "dice"},
            "optimizer": {"name": "adam", "lr": {"choice": list(lrs)}},
            "trainer": {"max_epochs": epochs, "batch_size": 4, "log_images": 0, "best_worst": 1,
                        "checkpoint_every_s": 0},
            "search": {"algorithm": "grid", "metric": "val/miou", "mode": "max", "scheduler": {"name": "none"}},
            "resources": {"cpus_per_trial": 1, "max_concurrent": 1}, "tracking": {"wandb": {"mode": "disabled"}}}
    return yaml.safe_dump(spec)


def wait_for(client: httpx.Client, sweep_id: str, states: tuple[str, ...], timeout: float = 300) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        row = client.get(f"/api/sweeps/{sweep_id}").json()
        if row["state"] in states:
            return row
        time.sleep(0.5)
    pytest.fail(f"sweep {sweep_id} not {states} in {timeout} s: {row}")


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """One server for the module: alice, bob and an admin; alice's and bob's sweeps submitted at the same time."""
    data = tmp_path_factory.mktemp("service")
    tokens = {"alice": token(data, "alice"), "bob": token(data, "bob"), "root": token(data, "root", admin=True)}
    server = start_server(data, free_port(), tmp_path_factory.mktemp("datasets"))
    yield server, tokens
    server.stop()
