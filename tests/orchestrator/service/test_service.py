"""The service as its users meet it: a real uvicorn server on loopback, real HTTP clients and the CLI client; two
users' sweeps at once, each seeing only their own; every refusal a one-line 4xx that writes nothing; and a server
killed with -9 mid-sweep that, started again, resumes it with nothing lost or run twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import pytest

from orchestrator.pool.resident import read_state, stop_holder
from orchestrator.store import Store
from tests.conftest import ROOT
from tests.orchestrator.service.conftest import ORCHESTRATE, free_port, start_server, tiny_sweep, token, wait_for

pytestmark = pytest.mark.slow


def test_two_users_submit_at_once_both_finish_and_each_sees_only_their_own(service):
    server, tokens = service
    ids: dict[str, str] = {}

    def submit(user: str) -> None:
        with server.client(tokens[user]) as c:
            response = c.post("/api/sweeps", json={"spec": tiny_sweep(server.datasets / f"data-{user}"), "priority": 1})
            assert response.status_code == 201, response.text
            ids[user] = response.json()["id"]

    threads = [threading.Thread(target=submit, args=(u,)) for u in ("alice", "bob")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    alice, bob, root = (server.client(tokens[u]) for u in ("alice", "bob", "root"))
    for user, client in (("alice", alice), ("bob", bob)):
        assert wait_for(client, ids[user], ("finished", "failed"))["state"] == "finished"
    pool = {w["pid"] for w in read_state(server.data / "pool.json")["workers"]}  # the service's one pool
    for user in ("alice", "bob"):  # both users' trials trained on its workers, their results apart
        trained = {int(p.stem.split("-")[1]) for p in (server.data / "runs" / ids[user] / "pool").glob("worker-*")}
        assert trained and trained <= pool
    assert [r["id"] for r in alice.get("/api/sweeps").json()] == [ids["alice"]]
    assert [r["id"] for r in bob.get("/api/sweeps").json()] == [ids["bob"]]
    assert {r["id"] for r in root.get("/api/sweeps").json()} == set(ids.values())  # the admin sees both
    assert bob.get(f"/api/sweeps/{ids['alice']}").status_code == 404  # someone else's sweep: as if missing
    assert bob.post(f"/api/sweeps/{ids['alice']}/cancel").status_code == 404
    trials = alice.get(f"/api/sweeps/{ids['alice']}/trials").json()
    assert len(trials) == 2 and {t["status"] for t in trials} == {"completed"}
    report = alice.get(f"/api/sweeps/{ids['alice']}/report").json()
    assert report["sweep"] == "svc" and len(report["trials"]) == 2
    events = alice.get(f"/api/sweeps/{ids['alice']}/events").text  # a finished sweep: one event, then the end
    assert json.loads(events.split("data: ", 1)[1])["state"] == "finished"
    # the CLI client, with the server and token from the environment
    env = {**os.environ, "SEGSWEEP_SERVER": server.url, "SEGSWEEP_TOKEN": tokens["bob"]}
    queue = subprocess.run([*ORCHESTRATE, "queue"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert queue.stdout.split() [:3] == [ids["bob"], "finished", "svc"]
    logs = subprocess.run([*ORCHESTRATE, "logs", ids["bob"]], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=60)
    assert "[segsweep] 2/2 done (2 completed" in logs.stdout


def test_refusals_are_one_line_and_write_nothing(service):
    server, tokens = service
    alice = server.client(tokens["alice"])
    before = {r["id"] for r in server.client(tokens["root"]).get("/api/sweeps").json()}
    runs = sorted((server.data / "runs").iterdir()) if (server.data / "runs").is_dir() else []
    bad = tiny_sweep(server.datasets / "d").replace("name: dice", "name: dise")
    cases = [
        (server.client(None).get("/api/sweeps"), 401, "no valid token"),
        (server.client("not-a-token").get("/api/sweeps"), 401, "no valid token"),
        (alice.post("/api/sweeps", json={"spec": bad, "filename": "x.yaml"}), 422,
         "x.yaml: loss.name: unknown loss 'dise' (did you mean 'dice'?"),
        (alice.post("/api/sweeps", json={"spec": "name: [unclosed"}), 422, "YAML syntax error"),
        (alice.post("/api/sweeps", content=b"{not json", headers={"content-type": "application/json"}), 422,
         "request body: not valid JSON"),
        (alice.post("/api/sweeps", json={"spec": "x" * 300_000}), 413, "request body over 256 KB"),
        (alice.get("/api/sweeps/0123456789ab"), 404, "no sweep '0123456789ab'"),
        (alice.get("/api/sweeps/..%2F..%2Fservice.db"), 404, "no such page or endpoint"),
        (alice.get("/api/sweeps/..%2Fruns/trials"), 404, "no such page or endpoint"),
        (alice.post("/api/sweeps", json={"priority": 1}), 422, "spec: Field required"),
    ]
    for response, status, message in cases:
        assert response.status_code == status, (response.status_code, response.text)
        error = response.json()["error"]
        assert message in error and "\n" not in error, error
    assert {r["id"] for r in server.client(tokens["root"]).get("/api/sweeps").json()} == before
    assert (sorted((server.data / "runs").iterdir()) if (server.data / "runs").is_dir() else []) == runs


def test_a_sweep_whose_every_trial_failed_is_failed_with_the_reason(service):
    """PAN cannot run at 32x64 (its pyramid pools to nothing): both trials fail, so the sweep is 'failed' with the
    one-line reason, and its trials and report are still there to read."""
    server, tokens = service
    alice = server.client(tokens["alice"])
    spec = tiny_sweep(server.datasets / "d").replace("arch: unet", "arch: pan")
    response = alice.post("/api/sweeps", json={"spec": spec})
    assert response.status_code == 201, response.text
    row = wait_for(alice, response.json()["id"], ("finished", "failed"))
    assert row["state"] == "failed" and row["error"].startswith("every trial failed (2); 2 of them with: ")
    assert "Output size is too small" in row["error"] and "\n" not in row["error"]
    trials = alice.get(f"/api/sweeps/{row['id']}/trials").json()
    assert [t["status"] for t in trials] == ["failed", "failed"]
    assert alice.get(f"/api/sweeps/{row['id']}/report").status_code == 200


def test_a_finished_sweeps_live_page_shows_its_table_and_a_chart(service):
    """Headless Chromium (Debian's, driven by Playwright): sign in with the token, open the live page, find the
    model-wise table and a drawn chart."""
    playwright = pytest.importorskip("playwright.sync_api")
    if not os.path.exists("/usr/bin/chromium"):
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run does)")
    server, tokens = service
    alice = server.client(tokens["alice"])
    sweep_id = next(r["id"] for r in alice.get("/api/sweeps").json() if r["state"] == "finished")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page()
        page.goto(f"{server.url}/sweeps/{sweep_id}")
        assert "/login" in page.url  # no session yet
        page.fill("input[name=token]", tokens["alice"])
        page.click("button")
        page.wait_for_url(f"{server.url}/sweeps/{sweep_id}")
        page.wait_for_selector("table#comparison tr td a", timeout=30_000)
        rows = page.locator("table#comparison tbody tr")
        assert rows.count() == 2
        page.wait_for_selector(".chart .main-svg", timeout=30_000)  # plotly drew it, from the server's own copy
        assert page.inner_text("#state") == "finished"
        page.click("table#comparison tbody tr td a")  # a trial's page: its curves and its best / worst panels
        page.wait_for_selector("figure img")
        assert page.locator("figure img").count() == 2
        browser.close()


def test_the_cli_resumes_and_extends_a_sweep_of_the_server(service):
    """``orchestrate resume ID`` and ``extend ID --trials N`` with SEGSWEEP_SERVER set: the API's resume and extend;
    a refusal is the server's one line."""
    server, tokens = service
    alice = server.client(tokens["alice"])
    sweep = next(r["id"] for r in alice.get("/api/sweeps").json() if r["state"] == "finished")
    env = {**os.environ, "SEGSWEEP_SERVER": server.url, "SEGSWEEP_TOKEN": tokens["alice"]}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*ORCHESTRATE, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)

    refused = cli("resume", sweep)
    assert refused.returncode == 1 and refused.stderr.startswith(
        f"error: {server.url}: 409: sweep {sweep} is finished: only a failed or cancelled sweep resumes")
    extended = cli("extend", sweep, "--trials", "1")
    assert extended.returncode == 0 and extended.stdout.split() == [sweep, "queued", "(extend:1)"], extended.stderr
    cli("cancel", sweep)
    if wait_for(alice, sweep, ("cancelled", "finished"))["state"] == "cancelled":  # else the extension ran first
        resumed = cli("resume", sweep)
        assert resumed.returncode == 0 and resumed.stdout.split() == [sweep, "queued", "(resume)"], resumed.stderr
        cli("cancel", sweep)
        wait_for(alice, sweep, ("cancelled", "finished"))


