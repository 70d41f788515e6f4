"""The pool as the driver starts it: what no cluster can run, the architectures a worker warms up, and stated memory
figures limiting a real Ray cluster's logical GPU to one trial at a time (trials on the CPU here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from orchestrator.driver.tuner import check_resources
from orchestrator.errors import SegsweepError
from orchestrator.pool.launch import warm_configs
from orchestrator.spec import build_sweep
from tests.conftest import ROOT, tiny_spec


def test_trials_no_cluster_can_run_are_refused():
    spec = build_sweep(tiny_spec("/tmp/x", resources={"cpus_per_trial": 1, "gpus_per_trial": 0.5})).spec
    with pytest.raises(SegsweepError, match=r"resources.gpus_per_trial: 0.5 per trial, but the Ray cluster has 0 GPU"):
        check_resources(spec, {"CPU": 2})
    check_resources(build_sweep(tiny_spec("/tmp/x")).spec, {"CPU": 2})  # auto needs no GPU
    pinned = build_sweep(tiny_spec("/tmp/x", resources={"proxy_resources": {"edge": 1}})).spec
    with pytest.raises(SegsweepError, match=r"resources.proxy_resources.edge: 1 per trial, but the Ray cluster has 0; "
                                            r"start a node with --resources '\{\"edge\": N\}'"):
        check_resources(pinned, {"CPU": 2})
    check_resources(pinned, {"CPU": 2, "edge": 4})


@pytest.mark.parametrize("resources, message", [
    ({"CPU": 1}, "CPU: give a custom resource"),
    ({"node:__internal_head__": 1}, "node:__internal_head__: give a custom resource"),
    ({"edge": 0}, "edge: 0, must be > 0"),
])
def test_proxy_resources_are_custom_and_positive(resources, message):
    with pytest.raises(SegsweepError, match=message):
        build_sweep(tiny_spec("/tmp/x", resources={"proxy_resources": resources}))


def test_a_worker_warms_up_each_architecture_the_study_can_sample(synthetic_root):
    grouped = tiny_spec(synthetic_root, model={"choice": [{"arch": "unet", "encoder": "resnet18"},
                                                          {"arch": "enet", "encoder": None}]},
                        loss={"name": {"choice": ["dice", "focal"]}})
    configs = warm_configs(build_sweep(grouped))
    assert [(c["model.arch"], c["model.encoder"]) for c in configs] == [("unet", "resnet18"), ("enet", None)]
    assert {c["loss.name"] for c in configs} == {"ce"}
    crossed = tiny_spec(synthetic_root, model={"arch": {"choice": ["unet", "fpn"]},
                                               "encoder": {"choice": ["resnet18", "mobilenet_v2"]}})
    assert len(warm_configs(build_sweep(crossed))) == 4
    assert len(warm_configs(build_sweep(tiny_spec(synthetic_root)))) == 1  # nothing searched: the one model


@pytest.mark.slow
def test_stated_memory_lets_one_trial_at_a_time_onto_the_gpu(synthetic_root, tmp_path):
    """A real local Ray cluster with one logical GPU: 4 per GPU asked, 30 of 40 GiB per trial stated, so its worker
    trains one trial at a time (``perf/concurrent``), and the driver says so in one line."""
    spec = tiny_spec(synthetic_root, resources={"cpus_per_trial": 1, "gpus_per_trial": 0.25,
                                                "trial_gpu_memory_gb": 30, "gpu_memory_gb": 40})
    spec["trainer"] = {"max_epochs": 1, "batch_size": 4, "log_images": 0, "best_worst": 0}
    spec["tracking"] = {"wandb": {"mode": "disabled"}}
    spec["optimizer"] = {"name": "adam", "lr": {"choice": [0.003, 0.001, 0.0003]}}
    spec["search"] = {"algorithm": "grid", "metric": "val/miou", "mode": "max", "scheduler": {"name": "none"}}
    script = textwrap.dedent(f"""
        import json, ray
        from orchestrator.spec import build_sweep
        from orchestrator.store import Store
        from orchestrator.study import run_sweep
        ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, logging_level="WARNING")
        result = run_sweep(build_sweep(json.loads({json.dumps(json.dumps(spec))})), {str(tmp_path / "run")!r})
        trials = Store.of_run(result.run_dir).trials(history=True)
        print("RESULT", json.dumps([result.counts, [t.history[0]["perf/concurrent"] for t in trials]]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=400,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    counts, concurrent = json.loads(done.stdout.split("RESULT", 1)[1])
    assert counts["completed"] == 3 and concurrent == [1.0, 1.0, 1.0]
    assert "a trial needs 30.0 GiB of a 40 GiB GPU: 1 trial(s) per GPU at once instead of 4" in done.stderr
    assert "1 worker(s), 1 trial(s) at once" in done.stderr
