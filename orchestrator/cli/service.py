"""Commands of the service. On the server's machine, for its admin: ``serve``, ``token add|list|revoke`` (users and
their tokens), ``target add|list|remove`` (the named latency targets specs may use). From anywhere (``--server`` /
``SEGSWEEP_SERVER``, ``--token`` / ``SEGSWEEP_TOKEN``): ``submit``, ``queue``, ``cancel``, ``logs``, and ``resume`` /
``extend`` of a sweep id (``orchestrate resume ID`` goes to the server when one is set and ID is no run directory
here). ``bench-serve`` measures the server under load."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
import yaml

from orchestrator.cli.options import ServerOption, SetOption, TableFormat, TableFormatOption, TokenOption
from orchestrator.cli.pool import resources
from orchestrator.errors import SegsweepError
from orchestrator.latency.targets import TARGETS_ENV, NamedTarget, load_targets, save_targets
from orchestrator.spec.keys import ENV_REFERENCE, load_yaml, parse_override, strings

DataOption = Annotated[Path, typer.Option("--data", help="the service's folder: its database, runs and logs "
                                          "(default $SEGSWEEP_DATA or ./segsweep-data)")]
DEFAULT_DATA = Path(os.environ.get("SEGSWEEP_DATA", "segsweep-data"))

token_app = typer.Typer(no_args_is_help=True, help="Users of the service and their tokens (on the server's machine).")
target_app = typer.Typer(no_args_is_help=True, help="Named latency targets that specs may measure on (on the server's "
                                                    "machine): their address, ssh options and interpreter stay here.")


def serve(
    host: Annotated[str, typer.Option(help="address to listen on (loopback by default)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8765,
    data: DataOption = DEFAULT_DATA,
    data_root: Annotated[Optional[list[Path]], typer.Option(
        "--data-root", help="a folder whose contents specs may read (data.root, weights files); repeatable. "
                            "Without one, no spec can name data on this server")] = None,
    gpus: Annotated[Optional[str], typer.Option(help="GPUs of the service, e.g. 0,1: the pool's (or, with --no-pool, "
                                                "one per sweep)")] = None,
    address: Annotated[Optional[str], typer.Option(help="run every sweep on this Ray cluster instead")] = None,
    max_running: Annotated[int, typer.Option(min=1, help="sweeps at once (with --no-pool and --gpus: one per "
                                             "GPU)")] = 4,
    max_connections: Annotated[int, typer.Option(min=8, help="connections served at once; more get 503")] = 256,
    max_sweep_hours: Annotated[float, typer.Option(min=0, help="a sweep running longer is stopped as a cancel "
                                                   "would (resumable); 0: no limit")] = 24.0,
    pool: Annotated[bool, typer.Option("--pool/--no-pool", help="one pool of warm trial workers for every sweep "
                                       "(kept in DATA/pool.json, it outlives a killed server); --no-pool: each "
                                       "sweep starts its own Ray and workers")] = True,
    set_: SetOption = None,
) -> None:
    """Run segsweep as a service: the queue, the HTTP API and the web pages. ``--set resources.KEY=VALUE`` shapes the
    pool as a spec's resources would."""
    # lazy: the server's libraries (FastAPI, uvicorn, the reports) are not the CLI's start
    import uvicorn

    from orchestrator.service.app import create_app
    from orchestrator.service.db import ServiceDB
    from orchestrator.service.policy import SubmitPolicy
    from orchestrator.service.queue import Scheduler

    data = data.absolute()
    gpu_list = None if address else machine_gpus(gpus)
    # the service's folder is its owner's alone: every user's runs, logs, the queue, the pool's token
    data.mkdir(parents=True, exist_ok=True)
    data.chmod(0o700)
    os.umask(0o077)
    policy = SubmitPolicy(data_roots(data_root or [], data))
    os.environ[TARGETS_ENV] = str(data / "targets.json")  # the registry the server checks and its runners measure with
    held = None
    if pool and not address:
        held = service_pool(data, gpu_list, resources(set_ or []))
        address, gpu_list = held["address"], None  # every sweep joins the pool; its GPUs are the pool's
    if address:  # a pool's Ray (the service's, or orchestrate pool start's) takes its token, as run --address does
        from orchestrator.pool.resident import join_token  # lazy: only a joining server needs it

        join_token(address, data / "pool.json" if held else None)  # into this environment, which runners inherit
    scheduler = Scheduler(ServiceDB(data / "service.db"), data, gpu_list, max_running, address,
                          max_sweep_hours or None)
    scheduler.start()
    roots = ", ".join(map(str, policy.data_roots)) or "none: no spec can name data here"
    where = (f"a pool of {len(held['workers'])} warm worker(s)" if held else f"GPUs {gpus}" if gpu_list else
             f"Ray at {address}" if address else "a Ray of each sweep's own")
    typer.echo(f"segsweep serving http://{host}:{port} (data {data}; data roots {roots}; {where}; "
               f"{max_running} sweep(s) at once)", err=True)
    # at most max_connections at once (then 503s): half-open connections cannot use up the server's file descriptors;
    # no X-Forwarded-For trusted (a client would choose its own address for the login throttle); put a proxy with
    # timeouts in front of a server shared beyond loopback
    uvicorn.run(create_app(data, scheduler, policy), host=host, port=port, log_level="warning", server_header=False,
                limit_concurrency=max_connections, proxy_headers=False, timeout_keep_alive=5)


