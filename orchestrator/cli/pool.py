"""``orchestrate pool``: a pool of warm trial workers on this machine that outlives sweeps. ``start`` brings up its own
Ray on loopback and the workers (their imports done), ``status`` lists them, ``stop`` ends them and that Ray. A sweep
run with ``--address <the pool's address>`` trains on them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from orchestrator.cli.options import SetOption, TextFormat, TextFormatOption
from orchestrator.errors import SegsweepError
from orchestrator.spec.keys import parse_override
from orchestrator.spec.schema import ResourcesSpec

app = typer.Typer(no_args_is_help=True, help="A pool of warm trial workers that outlives sweeps.")

StateOption = Annotated[Optional[Path], typer.Option("--state", help="the pool's state file (default "
                                                     "$SEGSWEEP_POOL_STATE or ~/.segsweep/pool.json)")]


@app.command("start")
def start(
    state: StateOption = None,
    cpus: Annotated[Optional[int], typer.Option(min=1, help="CPUs its Ray offers (default: all)")] = None,
    gpus: Annotated[Optional[int], typer.Option(min=0, help="GPUs its Ray offers (default: all)")] = None,
    set_: SetOption = None,
) -> None:
    """Start the pool and wait until its workers are ready; ``--set resources.KEY=VALUE`` shapes it as a spec's
    resources would (trials_per_gpu, workers_per_gpu, mps, cpus_per_trial, memory_aware)."""
    from orchestrator.pool.resident import default_state, start_holder  # lazy: the CLI's start stays light

    info = start_holder(state or default_state(), resources(set_ or []), cpus, gpus)
    typer.echo(f"pool ready on {info['address']}: {len(info['workers'])} worker(s) on "
               f"{', '.join(sorted({w['device'] for w in info['workers']}))}; key {info['key']}")
    typer.echo(f"run a sweep on it: orchestrate run SPEC --address {info['address']}")


@app.command("status")
def status(state: StateOption = None, format: TextFormatOption = TextFormat.text) -> None:
    """The pool's workers now: device, slots, trials running and waiting, sweeps attached, GPU memory held."""
    from orchestrator.pool.resident import default_state, pool_status  # lazy: Ray

    info = pool_status(state or default_state())
    if format is TextFormat.json:
        typer.echo(json.dumps(info, indent=2))
        return
    typer.echo(f"pool on {info['address']} (pid {info['pid']}, key {info['key']}"
               f"{'' if info['current'] else ', OTHER versions than this installation: not used by its sweeps'})")
    for i, w in enumerate(info["workers"]):
        if "error" in w:
            typer.echo(f"  worker {i}: {w['error']}")
            continue
        typer.echo(f"  worker {i} pid {w['pid']} {w['device']}: {w['running']}/{w['limit']} running, "
                   f"{w['pending']} waiting, {len(w['sweeps'])} sweep(s), {w['gpu_reserved_gb']:.2f} GiB held")
    typer.echo(f"sweeps attached: {len(info['sweeps'])}")


@app.command("stop")
def stop(state: StateOption = None) -> None:
    """End the pool: its workers, its CUDA MPS daemon and its Ray."""
    from orchestrator.pool.resident import default_state, stop_holder  # lazy: the CLI's start stays light

    typer.echo("pool stopped" if stop_holder(state or default_state()) else "no pool was running")


def resources(overrides: list[str]) -> dict:
    """``--set resources.KEY=VALUE`` as a resources section, checked as a spec's resources are."""
    out = {}
    for text in overrides:
        key, value = parse_override(text)
        if not key.startswith("resources."):
            raise SegsweepError(f"--set {text}: a pool takes resources.* keys only")
        out[key.removeprefix("resources.")] = value
    try:
        return ResourcesSpec.model_validate(out).model_dump(mode="json")
    except ValueError as e:
        raise SegsweepError(f"--set: {str(e).splitlines()[-2].strip() if len(str(e).splitlines()) > 1 else e}") from None
