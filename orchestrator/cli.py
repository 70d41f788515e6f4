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
    from orchestrator.store import Store

    store = Store.of_run(run_dir)
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

    height, width = _hw(size, "--size")
    if encoder is None and arch in ARCHITECTURES and ARCHITECTURES[arch].encoders:
        encoder = ARCHITECTURES[arch].encoders[0]
    info = complexity(create_model(arch, encoder, classes), (height, width))
    if format == "json":
        typer.echo(json.dumps({"params": info.params, "size_mb": info.size_mb, "gmacs": info.gmacs,
                               "counter": info.counter}))
    else:
        typer.echo(f"{arch} {encoder or ''} at {height}x{width}, {classes} classes: {info.params / 1e6:.3f} M params, "
                   f"{info.size_mb:.2f} MB, {info.gmacs:.3f} GMACs ({info.counter})")


def _hw(text: str, option: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SegsweepError(f"{option} {text}: expected HxW, e.g. 256x320") from None
    return height, width


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="run directory")],
    trial: Annotated[str, typer.Option(help="best, or a trial id")] = "best",
    size: Annotated[Optional[str], typer.Option(help="input HxW (default: the training size)")] = None,
    dynamic: Annotated[bool, typer.Option("--dynamic", help="free batch, height and width")] = False,
    opset: Annotated[int, typer.Option(help="ONNX opset")] = 17,
) -> None:
    """Export a trial's best weights to ONNX (RUN_DIR/exports/), checked, with onnxruntime parity reported."""
    import torch

    from models.export import export_onnx, onnx_parity
    from orchestrator.runs import pick_trial, trial_model, validation_inputs
    from orchestrator.store import Store

    row = pick_trial(Store.of_run(run_dir), trial)
    model, cfg = trial_model(run_dir, row)
    hw = _hw(size, "--size") if size else tuple(cfg.data.size)
    path = export_onnx(model, Path(run_dir) / "exports" / f"{row.id}.onnx", hw, opset=opset, dynamic=dynamic)
    random_diff = onnx_parity(model, path, torch.randn(1, 3, *hw))
    real = validation_inputs(run_dir, 1)
    real_diff = onnx_parity(model, path, real) if tuple(real.shape[-2:]) == hw else None
    typer.echo(f"{path}: trial {row.id}, {hw[0]}x{hw[1]}{' dynamic' if dynamic else ''}, opset {opset}; max abs diff "
               f"to PyTorch: random {random_diff:.2e}" + (f", validation image {real_diff:.2e}" if real_diff is not None
                                                         else ""))
    if max(random_diff, real_diff or 0) > 1e-3:
        typer.echo("warning: difference above 1e-3", err=True)


