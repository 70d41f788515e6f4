"""``orchestrate data``: a dataset as stored, before any sweep: class statistics, and every broken file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
import yaml

from orchestrator.cli.options import TextFormat, TextFormatOption
from orchestrator.data.adapters import Adapter, DataError, create_adapter

app = typer.Typer(no_args_is_help=True, help="Inspect a dataset as stored: class statistics, broken files.")

DatasetOption = Annotated[str, typer.Option("--dataset", help="dataset name (orchestrate list datasets)")]
RootOption = Annotated[Path, typer.Option("--root", help="dataset root folder")]
EncodingOption = Annotated[str, typer.Option(help="bdd100k_drivable label order: current | legacy_2018")]
ClassMapOption = Annotated[Optional[str], typer.Option(
    "--class-map", help="folder dataset classes as YAML, e.g. '[{name: bg, value: 0}, {name: road, value: 1}]'")]


def _adapter(dataset: str, root: Path, encoding: str, class_map: str | None) -> Adapter:
    if not root.is_dir():
        raise DataError(f"--root {root}: does not exist")
    return create_adapter(dataset, encoding, yaml.safe_load(class_map) if class_map else None)


@app.command("stats")
def stats(
    dataset: DatasetOption,
    root: RootOption,
    split: Annotated[str, typer.Option(help="split to count")] = "train",
    task: Annotated[str, typer.Option(help="multiclass | binary")] = "multiclass",
    enet_c: Annotated[float, typer.Option(help="ENet weighting constant c")] = 1.02,
    format: TextFormatOption = TextFormat.text,
    encoding: EncodingOption = "current",
    class_map: ClassMapOption = None,
) -> None:
    """Class pixel counts and frequencies over a split, with ENet and median-frequency weights."""
    from orchestrator.data.stats import split_stats, stats_table  # lazy: the class weights import torch

    adapter = _adapter(dataset, root, encoding, class_map)
    result = split_stats(adapter, adapter.pairs(root, split), task, enet_c, dataset, split)
    typer.echo(json.dumps(result, indent=2) if format is TextFormat.json else stats_table(result))


@app.command("check")
def check(
    dataset: DatasetOption, root: RootOption, encoding: EncodingOption = "current", class_map: ClassMapOption = None,
) -> None:
    """Scan every image/label pair; list each problem by file; exit 1 when any is found."""
    from orchestrator.data.stats import check_dataset  # lazy, as in stats

    checked, problems = check_dataset(_adapter(dataset, root, encoding, class_map), root)
    for line in problems:
        typer.echo(line)
    typer.echo(f"{checked} pairs checked, {len(problems)} with problems", err=bool(problems))
    if problems:
        raise typer.Exit(1)
