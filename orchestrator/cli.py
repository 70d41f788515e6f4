"""``orchestrate``: thin commands over the library; one handler turns known errors into one line and an exit code."""

from __future__ import annotations

import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from orchestrator.errors import SegsweepError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="segsweep: sweep orchestration for semantic-segmentation experiments.")

SetOption = Annotated[Optional[list[str]], typer.Option("--set", help="override a dotted key: --set optimizer.lr=3e-4")]


def fail(message: str, code: int = 1) -> None:
    hint = "" if os.environ.get("SEGSWEEP_DEBUG") else " (SEGSWEEP_DEBUG=1 shows the traceback)"
    typer.echo(f"error: {message}{hint if code == 1 else ''}", err=True)
    sys.exit(code)


@app.command()
def validate(spec: Annotated[Path, typer.Argument(help="sweep YAML file")], set_: SetOption = None) -> None:
    """Validate a sweep file and print the number of trials."""
    from orchestrator.space import count_trials
    from orchestrator.spec import load_spec

    sweep = load_spec(spec, set_ or [])
    typer.echo(f"{spec}: valid ({count_trials(sweep)} trials, {len(sweep.domains)} searched keys)")


@app.command()
def run(
    spec: Annotated[Path, typer.Argument(help="sweep YAML file")],
    out: Annotated[Optional[Path], typer.Option(help="run directory (default runs/<name>-<timestamp>)")] = None,
    set_: SetOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="validate and show the plan; start nothing")] = False,
    max_trials: Annotated[Optional[int], typer.Option(min=1, help="cap the number of trials")] = None,
    address: Annotated[Optional[str], typer.Option(help="join a running Ray cluster (e.g. auto, host:6379)")] = None,
) -> None:
    """Run a sweep: trials on Ray Tune, results in RUN_DIR/results.db, report in RUN_DIR/report.md."""
    from orchestrator.data import dataset_sizes
    from orchestrator.space import count_trials, describe_space
    from orchestrator.spec import load_spec

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
    from orchestrator.runner import run_sweep

    result = run_sweep(sweep, out=out, address=address, max_trials=max_trials)
    _finish(result)


@app.command()
def resume(
    run_dir: Annotated[Path, typer.Argument(help="run directory of an interrupted sweep")],
    address: Annotated[Optional[str], typer.Option(help="join a running Ray cluster")] = None,
) -> None:
    """Finish an interrupted sweep: finished trials are kept, none is run twice."""
    from orchestrator.runner import resume_sweep

    _finish(resume_sweep(run_dir, address=address))


def _finish(result) -> None:
    typer.echo(f"report: {result.run_dir / 'report.md'}")
    if result.interrupted:
        typer.echo(f"interrupted: continue with 'orchestrate resume {result.run_dir}'", err=True)
        raise typer.Exit(130)


@app.command()
def status(run_dir: Annotated[Path, typer.Argument(help="run directory")]) -> None:
    """Trials done / running / failed and the best so far."""
    from orchestrator.runner import progress_line
    from reports.collect import open_store

    store = open_store(run_dir)
    typer.echo(progress_line(store))
    for t in store.trials():
        metric = store.meta()["metric"]
        best = f"{t.best[metric]:.4f}" if metric in t.best else "–"
        typer.echo(f"  {t.id}  {t.status:<13} epochs {t.epochs:<3} {metric} {best}" + (f"  {t.error}" if t.error else ""))


@app.command("model-info")
def model_info(
    arch: Annotated[str, typer.Argument(help="architecture (orchestrate list models)")],
    classes: Annotated[int, typer.Option(min=1, help="output classes")],
    size: Annotated[str, typer.Option(help="input HxW, e.g. 256x320")],
    encoder: Annotated[Optional[str], typer.Option(help="encoder (smp name or tu-<timm model>)")] = None,
    format: Annotated[str, typer.Option("--format", help="text | json")] = "text",
) -> None:
    """Parameters, weight size in MB and GMACs at an input size, with the counter named."""
    from models.complexity import complexity
    from models.registry import ARCHITECTURES, create_model

    try:
        height, width = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise SegsweepError(f"--size {size}: expected HxW, e.g. 256x320") from None
    if encoder is None and arch in ARCHITECTURES and ARCHITECTURES[arch].encoders:
        encoder = ARCHITECTURES[arch].encoders[0]
    info = complexity(create_model(arch, encoder, classes), (height, width))
    if format == "json":
        typer.echo(json.dumps({"params": info.params, "size_mb": info.size_mb, "gmacs": info.gmacs,
                               "counter": info.counter}))
    else:
        typer.echo(f"{arch} {encoder or ''} at {height}x{width}, {classes} classes: {info.params / 1e6:.3f} M params, "
                   f"{info.size_mb:.2f} MB, {info.gmacs:.3f} GMACs ({info.counter})")


