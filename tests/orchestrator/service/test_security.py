"""Safe to share: each attack of issue 25 tried against a real server on loopback (uvicorn in a process of its own),
with a real HTTP client, Debian's chromium and a real sshd, and each fails: no command runs from a spec (no file
appears from a ProxyCommand), no value of the server's environment reaches a response, no script runs on any page of
a sweep whose strings are scripts, a body over the limit is refused however it is sent, tokens can be listed, rotated
and revoked and a browser session ends with its token, and a sweep starts a Ray of its own that listens on
loopback only. Every refused request writes nothing."""

from __future__ import annotations

import os
import secrets
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import psutil
import pytest
import yaml
from PIL import Image

from orchestrator.gpu import gpu_count
from orchestrator.pool.resident import read_state
from tests.conftest import ROOT
from tests.orchestrator.conftest import free_port
from tests.orchestrator.service.conftest import ORCHESTRATE, Server, start_server, token, wait_for

pytestmark = pytest.mark.slow  # one real sweep: the hostile one, whose pages the browser reads

LINK = "[Session expired: sign in again](https://evil.example/login)"  # a class name: markdown, not a link
SCRIPT = '</script><img src=x onerror="window.__pwned=1;alert(1)">'  # a class name
FOLDER = "<svg onload=window.__pwned=2;alert(2)>"  # a folder name in data.root
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


@dataclass
class Secure:
    server: Server
    tokens: dict[str, str]
    canary: str  # a value of the server's environment
    marker: Path  # a ProxyCommand's file
    sweep: str  # alice's hostile sweep, finished
    ray_listens: set[str]  # the addresses its Ray (the service pool's) listened on (and gcs_server: a Ray of its own)


def orchestrate(*args: str, env: dict[str, str | None] | None = None) -> subprocess.CompletedProcess:
    """The CLI in a process of its own; ``env`` adds to this one's environment (None: unset)."""
    merged = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
    return subprocess.run([*ORCHESTRATE, *args], capture_output=True, text=True, cwd=ROOT, timeout=120, env=merged)


