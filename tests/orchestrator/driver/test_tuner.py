"""The driver's Ray: preloaded workers (the ``worker_process_setup_hook``) on by default and switchable off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from orchestrator.driver.tuner import ray_runtime_env
from orchestrator.spec import build_sweep
from orchestrator.trial import preload
from tests.conftest import ROOT, tiny_spec


@pytest.mark.slow
def test_preloaded_workers_are_on_by_default_and_can_be_turned_off(synthetic_root, tmp_path):
    """``resources.preload_workers``: a sweep's own Ray (started by ``run_sweep``) runs the preload hook in every
    worker, and the trials report that they got a preloaded worker; off, the runtime environment has no hook."""
    spec = tiny_spec(synthetic_root)
    spec["trainer"] = {"max_epochs": 1, "batch_size": 4, "log_images": 0, "best_worst": 0}
    spec["tracking"] = {"wandb": {"mode": "disabled"}}
    spec["optimizer"] = {"name": "adam", "lr": {"choice": [0.003, 0.001]}}
    assert ray_runtime_env(build_sweep(spec).spec)["worker_process_setup_hook"] is preload.warm
    off = {**spec, "resources": {**spec["resources"], "preload_workers": False}}
    assert "worker_process_setup_hook" not in ray_runtime_env(build_sweep(off).spec)
    script = textwrap.dedent(f"""
        import json
        from orchestrator.spec import build_sweep
        from orchestrator.store import Store
        from orchestrator.study import run_sweep
        result = run_sweep(build_sweep(json.loads({json.dumps(json.dumps(spec))})), {str(tmp_path / "run")!r})
        trials = Store.of_run(result.run_dir).trials(history=True)
        print("PRELOADED", json.dumps([t.history[0]["perf/preloaded"] for t in trials]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=400,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.split("PRELOADED", 1)[1]) == [1.0, 1.0]


