"""``orchestrate extend``: a finished study continued by N trials from the same Optuna study (or new random
points), into the same store and report, none duplicated; a grid cannot be extended."""

from __future__ import annotations

import sqlite3

import pytest

from orchestrator.errors import SegsweepError
from orchestrator.spec import build_sweep
from orchestrator.store import Store
from orchestrator.study import extend_sweep, run_sweep
from tests.conftest import tiny_spec

pytestmark = pytest.mark.slow


def small(synthetic_root, algorithm: str) -> dict:
    spec = tiny_spec(synthetic_root, search={"algorithm": algorithm, "num_samples": 2, "seed": 1, "metric": "val/miou",
                                             "mode": "max", "scheduler": {"name": "none"}})
    spec["optimizer"]["lr"] = {"loguniform": [0.001, 0.01]}
    spec["trainer"] = {"max_epochs": 1, "batch_size": 4, "log_images": 0, "best_worst": 0}
    spec["tracking"] = {"wandb": {"mode": "disabled"}}
    return spec


@pytest.mark.parametrize("algorithm", ["optuna", "random"])
def test_extend_adds_n_new_trials_to_the_same_study(ray_session, synthetic_root, tmp_path, algorithm):
    first = run_sweep(build_sweep(small(synthetic_root, algorithm)), out=tmp_path / "run")
    before = {t.id: t for t in Store.of_run(first.run_dir).trials()}
    result = extend_sweep(first.run_dir, 2)
    store = Store.of_run(result.run_dir)
    after = store.trials()
    assert len(after) == 4 and len({t.id for t in after}) == 4 and set(before) < {t.id for t in after}
    assert all(t.status == "completed" for t in after) and not result.interrupted
    new = [t for t in after if t.id not in before]
    old_lrs = {t.config["optimizer.lr"] for t in before.values()}
    assert len(new) == 2 and all(t.config["optimizer.lr"] not in old_lrs for t in new)  # new points, no repeats
    assert {t.id: t.best for t in after if t.id in before} == {i: t.best for i, t in before.items()}  # kept as they were
    assert store.meta()["trials"] == 4 and (result.run_dir / "tune-2").is_dir()
    assert all(t.id in (result.run_dir / "report.md").read_text() for t in after)
    if algorithm == "random":  # the same run, as a grid: it has run every combination there is
        spec = result.run_dir / "spec.yaml"
        spec.write_text(spec.read_text().replace("algorithm: random", "algorithm: grid").replace(
            "loguniform:\n    - 0.001\n    - 0.01", "choice:\n    - 0.001\n    - 0.01"))
        with pytest.raises(SegsweepError, match="a grid search has run every combination of its domains"):
            extend_sweep(result.run_dir, 2)
        assert len(Store.of_run(result.run_dir).trials()) == 4
    if algorithm == "optuna":  # one study, four trials: TPE saw the first two
        db = sqlite3.connect(result.run_dir / "optuna.db")
        assert db.execute("SELECT COUNT(*) FROM studies").fetchone() == (1,)
        assert db.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone() == (4,)