def folder_dataset(root: Path) -> Path:
    """A ``folder`` dataset (images/ + masks/, train and val) in a folder whose name is markup."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("val", 4)):
        for kind in ("images", "masks"):
            (root / kind / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            mask = (rng.random((40, 72)) > 0.5).astype(np.uint8)
            image = (rng.random((40, 72, 3)) * 80 + mask[..., None] * 120).astype(np.uint8)
            Image.fromarray(image).save(root / "images" / split / f"{i}.png")
            Image.fromarray(mask).save(root / "masks" / split / f"{i}.png")
    return root


def hostile_spec(root: Path, **sections) -> dict:
    spec = {"name": "hostile", "data": {"dataset": "folder", "root": str(root), "size": [32, 64], "resize": "resize",
                                        "class_map": [{"name": "bg", "value": 0}, {"name": SCRIPT, "value": 1},
                                                      {"name": LINK, "value": 2}]},
            "model": {"arch": "unet", "encoder": "resnet18"}, "loss": {"name": "dice"},
            "optimizer": {"name": "adam", "lr": {"choice": [0.003, 0.001]}},
            "trainer": {"max_epochs": 1, "batch_size": 4, "log_images": 0, "best_worst": 1, "checkpoint_every_s": 0},
            "search": {"algorithm": "grid", "metric": "val/miou", "mode": "max", "scheduler": {"name": "none"}},
            "resources": {"cpus_per_trial": 1, "max_concurrent": 1}, "tracking": {"wandb": {"mode": "disabled"}},
            "export": {"backends": ["ort-cpu"], "targets": ["loopback"], "top_k": 1, "warmup": 0, "iters": 2}}
    return spec | sections


def listening(pid: int) -> set[str]:
    """The addresses the process and its descendants listen on, and ``gcs_server`` if one of them is a Ray GCS (the
    runner started its own Ray)."""
    found = set()
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return found
    for proc in procs:
        try:
            found |= {c.laddr.ip for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
            found |= {"gcs_server"} if proc.name() == "gcs_server" else set()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


@pytest.fixture(scope="module")
def secure(tmp_path_factory, sshd) -> Secure:
    """A server with users alice, bob and root (admin), a registered target ``loopback`` (the real sshd), a data root,
    a canary in its environment; alice's sweep of a folder dataset whose class and folder names are markup, exported
    to the named target. While it runs, the addresses its Ray listens on are recorded."""
    data, datasets = tmp_path_factory.mktemp("secure"), tmp_path_factory.mktemp("datasets")
    tokens = {"alice": token(data, "alice"), "bob": token(data, "bob"), "root": token(data, "root", admin=True)}
    url, options = sshd
    added = orchestrate("target", "add", "loopback", url, "--remote-python", sys.executable, "--data", str(data),
                        *[a for o in options for a in ("--ssh-option", o)])
    assert added.returncode == 0, added.stderr
    canary = f"canary-{secrets.token_hex(8)}"
    server = start_server(data, free_port(), datasets, env={"SEGSWEEP_CANARY": canary, "IDD_LITE_ROOT": f"/{canary}"})
    try:
        alice = server.client(tokens["alice"])
        response = alice.post("/api/sweeps", json={"spec": yaml.safe_dump(hostile_spec(folder_dataset(
            datasets / FOLDER)))})
        assert response.status_code == 201, response.text
        sweep, addresses = response.json()["id"], set()
        deadline = time.time() + 600
        while time.time() < deadline and alice.get(f"/api/sweeps/{sweep}").json()["state"] in ("queued", "running"):
            with sqlite3.connect(data / "service.db") as db:
                pid = db.execute("SELECT pid FROM sweeps WHERE id = ?", (sweep,)).fetchone()[0]
            if pid:
                addresses |= listening(pid)
            pool = read_state(data / "pool.json")  # the service's pool: its Ray is the sweeps' Ray
            if pool:
                addresses |= listening(pool["pid"])
            time.sleep(0.5)
        assert wait_for(alice, sweep, ("finished", "failed"), 10)["state"] == "finished"
        yield Secure(server, tokens, canary, tmp_path_factory.mktemp("marker") / "ran", sweep, addresses)
    finally:
        server.stop()


def snapshot(s: Secure) -> tuple:
    """What a request could write: the queue, and every file of the service's folder but its database."""
    sweeps = tuple(sorted(r["id"] for r in s.server.client(s.tokens["root"]).get("/api/sweeps").json()))
    files = tuple(sorted(str(p.relative_to(s.server.data)) for p in s.server.data.rglob("*")
                         if not p.name.startswith("service.db") and not p.name.startswith("serve-")))
    return sweeps, files


