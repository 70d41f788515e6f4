"""The ``export:`` block of a sweep: after training, export the chosen trials and measure them on every backend
and target. A failure is recorded for that measurement; the trial keeps its training results."""

from __future__ import annotations

import sys
from pathlib import Path

from orchestrator.errors import SegsweepError
from orchestrator.store import Store, TrialRow


def chosen_trials(store: Store, export) -> list[TrialRow]:
    """``all``: every completed trial; ``top_k``: the k best finished trials by the sweep's metric."""
    meta = store.meta()
    metric, mode = meta["metric"], meta["mode"]
    finished = [t for t in store.trials() if t.status in ("completed", "early_stopped") and metric in t.best]
    if export.trials == "all":
        return [t for t in finished if t.status == "completed"]
    return sorted(finished, key=lambda t: t.best[metric], reverse=mode == "max")[: export.top_k]


def measure_exports(run_dir: Path, spec, store: Store) -> None:
    import torch

    from models.export import export_onnx
    from orchestrator.latency.bench import measure_onnx, measure_torch
    from orchestrator.latency.remote import measure_remote
    from orchestrator.runs import trial_model

    export = spec.export
    size = tuple(export.size or spec.data.size)
    shape = [1, 3, *size]
    done = {(r["trial_id"], r["backend"], r["target"]) for r in store.latencies() if r["status"] == "ok"}
    for row in chosen_trials(store, export):
        path = Path(run_dir) / "exports" / f"{row.id}.onnx"
        try:
            model, _ = trial_model(run_dir, row)
            if not path.is_file():
                export_onnx(model, path, size, opset=export.opset)
        except SegsweepError as e:
            for backend in export.backends:
                for target in export.targets:
                    store.record_latency(row.id, backend, target, None, f"export failed: {e}")
            continue
        for backend in export.backends:
            for target in export.targets:
                if (row.id, backend, target) in done:
                    continue
                print(f"[segsweep] latency of {row.id}: {backend} on {target}", file=sys.stderr, flush=True)
                try:
                    if target != "local":
                        result = measure_remote(target, backend, path, shape, export.warmup, export.iters,
                                                export.fp16, export.remote_python, list(export.ssh_options),
                                                export.threads)
                    elif backend.startswith("torch"):
                        result = measure_torch(model, shape, export.warmup, export.iters, export.fp16,
                                               compile=backend == "torch-compile", threads=export.threads)
                    else:
                        result = measure_onnx(backend, path, shape, export.warmup, export.iters, export.fp16,
                                              export.threads)
                    store.record_latency(row.id, backend, target, result.to_json())
                except SegsweepError as e:
                    store.record_latency(row.id, backend, target, None, str(e))
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
