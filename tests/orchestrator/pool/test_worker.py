"""A trial worker in this process (no Ray: it is a plain class), training real trials on the CPU: epochs reach its
proxy, a trial waits for Tune's word at a rung, a stop ends it after that epoch, a failure is one line, and a trial
that ran out of memory beside others is started again once fewer run."""

from __future__ import annotations

import time

import pytest

from orchestrator.data.prepare import prepare_data
from orchestrator.pool.worker import Job, TrialWorker, WorkerSettings
from orchestrator.spec import build_sweep
from orchestrator.trial.config import TrialContext
from tests.conftest import tiny_spec


@pytest.fixture
def worker(synthetic_root, tmp_path):
    spec = tiny_spec(synthetic_root)
    spec["trainer"] = {"max_epochs": 3, "batch_size": 4, "log_images": 0, "best_worst": 0, "checkpoint_every_s": 0}
    sweep = build_sweep(spec)
    data = prepare_data(sweep.spec.data, tmp_path / "cache")
    w = TrialWorker(WorkerSettings(slots=1, limit=1, threads=1, memory_aware=True))
    (tmp_path / "run").mkdir()
    w.attach(TrialContext(run_dir=str(tmp_path / "run"), sweep="tiny", metric="val/miou", mode="max", data=data,
                          decisions=(1,)))
    return w, sweep.fixed_config(), tmp_path / "run"


def events(worker: TrialWorker, trial_id: str, until: str = "done", timeout: float = 120) -> list[dict]:
    out, deadline = [], time.time() + timeout
    while time.time() < deadline:
        event = worker.next_event(trial_id, 1.0)
        if event is None:
            continue
        out.append(event)
        if event["kind"] in (until, "failed"):
            return out
    pytest.fail(f"no {until} event in {timeout} s: {out}")


def test_epochs_reach_the_proxy_and_a_rung_waits_for_tunes_word(worker):
    w, config, run_dir = worker
    w.start("a", config, None)
    first = events(w, "a", until="epoch")
    assert first[-1]["metrics"]["epoch"] == 1 and 0 <= first[-1]["metrics"]["val/miou"] <= 1
    checkpoint = first[-1]["checkpoint"]
    assert checkpoint and (run_dir / "trials" / "a" / ".checkpoint-1" / "state.pt").is_file()  # checkpoint_every_s 0
    time.sleep(2)
    assert w.next_event("a", 0.1) is None  # epoch 1 is a rung: nothing more until Tune's word
    w.decide("a", 1)
    rest = events(w, "a")
    assert [e["metrics"]["epoch"] for e in rest if e["kind"] == "epoch"] == [2, 3] and rest[-1]["kind"] == "done"
    assert rest[-1] == {"kind": "done"} and rest[-2]["checkpoint"] is None  # no checkpoint after the last epoch
    assert (run_dir / "trials" / "a" / "best.pt").is_file()
    assert rest[0]["metrics"]["perf/concurrent"] == 1 and rest[0]["metrics"]["perf/restarts"] == 0
    assert rest[0]["metrics"]["perf/wait_s"] >= 2.0  # epoch 1's wait at the rung, reported with epoch 2


def test_a_stop_ends_the_trial_and_the_slot_takes_the_next(worker):
    w, config, _ = worker
    w.start("a", config, None)
    w.start("b", config, None)  # one slot: b waits for it
    assert events(w, "a", until="epoch")[-1]["metrics"]["epoch"] == 1
    assert w.load()["pending"] == 1
    w.stop("a")  # ASHA stopped it at the rung
    got = events(w, "b", until="epoch")
    assert got[-1]["metrics"]["epoch"] == 1 and w.load() == {"running": 1, "pending": 0, "limit": 1}
    w.stop("b")


def test_a_failing_trial_is_one_line_and_the_worker_goes_on(worker):
    w, config, _ = worker
    w.start("bad", {**config, "model.arch": "pan"}, None)  # PAN cannot run at 32x64
    (failed,) = events(w, "bad")
    assert failed["kind"] == "failed" and "Output size is too small" in failed["error"] and "\n" not in failed["error"]
    w.start("good", config, None)
    assert events(w, "good", until="epoch")[-1]["kind"] == "epoch"
    w.stop("good")


def test_out_of_memory_beside_others_restarts_the_trial_once_fewer_run(worker):
    w, config, _ = worker
    job = Job("x", config, None)
    w.admission.running, w.admission.limit = 3, 3  # as if x ran out of memory while three ran
    w._out_of_memory(job)
    assert w.admission.limit == 2 and job.restarts == 1 and list(w.pending) == [job]  # first in line, two at once from now
    w.pending.clear()
    w.admission.running = 1  # alone and still out of memory: the trial fails, saying what to change
    w._out_of_memory(job)
    (event,) = [job.events.get_nowait()]
    assert event["kind"] == "failed" and "even alone" in event["error"] and "trainer.batch_size" in event["error"]
    w.admission.running = 0


