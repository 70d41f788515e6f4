"""``build_report(run_dir)``: report.md (model-wise comparison) and report.html (plotly charts), from the store."""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from markdown_it import MarkdownIt

from models.catalog import COUNTER
from orchestrator.budgets import figure, stated
from orchestrator.files import write_text_whole
from orchestrator.rundir import RunDir
from orchestrator.store import FINISHED, TrialRow, best_of
from reports.analysis import analysis_markdown
from reports.collect import RunData, load_run
from reports.figures import (
    STAGE1,
    cost_vs_accuracy,
    energy_frames,
    importance_bars,
    latency_bars,
    loss_curves,
    metric_by,
    metric_vs_value,
    parallel_coordinates,
    speed_frames,
    speed_vs_accuracy,
    training_curves,
    trial_labels,
)
from reports.summary import latency_columns, pareto_front
from reports.tables import code, comparison_table, md, to_markdown, varying_keys


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
            "infeasible": t.infeasible,
            "budgets": budget_figures(meta, t),
            "latency": [latency_entry(r) for r in latencies.get(t.id, [])],
            "evaluations": [{**e, "verified": verified(run, t.id)} for e in evaluations.get(t.id, [])],
            "check": run.checks.get(t.id),
        })
    feasible = [t for t in run.trials if t.status in FINISHED]
    best = best_of(feasible, meta["metric"], meta["mode"]) if meta.get("constraints") else None
    return {"sweep": meta.get("sweep"), "metric": meta.get("metric"), "mode": meta.get("mode"), "trials": trials,
            "importances": run.importances, "constraints": meta.get("constraints") or [],
            **({"feasible": [t.id for t in feasible], "best_feasible": best.id if best else None}
               if meta.get("constraints") else {})}


def latency_entry(row: dict[str, Any]) -> dict[str, Any]:
    """A latency row in ``report --format json``: where, how it went, p50, mean power (W) and energy per image (mJ)
    where measured, and the result's other figures."""
    entry = {k: row[k] for k in ("backend", "target", "status", "p50_ms", "power_w", "energy_mj", "error")}
    if row["result"]:
        entry |= {k: row["result"][k] for k in ("mean_ms", "p90_ms", "p99_ms", "throughput_fps", "device")}
    return entry


def budget_figures(meta: dict, trial: TrialRow) -> dict[str, float] | None:
    """A trial's figure for each budget of the study (None without budgets, or where a figure is missing: a trial
    that failed before its budgets were known)."""
    constraints = meta.get("constraints") or []
    values = {**trial.best, "model/params": trial.params, "model/size_mb": trial.size_mb, "model/gmacs": trial.gmacs}
    figures = {c["metric"]: figure(c["metric"], values) for c in constraints}
    return figures if constraints else None


def verified(run: RunData, trial_id: str) -> bool | None:
    """Whether the trial's saved weights reproduced its recorded figure (the self-check); None: not checked."""
    check = run.checks.get(trial_id)
    return None if check is None else check["ok"]


def check_cell(check: dict[str, Any] | None) -> str:
    """The report's ``check`` column: ``ok``, ``NOT REPRODUCED (0.0321)`` with the re-scored figure, or ``–``."""
    if check is None:
        return "–"
    if check["ok"]:
        return "ok"
    return f"NOT REPRODUCED ({check['measured']:.4f})" if check["measured"] is not None else "NOT REPRODUCED"


