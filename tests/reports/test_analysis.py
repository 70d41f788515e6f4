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


def continuous_run(tmp_path, n: int = 8):
    """``n`` trials over a log-uniform learning rate and two losses, one stopped at the first rung each."""
    store = Store(tmp_path / "results.db")
    domains = {"optimizer.lr": {"kind": "loguniform", "values": [1e-4, 1e-2]},
               "loss.name": {"kind": "choice", "values": ["ce", "tversky"]}}
    store.set_meta(sweep="lr", metric="val/miou", mode="max", trials=n, max_epochs=3, rungs=[1], domains=domains,
                   classes=["bg", "road"],
                   data={"dataset": "synthetic", "task": "binary", "train": {"images": 8}, "val": {"images": 4}})
    for i in range(n):
        lr, loss = 1e-4 * 1.8 ** i, ["ce", "tversky"][i % 2]
        store.add_trial(f"t{i}", {"optimizer.lr": lr, "loss.name": loss, "model.arch": "unet"}, "running")
        epochs = 1 if i % 3 == 0 else 3
        for epoch in range(1, epochs + 1):
            store.record_epoch(f"t{i}", {"epoch": epoch, "val/miou": 0.1 * epoch + 0.01 * i,
                                         "val/loss": (36.0 if loss == "ce" else 0.4) / epoch})
        store.finish_trial(f"t{i}", "completed" if epochs == 3 else "early_stopped")
    return tmp_path


def test_a_continuous_key_is_in_quartiles_with_a_scatter(tmp_path):
    run = load_run(continuous_run(tmp_path))
    table, notes = factor_table(run.trials, "optimizer.lr", "val/miou", "max", [1], 3, run.domains["optimizer.lr"])
    assert len(table) == 4 and table["trials"].sum() == 8  # quartiles, not one row per float
    assert table["value"].tolist()[0] == "0.0001–0.00018 (Q1)" and table["value"].str.endswith("(Q4)").iloc[-1]
    assert all("(Q" in note for note in notes)
    few, _ = factor_table(run.trials[:3], "optimizer.lr", "val/miou", "max", [1], 3, run.domains["optimizer.lr"])
    assert few["value"].tolist() == ["0.0001", "0.00018", "0.000324"]  # up to four values: one row each
    md, html = build_report(tmp_path)
    analysis = md.read_text().split("**optimizer.lr**")[1].split("**")[0]
    assert sum(line.startswith("| 0") for line in analysis.splitlines()) == 4
    page = html.read_text()
    assert "val\\u002fmiou against optimizer.lr" in page and '"type":"log"' in page


def test_loss_curves_are_faceted_by_loss_and_legends_name_the_searched_values(tmp_path):
    from reports.figures import loss_curves, trial_labels

    run = load_run(continuous_run(tmp_path))
    labels = trial_labels(run.results, list(run.domains))
    assert labels["t1"] == "t1 lr=0.00018 loss=tversky"
    fig = loss_curves(run.history, run.results, labels)
    panels = {a.text for a in fig.layout.annotations}
    assert panels == {"loss=ce", "loss=tversky"}
    assert fig.layout.yaxis.matches is None and fig.layout.yaxis2.matches is None  # each loss on its own scale
    assert {trace.name for trace in fig.data} == set(labels.values())
