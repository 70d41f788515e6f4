"""Spec search domains -> Ray Tune domains. The only place where YAML's inclusive bounds are converted."""

from __future__ import annotations

from typing import Any

from ray import tune

from orchestrator.errors import SpecError
from orchestrator.spec.keys import Domain, group_label
from orchestrator.spec.load import Sweep


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