def check_lines(run: RunData) -> list[str]:
    """The self-check under the table: how many trials were re-scored from their saved weights, and a loud line per
    trial that did not reproduce its figure."""
    if not run.checks:
        return []
    metric = run.meta["metric"]
    failed = {trial: c for trial, c in run.checks.items() if not c["ok"]}
    tolerance = max(c["tolerance"] for c in run.checks.values())
    lines = [f"Self-check (`check` column): {len(run.checks)} trial(s) re-scored on the validation split from their "
             f"saved best weights; {len(run.checks) - len(failed)} reproduce their recorded {code(metric)} within "
             f"{tolerance:.3g}.", ""]
    for trial, c in failed.items():
        found = (f"{c['recorded']:.4f} recorded, {c['measured']:.4f} from its saved weights"
                 if c["measured"] is not None and c["recorded"] is not None else f"could not re-score ({md(c['error'])})")
        lines += [f"- **WARNING** `{trial}` does not reproduce its {code(metric)}: {found}. Its figures, held-out ones "
                  "included, are unverified.", ""]
    return lines


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
    for metric, title in (("latency/p50_ms", "latency p50 ms (proxy)"), ("energy/mj_per_image", "mJ/img (proxy)")):
        if f"metric/{metric}" in results:
            proxy = results.set_index("id")[f"metric/{metric}"]
            table.insert(table.columns.get_loc("epochs"), title, table["trial"].map(proxy).round(3))
    latency = latency_columns(run.latencies)
    for column in latency.columns:
        table.insert(table.columns.get_loc("epochs"), column, table["trial"].map(latency[column]))
    for column, values in heldout_columns(run).items():
        table.insert(table.columns.get_loc(meta["metric"]) + 1, column, table["trial"].map(values))
    if run.checks:
        table.insert(table.columns.get_loc(meta["metric"]) + 1, "check", table["trial"].map(
            lambda trial: check_cell(run.checks.get(trial))))
    statuses = dict(zip(results["id"], results["status"]))
    if meta.get("constraints"):
        table.insert(table.columns.get_loc("status"), "budget", table["trial"].map(
            {t.id: budget_cell(t) for t in run.trials}))
    goals = objectives(meta)
    if len(goals) > 1:
        front = dict(zip(results["id"], pareto_front(results, goals)))
        table.insert(1, "pareto", table["trial"].map(
            lambda trial: "infeasible" if statuses[trial] == "infeasible" else "*" if front[trial] else ""))
    return table


def budget_cell(trial: TrialRow) -> str:
    """The ``budget`` column: ``ok`` for a trial that trained within every budget, ``over: <the budgets it broke>``
    for an infeasible one (never trained), ``–`` for one that failed before its budgets were known."""
    if trial.status == "infeasible":
        return f"over: {trial.infeasible}"
    return "ok" if trial.status in FINISHED else "–"


def budget_lines(run: RunData) -> list[str]:
    """The budgets of a study with ``search.constraints``: what they were, the feasible set (trained within every
    budget), the best feasible trial, and each infeasible trial with the budgets it broke."""
    constraints = run.meta.get("constraints") or []
    if not constraints:
        return []
    metric, mode = run.meta["metric"], run.meta["mode"]
    feasible = [t for t in run.trials if t.status in FINISHED]
    infeasible = [t for t in run.trials if t.status == "infeasible"]
    best = best_of(feasible, metric, mode)
    lines = ["## Budgets", "",
             f"Budgets (`search.constraints`): {', '.join(code(stated(c)) for c in constraints)}. Each figure is "
             "known before a trial trains (the model's size and compute, the latency proxy's latency and energy), so "
             "a trial over a budget is `infeasible`: recorded with its figures, never trained.", "",
             f"Feasible set: {len(feasible)} trial(s) trained within every budget"
             + (f" ({', '.join(f'`{t.id}`' for t in feasible)})" if feasible else "")
             + f"; {len(infeasible)} infeasible.", ""]
    if best is not None:
        lines += [f"Best feasible trial: `{best.id}`, {md(metric)} = {best.best[metric]:.4f}.", ""]
    lines += [f"- `{t.id}` infeasible: {md(t.infeasible)}" for t in infeasible]
    return lines + ([""] if infeasible else [])


