"""The ``export:`` block of a sweep: after training, export the chosen trials and measure them on every backend
and target. A failure is recorded for that measurement; the trial keeps its training results."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from models.export import export_onnx
from orchestrator.errors import KNOWN_ERRORS
from orchestrator.latency.measure import Protocol, measure
from orchestrator.rundir import RunDir
from orchestrator.runs import trial_model
from orchestrator.spec.schema import SweepSpec
from orchestrator.store import Store, TrialRow, top_trials


def chosen_trials(store: Store, export) -> list[TrialRow]:
    """``all``: every completed trial; ``top_k``: the k best finished trials by the sweep's metric."""
    if export.trials == "all":
        metric = store.meta()["metric"]
        return [t for t in store.trials() if t.status == "completed" and metric in t.best]
    return top_trials(store, export.top_k)


def measure_exports(run_dir: Path, spec: SweepSpec, store: Store) -> None:
    """Every chosen trial exported once (``exports/<id>.onnx``) and measured on every backend and target; each
    measurement (or its failure) is a row of the store's ``latency`` table. Rows already measured are kept."""
    export = spec.export
    size = tuple(export.size or spec.data.size)
    shape = [1, 3, *size]
    protocol = Protocol(export.warmup, export.iters, export.fp16, export.threads)
    done = {(r["trial_id"], r["backend"], r["target"]) for r in store.latencies() if r["status"] == "ok"}
    for row in chosen_trials(store, export):
        path = RunDir(run_dir).export(row.id)
        try:
            model, _ = trial_model(run_dir, row)
            if not path.is_file():
                export_onnx(model, path, size, opset=export.opset)
        except KNOWN_ERRORS as e:
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
                    result = measure(backend, shape, protocol, model=model, onnx_path=path, target=target,
                                     remote_python=export.remote_python, ssh_options=tuple(export.ssh_options))
                    store.record_latency(row.id, backend, target, result.to_json())
                except KNOWN_ERRORS as e:
                    store.record_latency(row.id, backend, target, None, str(e))
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