def test_a_restarted_trial_does_not_report_its_epochs_twice(worker):
    w, config, _ = worker
    job = Job("r", config, None)
    job.reported, job.confirmed, job.max_epochs = 2, 2, 5
    assert w._send(job, {"epoch": 1.0}, None) and w._send(job, {"epoch": 2.0}, None)
    assert job.events.empty()  # retrained epochs 1 and 2 stay quiet
    assert w._send(job, {"epoch": 3.0}, None) is True  # not a decision epoch: runs on
    assert job.events.get_nowait()["metrics"]["epoch"] == 3.0


def test_several_sweeps_share_the_slots_fairly_and_a_detached_sweep_goes(worker, tmp_path):
    """Two users' sweeps on one worker: a slot that frees goes to the user with the fewest trials running; a sweep
    detached drops its trials still waiting, and its context goes."""
    w, config, run_dir = worker
    other = tmp_path / "other"
    other.mkdir()
    alice = w.contexts[str(run_dir)]
    import dataclasses

    w.contexts[str(run_dir)] = dataclasses.replace(alice, user="alice")
    w.attach(dataclasses.replace(alice, run_dir=str(other), user="bob", decisions=()), warm=False)
    with w.cond:  # held throughout (re-entrant): the worker's own slot thread takes nothing meanwhile
        # as if two slots: one alice trial runs, alice and bob each wait with one (alice's the older)
        w.admission.limit, w.admission.running, w.running_by_user["alice"] = 2, 1, 1
        for trial_id, run in (("a2", run_dir), ("b1", other)):
            w.start(trial_id, config, None, str(run))
        job = w._take()
        assert job.trial_id == "b1" and job.user == "bob"  # bob had none running
        w.admission.running, w.running_by_user["alice"], w.running_by_user["bob"] = 2, 0, 0  # slots taken: none starts
        w.detach(str(run_dir))
        assert str(run_dir) not in w.contexts and w.jobs["b1"].run_dir == str(other) and "a2" not in w.jobs
        w.stop("b1")
        w.admission.running = 0
    assert w._context(str(run_dir), timeout=0.1) is None


def test_a_trial_over_budget_reports_its_figures_and_never_trains(worker):
    """The budget is judged on the model's figures before anything trains: a trial over it gets no data module, no
    trainer and no fit; its one event holds its figures (marked infeasible, the sweep's metric NaN so that Tune
    accepts the end); a trial within budget trains as ever."""
    import dataclasses
    import json
    import math
    import os

    from orchestrator.budgets import INFEASIBLE

    w, config, run_dir = worker
    context = w.contexts[str(run_dir)]
    w.contexts[str(run_dir)] = dataclasses.replace(context, constraints=({"metric": "params_m", "max": 1.0},))
    w.start("big", config, None)  # unet with resnet18: 14 M parameters
    (event,) = events(w, "big", until="infeasible")
    metrics = event["metrics"]
    assert event["kind"] == "infeasible" and metrics[INFEASIBLE] == 1.0 and math.isnan(metrics["val/miou"])
    assert metrics["model/params"] > 1e7 and "epoch" not in metrics
    timeline = json.loads((run_dir / "pool" / f"worker-{os.getpid()}.json").read_text())
    marks = [e for e in timeline if e.get("trial") == "big"]
    assert [e["event"] for e in marks] == ["start", "infeasible"] and marks[1]["broken"].startswith("params_m 14.")
    assert not (run_dir / "trials" / "big" / "best.pt").exists()  # no epoch ran
    w.start("small", {**config, "model.arch": "enet", "model.encoder": None}, None)  # 0.35 M parameters
    assert events(w, "small", until="epoch")[-1]["metrics"]["model/params"] < 1e6
    w.stop("small")


def test_a_trial_that_decodes_its_files_saves_its_panels(worker):
    """``data.cache: false`` (the trial decodes the files itself): the end-of-trial panels come from the driver's
    decoded cache (they read the trial's datasets' arrays, which file-decoding datasets do not have)."""
    w, config, run_dir = worker
    config = {**config, "data.cache": False, "data.workers": 0, "trainer.max_epochs": 1, "trainer.log_images": 1,
              "trainer.best_worst": 1}
    w.start("files", config, None)
    assert events(w, "files")[-1] == {"kind": "done"}
    assert len(list((run_dir / "trials" / "files" / "best_worst").glob("*.png"))) == 2
    assert (run_dir / "trials" / "files" / "examples.npz").is_file()
