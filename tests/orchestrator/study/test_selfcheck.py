"""The study checks its own numbers: the rule (pure), a contract over every registry architecture (a real sweep on
CPU whose recorded bests come back from the saved weights, through the self-check and ``orchestrate evaluate``), and
weights that do not reproduce: a warning line, the store's flag, the report's marks."""

from __future__ import annotations

import math

import pytest
import torch
from typer.testing import CliRunner

from models.catalog import ARCHITECTURES
from orchestrator.cli import app
from orchestrator.rundir import RunDir
from orchestrator.spec import build_sweep
from orchestrator.store import Store, TrialRow
from orchestrator.study import run_sweep
from orchestrator.study.selfcheck import TOLERANCE, check_trials, in_process, to_check, tolerance_for
from reports.build import report_json
from tests.conftest import tiny_spec


def row(best: dict[str, float]) -> TrialRow:
    return TrialRow("t", "completed", {}, None, 2, best, {}, None, None, None, None)


def test_the_rule():
    assert tolerance_for(0.6) == TOLERANCE and tolerance_for(36.0) == pytest.approx(36 * TOLERANCE)  # a loss
    assert to_check(row({"val/miou": 0.6058}), "val/miou", {"metrics": {"val/miou": 0.6058}}).ok
    assert to_check(row({"val/miou": 0.6058}), "val/miou", {"metrics": {"val/miou": 0.6018}}).ok
    bad = to_check(row({"val/miou": 0.6058}), "val/miou", {"metrics": {"val/miou": 0.0321}})
    assert not bad.ok and bad.measured == 0.0321 and bad.recorded == 0.6058
    missing = to_check(row({"val/miou": 0.6}), "val/miou", {"error": "best.pt missing"})
    assert not missing.ok and missing.error == "best.pt missing"
    assert not to_check(row({}), "val/miou", {"metrics": {"val/miou": 0.5}}).ok  # nothing recorded to reproduce


# every registry architecture once (smp's with a small encoder), ENet with its first stage, batch statistics
MODELS = [{"arch": arch, "encoder": {"enet": None, "deeplabv3_atrous": "resnet18", "fcn": "resnet50",
                                     "segformer": "mit_b0"}.get(arch, "mobilenet_v2")} for arch in sorted(ARCHITECTURES)]
MODELS = [{**m, "stage1_epochs": 1} if m["arch"] == "enet" else m for m in MODELS]
MODELS.append({"arch": "unet", "encoder": "mobilenet_v2", "batchnorm": "batch"})


@pytest.mark.slow
def test_every_architecture_reproduces_its_recorded_best_from_its_saved_weights(ray_session, tmp_path, capfd):
    """Contract: two epochs of each model on synthetic CPU data; the self-check and ``evaluate --split val`` give back
    each trial's recorded best (ENet's is its full network's, after one encoder-only epoch)."""
    spec = tiny_spec(tmp_path / "data", model={"choice": MODELS},
                     search={"algorithm": "grid", "metric": "val/miou", "mode": "max", "scheduler": {"name": "none"}},
                     trainer={"max_epochs": 2, "batch_size": 4, "log_images": 0, "best_worst": 0},
                     check={"top_k": 100}, tracking={"wandb": {"mode": "disabled"}})
    spec["data"] |= {"size": [128, 128], "synthetic": {"train": 4, "val": 4, "height": 128, "width": 160, "seed": 3}}
    result = run_sweep(build_sweep(spec), out=tmp_path / "run")
    store = Store.of_run(result.run_dir)
    trials = store.trials(history=True)
    assert len(trials) == len(MODELS) and all(t.status == "completed" for t in trials), [t.error for t in trials]
    checks = store.checks()
    assert set(checks) == {t.id for t in trials} and all(c["ok"] for c in checks.values()), checks
    assert "every one within" in capfd.readouterr().err
    enet = next(t for t in trials if t.config["model.arch"] == "enet")
    assert "val/miou" not in enet.history[0] and "stage1/val/miou" in enet.history[0]  # epoch 1: the encoder alone
    assert enet.best["val/miou"] == enet.history[1]["val/miou"]  # its figure: the full network's epoch

    cli = CliRunner().invoke(app, ["evaluate", str(result.run_dir), "--split", "val", "--top-k", "100"])
    assert cli.exit_code == 0, cli.output
    evaluated = {e["trial_id"]: e["metrics"]["miou"] for e in store.evaluations()}
    for t in trials:
        assert evaluated[t.id] == pytest.approx(t.best["val/miou"], abs=1e-4), t.config

    # weights that are not the ones the figure came from: re-initialised, as ENet's stage-1 weights once were
    top = max(trials, key=lambda t: t.best["val/miou"])
    weights = RunDir(result.run_dir).trial(top.id).best_weights
    state = torch.load(weights, weights_only=True)
    torch.save({k: torch.zeros_like(v) if v.is_floating_point() else v for k, v in state.items()}, weights)
    (check,) = check_trials(result.run_dir, [top], in_process(result.run_dir))
    assert not check.ok and not math.isclose(check.measured, check.recorded, abs_tol=TOLERANCE)
    assert f"trial {top.id} does not reproduce its val/miou" in capfd.readouterr().err
    assert store.checks()[top.id]["ok"] is False
    from reports.build import build_report

    md, html = build_report(result.run_dir)
    assert f"**WARNING** `{top.id}` does not reproduce" in md.read_text() and "NOT REPRODUCED" in html.read_text()
    entry = next(t for t in report_json(result.run_dir)["trials"] if t["id"] == top.id)
    assert entry["check"]["ok"] is False and all(e["verified"] is False for e in entry["evaluations"])
    assert "(unverified)" in md.read_text()
