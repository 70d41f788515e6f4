"""A latency budget on the demo study, as README runs it (``orchestrate run sweeps/demo_latency.yaml --set
'search.constraints=[{metric: latency/p50_ms, max: X}]'``), on this machine's CPUs: trials over budget are infeasible
and never trained, Optuna learns them as such, and the report's best is the best feasible trial."""

from __future__ import annotations

import json
import math

import optuna
import pytest
from typer.testing import CliRunner

from models.registry import create_model
from orchestrator.cli import app
from orchestrator.latency.bench import measure_torch
from orchestrator.store import Store
from reports.build import report_json
from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def budget_between_the_demos_models() -> float:
    """X between the demo's slowest model (unet with resnet18) and its fastest (enet), as the proxy times them in a
    trial (one CPU thread, nothing training beside it: the study below runs one trial at a time), here and now: their
    geometric mean. CPU timings move with the machine's load; the gap between the two (about 4x measured here)
    stays, so trials fall on both sides of it."""
    slow, fast = (measure_torch(create_model(arch, encoder, 7).eval(), [1, 3, 64, 96], 3, 15, threads=1).p50_ms
                  for arch, encoder in (("unet", "resnet18"), ("enet", None)))
    return round(math.sqrt(slow * fast), 2)


def test_demo_latency_with_a_latency_budget(ray_session, tmp_path):
    budget = budget_between_the_demos_models()
    overrides = [f"data.root={tmp_path / 'data'}", f"search.constraints=[{{metric: latency/p50_ms, max: {budget}}}]",
                 "search.num_samples=8", "trainer.max_epochs=1", "tracking.wandb.mode=disabled",
                 "resources.max_concurrent=1",
                 "export.backends=[ort-cpu]", "export.top_k=1", "export.warmup=1", "export.iters=5"]
    args = ["run", str(ROOT / "sweeps" / "demo_latency.yaml"), "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(app, args + [a for o in overrides for a in ("--set", o)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "run"
    trials = {t.id: t for t in Store(run_dir / "results.db").trials()}
    infeasible = {i: t for i, t in trials.items() if t.status == "infeasible"}
    trained = {i: t for i, t in trials.items() if t.status in ("completed", "early_stopped")}
    assert infeasible and trained and len(infeasible) + len(trained) == 8, {i: t.status for i, t in trials.items()}
    for trial_id, t in infeasible.items():  # over budget: its figure recorded, never trained
        assert t.best["latency/p50_ms"] > budget and t.epochs == 0 and t.params > 0
        assert t.infeasible == f"latency/p50_ms {t.best['latency/p50_ms']:.4g} > {budget:.4g} (max)"
        assert not (run_dir / "trials" / trial_id / "best.pt").exists()
        assert f"[segsweep] trial {trial_id} infeasible, not trained: {t.infeasible}" in result.stderr
    for t in trained.values():
        assert t.best["latency/p50_ms"] <= budget and t.epochs >= 1
    # Optuna's study: its own constraint on each trial; an infeasible one PRUNED, with why
    study = optuna.load_study(study_name="demo_latency", storage=f"sqlite:///{run_dir / 'optuna.db'}")
    for ot in study.trials:
        t = trials[ot.user_attrs["segsweep_trial_id"]]
        assert ot.user_attrs["status"] == t.status
        assert ot.constraints["latency/p50_ms"] == pytest.approx(t.best["latency/p50_ms"] - budget)
        if t.status == "infeasible":
            assert ot.state == optuna.trial.TrialState.PRUNED and ot.user_attrs["infeasible"] == t.infeasible
    # the report's best is the best feasible trial, in report.md, report.html and report --format json
    best = max(trained.values(), key=lambda t: t.best["val/miou"])
    md = (run_dir / "report.md").read_text()
    assert f"Best feasible trial: `{best.id}`, val/miou = {best.best['val/miou']:.4f}." in md
    assert "## Best feasible trial" in md and f"`{best.id}`: val/miou" in md
    assert f"`latency/p50_ms <= {budget:.4g}`" in md and "| infeasible |" in md
    assert "infeasible (over budget, not trained)" in (run_dir / "report.html").read_text()
    obj = json.loads(CliRunner().invoke(app, ["report", str(run_dir), "--format", "json"]).stdout)
    assert obj["best_feasible"] == best.id and set(obj["feasible"]) == set(trained)
    assert {t["id"] for t in obj["trials"] if t["status"] == "infeasible"} == set(infeasible)
