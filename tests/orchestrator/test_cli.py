"""The CLI as a user meets it: one-line errors with exit code 2, dry runs, listings, and resume after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.errors import SegsweepError
from orchestrator.pool.protocol import is_stub
from orchestrator.rundir import RunDir
from orchestrator.spec import load_spec
from orchestrator.store import Store
from orchestrator.study import run_sweep
from tests.conftest import ROOT, tiny_spec

ORCHESTRATE = [sys.executable, "-m", "orchestrator.cli"]


def cli(*args: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([*ORCHESTRATE, *args], capture_output=True, text=True, env=env, timeout=600, **kw)


def test_bad_spec_is_one_line_exit_2_and_writes_nothing(write_spec, tmp_path):
    spec = tiny_spec(tmp_path / "data")
    spec["loss"]["name"] = "dise"
    path = write_spec(spec)
    out = tmp_path / "run"
    done = cli("run", str(path), "--out", str(out), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
    assert f"{path}: loss.name: unknown loss 'dise' (did you mean 'dice'?" in done.stderr
    assert not out.exists() and not (tmp_path / "runs").exists()


def test_missing_data_root_is_one_line(write_spec, tmp_path):
    spec = tiny_spec(tmp_path / "nowhere")
    spec["data"]["dataset"] = "idd_lite"
    done = cli("run", str(write_spec(spec)), "--out", str(tmp_path / "run"))
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert f"sweep.yaml: data.root: {tmp_path / 'nowhere'} does not exist" in done.stderr
    assert not (tmp_path / "run").exists()


def test_validate_dry_run_and_list(write_spec, tmp_path):
    runner = CliRunner()
    spec = tiny_spec(tmp_path / "data", loss={"name": {"choice": ["dice", "focal"]}})
    path = write_spec(spec)
    result = runner.invoke(app, ["validate", str(path), "--set", "search.num_samples=5"])
    assert result.exit_code == 0 and "valid (5 trials, 1 searched keys)" in result.output
    result = runner.invoke(app, ["run", str(path), "--dry-run", "--max-trials", "1"])
    assert result.exit_code == 0, result.output
    assert "sweep tiny: 1 trials, optuna search on val/miou (max)" in result.output
    assert "train 8 / val 4 images, native 40x72, trained at 32x64 (resize)" in result.output and "loss.name: choice ['dice', 'focal']" in result.output
    assert not (tmp_path / "data").exists(), "a dry run writes nothing"
    for what, expected in [("models", "deeplabv3plus"), ("losses", "weighted_ce_enet"), ("schedules", "onecycle"),
                           ("datasets", "idd_lite"), ("encoders", "mobilenet_v2"), ("budgets", "energy/mj_per_image")]:
        result = runner.invoke(app, ["list", what])
        assert result.exit_code == 0 and expected in result.output


def never_reported(run_metadata: str) -> str:
    """A trial's run metadata in Tune's snapshot as it was before its first report: no result, no checkpoint."""
    from ray.train._internal.checkpoint_manager import _CheckpointManager
    from ray.tune.trainable.metadata import _TrainingRunMetadata

    metadata = _TrainingRunMetadata.from_json_state(run_metadata)
    metadata.last_result, metadata.last_result_time = {}, -float("inf")
    metadata.checkpoint_manager = _CheckpointManager(metadata.checkpoint_manager.checkpoint_config)
    return metadata.get_json_state()


@pytest.mark.slow
def test_resume_after_kill_9_keeps_finished_trials_and_duplicates_none(synthetic_root, write_spec, tmp_path):
    spec = tiny_spec(synthetic_root, search={"algorithm": "optuna", "num_samples": 4, "seed": 3,
                                             "scheduler": {"name": "none"}})
    spec["optimizer"]["lr"] = {"loguniform": [0.001, 0.01]}
    spec["trainer"]["max_epochs"] = 4
    spec["trainer"]["checkpoint_every_s"] = 0  # every epoch: what resume continues from
    spec["resources"]["max_concurrent"] = 1
    path, run_dir = write_spec(spec), tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "offline"}
    driver = subprocess.Popen([*ORCHESTRATE, "run", str(path), "--out", str(run_dir)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            store = Store(run_dir / "results.db") if (run_dir / "results.db").is_file() else None
            trials = store.trials() if store else []
            if any(t.status == "completed" for t in trials) and any(t.status == "running" and t.epochs >= 1
                                                                    for t in trials):
                break
            assert driver.poll() is None, "the sweep ended before it could be killed"
            time.sleep(0.5)
        else:
            pytest.fail("no trial finished in time")
        time.sleep(3)  # let Tune snapshot the experiment
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray it started, as kill -9 on a terminal would
        driver.wait()
    before = {t.id: t for t in Store(run_dir / "results.db").trials()}
    finished = {i: t for i, t in before.items() if t.status == "completed"}
    # as if Tune's last snapshot predated their first report: restored as running with no result (Tune then refuses
    # an end without the sweep's metric), they end at once with the store's last metrics
    snapshot = sorted((run_dir / "tune").glob("experiment_state-*.json"))[-1]
    experiment = json.loads(snapshot.read_text())
    for entry in experiment["trial_data"]:
        trial = json.loads(entry[0])
        if trial["trial_id"] in finished:
            entry[0] = json.dumps({**trial, "status": "RUNNING"})
            entry[1] = never_reported(entry[1])
    snapshot.write_text(json.dumps(experiment))
    # and as if the driver died after the store recorded their end, before their checkpoints were released: whole
    # again (bytes no resume could load), resume must release them from the store's word and not train them again
    for trial_id in finished:
        for state in (run_dir / "tune" / trial_id).glob("checkpoint_*/state.pt"):
            state.write_bytes(b"\0" * 4096)

    done = cli("resume", str(run_dir))
    assert done.returncode == 0, done.stderr[-3000:]
    after = {t.id: t for t in Store(run_dir / "results.db").trials(history=True)}
    assert len(after) == 4 and all(t.status == "completed" for t in after.values()), after
    for trial_id, t in finished.items():  # kept as they were
        assert after[trial_id].best == t.best and after[trial_id].epochs == t.epochs
    for t in after.values():  # no epoch recorded twice, none missing
        assert [h["epoch"] for h in t.history] == [1, 2, 3, 4]
        # every trial's checkpoint released once it finished, whichever driver saw it finish
        states = list((run_dir / "tune" / t.id).glob("checkpoint_*/state.pt"))
        assert states and all(is_stub(state) for state in states)
        assert RunDir(run_dir).trial(t.id).staged_checkpoints() == []
    final = json.loads(sorted((run_dir / "tune").glob("experiment_state-*.json"))[-1].read_text())
    assert {json.loads(trial)["status"] for trial, _ in final["trial_data"]} == {"TERMINATED"}  # none errored
    report = json.loads(cli("report", str(run_dir), "--format", "json").stdout)
    assert sorted(t["id"] for t in report["trials"]) == sorted(after)
    status = cli("status", str(run_dir))
    assert "4/4 done (4 completed" in status.stdout


def test_trials_larger_than_the_cluster_are_refused(ray_session, synthetic_root, write_spec, tmp_path):
    spec = tiny_spec(synthetic_root)
    spec["resources"]["gpus_per_trial"] = 0.5
    with pytest.raises(SegsweepError, match=r"resources.gpus_per_trial: 0.5 per trial, but the Ray cluster has 0 GPU"):
        run_sweep(load_spec(write_spec(spec)), out=tmp_path / "run")


@pytest.mark.slow
def test_demo_sweep_end_to_end(tmp_path):
    """The README's demo: every trial in report.md and in report --format json, some early-stopped, real metrics,
    one W&B offline run per trial."""
    repo = ROOT
    run_dir = tmp_path / "demo"
    env_root = {"SEGSWEEP_DEMO_DATA": str(tmp_path / "data")}
    done = subprocess.run([*ORCHESTRATE, "run", str(repo / "sweeps" / "demo.yaml"), "--out", str(run_dir)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "WANDB_MODE": "offline", **env_root})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[segsweep] 8/8 done" in done.stderr
    report = json.loads(cli("report", str(run_dir), "--format", "json").stdout)
    trials = report["trials"]
    assert report["sweep"] == "demo" and report["metric"] == "val/miou" and len(trials) == 8
    statuses = {t["status"] for t in trials}
    assert "early_stopped" in statuses and statuses <= {"completed", "early_stopped"}
    assert all(0 < t["metrics"]["val/miou"] <= 1 for t in trials)
    md = (run_dir / "report.md").read_text()
    rows = {cells[1]: cells for cells in (line.split(" | ") for line in md.splitlines() if line.startswith("| "))}
    for t in trials:  # each trial's row names its own architecture and loss, from the searched choices
        assert t["config"]["model.arch"] in ("unet", "fpn") and t["config"]["loss.name"] in ("dice", "focal", "ce",
                                                                                           "bce_dice")
        assert rows[t["id"]][2:5] == [t["config"]["model.arch"], "resnet18", t["config"]["loss.name"]]
    assert all(len(list((run_dir / "trials" / t["id"] / "wandb").glob("offline-run-*/run-*.wandb"))) == 1
               for t in trials)
    # the README's flow: export the best trial, then time that file with no --shape: the model's own is used
    runner = CliRunner()  # in this process: the same commands without three more interpreter starts
    exported = runner.invoke(app, ["export", str(run_dir)], catch_exceptions=False)
    assert exported.exit_code == 0, exported.output
    onnx = exported.stdout.split(":", 1)[0].strip()
    bench = runner.invoke(app, ["bench", onnx, "--backend", "ort-cpu", "--iters", "5", "--warmup", "1", "--format",
                                "json"], catch_exceptions=False)
    assert bench.exit_code == 0 and json.loads(bench.stdout)["shape"] == [1, 3, 64, 96]
    assert "shape 1x3x64x96 (the model's own; --shape sets another)" in bench.stderr
    onnx = runner.invoke(app, ["export", str(run_dir), "--dynamic"]).stdout.split(":", 1)[0].strip()
    refused = cli("bench", onnx, "--backend", "ort-cpu")  # the one-line error as a user meets it
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert "its input is dynamic (batch x 3 x height x width): give --shape NxCxHxW" in refused.stderr
