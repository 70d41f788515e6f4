"""Results store (real SQLite file) and the reports built from it."""

from __future__ import annotations

import json
import sqlite3

import pytest

from orchestrator.store import Store
from reports.build import build_report, report_json
from reports.collect import load_history, load_results
from reports.tables import comparison_table, ranked, to_markdown, varying_keys

CLASSES = ["background", "road"]


def epoch(n: int, miou: float, loss: float, road: float) -> dict:
    return {"epoch": n, "val/miou": miou, "val/loss": loss, "val/iou/road": road, "val/iou/background": 0.9,
            "train/loss": loss + 0.1, "model/params": 2_000_000, "model/size_mb": 8.0, "time_total_s": 10.0 * n,
            "training_iteration": n, "lr": 0.001}


@pytest.fixture
def filled(tmp_path):
    store = Store(tmp_path / "results.db")
    data = {"dataset": "synthetic", "task": "binary", "train": {"images": 8}, "val": {"images": 4}}
    store.set_meta(sweep="s", metric="val/miou", mode="max", trials=3, classes=CLASSES, data=data)
    store.add_trial("t1", {"model.arch": "unet", "loss.name": "dice", "optimizer.lr": 0.001})
    store.add_trial("t2", {"model.arch": "fpn", "loss.name": "focal", "optimizer.lr": 0.01})
    store.add_trial("t3", {"model.arch": "fpn", "loss.name": "dice", "optimizer.lr": 1.0})
    for n, (miou, loss) in enumerate([(0.5, 0.6), (0.7, 0.4), (0.6, 0.5)], start=1):
        store.record_epoch("t1", epoch(n, miou, loss, miou - 0.1))
    store.record_epoch("t2", epoch(1, 0.3, 0.9, 0.2))
    store.finish_trial("t1", "completed")
    store.finish_trial("t2", "early_stopped")
    store.finish_trial("t3", "failed", "FloatingPointError: training loss is nan at epoch 1; lower optimizer.lr?")
    return tmp_path, store


def test_store_best_last_and_no_duplicate_epochs(filled):
    run_dir, store = filled
    t1 = {t.id: t for t in store.trials(history=True)}["t1"]
    assert t1.status == "completed" and t1.epochs == 3 and t1.params == 2_000_000 and t1.train_seconds == 30.0
    assert t1.best["val/miou"] == 0.7 and t1.best["val/loss"] == 0.4 and t1.last["val/miou"] == 0.6
    assert "training_iteration" not in t1.best and "lr" not in t1.best
    store.record_epoch("t1", epoch(2, 0.65, 0.45, 0.5))  # a restarted trial re-reports epoch 2
    rows = sqlite3.connect(run_dir / "results.db").execute("SELECT COUNT(*) FROM epochs WHERE trial_id='t1'").fetchone()
    assert rows == (3,)
    assert store.counts() == {"pending": 0, "running": 1, "completed": 0, "early_stopped": 1, "infeasible": 0,
                              "failed": 1}
    store.add_trial("t2", {"x": 1}, "running")  # a finished trial is never reopened
    store.finish_trial("t2", "completed")  # nor re-finished (a restore from an older snapshot ends it again)
    assert {t.id: t.status for t in store.trials()}["t2"] == "early_stopped"
    with pytest.raises(ValueError):
        store.finish_trial("t1", "running")


def test_results_frame_and_comparison_table(filled):
    run_dir, _ = filled
    frame = load_results(run_dir)
    assert list(frame["id"]) == ["t1", "t2", "t3"]
    assert frame.loc[0, "metric/val/miou"] == 0.7 and frame.loc[0, "params_m"] == 2.0
    table = comparison_table(frame, "val/miou", "max", CLASSES)
    assert list(table["trial"]) == ["t1", "t2", "t3"] and list(table["rank"][:2]) == [1, 2]
    assert table["rank"].isna().iloc[2] and table["status"].iloc[2] == "failed"
    assert list(table.columns[:8]) == ["rank", "trial", "arch", "encoder", "loss", "schedule", "lr", "val/miou"]
    assert table.loc[0, "IoU road"] == pytest.approx(0.6)
    by_loss = ranked(frame, "val/loss", "min")
    assert list(by_loss["id"]) == ["t1", "t2", "t3"]
    assert varying_keys(frame) == ["model.arch", "loss.name", "optimizer.lr"]
    md = to_markdown(table)
    assert md.splitlines()[2].startswith("| 1 | t1 | unet | – | dice | – | 0.001 | 0.7000 |")
    history = load_history(run_dir)
    assert list(history[history["id"] == "t1"]["epoch"]) == [1, 2, 3]


