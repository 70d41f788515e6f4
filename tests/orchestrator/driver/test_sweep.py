"""Real sweeps on CPU: Ray Tune + Lightning + smp trials, the SQLite store, W&B offline files, the report."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.pool.protocol import is_stub
from orchestrator.rundir import RunDir
from orchestrator.spec import load_spec
from orchestrator.store import Store
from orchestrator.study import run_sweep
from reports.build import report_json
from tests.conftest import tiny_spec
from tests.wandb_files import config as wandb_config
from tests.wandb_files import history

pytestmark = pytest.mark.slow


def test_grid_sweep_records_every_trial(ray_session, synthetic_root, write_spec, tmp_path):
    """Binary road task; PAN cannot run at 32x64 (its pyramid pools to nothing): those trials must fail, recorded."""
    spec = tiny_spec(
        synthetic_root,
        model={"arch": {"choice": ["unet", "pan"]}, "encoder": "resnet18"},
        loss={"name": {"choice": ["dice", "bce_dice", "weighted_ce_enet"]}},
        search={"algorithm": "grid", "metric": "val/iou/road", "mode": "max",
                "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2}},
    )
    spec["data"]["task"] = "binary"
    spec["trainer"]["max_epochs"] = 3
    spec["trainer"]["checkpoint_every_s"] = 0  # a checkpoint every epoch, so that each finished trial has one
    result = run_sweep(load_spec(write_spec(spec)), out=tmp_path / "run")
    run_dir = result.run_dir
    trials = Store(run_dir / "results.db").trials(history=True)
    assert len(trials) == 6 and not result.interrupted
    for t in trials:
        if t.config["model.arch"] == "pan":
            assert t.status == "failed" and "Output size is too small" in t.error and "\n" not in t.error
            continue
        assert t.status in ("completed", "early_stopped"), t.error
        assert (t.epochs == 3) == (t.status == "completed") and [h["epoch"] for h in t.history] == list(range(1, t.epochs + 1))
        assert 0 <= t.best["val/iou/road"] <= 1 and t.best["val/iou/road"] == max(h["val/iou/road"] for h in t.history)
        assert {"val/miou", "val/dice", "val/pixel_acc", "val/precision", "val/recall", "val/specificity",
                "val/loss", "train/loss", "val/iou/background"} <= set(t.best)
        assert t.params > 1e6 and t.size_mb > 1 and t.train_seconds > 0
        # speed diagnostics: start-up in the first epoch, the previous epoch's checkpoint saving from the second
        assert t.history[0]["perf/startup_s"] > 0 and "perf/save_s" not in t.history[0]
        assert all(h["perf/save_s"] > 0 and h["perf/preloaded"] == 1.0 for h in t.history[1:])  # a ready worker
        # one W&B offline run per trial, holding the same per-epoch metrics as the store
        (log,) = (run_dir / "trials" / t.id / "wandb").glob("offline-run-*/run-*.wandb")
        rows = [r for r in history(log) if "val/iou/road" in r]
        assert [r["epoch"] for r in rows] == [h["epoch"] for h in t.history]
        assert [r["val/iou/road"] for r in rows] == pytest.approx([h["val/iou/road"] for h in t.history])
        assert wandb_config(log)["loss.name"] == t.config["loss.name"]
        assert (run_dir / "trials" / t.id / "best.pt").is_file()
        # its Tune checkpoints are released once it finished: stubs, and no staging folder left
        states = list((run_dir / "tune" / t.id).glob("checkpoint_*/state.pt"))
        assert states and all(is_stub(state) for state in states)
        assert RunDir(run_dir).trial(t.id).staged_checkpoints() == []
    completed = [t for t in trials if t.status == "completed"]
    assert completed  # ASHA lets at least one of the three unet trials reach max_t
    for t in completed:  # example masks and the best / worst panels at the end of a full trial
        assert list((run_dir / "trials" / t.id / "wandb").glob("offline-run-*/files/media/images/mask/val/*.png"))
        assert len(list((run_dir / "trials" / t.id / "best_worst").glob("*.png"))) == 2  # best_worst: 1 in tiny_spec
    md = (run_dir / "report.md").read_text()
    assert all(t.id in md for t in trials) and (run_dir / "report.html").is_file()
    assert len(report_json(run_dir)["trials"]) == 6
    assert (run_dir / "spec.yaml").is_file() and not (run_dir / "optuna.db").exists()


def test_optuna_sweep_stores_its_study_as_the_store_has_it(ray_session, synthetic_root, write_spec, tmp_path):
    """Readers users already have agree with the store: Optuna's own API on optuna.db (states, values, intermediate
    values, segsweep's ids) and Ray Tune's ExperimentAnalysis on the run's tune/ folder."""
    import optuna
    from ray.tune import ExperimentAnalysis

    spec = tiny_spec(synthetic_root, loss={"name": {"choice": ["dice", "focal"]}},
                     search={"algorithm": "optuna", "num_samples": 4, "seed": 1, "metric": "val/miou", "mode": "max",
                             "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2}})
    spec["optimizer"]["lr"] = {"loguniform": [0.001, 0.01]}
    spec["trainer"]["max_epochs"] = 3
    spec["tracking"] = {"wandb": {"mode": "disabled"}}
    result = run_sweep(load_spec(write_spec(spec)), out=tmp_path / "run")
    trials = {t.id: t for t in Store(result.run_dir / "results.db").trials(history=True)}
    assert len(trials) == 4 and all(t.status in ("completed", "early_stopped") for t in trials.values())
    lrs = {t.config["optimizer.lr"] for t in trials.values()}
    assert len(lrs) == 4 and all(0.001 <= lr <= 0.01 for lr in lrs)
    assert not list(Path(result.run_dir, "trials").glob("*/wandb"))  # tracking disabled: no W&B files

    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{result.run_dir / 'optuna.db'}")
    assert len(study.trials) == 4
    for ot in study.trials:
        t = trials[ot.user_attrs["segsweep_trial_id"]]
        assert ot.user_attrs["run_dir"] == str(result.run_dir) and ot.user_attrs["status"] == t.status
        expected = optuna.trial.TrialState.COMPLETE if t.status == "completed" else optuna.trial.TrialState.PRUNED
        assert ot.state == expected
        assert ot.intermediate_values == pytest.approx({h["epoch"]: h["val/miou"] for h in t.history})
        assert ot.user_attrs["best_value"] == pytest.approx(t.best["val/miou"])
        if t.status == "completed":
            assert ot.value == pytest.approx(t.best["val/miou"])  # the figure the report ranks on
    assert {t.status for t in trials.values()} == {"completed", "early_stopped"}

    frame = ExperimentAnalysis(str(result.run_dir / "tune")).dataframe()
    assert set(frame["trial_id"]) == set(trials) and frame["val/miou"].notna().all()
    assert dict(zip(frame["trial_id"], frame["epoch"])) == {i: t.epochs for i, t in trials.items()}


def test_multi_objective_sweep_marks_the_pareto_front_and_measures_exports(ray_session, synthetic_root, write_spec,
                                                                          tmp_path):
    """Optuna on (val/miou max, latency/p50_ms min) with the in-trial proxy, ASHA on val/miou, then the export
    block: the best trials exported to ONNX and timed; the report marks the Pareto front. Then export and bench
    read the run directory."""
    import json

    from typer.testing import CliRunner

    from orchestrator.cli import app

    spec = tiny_spec(
        synthetic_root,
        model={"choice": [{"arch": "unet", "encoder": "resnet18"}, {"arch": "enet", "encoder": None}]},
        search={"algorithm": "optuna", "num_samples": 4, "seed": 2, "metric": "val/miou", "mode": "max",
                "objectives": [{"metric": "val/miou", "mode": "max"}, {"metric": "latency/p50_ms", "mode": "min"}],
                "latency_proxy": {"backend": "torch", "warmup": 1, "iters": 5},
                "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2}},
        export={"backends": ["ort-cpu"], "targets": ["local"], "trials": "top_k", "top_k": 2, "warmup": 1, "iters": 5},
    )
    result = run_sweep(load_spec(write_spec(spec)), out=tmp_path / "run")
    run_dir = result.run_dir
    store = Store(run_dir / "results.db")
    trials = store.trials()
    assert all(t.best["latency/p50_ms"] > 0 for t in trials)
    measured = store.latencies()
    assert len(measured) == 2 and all(r["status"] == "ok" and r["p50_ms"] > 0 for r in measured)
    assert all((run_dir / "exports" / f"{r['trial_id']}.onnx").is_file() for r in measured)
    md = (run_dir / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| rank"))
    assert "| pareto |" in header and "ort-cpu@local p50 ms" in header and "latency p50 ms (proxy)" in header
    assert "| * |" in md and "`pareto` marks the trials" in md
    assert "Pareto front" in (run_dir / "report.html").read_text()
    assert list((run_dir / "summary" / "wandb").glob("offline-run-*/run-*.wandb"))  # the W&B summary run

    runner = CliRunner()
    exported = runner.invoke(app, ["export", str(run_dir)], catch_exceptions=False)
    assert exported.exit_code == 0 and "max abs diff to PyTorch: random" in exported.output
    diffs = [float(v) for v in exported.output.split("random ")[1].replace(", validation image", "").split()[:2]]
    assert max(diffs) <= 1e-3
    bench = runner.invoke(app, ["bench", str(run_dir), "--backend", "torch", "--shape", "1x3x32x64", "--iters", "5",
                                "--warmup", "1", "--format", "json"], catch_exceptions=False)
    data = json.loads(bench.stdout)
    assert data["backend"] == "torch" and data["p50_ms"] <= data["p90_ms"] <= data["p99_ms"]