def test_no_spec_runs_a_command_or_reads_outside_the_data_roots(secure):
    """Issue 25's first attack and its relatives: each submitted spec is a 422 with one line naming the key, nothing
    is queued or written, and no file appears from a ProxyCommand."""
    s = secure
    alice = s.server.client(s.tokens["alice"])
    root, other_run = s.server.datasets / FOLDER, s.server.data / "runs" / s.sweep
    touch = f"ProxyCommand=sh -c 'touch {s.marker}'"
    (s.server.datasets / "escape").symlink_to(s.server.data)
    before = snapshot(s)
    attacks = [
        ({"export": {"targets": ["ssh://x@127.0.0.1:9"], "ssh_options": [touch]}}, (), "export.ssh_options"),
        ({"export": {"targets": ["loopback"], "ssh_options": [touch]}}, (), "export.ssh_options: not accepted"),
        ({}, (f"export.ssh_options=[\"{touch}\"]",), "export.ssh_options: not accepted"),
        ({"export": {"targets": ["loopback"], "remote_python": "/bin/sh"}}, (), "export.remote_python: not accepted"),
        ({"export": {"targets": ["ssh://x@127.0.0.1:9"]}}, (), "registered targets only"),
        ({"export": {"targets": ["jetson9"]}}, (), "export.targets: unknown target 'jetson9' (registered: loopback"),
        ({"search": {"algorithm": "grid", "metric": "val/miou", "mode": "max",
                     "latency_proxy": {"backend": "ort-cpu", "target": "ssh://x@127.0.0.1:9"}}}, (),
         "search.latency_proxy.target: ssh://x@127.0.0.1:9: the server measures on registered targets only"),
        ({}, ("search.latency_proxy={backend: ort-cpu, target: loopback, ssh_options: [LocalCommand=id]}",),
         "search.latency_proxy.ssh_options: not accepted"),
        ({}, ("data.root=/etc",), "data.root: /etc: outside the server's data roots"),
        ({}, ("data.root=etc",), "data.root: etc: give an absolute path"),
        ({}, (f"data.root={s.server.datasets}/../{s.server.data.name}",), "outside the server's data roots"),
        ({}, (f"data.root={s.server.datasets / 'escape' / 'runs'}",), "outside the server's data roots"),
        ({}, (f"data.root={other_run}",), "outside the server's data roots"),
        ({}, ("model.encoder_weights=/etc/passwd",), "model.encoder_weights: /etc/passwd: outside"),
        ({}, ("model.encoder_weights=tu:../../etc/passwd",), "model.encoder_weights: tu:../../etc/passwd: give an"),
        ({}, ("model.encoder_weights={choice: [null, /etc/passwd]}",), "model.encoder_weights: /etc/passwd: outside"),
        ({}, ("model={choice: [{arch: unet, encoder: resnet18, encoder_weights: /etc/shadow}]}",),
         "model.encoder_weights: /etc/shadow: outside"),
        ({}, ("data.val_split=../../escape",), "data.val_split: '../../escape': a split is a folder name"),
    ]
    for sections, sets, message in attacks:
        spec = hostile_spec(root, **sections)
        response = alice.post("/api/sweeps", json={"spec": yaml.safe_dump(spec), "sets": list(sets)})
        error = response.json()["error"]
        assert response.status_code == 422 and message in error and "\n" not in error, (sets, error)
    # CLI users: the same allow-list on the server's machine
    spec_file = s.marker.with_name("evil.yaml")
    spec_file.write_text(yaml.safe_dump(hostile_spec(root, export={"targets": ["ssh://x@127.0.0.1:9"],
                                                                   "ssh_options": [touch]})))
    for args, message in [
        (("validate", str(spec_file)), "export.ssh_options: ssh option ProxyCommand: refused"),
        (("bench", "--arch", "unet", "--encoder", "resnet18", "--shape", "1x3x64x64", "--target",
          "ssh://x@127.0.0.1:9", "--ssh-option", touch), "ssh option ProxyCommand: refused (it runs a command on"),
        (("target", "add", "evil", "ssh://x@127.0.0.1:9", "--ssh-option", touch, "--data", str(s.server.data)),
         "ssh option ProxyCommand: refused"),
    ]:
        done = orchestrate(*args)
        assert done.returncode in (1, 2) and message in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert snapshot(s) == before and not s.marker.exists()


