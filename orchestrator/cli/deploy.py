"""Commands over models: size and compute (model-info), ONNX export, latency (bench), training speed (bench-train)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from orchestrator.cli.options import SetOption, TableFormat, TableFormatOption, TextFormat, TextFormatOption, hw
from orchestrator.errors import SegsweepError


def model_info(
    arch: Annotated[str, typer.Argument(help="architecture (orchestrate list models)")],
    classes: Annotated[int, typer.Option(min=1, help="output classes")],
    size: Annotated[str, typer.Option(help="input HxW, e.g. 256x320")],
    encoder: Annotated[Optional[str], typer.Option(help="encoder (smp name or tu-<timm model>)")] = None,
    format: TextFormatOption = TextFormat.text,
) -> None:
    """Parameters, weight size in MB and GMACs at an input size, with the counter named."""
    # lazy: torch and smp; see the package docstring
    from models.complexity import complexity
    from orchestrator.runs import bench_model

    height, width = hw(size, "--size")
    model, _ = bench_model(None, arch=arch, encoder=encoder, classes=classes)
    info = complexity(model, (height, width))
    if format is TextFormat.json:
        typer.echo(json.dumps({"params": info.params, "size_mb": info.size_mb, "gmacs": info.gmacs,
                               "counter": info.counter}))
    else:
        typer.echo(f"{arch} {encoder or ''} at {height}x{width}, {classes} classes: {info.params / 1e6:.3f} M params, "
                   f"{info.size_mb:.2f} MB, {info.gmacs:.3f} GMACs ({info.counter})")


def export(
    run_dir: Annotated[Path, typer.Argument(help="run directory")],
    trial: Annotated[str, typer.Option(help="best, or a trial id")] = "best",
    size: Annotated[Optional[str], typer.Option(help="input HxW (default: the training size)")] = None,
    dynamic: Annotated[bool, typer.Option("--dynamic", help="free batch, height and width")] = False,
    opset: Annotated[int, typer.Option(help="ONNX opset")] = 17,
) -> None:
    """Export a trial's best weights to ONNX (RUN_DIR/exports/), checked, with onnxruntime parity reported."""
    from orchestrator.runs import export_trial  # lazy: torch and onnx

    done = export_trial(run_dir, trial, hw(size, "--size") if size else None, dynamic, opset)
    h, w = done.size
    real = f", validation image {done.real_diff:.2e}" if done.real_diff is not None else ""
    typer.echo(f"{done.path}: trial {done.trial}, {h}x{w}{' dynamic' if dynamic else ''}, opset {opset}; max abs diff "
               f"to PyTorch: random {done.random_diff:.2e}{real}")
    if max(done.random_diff, done.real_diff or 0) > 1e-3:
        typer.echo("warning: difference above 1e-3", err=True)


def bench(
    source: Annotated[Optional[Path], typer.Argument(help="MODEL.onnx or a run directory")] = None,
    backend: Annotated[str, typer.Option(help="torch, torch-compile, ort-cpu, ort-cuda, ort-tensorrt, trtexec")] = "ort-cpu",
    trial: Annotated[str, typer.Option(help="with a run directory: best, or a trial id")] = "best",
    arch: Annotated[Optional[str], typer.Option(help="benchmark a registry model (random weights) instead")] = None,
    encoder: Annotated[Optional[str], typer.Option(help="with --arch")] = None,
    classes: Annotated[int, typer.Option(help="with --arch")] = 2,
    shape: Annotated[Optional[str], typer.Option(help="input NxCxHxW (default: an ONNX model's own static shape, a "
                                                "run's training size, or 1x3x256x320 for --arch)")] = None,
    warmup: Annotated[int, typer.Option(min=0)] = 10,
    iters: Annotated[int, typer.Option(min=1)] = 100,
    fp16: Annotated[bool, typer.Option("--fp16", help="fp16 (trtexec: --fp16 before TensorRT 11; on 11, an fp16 graph "
                                                     "made here first)")] = False,
    threads: Annotated[Optional[int], typer.Option(min=1, help="CPU threads (onnxruntime intra-op, or torch on a CPU); "
                                                   "default: the runtime's own")] = None,
    target: Annotated[Optional[str], typer.Option(help="ssh://user@host[:port], or a registered target's name "
                                                 "(orchestrate target list), to measure on a remote device")] = None,
    remote_python: Annotated[str, typer.Option(help="interpreter on the target")] = "python3",
    ssh_option: Annotated[Optional[list[str]], typer.Option(
        help="passed to ssh as -o KEY=VALUE (repeatable; options that run commands, like ProxyCommand, are refused)")
    ] = None,
    format: TextFormatOption = TextFormat.text,
) -> None:
    """Latency of a model: warm-up, timed iterations, mean / p50 / p90 / p99, throughput, versions, device; power and
    energy per image where the device measures them. trtexec builds each engine once per device and reuses it."""
    # lazy: torch, onnxruntime
    from orchestrator.latency.bench import check_backend, format_result, parse_shape
    from orchestrator.latency.measure import Protocol, measure
    from orchestrator.runs import bench_model

    check_backend(backend)
    model, onnx_path = bench_model(source, trial, arch, encoder, classes)
    dims = parse_shape(shape) if shape else default_shape(source, onnx_path, trial)
    result = measure(backend, dims, Protocol(warmup, iters, fp16, threads), model=model, onnx_path=onnx_path,
                     target=target or "local", remote_python=remote_python, ssh_options=tuple(ssh_option or ()))
    typer.echo(json.dumps(result.to_json(), indent=2) if format is TextFormat.json else format_result(result))


