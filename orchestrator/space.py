"""Spec search domains -> Ray Tune domains. The only place where YAML's inclusive bounds are converted."""

from __future__ import annotations

import math
from typing import Any

from ray import tune

from orchestrator.errors import SpecError
from orchestrator.spec import Domain, Sweep, group_label


def to_tune_domain(domain: Domain, grid: bool = False) -> Any:
    kind, values = domain.kind, list(domain.values)
    if domain.grouped:  # searched by label: a scalar, so Optuna's categorical works too
        values = [group_label(v) for v in values]
    if kind == "choice":
        return tune.grid_search(values) if grid else tune.choice(values)
    lo, hi = values
    if kind == "uniform":
        return tune.uniform(lo, hi)
    if kind == "loguniform":
        return tune.loguniform(lo, hi)
    if kind == "int":
        return tune.randint(lo, hi + 1)  # Tune's upper bound is exclusive; ours is inclusive
    raise ValueError(f"unknown domain kind {kind}")


def to_tune_space(sweep: Sweep) -> dict[str, Any]:
    """Flat param space: dotted key -> fixed value or Tune domain."""
    algorithm = sweep.spec.search.algorithm
    if algorithm == "optuna":
        for key, domain in sweep.domains.items():
            if domain.kind == "choice" and not domain.grouped and not all(
                    isinstance(v, (str, int, float, bool)) or v is None for v in domain.values):
                raise SpecError(f"{sweep.source}: {key}: optuna choices must be scalars (str, number, bool, null); "
                                f"use search.algorithm: random or grid for lists")
    return {
        key: to_tune_domain(value, grid=algorithm == "grid") if isinstance(value, Domain) else value
        for key, value in sweep.trial_flat().items()
    }


def grid_size(sweep: Sweep) -> int:
    return math.prod(len(d.values) for d in sweep.domains.values())


def count_trials(sweep: Sweep, max_trials: int | None = None) -> int:
    """Trials the sweep will run: the grid's size for grid search, else ``search.num_samples`` (capped)."""
    if sweep.spec.search.algorithm == "grid":
        n = grid_size(sweep)
        if max_trials is not None and n > max_trials:
            raise SpecError(f"{sweep.source}: the grid has {n} combinations, more than --max-trials {max_trials}")
        return n
    n = sweep.spec.search.num_samples
    return min(n, max_trials) if max_trials else n


def describe_space(sweep: Sweep) -> list[str]:
    """Lines for ``--dry-run``: each searched key with its domain, inclusive bounds as written."""
    lines = []
    for key, d in sweep.domains.items():
        if d.grouped:
            lines.append(f"{key}: choice of {len(d.values)} groups: {' | '.join(map(group_label, d.values))}")
        elif d.kind == "choice":
            lines.append(f"{key}: choice {list(d.values)}")
        else:
            lines.append(f"{key}: {d.kind} [{d.values[0]}, {d.values[1]}] (inclusive)")
    return lines
