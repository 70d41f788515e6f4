"""Commands over sweeps and their run directories: validate, run, resume, status, report, list."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from orchestrator.cli.options import SetOption
from orchestrator.rundir import RunDir
from orchestrator.store import Store, progress_line


def validate(spec: Annotated[Path, typer.Argument(help="sweep YAML file")], set_: SetOption = None) -> None:
    """Validate a sweep file and print the number of trials."""
    # lazy: the spec loader imports the registries (torch); see the package docstring
    from orchestrator.spec import count_trials, load_spec

    sweep = load_spec(spec, set_ or [])
    typer.echo(f"{spec}: valid ({count_trials(sweep)} trials, {len(sweep.domains)} searched keys)")


def run(
    spec: Annotated[Path, typer.Argument(help="sweep YAML file")],
    out: Annotated[Optional[Path], typer.Option(help="run directory (default runs/<name>-<timestamp>)")] = None,
    set_: SetOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="validate and show the plan; start nothing")] = False,
    max_trials: Annotated[Optional[int], typer.Option(min=1, help="cap the number of trials")] = None,
    address: Annotated[Optional[str], typer.Option(help="join a running Ray cluster (e.g. auto, host:6379)")] = None,
) -> None:
    """Run a sweep: trials on Ray Tune, results in RUN_DIR/results.db, report in RUN_DIR/report.md."""
    # lazy: the spec loader imports the registries (torch), the study Ray
    from orchestrator.data.prepare import dataset_sizes
    from orchestrator.spec import count_trials, describe_space, load_spec

    sweep = load_spec(spec, set_ or [])
    total = count_trials(sweep, max_trials)
    if dry_run:
        s = sweep.spec
        sizes = dataset_sizes(s.data)
        typer.echo(f"sweep {s.name}: {total} trials, {s.search.algorithm} search on {s.search.metric} ({s.search.mode}), "
                   f"scheduler {s.search.scheduler.name}, {s.trainer.max_epochs} epochs max")
        h, w = sizes["native"]
        typer.echo(f"data: {s.data.dataset} ({s.data.task}) at {s.data.root}: train {sizes['train']} / "
                   f"val {sizes['val']} images, native {h}x{w}, trained at {s.data.size[0]}x{s.data.size[1]} "
                   f"({s.data.resize})")
        typer.echo("search space:" + ("".join(f"\n  {line}" for line in describe_space(sweep)) or " (none: fixed)"))
        return
    from orchestrator.study import run_sweep  # lazy: imports Ray

    _finish(run_sweep(sweep, out=out, address=address, max_trials=max_trials))


def resume(
    run_dir: Annotated[Path, typer.Argument(help="run directory of an interrupted sweep")],
    address: Annotated[Optional[str], typer.Option(help="join a running Ray cluster")] = None,
) -> None:
    """Finish an interrupted sweep: finished trials are kept, none is run twice."""
    from orchestrator.study import resume_sweep  # lazy: imports Ray

    _finish(resume_sweep(run_dir, address=address))


def _finish(result) -> None:
    typer.echo(f"report: {RunDir(result.run_dir).report_md}")
    if result.interrupted:
        typer.echo(f"interrupted: continue with 'orchestrate resume {result.run_dir}'", err=True)
        raise typer.Exit(130)


def status(run_dir: Annotated[Path, typer.Argument(help="run directory")]) -> None:
    """Trials done / running / failed and the best so far."""
    store = Store.of_run(run_dir)
    typer.echo(progress_line(store))
    metric = store.meta()["metric"]
    for t in store.trials():
        best = f"{t.best[metric]:.4f}" if metric in t.best else "–"
        typer.echo(f"  {t.id}  {t.status:<13} epochs {t.epochs:<3} {metric} {best}" + (f"  {t.error}" if t.error else ""))


class ReportFormat(str, Enum):
    md = "md"
    html = "html"
    json = "json"


def report(
    run_dir: Annotated[Path, typer.Argument(help="run directory")],
    format: Annotated[ReportFormat, typer.Option("--format", help="md, html or json")] = ReportFormat.md,
) -> None:
    """(Re)build report.md and report.html from the store and print one of them (json: the results object)."""
    from reports.build import build_report, report_json  # lazy: pandas and plotly

    if format is ReportFormat.json:
        typer.echo(json.dumps(report_json(run_dir), indent=2))
        return
    md, html = build_report(run_dir)
    typer.echo((md if format is ReportFormat.md else html).read_text())


class Registry(str, Enum):
    models = "models"
    encoders = "encoders"
    losses = "losses"
    schedules = "schedules"
    datasets = "datasets"
    optimizers = "optimizers"


def list_(what: Annotated[Registry, typer.Argument(help="which registry")]) -> None:
    """List a registry's names with one line each."""
    # lazy: the registries import torch and smp
    from models.losses import list_losses
    from models.optim import OPTIMIZERS, list_schedules
    from models.registry import list_encoders, list_models
    from orchestrator.data.adapters import list_datasets

    entries = {
        Registry.models: list_models,
        Registry.encoders: lambda: {name: "" for name in list_encoders()} | {"tu-<timm model>": "any timm model"},
        Registry.losses: list_losses,
        Registry.schedules: list_schedules,
        Registry.datasets: list_datasets,
        Registry.optimizers: lambda: {k: v.description for k, v in OPTIMIZERS.items()},
    }[what]()
    width = max(map(len, entries))
    for name, description in entries.items():
        typer.echo(f"{name:<{width}}  {description}".rstrip())