def service_pool(data: Path, gpus: list[int] | None, shape: dict) -> dict:
    """The service's pool (``DATA/pool.json``): the one still running from before (a killed server's sweeps go on
    there) if it runs this installation's versions, else a new one on the service's GPUs. It outlives the server."""
    from orchestrator.pool.resident import pool_key, read_state, start_holder, stop_holder  # lazy: small, but Ray

    state = data / "pool.json"
    info = read_state(state)
    if info is not None and info.get("key") == pool_key():
        typer.echo(f"[segsweep] the service's pool is running already ({info['address']}): used", err=True)
        return info
    if info is not None:
        typer.echo("[segsweep] the service's pool runs other versions: stopped, a new one starts", err=True)
        stop_holder(state)
    typer.echo("[segsweep] starting the service's pool of warm trial workers", err=True)
    return start_holder(state, shape, visible_gpus=gpus)


def machine_gpus(text: str | None) -> list[int] | None:
    """``--gpus 0,1`` as indices of GPUs this machine has; one it lacks (any, on a machine without GPUs) is an error."""
    from orchestrator.gpu import gpu_count  # lazy: NVML

    if not text:
        return None
    try:
        gpus = [int(g) for g in text.split(",")]
    except ValueError:
        raise SegsweepError(f"--gpus {text}: expected GPU indices, e.g. 0,1") from None
    count = gpu_count()
    missing = [g for g in gpus if not 0 <= g < count]
    if missing:
        has = f"GPUs 0-{count - 1}" if count > 1 else "GPU 0" if count else "no GPU"
        raise SegsweepError(f"--gpus {text}: this machine has {has} (no GPU {', '.join(map(str, missing))}); "
                            f"leave --gpus out to run sweeps without GPUs")
    if len(set(gpus)) != len(gpus):
        raise SegsweepError(f"--gpus {text}: a GPU named twice")
    return gpus


def data_roots(roots: list[Path], data: Path) -> tuple[Path, ...]:
    """The folders specs may read from: each must exist and stay apart from the service's own folder (its cookie key,
    token hashes and every user's runs)."""
    out = []
    for root in roots:
        resolved, own = root.resolve(), data.resolve()
        if not resolved.is_dir():
            raise SegsweepError(f"--data-root {root}: no such folder")
        if resolved == own or own.is_relative_to(resolved) or resolved.is_relative_to(own):
            raise SegsweepError(f"--data-root {root}: it overlaps the service's --data {data} (its key, tokens and "
                                f"every user's runs); give a folder of datasets apart from it")
        out.append(resolved)
    return tuple(out)


# ------------------------------------------------------------------------------------------------ users and tokens
def _db(data: Path):
    from orchestrator.service.db import ServiceDB  # lazy, as in serve

    return ServiceDB(data.absolute() / "service.db")


