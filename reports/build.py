"""``build_report(run_dir)``: report.md (model-wise comparison) and report.html (plotly charts), from the store."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import pandas as pd

from models.catalog import COUNTER
from orchestrator.files import write_text_whole
from orchestrator.rundir import RunDir
from reports.analysis import analysis_markdown
from reports.collect import RunData, load_run
from reports.figures import (
    importance_bars,
    latency_bars,
    metric_by,
    parallel_coordinates,
    speed_frame,
    speed_vs_accuracy,
    training_curves,
)
from reports.summary import latency_columns, pareto_front
from reports.tables import comparison_table, to_markdown, varying_keys


def _num(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def report_json(run_dir: str | Path) -> dict[str, Any]:
    """The ``report --format json`` object: every trial with its config and best validation metrics."""
    run = load_run(run_dir)
    meta = run.meta
    latencies: dict[str, list[dict]] = {}
    for r in run.latencies:
        latencies.setdefault(r["trial_id"], []).append(r)
    evaluations: dict[str, list[dict]] = {}
    for e in run.evaluations:
        evaluations.setdefault(e["trial_id"], []).append({k: e[k] for k in ("split", "tta", "images", "metrics")})
    trials = []
    for t in run.trials:
        trials.append({
            "id": t.id, "status": t.status, "config": t.config, "epochs": t.epochs,
            "metrics": {k: v for k, v in t.best.items() if k.startswith("val/")},
            "error": t.error, "params_m": t.params / 1e6 if t.params is not None else None,
            "size_mb": _num(t.size_mb), "gmacs": _num(t.gmacs), "train_seconds": _num(t.train_seconds),
            "latency": [{k: r[k] for k in ("backend", "target", "status", "p50_ms", "error")} | (
                {k: r["result"][k] for k in ("mean_ms", "p90_ms", "p99_ms", "throughput_fps", "device")}
                if r["result"] else {}) for r in latencies.get(t.id, [])],
            "evaluations": evaluations.get(t.id, []),
        })
    return {"sweep": meta.get("sweep"), "metric": meta.get("metric"), "mode": meta.get("mode"), "trials": trials,
            "importances": run.importances}


def objectives(meta: dict) -> list[tuple[str, str]]:
    """The sweep's objectives as (results column, mode); one: its metric."""
    found = meta.get("objectives") or [{"metric": meta["metric"], "mode": meta["mode"]}]
    return [(f"metric/{o['metric']}", o["mode"]) for o in found]


def comparison_frame(run: RunData) -> pd.DataFrame:
    """The comparison table with latency columns and, for several objectives, the Pareto front marked."""
    meta, results = run.meta, run.results
    table = comparison_table(results, meta["metric"], meta["mode"], meta.get("classes", []))
    if table.empty:
        return table
    if "metric/latency/p50_ms" in results:
        proxy = results.set_index("id")["metric/latency/p50_ms"]
        table.insert(table.columns.get_loc("epochs"), "latency p50 ms (proxy)", table["trial"].map(proxy).round(3))
    latency = latency_columns(run.latencies)
    for column in latency.columns:
        table.insert(table.columns.get_loc("epochs"), column, table["trial"].map(latency[column]))
    for column, values in heldout_columns(run).items():
        table.insert(table.columns.get_loc(meta["metric"]) + 1, column, table["trial"].map(values))
    goals = objectives(meta)
    if len(goals) > 1:
        front = pareto_front(results, goals)
        table.insert(1, "pareto", table["trial"].map(dict(zip(results["id"], front))).map({True: "*", False: ""}))
    return table


def heldout_columns(run: RunData) -> dict[str, dict[str, float]]:
    """``<split>/<metric>`` (and ``<split>/miou``) per evaluated trial, one pair per split and test-time
    augmentation, e.g. ``test/iou/road``, ``test/miou (hflip)``."""
    short = run.meta["metric"].split("/", 1)[1]
    columns: dict[str, dict[str, float]] = {}
    for e in run.evaluations:
        suffix = "" if e["tta"] == "none" else f" ({e['tta']})"
        # the validation split evaluated again (at the best weights, with TTA): not the search's own val/ column
        prefix = "eval " if e["split"] == run.meta["metric"].split("/", 1)[0] else ""
        for name in dict.fromkeys([short, "miou"]):
            if name in e["metrics"]:
                column = f"{prefix}{e['split']}/{name}{suffix}"
                columns.setdefault(column, {})[e["trial_id"]] = round(e["metrics"][name], 4)
    return dict(reversed(list(columns.items())))  # inserted one by one after the metric: keeps this order


