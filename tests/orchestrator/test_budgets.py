"""Budgets (``search.constraints``): figures read from a trial's metrics, Optuna's violations, the one line; and the
store keeps infeasible trials, old run directories included."""

from __future__ import annotations

import json
import sqlite3

import pytest

from orchestrator.budgets import INFEASIBLE, BudgetError, judge, stated
from orchestrator.failures import kind, retried
from orchestrator.store import Store, every_trial_failed, progress_line

METRICS = {"model/params": 2_500_000, "model/gmacs": 1.2, "model/size_mb": 9.5, "latency/p50_ms": 12.3456,
           "energy/mj_per_image": 40.0}


def test_figures_violations_and_the_line():
    verdict = judge([{"metric": "latency/p50_ms", "max": 8.0, "min": None}, {"metric": "params_m", "max": 5.0},
                     {"metric": "gmacs", "min": 1.5}], METRICS)
    assert verdict.figures == {"latency/p50_ms": 12.3456, "params_m": 2.5, "gmacs": 1.2}
    # Optuna's convention: how far over the budget, <= 0 within it
    assert verdict.violations == pytest.approx({"latency/p50_ms": 4.3456, "params_m": -2.5, "gmacs": 0.3})
    assert not verdict.feasible
    assert verdict.line == "latency/p50_ms 12.35 > 8 (max); gmacs 1.2 < 1.5 (min)"
    within = judge([{"metric": "params_m", "max": 2.5}, {"metric": "size_mb", "min": 1, "max": 10}], METRICS)
    assert within.feasible and within.line == "" and within.violations == {"params_m": 0.0, "size_mb": -0.5}
    assert stated({"metric": "latency/p50_ms", "max": 8.0}) == "latency/p50_ms <= 8"
    assert stated({"metric": "size_mb", "min": 1, "max": 10}) == "size_mb in [1, 10]"


def test_a_figure_that_cannot_be_had_is_a_failure_not_a_pass():
    with pytest.raises(BudgetError, match=r"^energy/mj_per_image: no figure to check search.constraints against: "
                                          r"the latency proxy measured no energy here \(tegrastats"):
        judge([{"metric": "energy/mj_per_image", "max": 30}], {"latency/p50_ms": 3.0})
    line = "BudgetError: energy/mj_per_image: no figure to check search.constraints against: ..."
    assert kind(line) == "cannot_run" and not retried(line)  # it would fail the same way again


# a trials table as segsweep made it before the infeasible status (SQLite cannot alter a CHECK constraint)
OLD_TRIALS = """CREATE TABLE trials (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'completed', 'early_stopped', 'failed')),
    config TEXT NOT NULL, error TEXT, epochs INTEGER NOT NULL DEFAULT 0, best TEXT NOT NULL DEFAULT '{}',
    last TEXT NOT NULL DEFAULT '{}', params INTEGER, size_mb REAL, gmacs REAL, train_seconds REAL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE latency (trial_id TEXT NOT NULL REFERENCES trials(id), backend TEXT NOT NULL, target TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')), p50_ms REAL, result TEXT, error TEXT,
    measured_at REAL NOT NULL, PRIMARY KEY (trial_id, backend, target));
CREATE TABLE epochs (trial_id TEXT NOT NULL REFERENCES trials(id), epoch INTEGER NOT NULL, metrics TEXT NOT NULL,
    PRIMARY KEY (trial_id, epoch));
INSERT INTO trials VALUES ('old', 'completed', '{"model.arch": "unet"}', NULL, 2, '{"val/miou": 0.5}',
    '{"val/miou": 0.4}', 1000, 1.0, 0.5, 3.0, 1.0, 2.0);
INSERT INTO epochs VALUES ('old', 1, '{"val/miou": 0.5}');
INSERT INTO latency VALUES ('old', 'ort-cpu', 'local', 'ok', 1.5, '{"p50_ms": 1.5}', NULL, 3.0);
"""