def test_a_second_attackers_findings_are_refused_cheaply_with_one_line(secure):
    """An attacker's review after issue 25: YAML that builds bytes (``!!binary``, past every check of strings) or
    expands aliases (a few hundred bytes to gigabytes), a timm pattern as an encoder (6.6 ms a value), sizes that fill
    the disk or hold the workers for ever, numbers that broke the server (a 500): each a 422 with one line, at once,
    nothing queued or written; a markdown link in a class name is text on the report page."""
    import base64

    s = secure
    alice = s.server.client(s.tokens["alice"])
    root = s.server.datasets / FOLDER
    spec = yaml.safe_dump(hostile_spec(root))
    etc = base64.b64encode(b"/etc").decode()
    bomb = "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9) if i else ', '.join('x' * 9)}]\n" for i in range(9))
    before = snapshot(s)
    for body, message in [
        ({"spec": spec, "sets": [f"data.root=!!binary {etc}"]}, "the tag tag:yaml.org,2002:binary is not accepted"),
        ({"spec": spec.replace(f"root: {root}", f"root: !!binary {etc}")}, "is not accepted in a sweep file"),
        ({"spec": bomb + spec}, "anchors and aliases (*name) are not accepted"),
        ({"spec": spec, "sets": ["model.encoder={choice: [" + ", ".join(["tu-*"] * 2000) + "]}"]},
         "unknown timm encoder 'tu-*'"),
        ({"spec": spec, "sets": ["search.num_samples=1000000000"]}, "search.num_samples: 1e+09 is more than this "
                                                                    "server takes (at most 1000)"),
        ({"spec": spec, "sets": ["trainer.max_epochs={int: [1, 1000000000]}"]}, "trainer.max_epochs: 1e+09 is more"),
        ({"spec": spec, "sets": ["data.size=[32000, 32000]"]}, "data.size: 32000 is more than this server takes"),
        # thousands of worker processes for a sweep of its own (serve --no-pool, or a pool of other versions)
        ({"spec": spec, "sets": ["resources.trials_per_gpu=10000"]}, "resources.trials_per_gpu: 10000 is more than"),
        ({"spec": spec, "sets": ["resources.workers_per_gpu=10000"]}, "resources.workers_per_gpu: 10000 is more"),
        ({"spec": spec, "sets": ["resources.cpus_per_trial=0.001"]}, "resources.cpus_per_trial: 0.001 is less than "
                                                                     "this server takes (at least 0.5)"),
        ({"spec": spec, "priority": 2**70}, "priority: Input should be less than or equal to 1000"),
    ]:
        started = time.perf_counter()
        response = alice.post("/api/sweeps", json=body)
        error = response.json()["error"]
        assert response.status_code == 422 and message in error and "\n" not in error, (body.get("sets"), error)
        assert time.perf_counter() - started < 5
    assert snapshot(s) == before
    logs = alice.get(f"/api/sweeps/{s.sweep}/logs", params={"offset": 10**30})
    assert logs.status_code == 422 and "offset" in logs.json()["error"]
    assert logs.headers["content-security-policy"].startswith("default-src 'none'")


def test_the_servers_environment_reaches_no_response(secure):
    """${VAR} takes the client's values, never the server's: a spec naming the server's variables is refused without
    their values, a value that is itself a reference is refused, and README's own example (--set before ${VAR}) is
    accepted from the CLI with IDD_LITE_ROOT unset there."""
    s = secure
    alice = s.server.client(s.tokens["alice"])
    root = s.server.datasets / FOLDER
    before = snapshot(s)
    for spec, env, message in [
        (hostile_spec(root, name="leak-${SEGSWEEP_CANARY}"), {}, "name: environment variable SEGSWEEP_CANARY is not"),
        (hostile_spec(root, name="x", data={**hostile_spec(root)["data"], "root": "${SEGSWEEP_CANARY}"}), {},
         "data.root: environment variable SEGSWEEP_CANARY is not set"),
        (hostile_spec(root, name="${A}"), {"A": "${SEGSWEEP_CANARY}"}, "name: a ${...} is left after expansion"),
    ]:
        response = alice.post("/api/sweeps", json={"spec": yaml.safe_dump(spec), "env": env})
        assert response.status_code == 422 and message in response.json()["error"], response.text
        assert s.canary not in response.text
    assert snapshot(s) == before
    idd = s.server.datasets / "idd-lite"
    idd.mkdir()
    env = {"SEGSWEEP_SERVER": s.server.url, "SEGSWEEP_TOKEN": s.tokens["bob"]}
    submitted = orchestrate("submit", "sweeps/idd_lite_loss.yaml", "--set", f"data.root={idd}",
                            env={**env, "IDD_LITE_ROOT": None})
    assert submitted.returncode == 0 and submitted.stdout.startswith("queued idd_lite_loss as sweep"), submitted.stderr
    readme = submitted.stdout.split()[-1]
    orchestrate("cancel", readme, env=env)
    assert f"root: {idd}" in s.server.client(s.tokens["bob"]).get(f"/api/sweeps/{readme}").json()["spec"]
    wait_for(s.server.client(s.tokens["bob"]), readme, ("cancelled", "failed", "finished"))


