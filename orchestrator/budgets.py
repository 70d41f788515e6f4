"""Hard budgets of the search (``search.constraints``): which figures a budget may name, how each is read from a
trial's reported metrics, and the verdict.

Every budget figure is known before a trial trains: its model's parameters, size and GMACs (counted when the model is
built) and its latency proxy's latency, power and energy (measured before training). So a trial over budget is never
trained: it is recorded ``infeasible`` with its figures (the store, Optuna, the console line, the report). Violations
follow Optuna's convention (``optuna.trial.Trial.set_constraint``): a value <= 0 is within the budget, a positive
one is how far over it the trial is, so Optuna's samplers learn where the feasible region lies. Torch-free: the spec
loader, the pool's workers, the driver and the reports all use it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import SegsweepError

INFEASIBLE = "segsweep/infeasible"  # marks the one result a trial over budget reports (its figures, no epoch)


@dataclass(frozen=True)
class Budget:
    """A figure a budget may name: the reported metric it is read from, the factor to its unit, and what it is."""

    metric: str
    scale: float
    about: str
    proxy: bool = False  # measured by the latency proxy (needs search.latency_proxy)


BUDGETS: dict[str, Budget] = {
    "params_m": Budget("model/params", 1e-6, "parameters, millions (counted when the model is built)"),
    "gmacs": Budget("model/gmacs", 1.0, "GMACs at the training size"),
    "size_mb": Budget("model/size_mb", 1.0, "weights, MB"),
    **{f"latency/{k}_ms": Budget(f"latency/{k}_ms", 1.0, f"the latency proxy's {k}, ms", proxy=True)
       for k in ("mean", "p50", "p90", "p99")},
    "energy/mj_per_image": Budget("energy/mj_per_image", 1.0, "the latency proxy's energy per image, mJ "
                                  "(tegrastats on a Jetson target, NVML on an NVIDIA GPU)", proxy=True),
    "power/mean_w": Budget("power/mean_w", 1.0, "mean power while the latency proxy timed, W", proxy=True),
}
ENERGY_METRICS = ("energy/mj_per_image", "power/mean_w")


class BudgetError(SegsweepError):
    """A budget's figure could not be had for a trial (its latency proxy measured no energy, say)."""


@dataclass(frozen=True)
class Verdict:
    """A trial's budget figures and how far over each budget it is (Optuna's convention: <= 0 within it)."""

    figures: dict[str, float]
    violations: dict[str, float]
    constraints: tuple[Mapping[str, Any], ...] = ()

    @property
    def feasible(self) -> bool:
        return all(v <= 0 for v in self.violations.values())

    @property
    def line(self) -> str:
        """The budgets broken, one line: ``latency/p50_ms 12.31 > 8 (max)``; empty when within every budget."""
        return "; ".join(f"{c['metric']} {_g(self.figures[c['metric']])} {over}"
                         for c in self.constraints for over in [_over(c, self.figures[c["metric"]])] if over)


def figure(name: str, metrics: Mapping[str, Any]) -> float | None:
    """The figure ``name`` (a ``BUDGETS`` key) from a trial's reported metrics, or None where it is not there."""
    budget = BUDGETS[name]
    value = metrics.get(budget.metric)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return None
    return float(value) * budget.scale


def judge(constraints: Sequence[Mapping[str, Any]], metrics: Mapping[str, Any]) -> Verdict:
    """Each constraint (``{metric, max, min}``) against the trial's reported ``metrics``. Raises BudgetError when a
    figure is missing: a budget that cannot be checked must not let the trial train as if it were met."""
    figures, violations = {}, {}
    for c in constraints:
        name = c["metric"]
        value = figure(name, metrics)
        if value is None:
            why = ("the latency proxy measured no energy here (tegrastats on a Jetson target, or NVML on an NVIDIA "
                   "GPU, gives it)" if name in ENERGY_METRICS else f"the trial reported no {BUDGETS[name].metric}")
            raise BudgetError(f"{name}: no figure to check search.constraints against: {why}")
        figures[name] = value
        violations[name] = max(value - c["max"] if c.get("max") is not None else -math.inf,
                               c["min"] - value if c.get("min") is not None else -math.inf)
    return Verdict(figures, violations, tuple(constraints))


def stated(constraint: Mapping[str, Any]) -> str:
    """A budget as written for people: ``latency/p50_ms <= 8``, ``params_m in [1, 5]``."""
    lo, hi = constraint.get("min"), constraint.get("max")
    if lo is not None and hi is not None:
        return f"{constraint['metric']} in [{_g(lo)}, {_g(hi)}]"
    return f"{constraint['metric']} {'<=' if hi is not None else '>='} {_g(hi if hi is not None else lo)}"


def _over(constraint: Mapping[str, Any], value: float) -> str:
    if constraint.get("max") is not None and value > constraint["max"]:
        return f"> {_g(constraint['max'])} (max)"
    if constraint.get("min") is not None and value < constraint["min"]:
        return f"< {_g(constraint['min'])} (min)"
    return ""


def _g(value: float) -> str:
    return f"{value:.4g}"
