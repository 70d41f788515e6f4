"""A pool that outlives sweeps, for real: ``orchestrate pool start`` on this machine (its own Ray, 2 CPUs), sweeps run
on it with ``--address`` (the same warm worker processes every time), two users' sweeps at once on the same workers
with their results apart, a worker killed and replaced, a pool of other versions passed over, and ``pool stop``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from orchestrator.pool.resident import alive, pool_key, read_state, start_holder, stop_holder
from orchestrator.store import Store
from tests.conftest import ROOT, tiny_spec

pytestmark = pytest.mark.slow


def orchestrate(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled", **(env or {})}
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300, cwd=ROOT, check=False)


def pool_status(state: Path) -> dict:
    """``orchestrate pool status --format json``, in a process of its own (Ray reads the pool's token at its import;
    this test process may hold a Ray of its own already)."""
    done = orchestrate("pool", "status", "--state", str(state), "--format", "json")
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def worker_pids(run_dir: Path) -> set[int]:
    return {int(p.stem.split("-")[1]) for p in (run_dir / "pool").glob("worker-*.json")}


@pytest.fixture
def pool(tmp_path, synthetic_root):
    state = tmp_path / "pool.json"
    info = start_holder(state, {"cpus_per_trial": 1}, cpus=2)
    spec = tiny_spec(synthetic_root, tracking={"wandb": {"mode": "disabled"}})
    spec["trainer"] |= {"max_epochs": 1, "log_images": 0, "best_worst": 0}
    spec["optimizer"]["lr"] = {"choice": [0.003, 0.001]}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    yield state, info, path
    stop_holder(state)


def test_a_sweep_trains_on_the_warm_pool_and_a_killed_worker_is_replaced(pool, tmp_path):
    """(Two users' sweeps at once on one pool: tests/orchestrator/bench/test_bench_sweep.py, and the service's.)"""
    state, info, spec = pool
    env = {"SEGSWEEP_POOL_STATE": str(state)}
    pids = {w["pid"] for w in info["workers"]}
    assert len(pids) == 2 and info["key"] == pool_key() and oct(state.stat().st_mode)[-3:] == "600"

    first = orchestrate("run", str(spec), "--address", info["address"], "--out", str(tmp_path / "a"), env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "training on the pool already running on this Ray: 2 warm worker(s)" in first.stderr
    assert worker_pids(tmp_path / "a") <= pids  # its trials trained in the pool's processes
    trials = Store.of_run(tmp_path / "a").trials()
    assert len(trials) == 2 and all(t.status in ("completed", "early_stopped") for t in trials), trials
    status = pool_status(state)
    assert status["sweeps"] == [] and all(w["sweeps"] == [] and w["running"] == 0 for w in status["workers"])

    os.kill(status["workers"][0]["pid"], signal.SIGKILL)  # a worker dies: Ray starts it again
    deadline = time.time() + 120
    while time.time() < deadline:
        now = {w.get("pid") for w in pool_status(state)["workers"]}
        if None not in now and len(now) == 2 and now != pids:
            break
        time.sleep(2)
    else:
        pytest.fail("the killed worker was not replaced")
    again = orchestrate("run", str(spec), "--address", info["address"], "--out", str(tmp_path / "c"), env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert all(t.status in ("completed", "early_stopped") for t in Store.of_run(tmp_path / "c").trials())


def test_a_pool_of_other_versions_is_passed_over_a_killed_driver_lets_go_and_stop_ends_it(pool, tmp_path):
    state, info, spec = pool
    long = yaml.safe_load(spec.read_text())
    long["trainer"]["max_epochs"] = 50
    spec.write_text(yaml.safe_dump(long))
    driver = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "run", str(spec), "--address", info["address"],
                               "--out", str(tmp_path / "killed")], cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT),
                                                              "SEGSWEEP_POOL_STATE": str(state)})
    deadline = time.time() + 120
    while time.time() < deadline and not any(w["running"] for w in pool_status(state)["workers"]):
        time.sleep(1)
    driver.kill()  # kill -9: it cannot detach its sweep; its lease on the pool ends with it
    driver.wait()
    deadline = time.time() + 60
    while time.time() < deadline:
        status = pool_status(state)
        if not status["sweeps"] and not any(w["running"] or w["sweeps"] for w in status["workers"]):
            break
        time.sleep(2)
    else:
        pytest.fail(f"the killed driver's sweep still holds the pool: {status}")

    script = ("from orchestrator.pool.resident import join_token; import sys; join_token(sys.argv[1], "
              f"__import__('pathlib').Path({str(state)!r})); import ray; ray.init(address=sys.argv[1], "
              "logging_level='ERROR'); from orchestrator.pool.launch import find_pool; "
              "print('FOUND', find_pool('another-key') is not None, find_pool(sys.argv[2]) is not None)")
    done = subprocess.run([sys.executable, "-c", script, info["address"], info["key"]], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120, check=False)
    assert "FOUND False True" in done.stdout, done.stderr[-2000:]
    assert "the pool on this Ray runs other versions" in done.stderr
    holder = json.loads(state.read_text())["pid"]
    assert stop_holder(state) and read_state(state) is None and not state.exists() and not alive(holder)
    assert not stop_holder(state)  # nothing left to stop
