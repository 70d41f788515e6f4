"""The study's analysis: what each searched value did, at equal budget, and which searched keys mattered.

A loss comparison of early-stopped and finished trials mixes epochs: under ASHA a value whose trials all stopped at
the first rung shows its best at 3 epochs beside others' at 20. So beside each value's best and median, its median
**at equal budget**: the metric at the largest rung epoch that every compared trial reached. Importances are
Optuna's fANOVA over every finished trial (searched values -> the sweep's metric), whichever searcher ran.
Pure functions over store rows: ``factor_table``, ``budget_epoch``, ``param_importances``.
"""

from __future__ import annotations

import math
import statistics
import warnings
from typing import Any

import optuna
import pandas as pd

from orchestrator.store import FINISHED, TrialRow
from reports.tables import code, md, to_markdown


def budget_epoch(trials: list[TrialRow], rungs: list[int], max_epochs: int) -> int | None:
    """The largest decision epoch (ASHA's rungs and the last epoch) that every trial reached; None without trials.
    Below the first rung (a trial that failed early): the fewest epochs any trial trained."""
    reached = [t.epochs for t in trials if t.epochs]
    if not reached:
        return None
    floor = min(reached)
    marks = [r for r in [*rungs, max_epochs] if r <= floor]
    return max(marks) if marks else floor


def metric_at(trial: TrialRow, metric: str, epoch: int) -> float | None:
    for row in trial.history:
        if row["epoch"] == epoch:
            value = row.get(metric)
            return value if value is not None and math.isfinite(value) else None
    return None


BINS = 4  # a continuous key's trials in quartiles of its values


def value_groups(trials: list[TrialRow], key: str, domain: dict[str, Any] | None = None) -> dict[str, list[TrialRow]]:
    """``trials`` grouped by their value of ``key``: each value of a choice (sorted); for a continuous domain
    (``uniform``, ``loguniform``, ``int``) with more than four values, quartiles of the values, labelled by the range
    of values in each (``0.00104–0.00231 (Q1)``), in order."""
    continuous = domain is not None and domain.get("kind") in ("uniform", "loguniform", "int")
    values = sorted({float(t.config[key]) for t in trials}) if continuous else []
    if len(values) <= BINS:
        groups: dict[str, list[TrialRow]] = {}
        for t in sorted(trials, key=lambda t: (float(t.config[key]), "") if continuous else (0.0, str(t.config[key]))):
            groups.setdefault(f"{t.config[key]:.3g}" if continuous else str(t.config[key]), []).append(t)
        return groups
    quartile = pd.qcut([float(t.config[key]) for t in trials], BINS, labels=False, duplicates="drop")
    binned: dict[int, list[TrialRow]] = {}
    for t, q in zip(trials, quartile, strict=True):
        binned.setdefault(int(q), []).append(t)
    out = {}
    for q in sorted(binned):
        group = binned[q]
        lo, hi = min(float(t.config[key]) for t in group), max(float(t.config[key]) for t in group)
        out[f"{lo:.3g}–{hi:.3g} (Q{q + 1})"] = group
    return out