def test_build_report_and_json(filled):
    run_dir, _ = filled
    md_path, html_path = build_report(run_dir)
    md = md_path.read_text()
    assert "# s: model-wise comparison" in md and "1 completed, 1 early-stopped, 1 failed" in md
    assert "`t3`: FloatingPointError: training loss is nan at epoch 1" in md
    assert "## Best trial" in md and "loss.name: dice" in md
    html = html_path.read_text()
    assert html.count("plotly") > 10 and "t1" in html
    obj = report_json(run_dir)
    json.dumps(obj)
    assert obj["sweep"] == "s" and obj["metric"] == "val/miou" and obj["mode"] == "max"
    t1 = obj["trials"][0]
    assert set(t1) == {"id", "status", "config", "epochs", "metrics", "error", "infeasible", "budgets", "params_m",
                       "size_mb", "gmacs", "train_seconds", "latency", "evaluations", "check"}
    assert obj["constraints"] == [] and "best_feasible" not in obj  # a study without budgets
    assert t1["metrics"] == {"val/miou": 0.7, "val/loss": 0.4, "val/iou/road": pytest.approx(0.6),
                             "val/iou/background": 0.9}
    assert obj["trials"][2]["error"].startswith("FloatingPointError") and obj["trials"][2]["metrics"] == {}


def test_pareto_front_by_hand():
    import pandas as pd

    from reports.summary import pareto_front

    frame = pd.DataFrame({"acc": [0.9, 0.8, 0.7, 0.85, None], "ms": [40.0, 10.0, 12.0, 40.0, 1.0]})
    front = pareto_front(frame, [("acc", "max"), ("ms", "min")])
    # 0.9@40 best accuracy; 0.8@10 fastest; 0.7@12 dominated by 0.8@10; 0.85@40 dominated by 0.9@40; NaN never
    assert front.tolist() == [True, True, False, False, False]


def test_latency_rows_in_store_and_report(filled):
    run_dir, store = filled
    result = {"p50_ms": 3.21, "mean_ms": 3.3, "p90_ms": 3.5, "p99_ms": 4.0, "throughput_fps": 300.0, "device": "cpu"}
    store.record_latency("t1", "ort-cpu", "local", result)
    store.record_latency("t1", "trtexec", "ssh://jetson", None, "ssh://jetson: cannot connect (timed out)")
    md = (build_report(run_dir)[0]).read_text()
    assert "ort-cpu@local p50 ms" in md and "| 3.21 |" in md
    assert "`t1` trtexec on ssh://jetson: ssh://jetson: cannot connect (timed out)" in md
    latency = report_json(run_dir)["trials"][0]["latency"]
    assert {r["backend"]: r["status"] for r in latency} == {"ort-cpu": "ok", "trtexec": "failed"}
    assert latency[0]["throughput_fps"] == 300.0


def test_report_of_a_run_interrupted_before_any_result(tmp_path):
    """Ctrl-C during the first epoch: trials exist, no metric yet; the report still builds."""
    store = Store(tmp_path / "results.db")
    data = {"dataset": "synthetic", "task": "multiclass", "train": {"images": 8}, "val": {"images": 4}}
    store.set_meta(sweep="s", metric="val/miou", mode="max", trials=2, classes=["a", "b"], data=data)
    store.add_trial("t1", {"model.arch": "unet"}, "running")
    store.add_trial("t2", {"model.arch": "fpn"}, "pending")
    md, html = build_report(tmp_path)
    assert "t1" in md.read_text() and "2 unfinished" in md.read_text()
    assert "no results yet" in html.read_text()
    assert [t["metrics"] for t in report_json(tmp_path)["trials"]] == [{}, {}]


def test_a_study_whose_every_trial_failed_ends_with_one_line_and_exit_1(filled, tmp_path):
    """Nothing to compare: the CLI's end of run/resume/extend says so in one line (the most common error) and
    exits 1, with the report and the store kept; one trial that trained is enough for success."""
    from types import SimpleNamespace

    from orchestrator.cli.sweeps import _finish
    from orchestrator.errors import SegsweepError
    from orchestrator.store import every_trial_failed

    _, some = filled
    assert every_trial_failed(some) is None
    (tmp_path / "all").mkdir()
    store = Store(tmp_path / "all" / "results.db")
    store.set_meta(sweep="s", metric="val/miou", mode="max", trials=3)
    for i, error in enumerate(["AcceleratorError: CUDA error: an illegal instruction was encountered"] * 2
                              + ["OutOfMemoryError: CUDA out of memory"]):
        store.add_trial(f"t{i}", {"model.arch": "unet"})
        store.finish_trial(f"t{i}", "failed", error)
    line = every_trial_failed(store)
    assert line == ("every trial failed (3); 2 of them with: AcceleratorError: CUDA error: an illegal instruction "
                    "was encountered")
    with pytest.raises(SegsweepError) as raised:
        _finish(SimpleNamespace(run_dir=tmp_path / "all", interrupted=False))
    assert str(raised.value) == f"{line}; every trial's error: orchestrate status {tmp_path / 'all'}"
    assert raised.value.exit_code == 1 and "\n" not in str(raised.value)
    store.add_trial("t9", {"model.arch": "fpn"}, "running")  # not over yet: not every trial failed
    assert every_trial_failed(store) is None