def test_a_chunked_body_over_the_limit_is_413_and_writes_nothing(secure):
    s = secure
    alice = s.server.client(s.tokens["alice"])
    before = snapshot(s)
    for size in (300_000, 60 * 2**20):
        body = b'{"spec": "' + b"x" * size + b'"}'
        chunks = (body[i:i + 2**20] for i in range(0, len(body), 2**20))  # no Content-Length: chunked
        response = alice.post("/api/sweeps", content=chunks, headers={"content-type": "application/json"})
        assert response.status_code == 413 and response.json() == {
            "error": "request body over 256 KB: a sweep file is a few KB"}
    assert snapshot(s) == before


def test_tokens_are_managed_and_a_browser_session_ends_with_its_token(secure):
    s = secure
    data, url = s.server.data, s.server.url
    carol, dave = token(data, "carol"), token(data, "dave", admin=True)
    again = orchestrate("token", "add", "carol", "--data", str(data))
    assert again.returncode == 1 and "error: user carol exists: --rotate gives them a new token" in again.stderr

    def browser(tok: str) -> httpx.Client:
        client = httpx.Client(base_url=url, timeout=30)
        assert client.post("/login", data={"token": tok, "next": "/"}).status_code == 303
        assert client.get("/").status_code == 200
        return client

    session = browser(carol)
    rotated = orchestrate("token", "add", "carol", "--rotate", "--data", str(data))
    assert rotated.returncode == 0 and "(admin)" not in rotated.stdout  # the role is kept: a user
    new = rotated.stdout.split()[-1]
    assert s.server.client(carol).get("/api/sweeps").status_code == 401  # the old token ...
    assert session.get("/").status_code == 303  # ... and the session opened with it end
    assert s.server.client(new).get("/api/sweeps").json() == []  # carol's own: none
    dave_rotated = orchestrate("token", "add", "dave", "--rotate", "--data", str(data)).stdout
    assert "(admin)" in dave_rotated
    assert s.sweep in {r["id"] for r in s.server.client(dave_rotated.split()[-1]).get("/api/sweeps").json()}
    listed = orchestrate("token", "list", "--data", str(data)).stdout
    assert [line.split()[:2] for line in listed.splitlines()] == [
        ["alice", "user"], ["bob", "user"], ["carol", "user"], ["dave", "admin"], ["root", "admin"]]
    assert "last used" in listed and not any(t in listed for t in (carol, new, dave, *s.tokens.values()))
    session = browser(new)
    assert session.post(f"/api/sweeps/{s.sweep}/cancel").status_code == 401  # a cookie never acts, it reads
    assert orchestrate("token", "revoke", "carol", "--data", str(data)).returncode == 0
    assert s.server.client(new).get("/api/sweeps").status_code == 401 and session.get("/").status_code == 303
    session = browser(dave_rotated.split()[-1])
    assert session.get("/logout").status_code == 303 and session.get("/").status_code == 303
    started = time.perf_counter()
    assert s.server.client("wrong").get("/api/sweeps").status_code == 401
    assert time.perf_counter() - started >= 0.25  # a failed login is slowed down


