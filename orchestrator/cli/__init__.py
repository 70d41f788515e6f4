"""``orchestrate``: thin commands over the library; one handler turns known errors into one line and an exit code.

Commands import the library inside their bodies: ``orchestrate status`` and ``--help`` must start without torch or
Ray (each such import says so).
"""

from __future__ import annotations

import os
import sys

import typer

from orchestrator.cli import data, deploy, pool, service, sweeps
from orchestrator.errors import KNOWN_ERRORS

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="segsweep: sweep orchestration for semantic-segmentation experiments.")
for command in (sweeps.validate, sweeps.run, sweeps.resume, sweeps.extend, sweeps.status, sweeps.evaluate,
                deploy.model_info, deploy.export, deploy.bench, deploy.bench_train, deploy.bench_sweep, sweeps.report,
                sweeps.list_, service.serve, service.submit, service.queue, service.cancel, service.logs,
                service.bench_serve):
    app.command(command.__name__.strip("_").replace("_", "-"))(command)
app.add_typer(data.app, name="data")
app.add_typer(pool.app, name="pool")
app.add_typer(service.token_app, name="token")
app.add_typer(service.target_app, name="target")


def fail(message: str, code: int = 1) -> None:
    hint = "" if os.environ.get("SEGSWEEP_DEBUG") else " (SEGSWEEP_DEBUG=1 shows the traceback)"
    typer.echo(f"error: {message}{hint if code == 1 else ''}", err=True)
    sys.exit(code)


def main() -> None:
    """Entry point: typer handles usage errors (exit 2); known segsweep errors become one line."""
    try:
        app()
    except KNOWN_ERRORS as e:
        if os.environ.get("SEGSWEEP_DEBUG"):
            raise
        fail(str(e), e.exit_code)


__all__ = ["app", "main"]