@app.command()
def bench(
    source: Annotated[Optional[Path], typer.Argument(help="MODEL.onnx or a run directory")] = None,
    backend: Annotated[str, typer.Option(help="torch, torch-compile, ort-cpu, ort-cuda, ort-tensorrt, trtexec")] = "ort-cpu",
    trial: Annotated[str, typer.Option(help="with a run directory: best, or a trial id")] = "best",
    arch: Annotated[Optional[str], typer.Option(help="benchmark a registry model (random weights) instead")] = None,
    encoder: Annotated[Optional[str], typer.Option(help="with --arch")] = None,
    classes: Annotated[int, typer.Option(help="with --arch")] = 2,
    shape: Annotated[str, typer.Option(help="input NxCxHxW")] = "1x3x256x320",
    warmup: Annotated[int, typer.Option(min=0)] = 10,
    iters: Annotated[int, typer.Option(min=1)] = 100,
    fp16: Annotated[bool, typer.Option("--fp16")] = False,
    threads: Annotated[Optional[int], typer.Option(min=1, help="CPU threads (onnxruntime intra-op, or torch on a CPU); "
                                                   "default: the runtime's own")] = None,
    target: Annotated[Optional[str], typer.Option(help="ssh://user@host[:port] to measure on a remote device")] = None,
    remote_python: Annotated[str, typer.Option(help="interpreter on the target")] = "python3",
    ssh_option: Annotated[Optional[list[str]], typer.Option(help="passed to ssh as -o KEY=VALUE (repeatable)")] = None,
    format: Annotated[str, typer.Option("--format", help="text | json")] = "text",
) -> None:
    """Latency of a model: warm-up, timed iterations, mean / p50 / p90 / p99, throughput, versions, device."""
    import tempfile

    from orchestrator.latency.bench import check_backend, format_result, measure_onnx, measure_torch, parse_shape

    check_backend(backend)
    dims = parse_shape(shape)
    model = onnx_path = None
    if arch:
        from models.registry import ARCHITECTURES, create_model

        if encoder is None and arch in ARCHITECTURES and ARCHITECTURES[arch].encoders:
            encoder = ARCHITECTURES[arch].encoders[0]
        model = create_model(arch, encoder, classes).eval()
    elif source is not None and source.suffix == ".onnx":
        onnx_path = source
        if not source.is_file():
            raise SegsweepError(f"{source}: no such ONNX file")
    elif source is not None:
        from orchestrator.runs import pick_trial, trial_model
        from orchestrator.store import Store

        model, _ = trial_model(source, pick_trial(Store.of_run(source), trial))
    else:
        raise SegsweepError("give MODEL.onnx, a run directory, or --arch NAME")
    if backend.startswith("torch"):
        if model is None:
            raise SegsweepError(f"{backend} needs the PyTorch model: give a run directory or --arch, not an ONNX file")
        if target:
            raise SegsweepError(f"{backend}: remote targets run onnxruntime or trtexec; use --backend ort-cpu or trtexec")
        result = measure_torch(model, dims, warmup, iters, fp16, compile=backend == "torch-compile", threads=threads)
    else:
        with tempfile.TemporaryDirectory(prefix="segsweep-bench-") as tmp:
            if onnx_path is None:
                from models.export import export_onnx

                onnx_path = export_onnx(model, Path(tmp) / "model.onnx", (dims[2], dims[3]))
            if target:
                from orchestrator.latency.remote import measure_remote

                result = measure_remote(target, backend, onnx_path, dims, warmup, iters, fp16, remote_python,
                                        ssh_option or [], threads)
            else:
                result = measure_onnx(backend, onnx_path, dims, warmup, iters, fp16, threads)
    typer.echo(json.dumps(result.to_json(), indent=2) if format == "json" else format_result(result))


@app.command("bench-train")
def bench_train(
    arch: Annotated[str, typer.Option(help="registry architecture")] = "unet",
    encoder: Annotated[str, typer.Option(help="encoder of the architecture")] = "mobilenet_v2",
    size: Annotated[str, typer.Option(help="training HxW")] = "224x320",
    batch: Annotated[int, typer.Option(min=1)] = 16,
    images: Annotated[int, typer.Option(min=8, help="synthetic training images (validation: a quarter)")] = 256,
    epochs: Annotated[int, typer.Option(min=2, help="epochs of the seeds and trial parts (the first warms up)")] = 3,
    workers: Annotated[int, typer.Option(min=0, help="DataLoader workers of the seeds' pipeline")] = 8,
    trials: Annotated[int, typer.Option(min=1, help="trials of the sweep part")] = 8,
    sweep_epochs: Annotated[int, typer.Option(min=1)] = 3,
    quality_epochs: Annotated[int, typer.Option(min=1)] = 8,
    parts: Annotated[str, typer.Option(help="comma-separated: seeds, trial, levers, sweep, quality")] = "seeds,trial,sweep",
    out: Annotated[Path, typer.Option(help="where data, cache, runs and bench_train.{json,md} go")] = Path("bench-train"),
    format: Annotated[str, typer.Option("--format", help="md | json")] = "md",
    set_: SetOption = None,
) -> None:
    """Training throughput: the seeds' pipeline, one segsweep trial (and each lever off), a whole sweep.
    ``--set KEY=VALUE`` changes the sweep part's spec (e.g. resources.trials_per_gpu=2)."""
    from orchestrator.spec import parse_override
    from orchestrator.throughput import PARTS, BenchSettings, markdown, run_bench

    chosen = tuple(p.strip() for p in parts.split(",") if p.strip())
    unknown = [p for p in chosen if p not in PARTS]
    if unknown or not chosen:
        raise SegsweepError(f"--parts {parts}: choose from {', '.join(PARTS)}")
    if format not in ("md", "json"):
        raise SegsweepError(f"--format {format}: md or json")
    settings = BenchSettings(arch=arch, encoder=encoder, size=_hw(size, "--size"), batch=batch, images=images,
                             epochs=epochs, workers=workers, trials=trials, sweep_epochs=sweep_epochs,
                             quality_epochs=quality_epochs, parts=chosen,
                             sweep_set=tuple(parse_override(text) for text in set_ or ()))
    result = run_bench(settings, out)
    typer.echo(json.dumps(result, indent=1, default=str) if format == "json" else markdown(result))


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
