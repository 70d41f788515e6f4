"""Commands of the service: ``serve`` and ``token add`` on the server's machine; ``submit``, ``queue``, ``cancel``
and ``logs`` from anywhere (``--server`` / ``SEGSWEEP_SERVER``, ``--token`` / ``SEGSWEEP_TOKEN``)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from orchestrator.cli.options import SetOption
from orchestrator.errors import SegsweepError

DataOption = Annotated[Path, typer.Option("--data", help="the service's folder: its database, runs and logs "
                                          "(default $SEGSWEEP_DATA or ./segsweep-data)")]
ServerOption = Annotated[Optional[str], typer.Option("--server", help="the service's URL (default $SEGSWEEP_SERVER "
                                                     "or http://127.0.0.1:8765)")]
TokenOption = Annotated[Optional[str], typer.Option("--token", help="your token (default $SEGSWEEP_TOKEN)")]
DEFAULT_DATA = Path(os.environ.get("SEGSWEEP_DATA", "segsweep-data"))

token_app = typer.Typer(no_args_is_help=True, help="Users of the service and their tokens.")


def serve(
    host: Annotated[str, typer.Option(help="address to listen on (loopback by default)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8765,
    data: DataOption = DEFAULT_DATA,
    gpus: Annotated[Optional[str], typer.Option(help="GPUs the queue hands out, one per sweep, e.g. 0,1")] = None,
    address: Annotated[Optional[str], typer.Option(help="run every sweep on this Ray cluster instead")] = None,
    max_running: Annotated[int, typer.Option(min=1, help="sweeps at once without --gpus")] = 1,
) -> None:
    """Run segsweep as a service: the queue, the HTTP API and the web pages."""
    # lazy: the server's libraries (FastAPI, uvicorn, the reports) are not the CLI's start
    import uvicorn

    from orchestrator.service.app import create_app
    from orchestrator.service.db import ServiceDB
    from orchestrator.service.queue import Scheduler

    try:
        gpu_list = [int(g) for g in gpus.split(",")] if gpus else None
    except ValueError:
        raise SegsweepError(f"--gpus {gpus}: expected GPU indices, e.g. 0,1") from None
    data = data.absolute()
    scheduler = Scheduler(ServiceDB(data / "service.db"), data, gpu_list, max_running, address)
    scheduler.start()
    typer.echo(f"segsweep serving http://{host}:{port} (data {data}; "
               f"{'GPUs ' + gpus if gpus else f'{max_running} sweep(s) at once'})", err=True)
    uvicorn.run(create_app(data, scheduler), host=host, port=port, log_level="warning")


@token_app.command("add")
def token_add(
    name: Annotated[str, typer.Argument(help="the user's name")],
    admin: Annotated[bool, typer.Option("--admin", help="sees and acts on every user's sweeps")] = False,
    data: DataOption = DEFAULT_DATA,
) -> None:
    """A new token for NAME, printed once as the last word (the service keeps only its hash)."""
    from orchestrator.service.db import ServiceDB  # lazy, as in serve

    if not name.replace("-", "").replace("_", "").isalnum():
        raise SegsweepError(f"{name!r}: a user name is letters, digits, - and _")
    token = ServiceDB(data.absolute() / "service.db").add_user(name, admin)
    typer.echo(f"token for {name}{' (admin)' if admin else ''}, shown once: {token}")


def submit(
    spec: Annotated[Path, typer.Argument(help="sweep YAML file")],
    set_: SetOption = None,
    priority: Annotated[int, typer.Option(help="higher runs first, within your fair share")] = 0,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Queue a sweep on the service; prints its id as the last word."""
    from orchestrator.service.client import Client  # lazy: httpx

    try:
        text = spec.read_text()
    except OSError as e:
        raise SegsweepError(f"{spec}: cannot read sweep file ({e.strerror})") from None
    row = Client(server, token).call("POST", "/api/sweeps", json={"spec": text, "sets": set_ or [],
                                                                  "priority": priority, "filename": str(spec)})
    typer.echo(f"queued {row['name']} as sweep {row['id']}")


def queue(server: ServerOption = None, token: TokenOption = None) -> None:
    """Your sweeps (an admin's: everyone's), one line each: id, state, name, user, progress."""
    from orchestrator.service.client import Client  # lazy, as in submit

    for row in Client(server, token).call("GET", "/api/sweeps"):
        detail = row["error"] or ""
        typer.echo(f"{row['id']}  {row['state']:<9}  {row['name']}  {row['user']}  {detail}".rstrip())


def cancel(sweep_id: Annotated[str, typer.Argument(help="the sweep's id")], server: ServerOption = None,
           token: TokenOption = None) -> None:
    """Cancel a queued or running sweep (a running one stops cleanly and can be resumed)."""
    from orchestrator.service.client import Client  # lazy, as in submit

    row = Client(server, token).call("POST", f"/api/sweeps/{sweep_id}/cancel")
    typer.echo(f"{row['id']}  {row['state']}")


def logs(sweep_id: Annotated[str, typer.Argument(help="the sweep's id")],
         follow: Annotated[bool, typer.Option("--follow", "-f", help="until the sweep ends")] = False,
         server: ServerOption = None, token: TokenOption = None) -> None:
    """The sweep's console output (progress lines, warnings)."""
    from orchestrator.service.client import Client  # lazy, as in submit

    client, offset = Client(server, token), 0
    while True:
        chunk = client.call("GET", f"/api/sweeps/{sweep_id}/logs", params={"offset": offset})
        typer.echo(chunk["text"], nl=False)
        offset = chunk["offset"]
        if not follow or (chunk["state"] not in ("queued", "running") and not chunk["text"]):
            return
        time.sleep(1.0)