def test_budgets_in_the_report_feasible_set_best_feasible_and_infeasible_off_the_front(tmp_path):
    """A study with budgets and two objectives: the budget column, the feasible set and best feasible trial, each
    infeasible trial with the budgets it broke, marked off the Pareto front (report.md and report.html from the same
    sections) and in report --format json; energy per image from the proxy and from a device."""
    from orchestrator.budgets import INFEASIBLE

    store = Store(tmp_path / "results.db")
    data = {"dataset": "synthetic", "task": "binary", "train": {"images": 8}, "val": {"images": 4}}
    store.set_meta(sweep="s", metric="val/miou", mode="max", trials=4, classes=CLASSES, data=data,
                   objectives=[{"metric": "val/miou", "mode": "max"}, {"metric": "latency/p50_ms", "mode": "min"}],
                   constraints=[{"metric": "latency/p50_ms", "max": 8.0, "min": None}])
    proxy = {"latency/p50_ms": 4.0, "energy/mj_per_image": 20.0}
    for trial, miou, ms in (("fast", 0.6, 2.0), ("good", 0.7, 6.0)):
        store.add_trial(trial, {"model.arch": trial, "loss.name": "dice"}, "running")
        store.record_epoch(trial, {**epoch(1, miou, 0.5, miou), **proxy, "latency/p50_ms": ms})
        store.finish_trial(trial, "completed")
    store.add_trial("slow", {"model.arch": "slow", "loss.name": "dice"}, "running")
    store.record_infeasible("slow", {"model/params": 9_000_000, **proxy, "latency/p50_ms": 12.5, INFEASIBLE: 1.0},
                            "latency/p50_ms 12.5 > 8 (max)")
    store.finish_trial("slow", "infeasible")
    store.add_trial("broke", {"model.arch": "broke", "loss.name": "dice"}, "running")
    store.finish_trial("broke", "failed", "RuntimeError: boom")
    store.record_latency("good", "trtexec", "ssh://jetson", {"p50_ms": 3.0, "mean_ms": 3.1, "p90_ms": 3.2,
                                                             "p99_ms": 3.4, "throughput_fps": 320.0, "device": "Orin",
                                                             "energy": {"power_w": 6.4, "mj_per_image": 20.0}})
    md_path, html_path = build_report(tmp_path)
    md = md_path.read_text()
    rows = {line.split(" | ")[2]: line for line in md.splitlines() if line.startswith("| ")}
    assert "| budget |" in rows["trial"] and "| trtexec@ssh://jetson mJ/img |" in rows["trial"]
    assert "| over: latency/p50_ms 12.5 \\> 8 (max) |" in rows["slow"] and "| infeasible |" in rows["slow"]  # md()
    assert "| ok |" in rows["good"] and "| ok |" in rows["fast"] and "| – |" in rows["broke"]
    assert "| * |" in rows["good"] and "| * |" in rows["fast"] and "| 6 | 20 | 3 | 20 |" in rows["good"]
    assert "1 infeasible (over budget, never trained)" in md
    assert "Budgets (`search.constraints`): `latency/p50_ms <= 8`" in md
    assert "Feasible set: 2 trial(s) trained within every budget (`fast`, `good`); 1 infeasible." in md
    assert "Best feasible trial: `good`, val/miou = 0.7000." in md and "## Best feasible trial" in md
    assert "- `slow` infeasible: latency/p50_ms 12.5 \\> 8 (max)" in md
    html = html_path.read_text()
    assert "Best feasible trial: <code>good</code>" in html and "infeasible (over budget, not trained)" in html
    assert "<li><code>slow</code> infeasible: latency/p50_ms 12.5 &gt; 8 (max)</li>" in html
    assert "energy per image" in html
    obj = report_json(tmp_path)
    assert obj["feasible"] == ["fast", "good"] and obj["best_feasible"] == "good"
    slow = next(t for t in obj["trials"] if t["id"] == "slow")
    assert (slow["status"], slow["infeasible"], slow["budgets"]) == ("infeasible", "latency/p50_ms 12.5 > 8 (max)",
                                                                     {"latency/p50_ms": 12.5})
    good = next(t for t in obj["trials"] if t["id"] == "good")
    assert good["latency"][0]["energy_mj"] == 20.0 and good["latency"][0]["power_w"] == 6.4