def test_no_script_runs_on_any_page_of_a_hostile_sweep(secure):
    """Debian's chromium, signed in as the admin, reads every page of alice's sweep, whose class name and folder name
    are markup: the strings show as text, charts draw under the Content-Security-Policy, no dialog opens and
    ``window.__pwned`` stays unset."""
    playwright = pytest.importorskip("playwright.sync_api")
    if not os.path.exists("/usr/bin/chromium"):
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run does)")
    s = secure
    trials = [t["id"] for t in s.server.client(s.tokens["alice"]).get(f"/api/sweeps/{s.sweep}/trials").json()]
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page()
        dialogs, violations = [], []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
        page.goto(f"{s.server.url}/login?next={quote('/sweeps/' + s.sweep)}")
        page.fill("input[name=token]", s.tokens["root"])
        page.click("button")
        page.wait_for_url(f"{s.server.url}/sweeps/{s.sweep}")
        page.wait_for_selector("table#comparison tbody tr td a", timeout=30_000)
        page.wait_for_selector(".chart .main-svg", timeout=30_000)
        assert SCRIPT in page.inner_text("table#comparison")  # the class name, as text
        pages = [("/", "#queue"), (f"/sweeps/{s.sweep}/report", ".chart .main-svg"),
                 *[(f"/sweeps/{s.sweep}/trials/{t}", ".chart .main-svg") for t in trials],
                 (f"/sweeps/{quote(SCRIPT, safe='')}", "p.error"), (f"/login?next={quote(SCRIPT)}", "form"),
                 (f"/api/sweeps/{s.sweep}", "body"), (f"/api/sweeps/{s.sweep}/trials", "body"),
                 (f"/api/sweeps/{s.sweep}/report", "body"), (f"/sweeps/{s.sweep}/fragment", "body"),
                 (f"/api/sweeps/{s.sweep}/logs", "body")]
        for path, ready in pages:
            page.goto(s.server.url + path)
            page.wait_for_selector(ready, timeout=30_000)
            page.wait_for_timeout(300)  # an onerror / onload would have fired
            assert page.evaluate("window.__pwned") is None, path
        page.goto(f"{s.server.url}/sweeps/{s.sweep}/report")
        assert SCRIPT in page.inner_text("#report")  # report.md's table, the class name as text
        assert LINK in page.inner_text("#report") and page.locator('a[href*="evil.example"]').count() == 0
        with page.expect_download() as download:  # the run's own report.html: a download, never a page here
            page.evaluate(f"window.location = '/sweeps/{s.sweep}/report.html'")
        assert download.value.suggested_filename == f"hostile-{s.sweep}-report.html"
        assert page.evaluate("window.__pwned") is None and dialogs == [] and violations == []
        browser.close()


def test_a_named_target_measures_and_ray_listens_on_loopback_only(secure):
    s = secure
    report = s.server.client(s.tokens["alice"]).get(f"/api/sweeps/{s.sweep}/report").json()
    latency = [row for t in report["trials"] for row in t["latency"]]
    assert [(r["backend"], r["target"], r["status"]) for r in latency] == [("ort-cpu", "loopback", "ok")]
    assert "gcs_server" in s.ray_listens, s.ray_listens  # a Ray of its own, whatever else runs on the machine
    assert s.ray_listens - {"gcs_server"} and s.ray_listens - {"gcs_server"} <= LOOPBACK, s.ray_listens


def test_nothing_of_the_servers_environment_in_any_response(secure):
    """Every endpoint and page of every sweep, for its owner and the admin: the canary is nowhere."""
    s = secure
    for user in ("alice", "bob", "root"):
        api = s.server.client(s.tokens[user])
        session = httpx.Client(base_url=s.server.url, timeout=60)
        session.post("/login", data={"token": s.tokens[user], "next": "/"})
        texts = [api.get("/api/sweeps").text, session.get("/").text]
        for row in api.get("/api/sweeps").json():
            base = f"/api/sweeps/{row['id']}"
            texts += [api.get(base + end).text for end in ("", "/trials", "/report", "/logs", "/events")]
            texts += [session.get(f"/sweeps/{row['id']}{end}").text for end in ("", "/fragment", "/report")]
        assert all(s.canary not in text for text in texts)


def test_serve_refuses_gpus_it_lacks_and_a_data_root_over_its_data(tmp_path):
    lacking = str(gpu_count())  # GPU indices run 0 .. count-1: this one is missing (0 on a machine without GPUs)
    (tmp_path / "datasets").mkdir()
    for args, message in [
        (("--gpus", lacking), f"error: --gpus {lacking}: this machine has "),
        (("--data-root", str(tmp_path)), f"error: --data-root {tmp_path}: it overlaps the service's --data"),
        (("--data-root", str(tmp_path / "none")), "no such folder"),
    ]:
        done = orchestrate("serve", "--data", str(tmp_path / "svc"), "--port", str(free_port()), *args)
        assert done.returncode == 1 and message in done.stderr and done.stderr.count("\n") == 1, done.stderr
