"""Commands over sweeps and their run directories: validate, run, resume, extend (of a run directory, or of a
service's sweep), status, report, list."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from orchestrator.cli.options import ReportFormat, ReportFormatOption, ServerOption, SetOption, TokenOption
from orchestrator.cli.service import on_server, requeue
from orchestrator.errors import SegsweepError
from orchestrator.rundir import RunDir
from orchestrator.store import Store, every_trial_failed, progress_line


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
    joining(address)
    from orchestrator.study import run_sweep  # lazy: imports Ray

    _finish(run_sweep(sweep, out=out, address=address, max_trials=max_trials))


def resume(
    run_dir: Annotated[Path, typer.Argument(help="run directory of an interrupted sweep, or a sweep id of the service "
                                            "(with --server or $SEGSWEEP_SERVER)")],
    address: Annotated[Optional[str], typer.Option(help="join a running Ray cluster")] = None,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Finish an interrupted sweep: finished trials are kept, none is run twice. On the service: a failed or
    cancelled sweep goes back to the queue to resume."""
    if on_server(run_dir, server):
        requeue(str(run_dir), "resume", server, token)
        return
    joining(address)
    from orchestrator.study import resume_sweep  # lazy: imports Ray

    _finish(resume_sweep(run_dir, address=address))


def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="run directory")],
    split: Annotated[str, typer.Option(help="a labelled split: test (CamVid), val (Cityscapes, BDD100K), ...")] = "test",
    top_k: Annotated[int, typer.Option(min=1, help="the k best trials by the sweep's metric")] = 3,
    trial: Annotated[Optional[str], typer.Option(help="one trial instead: best, or a trial id")] = None,
    tta: Annotated[str, typer.Option(help="none | hflip (logits averaged with the mirrored image's)")] = "none",
) -> None:
    """The best trials at their best-validation weights on a held-out split; rows in the store, columns in the
    report."""
    # lazy: torch, pandas, plotly and W&B
    from orchestrator.spec import load_spec
    from orchestrator.study.evaluate import evaluate_run
    from orchestrator.study.run import log_summary_run
    from reports.build import build_report

    if tta not in ("none", "hflip"):
        raise SegsweepError(f"--tta {tta}: none or hflip")
    store = Store.of_run(run_dir)
    metric = store.meta()["metric"].split("/", 1)[1]
    for e in evaluate_run(run_dir, split, top_k, trial, tta):
        figures = "  ".join(f"{split}/{name} {e.metrics.get(name, float('nan')):.4f}"
                            for name in dict.fromkeys([metric, "miou"]))
        typer.echo(f"{e.trial}  {figures}  ({e.images} images{', hflip' if tta == 'hflip' else ''})")
    md, _ = build_report(run_dir)
    spec = load_spec(RunDir(run_dir).spec).spec
    log_summary_run(Path(run_dir), spec.tracking.wandb.model_dump(mode="json"), spec.name)  # with the new columns
    typer.echo(f"report: {md}")


def extend(
    run_dir: Annotated[Path, typer.Argument(help="run directory of a finished or interrupted sweep, or a sweep id of "
                                            "the service (with --server or $SEGSWEEP_SERVER)")],
    trials: Annotated[int, typer.Option("--trials", min=1, help="more trials to run")] = 8,
    address: Annotated[Optional[str], typer.Option(help="join a running Ray cluster")] = None,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Continue a study with N more trials: the same Optuna study (or more random points), store and report; an
    interrupted run finishes its own trials first. On the service: an ended sweep goes back to the queue for them."""
    if on_server(run_dir, server):
        requeue(str(run_dir), "extend", server, token, trials=trials)
        return
    joining(address)
    from orchestrator.study import extend_sweep  # lazy: imports Ray

    _finish(extend_sweep(run_dir, trials, address=address))


def joining(address: str | None) -> None:
    """Before Ray is imported: the token of the pool's own Ray where ``address`` is that pool's
    (``orchestrate pool start``)."""
    if address:
        from orchestrator.pool.resident import join_token  # lazy: light, but only a joining run needs it

        join_token(address)


def _finish(result) -> None:
    typer.echo(f"report: {RunDir(result.run_dir).report_md}")
    if result.interrupted:
        typer.echo(f"interrupted: continue with 'orchestrate resume {result.run_dir}'", err=True)
        raise typer.Exit(130)
    failed = every_trial_failed(Store.of_run(result.run_dir))
    if failed:  # the store and the report keep them; a script that runs the study must not read success
        raise SegsweepError(f"{failed}; every trial's error: orchestrate status {result.run_dir}")


def status(run_dir: Annotated[Path, typer.Argument(help="run directory")]) -> None:
    """Trials done / running / failed and the best so far."""
    store = Store.of_run(run_dir)
    typer.echo(progress_line(store))
    metric = store.meta()["metric"]
    for t in store.trials():
        best = f"{t.best[metric]:.4f}" if metric in t.best else "–"
        why = t.error or t.infeasible  # a failure's line, or the budgets an infeasible trial broke
        typer.echo(f"  {t.id}  {t.status:<13} epochs {t.epochs:<3} {metric} {best}" + (f"  {why}" if why else ""))


def report(
    run_dir: Annotated[Path, typer.Argument(help="run directory")],
    format: ReportFormatOption = ReportFormat.md,
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
    budgets = "budgets"


def list_(what: Annotated[Registry, typer.Argument(help="which registry")]) -> None:
    """List a registry's names with one line each."""
    # lazy, and from the catalog only: the registries import torch and smp
    from models.catalog import OPTIMIZERS, list_encoders, list_losses, list_models, list_schedules
    from orchestrator.budgets import BUDGETS
    from orchestrator.data.adapters import list_datasets

    entries = {
        Registry.models: list_models,
        Registry.encoders: lambda: {name: "" for name in list_encoders()} | {"tu-<timm model>": "any timm model"},
        Registry.losses: list_losses,
        Registry.schedules: list_schedules,
        Registry.datasets: list_datasets,
        Registry.optimizers: lambda: dict(OPTIMIZERS),
        Registry.budgets: lambda: {name: budget.about for name, budget in BUDGETS.items()},
    }[what]()
    width = max(map(len, entries))
    for name, description in entries.items():
        typer.echo(f"{name:<{width}}  {description}".rstrip())