@token_app.command("add")
def token_add(
    name: Annotated[str, typer.Argument(help="the user's name")],
    admin: Annotated[Optional[bool], typer.Option("--admin/--no-admin", help="sees and acts on every user's sweeps "
                                                  "(with --rotate: default, the role they have)")] = None,
    rotate: Annotated[bool, typer.Option("--rotate", help="a new token for an existing user; the old one and its "
                                         "browser sessions end")] = False,
    data: DataOption = DEFAULT_DATA,
) -> None:
    """A token for NAME, printed once as the last word (the service keeps only its hash). NAME must be new, unless
    --rotate."""
    if not name.replace("-", "").replace("_", "").isalnum():
        raise SegsweepError(f"{name!r}: a user name is letters, digits, - and _")
    db = _db(data)
    token = db.rotate(name, admin) if rotate else db.add_user(name, bool(admin))
    role = " (admin)" if next(u.admin for u in db.users() if u.name == name) else ""
    typer.echo(f"{'new ' if rotate else ''}token for {name}{role}, shown once: {token}")


@token_app.command("list")
def token_list(data: DataOption = DEFAULT_DATA) -> None:
    """Users: name, role, when their token was made and last used (never a token)."""
    def when(at: float | None) -> str:
        return datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M") if at else "never"

    for u in _db(data).users():
        typer.echo(f"{u.name}  {'admin' if u.admin else 'user '}  created {when(u.created_at)}  "
                   f"last used {when(u.last_used_at)}")


@token_app.command("revoke")
def token_revoke(name: Annotated[str, typer.Argument(help="the user's name")], data: DataOption = DEFAULT_DATA) -> None:
    """End NAME's token and every browser session opened with it, now; their sweeps stay (an admin sees them)."""
    _db(data).revoke(name)
    typer.echo(f"revoked {name}'s token")


# ------------------------------------------------------------------------------------------------ named targets
@target_app.command("add")
def target_add(
    name: Annotated[str, typer.Argument(help="the name specs use (export.targets, search.latency_proxy.target)")],
    url: Annotated[str, typer.Argument(help="ssh://[user@]host[:port] (an ~/.ssh/config alias works)")],
    ssh_option: Annotated[Optional[list[str]], typer.Option(help="passed to ssh as -o KEY=VALUE (repeatable; "
                                                            "options that run commands are refused)")] = None,
    remote_python: Annotated[str, typer.Option(help="interpreter on the target")] = "python3",
    replace: Annotated[bool, typer.Option("--replace", help="replace a target of that name")] = False,
    data: DataOption = DEFAULT_DATA,
) -> None:
    """Register a target that specs may name, with the ssh options and interpreter it is reached with."""
    path = data.absolute() / "targets.json"
    targets = load_targets(path)
    if name in targets and not replace:
        raise SegsweepError(f"target {name} exists ({targets[name].url}): --replace replaces it")
    targets[name] = NamedTarget(name, url, tuple(ssh_option or ()), remote_python)
    save_targets(targets, path)
    typer.echo(f"target {name}: {url}")


@target_app.command("list")
def target_list(data: DataOption = DEFAULT_DATA) -> None:
    """Registered targets: name, address, ssh options, interpreter."""
    for t in load_targets(data.absolute() / "targets.json").values():
        options = " ".join(f"-o {o}" for o in t.ssh_options)
        typer.echo("  ".join(part for part in (t.name, t.url, options, f"python {t.remote_python}") if part))


@target_app.command("remove")
def target_remove(name: Annotated[str, typer.Argument(help="the target's name")],
                  data: DataOption = DEFAULT_DATA) -> None:
    """Remove a target; specs naming it are refused from now on."""
    path = data.absolute() / "targets.json"
    targets = load_targets(path)
    if targets.pop(name, None) is None:
        raise SegsweepError(f"no target {name} (orchestrate target list shows them)")
    save_targets(targets, path)
    typer.echo(f"removed target {name}")


# ------------------------------------------------------------------------------------------------ clients
def _client(server: str | None, token: str | None):
    from orchestrator.service.client import Client  # lazy: httpx

    return Client(server, token)


def client_env(text: str, sets: list[str]) -> dict[str, str]:
    """The values, from this shell, of the variables the spec's values and ``--set`` refer to (``${VAR}``): the
    server expands with these, never with its own environment. Comments are not read."""
    try:
        values: list[Any] = [load_yaml(text)]
        values += [parse_override(item)[1] for item in sets]
    except (yaml.YAMLError, SegsweepError):
        return {}  # the server names the syntax error
    names = {m.group(1) for v in values for s in strings(v) for m in ENV_REFERENCE.finditer(s)}
    return {name: os.environ[name] for name in sorted(names) if name in os.environ}