class ReportFormat(str, Enum):
    md = "md"
    html = "html"
    json = "json"


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="run directory")],
    format: Annotated[ReportFormat, typer.Option("--format", help="md, html or json")] = ReportFormat.md,
) -> None:
    """(Re)build report.md and report.html from the store and print one of them (json: the results object)."""
    from reports.build import build_report, report_json

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


@app.command("list")
def list_(what: Annotated[Registry, typer.Argument(help="which registry")]) -> None:
    """List a registry's names with one line each."""
    from models.losses import list_losses
    from models.optim import OPTIMIZERS, list_schedules
    from models.registry import list_encoders, list_models
    from orchestrator.data import list_datasets

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


data_app = typer.Typer(no_args_is_help=True, help="Inspect a dataset as stored: class statistics, broken files.")
app.add_typer(data_app, name="data")

DatasetOption = Annotated[str, typer.Option("--dataset", help="dataset name (orchestrate list datasets)")]
RootOption = Annotated[Path, typer.Option("--root", help="dataset root folder")]
EncodingOption = Annotated[str, typer.Option(help="bdd100k_drivable label order: current | legacy_2018")]
ClassMapOption = Annotated[Optional[str], typer.Option(
    "--class-map", help="folder dataset classes as YAML, e.g. '[{name: bg, value: 0}, {name: road, value: 1}]'")]


def _adapter(dataset: str, root: Path, encoding: str, class_map: str | None):
    import yaml

    from orchestrator.data import create_adapter
    from orchestrator.data.adapters import DataError

    if not root.is_dir():
        raise DataError(f"--root {root}: does not exist")
    return create_adapter(dataset, encoding, yaml.safe_load(class_map) if class_map else None)


@data_app.command("stats")
def data_stats(
    dataset: DatasetOption,
    root: RootOption,
    split: Annotated[str, typer.Option(help="split to count")] = "train",
    task: Annotated[str, typer.Option(help="multiclass | binary")] = "multiclass",
    enet_c: Annotated[float, typer.Option(help="ENet weighting constant c")] = 1.02,
    format: Annotated[str, typer.Option("--format", help="text | json")] = "text",
    encoding: EncodingOption = "current",
    class_map: ClassMapOption = None,
) -> None:
    """Class pixel counts and frequencies over a split, with ENet and median-frequency weights."""
    from orchestrator.data.stats import split_stats, stats_table

    adapter = _adapter(dataset, root, encoding, class_map)
    stats = split_stats(adapter, adapter.pairs(root, split), task, enet_c, dataset, split)
    typer.echo(json.dumps(stats, indent=2) if format == "json" else stats_table(stats))


@data_app.command("check")
def data_check(
    dataset: DatasetOption, root: RootOption, encoding: EncodingOption = "current", class_map: ClassMapOption = None,
) -> None:
    """Scan every image/label pair; list each problem by file; exit 1 when any is found."""
    from orchestrator.data.stats import check_dataset

    checked, problems = check_dataset(_adapter(dataset, root, encoding, class_map), root)
    for line in problems:
        typer.echo(line)
    typer.echo(f"{checked} pairs checked, {len(problems)} with problems", err=bool(problems))
    if problems:
        raise typer.Exit(1)


def main() -> None:
    """Entry point: typer handles usage errors (exit 2); known segsweep errors become one line."""
    try:
        app()
    except SegsweepError as e:
        if os.environ.get("SEGSWEEP_DEBUG"):
            raise
        fail(str(e), e.exit_code)


if __name__ == "__main__":
    main()