def factor_table(trials: list[TrialRow], key: str, metric: str, mode: str, rungs: list[int],
                 max_epochs: int, domain: dict[str, Any] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """One row per value of ``key`` (per quartile of a continuous one, ``value_groups``): trials, best, median (of
    the trials' best), median at equal budget (the metric at the budget epoch), the most epochs any of them trained;
    and notes for values whose trials never went past the first rung."""
    finished = [t for t in trials if t.status in FINISHED and key in t.config and metric in t.best]
    budget = budget_epoch(finished, rungs, max_epochs)
    groups = value_groups(finished, key, domain)
    rows, notes = [], []
    pick = max if mode == "max" else min
    for value, group in groups.items():
        at_budget = [v for v in (metric_at(t, metric, budget) for t in group) if v is not None] if budget else []
        rows.append({"value": value, "trials": len(group), "best": pick(t.best[metric] for t in group),
                     "median": statistics.median(t.best[metric] for t in group),
                     f"median at epoch {budget}": statistics.median(at_budget) if at_budget else math.nan,
                     "most epochs": max(t.epochs for t in group)})
        if rungs and max(t.epochs for t in group) <= rungs[0] < max_epochs:
            notes.append(f"`{key}` = {md(value)}: never trained past epoch {rungs[0]} (every trial stopped at the first "
                         f"rung), so its best is a {rungs[0]}-epoch figure")
    return pd.DataFrame(rows), notes


def _distribution(domain: dict[str, Any]) -> optuna.distributions.BaseDistribution:
    kind, values = domain["kind"], domain["values"]
    if kind == "choice":
        return optuna.distributions.CategoricalDistribution([str(v) for v in values])
    if kind == "int":
        return optuna.distributions.IntDistribution(int(values[0]), int(values[1]))
    return optuna.distributions.FloatDistribution(float(values[0]), float(values[1]), log=kind == "loguniform")


def param_importances(trials: list[TrialRow], domains: dict[str, dict[str, Any]], metric: str,
                      mode: str) -> dict[str, float]:
    """fANOVA importances (Optuna's, seeded) of the searched keys for ``metric``: a study rebuilt in memory from the
    finished trials, so that random and grid searches get them too. Empty with fewer than two trials or keys."""
    finished = [t for t in trials if t.status in FINISHED and metric in t.best
                and all(k in t.config for k in domains)]
    varied = {k: d for k, d in domains.items() if len({str(t.config[k]) for t in finished}) > 1}
    if len(finished) < 2 or not varied:
        return {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line on the sweep's console
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    dists = {k: _distribution(d) for k, d in varied.items()}
    for t in finished:
        params = {k: str(t.config[k]) if isinstance(dists[k], optuna.distributions.CategoricalDistribution)
                  else t.config[k] for k in varied}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=t.best[metric]))
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna marks the evaluator experimental
        return dict(optuna.importance.get_param_importances(study, evaluator=evaluator))


def searched_domains(meta: dict[str, Any], trials: list[TrialRow]) -> dict[str, dict[str, Any]]:
    """The run's searched keys (kept in its meta since issue 12), else the config keys whose values differ, as
    choices."""
    if meta.get("domains"):
        return meta["domains"]
    keys = sorted({k for t in trials for k in t.config})
    values = {k: sorted({str(t.config.get(k)) for t in trials}) for k in keys}
    return {k: {"kind": "choice", "values": v} for k, v in values.items() if len(v) > 1}


def analysis_markdown(meta: dict[str, Any], trials: list[TrialRow], domains: dict[str, dict[str, Any]],
                      importances: dict[str, float]) -> list[str]:
    """The report's ``## Study analysis``: a table per searched key, the first-rung notes, the importances."""
    metric, mode = meta["metric"], meta["mode"]
    if not domains:
        return []
    rungs, max_epochs = meta.get("rungs", []), meta.get("max_epochs", 0)
    budget = budget_epoch([t for t in trials if t.status in FINISHED and metric in t.best], rungs, max_epochs)
    lines = ["## Study analysis", "",
             (f"Per searched value: its finished trials, their best {code(metric)}, its median, and the median **at equal "
             f"budget**: {code(metric)} at epoch {budget}, the largest rung every finished trial reached, so that trials "
             "ASHA stopped early and trials that ran to the end are compared at the same epoch."), ""]
    for key, domain in domains.items():
        table, notes = factor_table(trials, key, metric, mode, rungs, max_epochs, domain)
        if table.empty:
            continue
        lines += [f"**{key}**", "", to_markdown(table).rstrip("\n"), *[f"- {n}" for n in notes], ""]
    if importances:
        lines += [f"Importance for {code(metric)} (Optuna's fANOVA over the finished trials; sums to 1): "
                  + ", ".join(f"`{k}` {v:.2f}" for k, v in importances.items()), ""]
    return lines