def test_kill_9_mid_sweep_then_restart_resumes_it_and_keeps_the_queue(tmp_path):
    data, datasets = tmp_path / "svc", tmp_path / "datasets"
    alice = token(data, "alice")
    port = free_port()
    server = start_server(data, port, datasets, max_running=1)
    client = server.client(alice)
    first = client.post("/api/sweeps", json={"spec": tiny_sweep(datasets / "d1", epochs=3,
                                                                 lrs=(0.003, 0.001, 0.0003))}).json()["id"]
    second = client.post("/api/sweeps", json={"spec": tiny_sweep(datasets / "d2", lrs=(0.003,))}).json()["id"]
    store_path = data / "runs" / first / "results.db"
    deadline = time.time() + 300
    while time.time() < deadline:  # one trial done, the next one under way
        trials = Store(store_path).trials() if store_path.is_file() else []
        if any(t.status == "completed" for t in trials) and any(t.status == "running" and t.epochs for t in trials):
            break
        time.sleep(0.5)
    else:
        pytest.fail("no trial finished in time")
    time.sleep(2)  # let Tune snapshot
    runner = client.get(f"/api/sweeps/{first}").json()
    assert runner["state"] == "running"
    pid = next(int(line.split()[0]) for line in subprocess.run(["pgrep", "-af", "orchestrator.service.runner"],
               capture_output=True, text=True).stdout.splitlines() if first in line)
    server.kill()  # kill -9 the server ...
    os.killpg(pid, signal.SIGKILL)  # ... and the sweep's runner ...
    stop_holder(data / "pool.json")  # ... and the service's pool: the machine went down
    done_before = {t.id: t.best for t in Store(store_path).trials() if t.status == "completed"}
    server = start_server(data, port, datasets, max_running=1)
    try:
        client = server.client(alice)
        assert wait_for(client, first, ("finished", "failed"), 400)["state"] == "finished"
        assert wait_for(client, second, ("finished", "failed"), 300)["state"] == "finished"  # the queue was kept
        after = Store(store_path).trials(history=True)
        assert len(after) == 3 and len({t.id for t in after}) == 3 and all(t.status == "completed" for t in after)
        assert all({t.id: t.best for t in after}[i] == best for i, best in done_before.items())  # kept as they were
        assert all([h["epoch"] for h in t.history] == [1, 2, 3] for t in after)  # no epoch twice, none missing
        assert "resuming" in (data / "logs" / f"{first}.log").read_text()
    finally:
        server.stop()
