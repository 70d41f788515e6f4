"""The study analysis against a hand-built store: per-value best, median and median at equal budget, the first-rung
note, fANOVA importances, and the parallel-coordinates chart in report.html."""

from __future__ import annotations

import math

import pytest

from orchestrator.store import Store
from reports.analysis import budget_epoch, factor_table, param_importances
from reports.build import build_report, report_json
from reports.collect import load_run

DOMAINS = {"loss.name": {"kind": "choice", "values": ["dice", "focal"]},
           "optimizer.lr": {"kind": "loguniform", "values": [1e-4, 1e-2]}}


def hand_built_run(tmp_path):
    """ASHA at rungs 1 and 3 of 9 epochs: focal trials both stopped at epoch 1; dice trials ran 3 and 9 epochs."""
    store = Store(tmp_path / "results.db")
    store.set_meta(sweep="hand", metric="val/miou", mode="max", trials=4, max_epochs=9, rungs=[1, 3],
                   domains=DOMAINS, classes=["bg", "road"],
                   data={"dataset": "synthetic", "task": "binary", "train": {"images": 8}, "val": {"images": 4}})
    curves = {"a": ("dice", 1e-3, [0.2, 0.5, 0.6]), "b": ("dice", 3e-3, [0.3, 0.4, 0.7, 0.8, 0.8, 0.85, 0.9, 0.9, 0.9]),
              "c": ("focal", 1e-3, [0.45]), "d": ("focal", 1e-4, [0.35])}
    for trial_id, (loss, lr, values) in curves.items():
        store.add_trial(trial_id, {"loss.name": loss, "optimizer.lr": lr}, "running")
        for epoch, value in enumerate(values, 1):
            store.record_epoch(trial_id, {"epoch": epoch, "val/miou": value})
        store.finish_trial(trial_id, "completed" if len(values) == 9 else "early_stopped")
    return tmp_path


def test_factor_table_by_hand(tmp_path):
    run = load_run(hand_built_run(tmp_path))
    assert budget_epoch(run.trials, [1, 3], 9) == 1  # the focal trials never passed the first rung
    table, notes = factor_table(run.trials, "loss.name", "val/miou", "max", [1, 3], 9)
    rows = table.set_index("value").to_dict("index")
    assert rows["dice"] == {"trials": 2, "best": 0.9, "median": pytest.approx(0.75), "median at epoch 1": 0.25,
                            "most epochs": 9}
    assert rows["focal"] == {"trials": 2, "best": 0.45, "median": pytest.approx(0.40), "median at epoch 1": 0.40,
                             "most epochs": 1}
    # by best, dice wins (0.9 vs 0.45); at equal budget (epoch 1) focal leads 0.40 to 0.25
    assert notes == ["`loss.name` = focal: never trained past epoch 1 (every trial stopped at the first rung), so its "
                     "best is a 1-epoch figure"]
    assert budget_epoch([t for t in run.trials if t.id in ("a", "b")], [1, 3], 9) == 3


def test_importances_and_the_report_sections(tmp_path):
    run_dir = hand_built_run(tmp_path)
    run = load_run(run_dir)
    importances = param_importances(run.trials, DOMAINS, "val/miou", "max")
    assert set(importances) == {"loss.name", "optimizer.lr"} and math.isclose(sum(importances.values()), 1.0)
    assert param_importances(run.trials[:1], DOMAINS, "val/miou", "max") == {}  # one trial: nothing to say
    md, html = build_report(run_dir)
    text = md.read_text()
    assert "## Study analysis" in text and "median at epoch 1" in text and "never trained past epoch 1" in text
    assert "Importance for `val/miou` (Optuna's fANOVA" in text
    page = html.read_text()
    # the charts' own data (plotly's template names every trace type, so the names alone prove nothing)
    assert '"dimensions":[{' in page and '"ticktext":["dice","focal"]' in page and '"label":"log10 optimizer.lr"' in page
    assert "importance for val\\u002fmiou (fANOVA)" in page
    assert report_json(run_dir)["importances"] == pytest.approx(importances)