def markdown_report(run: RunData) -> str:
    meta, counts = run.meta, run.counts
    metric, mode = meta["metric"], meta["mode"]
    results = run.results
    table = comparison_frame(run)
    lines = [
        f"# {meta['sweep']}: model-wise comparison",
        "",
        f"Metric: `{metric}` ({mode}), best value over each trial's epochs. "
        f"Trials: {sum(counts.values())} ({counts['completed']} completed, {counts['early_stopped']} early-stopped, "
        f"{counts['failed']} failed, {counts['running'] + counts['pending']} unfinished). "
        f"Data: {meta['data']['dataset']} ({meta['data']['task']}), train {meta['data']['train']['images']} / "
        f"val {meta['data']['val']['images']} images. GMACs at the training size, counted by "
        f"{COUNTER.split(' (')[0]} (conv and matmul only).",
        "",
        to_markdown(table),
    ]
    goals = objectives(meta)
    if len(goals) > 1:
        named = ", ".join(f"{column.removeprefix('metric/')} ({mode})" for column, mode in goals)
        lines += [f"`pareto` marks the trials no other trial beats in every objective: {named}.", ""]
    if run.evaluations:
        splits = sorted({e["split"] for e in run.evaluations})
        lines += [f"Held-out figures ({', '.join(splits)}): the trials selected on `{metric}`, each at its best "
                  "validation weights, on a split no trial saw (`orchestrate evaluate`). Publish these, not the "
                  "validation ones the search selected on.", ""]
    lines += analysis_markdown(meta, run.trials, run.domains, run.importances)
    failed_latency = [r for r in run.latencies if r["status"] == "failed"]
    if failed_latency:
        lines += ["## Failed latency measurements", ""] + [
            f"- `{r['trial_id']}` {r['backend']} on {r['target']}: {r['error']}" for r in failed_latency] + [""]
    failed = results[results["status"] == "failed"] if not results.empty else results
    if not failed.empty:
        lines += ["## Failed trials", ""] + [f"- `{r.id}`: {r.error}" for r in failed.itertuples()] + [""]
    if not table.empty and table["rank"].notna().any():
        best = results.set_index("id").loc[table.iloc[0]["trial"]]
        searched = varying_keys(results)
        lines += ["## Best trial", "", f"`{table.iloc[0]['trial']}`: {metric} = {table.iloc[0][metric]:.4f}; "
                  "its searched values:", "", "```yaml", *[f"{k}: {best[f'config/{k}']}" for k in searched], "```", ""]
    return "\n".join(lines)


def html_report(run: RunData) -> str:
    meta = run.meta
    metric = meta["metric"]
    results, history = run.results, run.history
    figures = [
        metric_by(results, metric, "loss.name", f"{metric} by loss"),
        metric_by(results, metric, "model.arch", f"{metric} by architecture"),
        training_curves(history, metric),
        training_curves(history, "val/loss"),
    ]
    if run.domains:
        figures.append(parallel_coordinates(results, run.domains, metric))
    if run.importances:
        figures.append(importance_bars(run.importances, metric))
    speed = speed_frame(results, run.latencies)
    if not speed.empty:
        front = pareto_front(speed, [(f"metric/{metric}", meta["mode"]), ("latency_ms", "min")])
        figures += [speed_vs_accuracy(speed.assign(pareto=front), metric), latency_bars(speed)]
    # plotly.js is embedded once, so the page works offline
    parts = [fig.to_html(full_html=False, include_plotlyjs=i == 0) for i, fig in enumerate(figures)]
    table = comparison_frame(run)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(meta['sweep'])} — segsweep</title>"
        "<style>body{font-family:sans-serif;margin:2em} table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 6px}</style></head><body>"
        f"<h1>{html.escape(meta['sweep'])}: model-wise comparison</h1>"
        f"{table.to_html(index=False, na_rep='–', float_format=lambda v: f'{v:.4g}') if not table.empty else ''}"
        + "".join(parts) + "</body></html>"
    )


def build_report(run_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into the run directory (atomically) and return their paths."""
    run, paths = load_run(run_dir), RunDir(run_dir)
    outputs = []
    for path, text in ((paths.report_md, markdown_report(run)), (paths.report_html, html_report(run))):
        write_text_whole(path, text)
        outputs.append(path)
    return outputs[0], outputs[1]