def heldout_columns(run: RunData) -> dict[str, dict[str, float]]:
    """``<split>/<metric>`` (and ``<split>/miou``) per evaluated trial, one pair per split and test-time
    augmentation, e.g. ``test/iou/road``, ``test/miou (hflip)``."""
    short = run.meta["metric"].split("/", 1)[1]
    columns: dict[str, dict[str, float]] = {}
    for e in run.evaluations:
        suffix = "" if e["tta"] == "none" else f" ({e['tta']})"
        unverified = verified(run, e["trial_id"]) is False
        # the validation split evaluated again (at the best weights, with TTA): not the search's own val/ column
        prefix = "eval " if e["split"] == run.meta["metric"].split("/", 1)[0] else ""
        for name in dict.fromkeys([short, "miou"]):
            if name in e["metrics"]:
                column = f"{prefix}{e['split']}/{name}{suffix}"
                value = round(e["metrics"][name], 4)
                # weights that do not reproduce their validation figure: their held-out figure is no better
                columns.setdefault(column, {})[e["trial_id"]] = f"{value:.4f} (unverified)" if unverified else value
    return dict(reversed(list(columns.items())))  # inserted one by one after the metric: keeps this order


@dataclass
class Section:
    """A part of the report: its markdown lines (report.md is them all) and the charts report.html shows after it."""

    lines: list[str]
    figures: list[go.Figure] = field(default_factory=list)


def report_sections(run: RunData) -> list[Section]:
    """The report, top to bottom: summary and model-wise table (with the self-check, held-out and latency columns and
    notes), the study analysis, failed measurements and trials, the best trial. report.md and report.html both
    render exactly these, so neither has a section the other lacks."""
    meta, counts = run.meta, run.counts
    metric, mode = meta["metric"], meta["mode"]
    results, history = run.results, run.history
    table = comparison_frame(run)
    staged = any(k.startswith(STAGE1) for k in history.columns)
    lines = [
        f"# {meta['sweep']}: model-wise comparison",
        "",
        f"Metric: {code(metric)} ({mode}), best value over each trial's epochs"
        + (" of the full network (a staged model's first-stage epochs score the encoder alone: they are the "
           f"`{STAGE1}` series, never its figure)" if staged else "") + ". "
        f"Trials: {sum(counts.values())} ({counts['completed']} completed, {counts['early_stopped']} early-stopped, "
        + (f"{counts['infeasible']} infeasible (over budget, never trained), " if meta.get("constraints") else "")
        + f"{counts['failed']} failed, {counts['running'] + counts['pending']} unfinished). "
        f"Data: {meta['data']['dataset']} ({meta['data']['task']}), train {meta['data']['train']['images']} / "
        f"val {meta['data']['val']['images']} images. GMACs at the training size, counted by "
        f"{COUNTER.split(' (')[0]} (conv and matmul only).",
        "",
        to_markdown(table),
    ]
    goals = objectives(meta)
    if len(goals) > 1:
        named = ", ".join(f"{column.removeprefix('metric/')} ({mode})" for column, mode in goals)
        lines += [f"`pareto` marks the trials no other trial beats in every objective: {named}"
                  + ("; `infeasible`: over a budget, never trained, so off the front" if counts["infeasible"] else "")
                  + ".", ""]
    lines += check_lines(run)
    if run.evaluations:
        splits = sorted({e["split"] for e in run.evaluations})
        lines += [f"Held-out figures ({', '.join(splits)}): the trials selected on {code(metric)}, each at its best "
                  "validation weights, on a split no trial saw (`orchestrate evaluate`). Publish these, not the "
                  "validation ones the search selected on.", ""]
    searched = list(run.domains) or varying_keys(results)
    labels = trial_labels(results, searched) if not results.empty else {}
    figures = [metric_by(results, metric, "loss.name", f"{metric} by loss"),
               metric_by(results, metric, "model.arch", f"{metric} by architecture"),
               training_curves(history, metric, labels), loss_curves(history, results, labels)]
    for speed in speed_frames(results, run.latencies):
        front = pareto_front(speed, [(f"metric/{metric}", meta["mode"]), ("latency_ms", "min")])
        figures += [speed_vs_accuracy(speed.assign(pareto=front), metric), latency_bars(speed)]
    for energy in energy_frames(results, run.latencies):
        front = pareto_front(energy, [(f"metric/{metric}", meta["mode"]), ("energy_mj", "min")])
        figures.append(cost_vs_accuracy(energy.assign(pareto=front), metric, "energy_mj", "energy per image",
                                        "energy per image (mJ)"))
    sections = [Section(lines, figures)]
    if meta.get("constraints"):
        sections.append(Section(budget_lines(run)))

    analysis = Section(analysis_markdown(meta, run.trials, run.domains, run.importances))
    if run.domains:
        analysis.figures.append(parallel_coordinates(results, run.domains, metric))
        analysis.figures += [metric_vs_value(results, key, domain, metric) for key, domain in run.domains.items()
                             if domain["kind"] in ("uniform", "loguniform", "int")]
    if run.importances:
        analysis.figures.append(importance_bars(run.importances, metric))
    sections.append(analysis)

    failed_latency = [r for r in run.latencies if r["status"] == "failed"]
    if failed_latency:
        sections.append(Section(["## Failed latency measurements", ""] + [
            f"- `{r['trial_id']}` {md(r['backend'])} on {md(r['target'])}: {md(r['error'])}" for r in failed_latency]
            + [""]))
    failed = results[results["status"] == "failed"] if not results.empty else results
    if not failed.empty:
        sections.append(Section(["## Failed trials", ""] + [f"- `{r.id}`: {md(r.error)}" for r in failed.itertuples()]
                                + [""]))
    if not table.empty and table["rank"].notna().any():
        best = results.set_index("id").loc[table.iloc[0]["trial"]]
        keys = varying_keys(results)
        values = [f"{k}: {best[f'config/{k}']}" for k in keys]
        fence = "`" * max(3, 1 + max((len(r) for v in values for r in re.findall("`+", v)), default=0))  # none closes it
        # with budgets only trials within them train: the best trial is the best feasible one
        title = "## Best feasible trial" if meta.get("constraints") else "## Best trial"
        sections.append(Section([title, "", f"`{table.iloc[0]['trial']}`: {md(metric)} = "
                                 f"{table.iloc[0][metric]:.4f}; its searched values:", "", f"{fence}yaml",
                                 *values, fence, ""]))
    return sections