def test_an_old_store_is_migrated_once_and_keeps_its_rows(tmp_path):
    path = tmp_path / "results.db"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_TRIALS)
    store = Store(path)
    (old,) = store.trials(history=True)
    assert (old.status, old.best, old.params, old.infeasible, old.history) == (
        "completed", {"val/miou": 0.5}, 1000, None, [{"epoch": 1, "val/miou": 0.5}])
    assert store.latencies()[0] | {"result": None} == {
        "trial_id": "old", "backend": "ort-cpu", "target": "local", "status": "ok", "p50_ms": 1.5, "result": None,
        "error": None, "power_w": None, "energy_mj": None}
    store.add_trial("new", {"model.arch": "fpn"}, "running")
    store.record_infeasible("new", {**METRICS, INFEASIBLE: 1.0, "val/miou": float("nan")}, "params_m 2.5 > 2 (max)")
    store.finish_trial("new", "infeasible")
    store.finish_trial("new", "completed")  # a replayed end does not overwrite it
    new = {t.id: t for t in store.trials()}["new"]
    assert (new.status, new.infeasible, new.epochs, new.params) == ("infeasible", "params_m 2.5 > 2 (max)", 0, 2_500_000)
    assert new.best == {"latency/p50_ms": 12.3456, "energy/mj_per_image": 40.0}  # its figures; no NaN metric
    sql = sqlite3.connect(path).execute("SELECT sql FROM sqlite_master WHERE name = 'trials'").fetchone()[0]
    assert "'infeasible'" in sql
    Store(path)  # opening it again changes nothing
    assert [t.id for t in Store(path).trials()] == ["old", "new"]
    store.record_latency("old", "trtexec", "ssh://jetson", {"p50_ms": 2.0, "energy": {"power_w": 5.1,
                                                                                       "mj_per_image": 12.5}})
    row = next(r for r in store.latencies() if r["backend"] == "trtexec")
    assert (row["power_w"], row["energy_mj"], json.loads(json.dumps(row["result"]))["p50_ms"]) == (5.1, 12.5, 2.0)


def test_counts_progress_and_a_study_with_nothing_trained(tmp_path):
    store = Store(tmp_path / "results.db")
    store.set_meta(metric="val/miou", mode="max", trials=2, constraints=[{"metric": "params_m", "max": 1.0}])
    for trial in ("a", "b"):
        store.add_trial(trial, {}, "running")
        store.record_infeasible(trial, METRICS, "params_m 2.5 > 1 (max)")
        store.finish_trial(trial, "infeasible")
    assert store.counts()["infeasible"] == 2
    assert progress_line(store) == ("[segsweep] 2/2 done (0 completed, 0 early-stopped, 0 failed, 2 infeasible), "
                                    "0 running")
    assert every_trial_failed(store) == ("every trial was over budget (2 infeasible, none trained); loosen "
                                         "search.constraints or search smaller models")
    store.add_trial("c", {}, "running")
    store.finish_trial("c", "failed", "RuntimeError: boom")
    assert every_trial_failed(store) == "every trial failed (1) and 2 over budget; 1 of them with: RuntimeError: boom"


def test_the_store_writer_records_an_infeasible_end_once(tmp_path):
    """Tune's end of a trial over budget: recorded with the budgets broken; the same end replayed by a resume (its
    store row's metrics, no model figures) changes nothing."""
    from types import SimpleNamespace

    from orchestrator.driver.callbacks import StoreCallback
    from orchestrator.pool.protocol import REPLAYED

    path = tmp_path / "results.db"
    writer = StoreCallback(str(path), max_epochs=3, constraints=[{"metric": "params_m", "max": 1.0}])
    trial = SimpleNamespace(trial_id="big", config={"model.arch": "unet"}, last_result={**METRICS, INFEASIBLE: 1.0})
    writer.on_trial_start(0, [], trial)
    writer.on_trial_complete(0, [], trial)
    trial.last_result = {"val/miou": float("nan"), "latency/p50_ms": 12.3456, INFEASIBLE: 1.0, REPLAYED: True}
    writer.on_trial_complete(0, [], trial)
    (row,) = Store(path).trials()
    assert (row.status, row.infeasible, row.params) == ("infeasible", "params_m 2.5 > 1 (max)", 2_500_000)
