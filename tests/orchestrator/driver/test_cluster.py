"""A Ray cluster of two nodes on one machine (separate ``ray start`` processes on loopback, each with its own temp
dir): a sweep with ``orchestrate run --address`` spreads over both, the second node gets the data through Ray's
object store (no node reads another node's folder), the driver's store holds every trial, and killing the second
node mid-sweep loses no finished trial."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from orchestrator.store import Store
from tests.conftest import tiny_spec
from tests.orchestrator.service.conftest import free_port

RAY = [sys.executable, "-m", "ray.scripts.scripts"]
ORCHESTRATE = [sys.executable, "-m", "orchestrator.cli"]
# a dead node is noticed in seconds rather than Ray's default half a minute
FAST_HEALTH = {"RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "500",
               "RAY_health_check_failure_threshold": "3", "RAY_health_check_initial_delay_ms": "0"}
# Ray >= 2.5x turns token auth on for a head when ~/.ray/auth_token exists, but not for a joining node, which then
# fails with InvalidAuthToken: every process of this cluster is told the mode and the cluster's own token
AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}


def node_processes(temp_dir: Path) -> list[psutil.Process]:
    """Every process of the Ray node started with ``--temp-dir temp_dir`` (raylet, its workers, its helpers)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(str(temp_dir) in part for part in proc.info["cmdline"] or ()):
            found.append(proc)
    return found


def kill_node(temp_dir: Path) -> None:
    for proc in node_processes(temp_dir):
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


@pytest.fixture
def cluster():
    """A head on 127.0.0.1 and a second node on 127.0.0.2, one CPU each (room for one proxy on the head, a hundred on
    node 2: ``resources.proxy_resources``); torn down by their own temp dirs (``ray
    stop`` would stop the test session's Ray too)."""
    # short paths: Ray's Unix sockets live under the temp dir and their names have a length limit
    head, node = Path(tempfile.mkdtemp(prefix="rh", dir="/tmp")), Path(tempfile.mkdtemp(prefix="rn", dir="/tmp"))
    port = free_port()
    env = {**os.environ, **FAST_HEALTH, **AUTH, "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--num-cpus", "1", "--num-gpus", "0", "--object-store-memory", str(200 << 20), "--disable-usage-stats"]
    try:
        subprocess.run([*RAY, "start", "--head", "--port", str(port), "--node-ip-address", "127.0.0.1",
                        "--include-dashboard", "false", "--temp-dir", str(head), "--resources", '{"proxy": 1}',
                        *common], env=env, check=True, capture_output=True, timeout=120)
        subprocess.run([*RAY, "start", "--address", f"127.0.0.1:{port}", "--node-ip-address", "127.0.0.2",
                        "--temp-dir", str(node), "--resources", '{"proxy": 100}', *common], env=env, check=True,
                       capture_output=True, timeout=120)
        yield f"127.0.0.1:{port}", head, node
    finally:
        kill_node(node)
        kill_node(head)
        shutil.rmtree(head, ignore_errors=True)
        shutil.rmtree(node, ignore_errors=True)


def timelines(run_dir: Path) -> list[list[dict]]:
    out = []
    for path in sorted((run_dir / "pool").glob("worker-*.json")):
        try:
            out.append(json.loads(path.read_text()))
        except ValueError:
            continue  # being rewritten this moment
    return out


def first(timeline: list[dict], event: str) -> dict:
    return next((e for e in timeline if e["event"] == event), {})


@pytest.mark.slow
def test_a_sweep_spreads_over_two_nodes_and_survives_losing_one(cluster, synthetic_root, write_spec, tmp_path):
    address, _, node_dir = cluster
    spec = tiny_spec(synthetic_root, search={"algorithm": "random", "num_samples": 8, "seed": 0,
                                             "scheduler": {"name": "none"}})
    spec["optimizer"]["lr"] = {"loguniform": [0.001, 0.01]}
    spec["trainer"]["max_epochs"] = 5  # seconds a trial: node 2 is killed while one runs
    # one proxy at a time on the head, the others on node 2: the head's worker trains trials whose proxies die with
    # node 2, and must drop them (PoolCallback) rather than wait for their word (a hang, 1 run in 2, before)
    spec["resources"]["proxy_resources"] = {"proxy": 1}
    run_dir = tmp_path / "run"
    env = {**os.environ, **FAST_HEALTH, **AUTH, "WANDB_MODE": "offline"}
    driver = subprocess.Popen([*ORCHESTRATE, "run", str(write_spec(spec)), "--out", str(run_dir), "--address", address],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline, by_node = time.time() + 300, {}
        while time.time() < deadline:  # until each node has finished a trial and node 2 has started another
            by_node = {first(t, "ready").get("node"): t for t in timelines(run_dir)}
            done = {n: [e["trial"] for e in t if e["event"] == "trial"] for n, t in by_node.items()}
            started = {n: [e["trial"] for e in t if e["event"] == "start"] for n, t in by_node.items()}
            remote = [n for n, t in by_node.items() if first(t, "attached").get("data", {}).get("source")
                      in ("object store", "node copy")]
            if len(by_node) == 2 and all(done.values()) and remote and len(started[remote[0]]) > len(done[remote[0]]):
                break
            assert driver.poll() is None, driver.stderr.read()[-3000:]
            time.sleep(0.3)
        else:
            pytest.fail(f"the sweep did not reach both nodes in time: {by_node}")
        before = {t.id: t for t in Store(run_dir / "results.db").trials() if t.status == "completed"}
        running_there = set(started[remote[0]]) - set(done[remote[0]])
        kill_node(node_dir)  # node 2 goes away with its running trial
        _, err = driver.communicate(timeout=150)  # the rest takes well under a minute; longer is the hang
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, err[-3000:]

    # both nodes trained; the second read its own copy of the data, received once from the object store
    (local,) = [t for t in by_node.values() if first(t, "attached")["data"]["source"] == "run cache"]
    (remote,) = [t for t in by_node.values() if t is not local]
    how = first(remote, "attached")["data"]
    assert how["source"] == "object store" and Path(how["path"]).is_relative_to(node_dir), how
    cache = sorted((run_dir / "cache").iterdir())
    assert how["bytes"] == sum(f.stat().st_size for split in cache for f in split.iterdir() if f.is_file())
    assert first(local, "attached")["data"]["path"] == str(run_dir / "cache")
    for t in (local, remote):
        assert [e for e in t if e["event"] == "trial"], "a node trained no trial"

    # the driver's store holds every trial: none lost, those finished before the kill as they were
    trials = {t.id: t for t in Store(run_dir / "results.db").trials()}
    assert len(trials) == 8 and not [t for t in trials.values() if t.status in ("running", "pending")], trials
    for trial_id, t in before.items():
        assert trials[trial_id].status == "completed" and trials[trial_id].best == t.best
    failed = [t for t in trials.values() if t.status == "failed"]
    assert {t.id for t in failed} >= running_there - set(before), "node 2's running trial was killed with it"
    for t in failed:  # each with the reason, as one line
        assert t.error and "\n" not in t.error and ("died" in t.error.lower() or "node" in t.error.lower()), t.error
    assert "Traceback" not in err