def markdown_report(run: RunData, sections: list[Section] | None = None) -> str:
    return "\n".join(line for section in sections or report_sections(run) for line in section.lines)


# CommonMark with tables; raw HTML in the text (a class name, an error line) is escaped, never passed through
_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")
_STYLE = ("body{font-family:sans-serif;margin:2em;max-width:1400px} table{border-collapse:collapse;font-size:13px}"
          "td,th{border:1px solid #ccc;padding:3px 6px} code{background:#f4f4f4;padding:0 3px}"
          "pre{background:#f4f4f4;padding:8px}")


def html_report(run: RunData, sections: list[Section] | None = None) -> str:
    """report.md's sections rendered as HTML, each followed by its plotly charts (plotly.js embedded once, so the page
    works offline; plotly escapes ``<`` in its JSON, so no string closes a script tag)."""
    parts, first = [], True
    for section in sections or report_sections(run):
        parts.append(_MARKDOWN.render("\n".join(section.lines)))
        for fig in section.figures:
            parts.append(f"<div class='chart'>{fig.to_html(full_html=False, include_plotlyjs=first)}</div>")
            first = False
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(run.meta['sweep'])} — segsweep"
            f"</title><style>{_STYLE}</style></head><body>" + "".join(parts) + "</body></html>")


def build_report(run_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into the run directory (atomically) and return their paths."""
    run, paths = load_run(run_dir), RunDir(run_dir)
    sections = report_sections(run)
    outputs = []
    for path, text in ((paths.report_md, markdown_report(run, sections)),
                       (paths.report_html, html_report(run, sections))):
        write_text_whole(path, text)
        outputs.append(path)
    return outputs[0], outputs[1]