def submit(
    spec: Annotated[Path, typer.Argument(help="sweep YAML file")],
    set_: SetOption = None,
    priority: Annotated[int, typer.Option(help="higher runs first, within your fair share")] = 0,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Queue a sweep on the service; prints its id as the last word. --set applies first, then the spec's ${VAR}s
    take this shell's values (the server never reads its own environment)."""
    try:
        text = spec.read_text()
    except OSError as e:
        raise SegsweepError(f"{spec}: cannot read sweep file ({e.strerror})") from None
    sets = set_ or []
    row = _client(server, token).call("POST", "/api/sweeps", json={
        "spec": text, "sets": sets, "env": client_env(text, sets), "priority": priority, "filename": str(spec)})
    typer.echo(f"queued {row['name']} as sweep {row['id']}")


def queue(server: ServerOption = None, token: TokenOption = None) -> None:
    """Your sweeps (an admin's: everyone's), one line each: id, state, name, user, progress."""
    for row in _client(server, token).call("GET", "/api/sweeps"):
        detail = row["error"] or ""
        typer.echo(f"{row['id']}  {row['state']:<9}  {row['name']}  {row['user']}  {detail}".rstrip())


def cancel(sweep_id: Annotated[str, typer.Argument(help="the sweep's id")], server: ServerOption = None,
           token: TokenOption = None) -> None:
    """Cancel a queued or running sweep (a running one stops cleanly and can be resumed)."""
    row = _client(server, token).call("POST", f"/api/sweeps/{sweep_id}/cancel")
    typer.echo(f"{row['id']}  {row['state']}")


def on_server(target: Path | str, server: str | None) -> bool:
    """Whether ``orchestrate resume|extend TARGET`` means a sweep of the service: a server is set and TARGET is no
    run directory here."""
    return bool(server or os.environ.get("SEGSWEEP_SERVER")) and not Path(target).is_dir()


def requeue(sweep_id: str, action: str, server: str | None, token: str | None, **body: Any) -> None:
    """``resume`` or ``extend`` a sweep of the service: it goes back to the queue."""
    row = _client(server, token).call("POST", f"/api/sweeps/{sweep_id}/{action}", json=body or None)
    typer.echo(f"{row['id']}  {row['state']}  ({row['action']})")


def logs(sweep_id: Annotated[str, typer.Argument(help="the sweep's id")],
         follow: Annotated[bool, typer.Option("--follow", "-f", help="until the sweep ends")] = False,
         server: ServerOption = None, token: TokenOption = None) -> None:
    """The sweep's console output (progress lines, warnings)."""
    client, offset = _client(server, token), 0
    while True:
        chunk = client.call("GET", f"/api/sweeps/{sweep_id}/logs", params={"offset": offset})
        typer.echo(chunk["text"], nl=False)
        offset = chunk["offset"]
        if not follow or (chunk["state"] not in ("queued", "running") and not chunk["text"]):
            return
        time.sleep(1.0)


def bench_serve(
    spec: Annotated[Path, typer.Option(help="the sweep that runs meanwhile")] = Path("sweeps/demo.yaml"),
    set_: SetOption = None,
    clients: Annotated[int, typer.Option(min=0, help="clients polling the sweep's API")] = 50,
    followers: Annotated[int, typer.Option(min=0, help="clients following its events")] = 20,
    seconds: Annotated[float, typer.Option(min=1, help="how long the load lasts")] = 60.0,
    interval: Annotated[float, typer.Option(min=0, help="each polling client's pause between calls (s)")] = 1.0,
    baseline: Annotated[bool, typer.Option(help="run the sweep once without load first, for its wall")] = True,
    out: Annotated[Path, typer.Option(help="the server's data folder and the datasets")] = Path("bench-serve"),
    format: TableFormatOption = TableFormat.md,
) -> None:
    """The service under load: a real server on loopback runs SPEC while CLIENTS poll its API and FOLLOWERS follow
    its events for SECONDS; prints errors, API latency (p50 / p99 / max), the sweep's wall against an unloaded run
    and the server's memory over the run."""
    from orchestrator.bench.serve import ServeBench, markdown, run_bench_serve  # lazy: httpx, the server's imports

    result = run_bench_serve(ServeBench(spec, tuple(set_ or ()), clients, followers, seconds, interval, baseline), out)
    typer.echo(json.dumps(result, indent=1) if format is TableFormat.json else markdown(result))