def default_shape(source: Path | None, onnx_path: Path | None, trial: str) -> list[int]:
    """The input shape ``bench`` times without ``--shape``, said on stderr: an ONNX model's own (a dynamic one
    needs --shape), a run's training size, else 1x3x256x320."""
    # lazy: onnx, and the store's trial rows
    from models.export import onnx_input_shape
    from orchestrator.runs import pick_trial, trial_model
    from orchestrator.store import Store

    if onnx_path is not None:
        dims = onnx_input_shape(onnx_path)
        if not all(isinstance(d, int) and d > 0 for d in dims):
            raise SegsweepError(f"{onnx_path}: its input is dynamic ({' x '.join(map(str, dims))}): give --shape NxCxHxW, "
                                f"e.g. --shape 1x3x256x320")
        where = "the model's own"
    elif source is not None:
        _, cfg = trial_model(source, pick_trial(Store.of_run(source), trial))
        dims, where = [1, 3, *cfg.data.size], "the run's training size"
    else:
        dims, where = [1, 3, 256, 320], "the default"
    typer.echo(f"shape {'x'.join(map(str, dims))} ({where}; --shape sets another)", err=True)
    return dims


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
    format: TableFormatOption = TableFormat.md,
    set_: SetOption = None,
) -> None:
    """Training throughput: the seeds' pipeline, one segsweep trial (and each lever off), a whole sweep.
    ``--set KEY=VALUE`` changes the sweep part's spec (e.g. resources.trials_per_gpu=2)."""
    # lazy: torch, Lightning, Ray
    from orchestrator.bench.train import PARTS, BenchSettings, markdown, run_bench
    from orchestrator.spec import parse_override

    chosen = tuple(p.strip() for p in parts.split(",") if p.strip())
    unknown = [p for p in chosen if p not in PARTS]
    if unknown or not chosen:
        raise SegsweepError(f"--parts {parts}: choose from {', '.join(PARTS)}")
    settings = BenchSettings(arch=arch, encoder=encoder, size=hw(size, "--size"), batch=batch, images=images,
                             epochs=epochs, workers=workers, trials=trials, sweep_epochs=sweep_epochs,
                             quality_epochs=quality_epochs, parts=chosen,
                             sweep_set=tuple(parse_override(text) for text in set_ or ()))
    result = run_bench(settings, out)
    typer.echo(json.dumps(result, indent=1, default=str) if format is TableFormat.json else markdown(result))


def bench_sweep(
    spec: Annotated[Path, typer.Argument(help="sweep YAML file, run as shipped (but for --set)")],
    set_: SetOption = None,
    root: Annotated[Optional[Path], typer.Option(help="real data for the spec's dataset (default: synthetic scenes in "
                                                 "the IDD-lite layout, of --shape)")] = None,
    shape: Annotated[str, typer.Option(help="synthetic TRAINxVALxHxW")] = "281x204x227x320",
    seeds_sample: Annotated[int, typer.Option(min=0, help="trials timed again with the seeds' plain loop")] = 3,
    seeds_workers: Annotated[int, typer.Option(min=0, help="the seeds' DataLoader workers")] = 8,
    out: Annotated[Path, typer.Option(help="where data, the run and bench_sweep.{json,md} go")] = Path("bench-sweep"),
    pool: Annotated[bool, typer.Option("--pool", help="cold, warm and two users in one run: the study on its own "
                                       "Ray, then twice on a pool started for it, then twice at once")] = False,
    pool_runs: Annotated[str, typer.Option(help="with --pool: which of cold,first,warm,two-users (the "
                                           "pool's first study runs before warm and two-users)")] = "cold,first,warm,two-users",
) -> None:
    """A whole study as a user runs it (orchestrate run -> report), its phases and GPU use, against the seeds'
    plain loop on a sample of the same trials; with ``--pool``, cold against a warm pool and two users at once."""
    # lazy: imports Ray
    from orchestrator.bench.sweep import SweepBench, markdown, pool_markdown, run_bench_sweep, run_pool_bench

    try:
        dims = tuple(int(v) for v in shape.lower().split("x"))
    except ValueError:
        dims = ()
    if len(dims) != 4 or min(dims) <= 0:
        raise SegsweepError(f"--shape {shape}: expected TRAINxVALxHxW, e.g. 281x204x227x320")
    bench = SweepBench(spec, tuple(set_ or ()), root, dims, seeds_sample, seeds_workers)
    if pool:
        runs = tuple(part.strip() for part in pool_runs.split(",") if part.strip())
        typer.echo(pool_markdown(run_pool_bench(bench, out, runs)))
        return
    typer.echo(markdown(run_bench_sweep(bench, out)))
