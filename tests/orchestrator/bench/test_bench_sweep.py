"""``orchestrate bench-sweep`` on CPU: a small study file run as a user runs it, with the seeds' loop on a sample of
its trials; the phase figures agree with the store, and the pure parts by hand."""

from __future__ import annotations

import json

import pytest
import yaml

from orchestrator.bench.sweep import SweepBench, first_epochs, idle_seconds, run_bench_sweep, running_over_time, sample
from orchestrator.store import Store, TrialRow


def row(i: int, status: str = "completed", epochs: int = 2) -> TrialRow:
    return TrialRow(f"t{i}", status, {}, None, epochs, {}, {}, None, None, None, None)


def test_timeline_arithmetic_by_hand():
    intervals = [(10.0, 20.0), (15.0, 30.0), (40.0, 45.0)]
    assert idle_seconds(intervals, 0.0, 50.0) == pytest.approx(10 + 10 + 5)  # 0-10, 30-40, 45-50
    assert running_over_time(intervals, 0.0, 45.0, step=5.0) == [0, 0, 1, 2, 1, 1, 0, 0, 1, 0]
    assert len(running_over_time(intervals, 0.0, 45.0)) == 46  # every second by default
    trials = [row(i) for i in range(7)] + [row(7, "failed"), row(8, "early_stopped", 0)]
    assert [t.id for t in sample(trials, 3)] == ["t0", "t3", "t6"]
    assert [t.id for t in sample(trials[:2], 3)] == ["t0", "t1"]


def test_first_epochs_by_hand():
    late = TrialRow("late", "completed", {"model.arch": "fpn", "loss.name": "dice"}, None, 3, {}, {}, None, None, None,
                    None, [{"perf/started_at": 130.0, "perf/train_s": 9.0, "perf/concurrent": 2.0},
                           {"perf/train_s": 1.0}, {"perf/train_s": 3.0}])
    early = TrialRow("early", "early_stopped", {"model.arch": "unet", "loss.name": "focal"}, None, 1, {}, {}, None,
                     None, None, None, [{"perf/started_at": 105.5, "perf/train_s": 4.0, "perf/concurrent": 0.0}])
    assert first_epochs([late, early, row(3, "failed", 0)], started=100.0) == [
        {"at": 5.5, "arch": "unet", "loss": "focal", "concurrent": 0.0, "first_s": 4.0, "later_s": None},
        {"at": 30.0, "arch": "fpn", "loss": "dice", "concurrent": 2.0, "first_s": 9.0, "later_s": 2.0}]


@pytest.mark.slow
def test_bench_sweep_on_cpu(tmp_path):
    spec = {"name": "bs", "data": {"dataset": "idd_lite", "root": "${IDD_LITE_ROOT}", "task": "binary",
                                   "size": [64, 96], "resize": "pad"},
            "model": {"arch": {"choice": ["unet", "fpn"]}, "encoder": "resnet18"},
            "loss": {"name": {"choice": ["dice", "focal"]}},
            "trainer": {"max_epochs": 2, "batch_size": 4, "log_images": 0, "best_worst": 0},
            "search": {"algorithm": "optuna", "num_samples": 2, "metric": "val/iou/road", "mode": "max",
                       "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2}},
            "resources": {"cpus_per_trial": 1}, "tracking": {"wandb": {"mode": "disabled"}}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = run_bench_sweep(SweepBench(path, shape=(12, 6, 57, 80), seeds_sample=1, seeds_workers=0), tmp_path / "b")
    store = Store.of_run(result["run_dir"])
    trials = store.trials(history=True)
    assert result["trials"] == len(trials) == 2 and result["epochs"] == sum(t.epochs for t in trials)
    assert result["trained_images"] == 12 * result["epochs"] and result["validated_images"] == 6 * result["epochs"]
    assert {"ray_start", "pool_start", "data", "fit", "report"} <= set(result["phases_s"])
    assert result["phases_s"]["fit"] < result["wall_s"] and result["trial_seconds"]["train"] > 0
    assert max(result["running_over_time"]) >= 1
    seeds = result["seeds"]
    assert len(seeds["trials"]) == 1 and all(len(t["epoch_s"]) == t["epochs"] for t in seeds["trials"])
    assert all(0 <= t["seeds_best"] <= 1 for t in seeds["trials"]) and seeds["x_sweep"] > 0
    saved = json.loads((tmp_path / "b" / "bench_sweep.json").read_text())
    assert saved["seeds"]["estimated_study_s"] == seeds["estimated_study_s"]
    md = (tmp_path / "b" / "bench_sweep.md").read_text()
    assert "| wall, `orchestrate run` to report |" in md and "Seeds' plain loop" in md


@pytest.mark.slow
def test_bench_sweep_pool_on_cpu(tmp_path):
    """``--pool``: cold, a pool started for the study, warm twice, two users at once; every run's figures from its
    own store, the warm runs on the pool's worker processes, and the pool gone at the end."""
    from orchestrator.bench.sweep import run_pool_bench
    from orchestrator.pool.resident import read_state

    spec = {"name": "bp", "data": {"dataset": "idd_lite", "root": "${IDD_LITE_ROOT}", "task": "binary",
                                   "size": [64, 96], "resize": "pad"},
            "model": {"arch": "unet", "encoder": "resnet18"}, "loss": {"name": "dice"},
            "optimizer": {"name": "adam", "lr": 0.003},
            "trainer": {"max_epochs": 1, "batch_size": 4, "log_images": 0, "best_worst": 0},
            "search": {"algorithm": "grid", "metric": "val/iou/road", "mode": "max", "scheduler": {"name": "none"}},
            "resources": {"cpus_per_trial": 1}, "tracking": {"wandb": {"mode": "disabled"}}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = run_pool_bench(SweepBench(path, shape=(8, 4, 57, 80), seeds_sample=0), tmp_path / "b")
    runs = [result["cold"], result["warm_first"], result["warm"], *result["two_users"]]
    assert all(r["trials"] == 1 and r["statuses"] == {"completed": 1} for r in runs)
    assert all(r["first_step_s"] is not None and 0 < r["first_step_s"] < r["wall_s"] for r in runs)
    pool_pids = {w["pid"] for w in result["warm"]["workers"]}
    assert {w["pid"] for w in result["warm_first"]["workers"]} == pool_pids  # the same processes, warm
    assert not pool_pids & {w["pid"] for w in result["cold"]["workers"]}
    for both in result["two_users"]:  # two users' studies at once: on the pool's workers, each in its own run
        assert {w["pid"] for w in both["workers"]} <= pool_pids and Store.of_run(both["run_dir"]).trials()
    assert result["two_users"][0]["run_dir"] != result["two_users"][1]["run_dir"]
    assert result["two_users_x_warm"] > 0 and result["pool_start_s"] > 0
    assert read_state(tmp_path / "b" / "pool.json") is None  # stopped
    assert result["pool"]["workers"] == len(pool_pids) and result["pool"]["slots"] >= 1
    md = (tmp_path / "b" / "bench_pool.md").read_text()
    assert "| on the pool, warm |" in md and "Two users at once" in md and "trial(s) at once" in md


def test_bench_sweep_pool_runs_are_checked(tmp_path):
    from orchestrator.bench.sweep import run_pool_bench
    from orchestrator.errors import SegsweepError

    with pytest.raises(SegsweepError, match="--pool-runs cold,hot: expected some of cold,first,warm,two-users"):
        run_pool_bench(SweepBench(tmp_path / "spec.yaml"), tmp_path / "b", ("cold", "hot"))
    assert not (tmp_path / "b").exists()  # nothing written
