"""Admission: GPU packing and the memory-aware share by hand, the probe and its per-machine cache, and admission
through a real Ray cluster with a logical GPU (the trials themselves train on the CPU here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import orchestrator.driver.admission as admission
from orchestrator.data.prepare import prepare_data
from orchestrator.driver.admission import TrialResources, gpu_share, gpus_per_trial, memory_key
from orchestrator.errors import SegsweepError
from orchestrator.gpu import nvml_index
from orchestrator.spec import build_sweep
from orchestrator.spec.schema import DataSpec, ResourcesSpec
from tests.conftest import ROOT, tiny_spec

GiB = 2**30


def test_gpus_per_trial_auto_packs_where_there_are_gpus():
    assert gpus_per_trial(ResourcesSpec(), cluster_gpus=2) == 0.25
    assert gpus_per_trial(ResourcesSpec(trials_per_gpu=3), cluster_gpus=1) == 0.3333
    assert gpus_per_trial(ResourcesSpec(), cluster_gpus=0) == 0.0
    assert gpus_per_trial(ResourcesSpec(gpus_per_trial=0.5), cluster_gpus=0) == 0.5


def test_gpu_share_by_hand():
    # 10 GiB * 1.15 = 11.5 of 80 -> 6 fit, more than the 4 asked for: the request stands
    assert gpu_share(10 * GiB, 80 * GiB, 0.25) == 0.25
    # 30 GiB * 1.15 = 34.5 of 80 -> 2 fit: half a GPU each
    assert gpu_share(30 * GiB, 80 * GiB, 0.25) == 0.5
    # 25 GiB * 1.15 = 28.75 of 100 -> 3 fit: a third, rounded down so that three fit in 1.0
    assert gpu_share(25 * GiB, 100 * GiB, 0.25) == 0.3333
    # 60 GiB * 1.15 = 69 of 80 -> alone; more than the GPU -> alone too (it may still fail, as a trial)
    assert gpu_share(60 * GiB, 80 * GiB, 0.25) == 1.0 and gpu_share(90 * GiB, 80 * GiB, 0.25) == 1.0
    assert gpu_share(60 * GiB, 80 * GiB, 0.0) == 0.0 and gpu_share(60 * GiB, 80 * GiB, 2.0) == 2.0


def test_memory_key_ignores_what_memory_does_not_depend_on():
    a = {"model.arch": "unet", "trainer.batch_size": 8, "optimizer.lr": 1e-3, "data.size": [64, 64]}
    assert memory_key(a) == memory_key({**a, "optimizer.lr": 3e-4})
    assert memory_key(a) != memory_key({**a, "trainer.batch_size": 16})


def test_trial_resources_admit_a_large_trial_alone(tmp_path):
    planner = TrialResources(2, 0.25, True, str(tmp_path), trial_gpu_memory_gb=30, gpu_memory_gb=40)
    bundle = planner({"model.arch": "unet"}).bundles[0]
    assert bundle == {"CPU": 2, "GPU": 1.0}
    small = TrialResources(2, 0.25, True, str(tmp_path), trial_gpu_memory_gb=5, gpu_memory_gb=40)
    assert small({}).bundles[0]["GPU"] == 0.25
    # device-resident data counts: 5 GiB of step + 9 GiB of data no longer fit four times
    resident = TrialResources(2, 0.25, True, str(tmp_path), trial_gpu_memory_gb=5, gpu_memory_gb=40,
                              extra_bytes=9 * GiB)
    assert resident({}).bundles[0]["GPU"] == 0.5
    assert TrialResources(1, 0.0, True, str(tmp_path))({}).bundles[0] == {"CPU": 1}


def test_memory_probe_without_cuda_says_what_to_set(synthetic_root, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("the probe measures on a real GPU here")
    data = prepare_data(DataSpec(dataset="synthetic", root=str(synthetic_root), size=[32, 64], resize="resize",
                                 synthetic={"train": 8, "val": 4, "height": 40, "width": 72, "seed": 1}),
                        tmp_path / "cache")
    planner = TrialResources(1, 0.25, True, str(tmp_path), data=data)
    config = build_sweep({"name": "p", "data": {"dataset": "synthetic", "root": str(tmp_path / "d"), "size": [32, 32]},
                          "model": {"arch": "unet", "encoder": "resnet18"}, "loss": {"name": "ce"}}).fixed_config()
    with pytest.raises(SegsweepError, match="resources.trial_gpu_memory_gb"):
        planner.estimate(config)


def test_probed_memory_is_kept_for_the_next_run_on_the_same_machine(synthetic_root, tmp_path, monkeypatch):
    """A peak measured once on this machine (same GPU, torch, segsweep, classes) is not probed again by a later run;
    on another GPU it is. No GPU here: a probe would fail, so an answer proves the machine's file was read."""
    if torch.cuda.is_available():
        pytest.skip("the probe would measure on the real GPU here")
    monkeypatch.setenv("SEGSWEEP_CACHE_DIR", str(tmp_path / "machine"))
    monkeypatch.setattr(admission, "gpu_identity", lambda: "NVIDIA H100 80GB HBM3, 81559 MiB, 580.159.04")
    data = prepare_data(DataSpec(dataset="synthetic", root=str(synthetic_root), size=[32, 64], resize="resize",
                                 synthetic={"train": 8, "val": 4, "height": 40, "width": 72, "seed": 1}),
                        tmp_path / "cache")
    config = build_sweep({"name": "p", "data": {"dataset": "synthetic", "root": str(tmp_path / "d"), "size": [32, 32]},
                          "model": {"arch": "unet", "encoder": "resnet18"}, "loss": {"name": "ce"}}).fixed_config()
    first = TrialResources(1, 0.25, True, str(tmp_path / "run1"), data=data)
    (tmp_path / "run1").mkdir()
    measured = {"peak_bytes": 30 * GiB, "gpu_bytes": 80 * GiB, "graphs": 2, "device": "NVIDIA H100 80GB HBM3"}
    admission._write_json(admission.machine_memory_file(), {first.machine_key(memory_key(config)): measured})
    (tmp_path / "run2").mkdir()
    later = TrialResources(1, 0.25, True, str(tmp_path / "run2"), data=data)
    assert later.estimate(config) == (30 * GiB, 80 * GiB) and later.share(config) == 0.5
    assert json.loads((tmp_path / "run2" / "gpu_memory.json").read_text()) == {memory_key(config): measured}
    monkeypatch.setattr(admission, "gpu_identity", lambda: "NVIDIA H200, 143771 MiB, 580.159.04")
    (tmp_path / "run3").mkdir()
    with pytest.raises(SegsweepError, match="GPU memory probe failed"):
        TrialResources(1, 0.25, True, str(tmp_path / "run3"), data=data).estimate(config)



@pytest.mark.slow
def test_a_trial_that_would_not_fit_beside_others_runs_alone(synthetic_root, tmp_path):
    """A real local Ray cluster with one logical GPU: gpus_per_trial 0.25 asked, 30 of 40 GiB per trial stated, so
    each trial is admitted with the whole GPU: never two at once (the trials themselves train on the CPU here)."""
    spec = tiny_spec(synthetic_root, resources={"cpus_per_trial": 1, "gpus_per_trial": 0.25,
                                                "trial_gpu_memory_gb": 30, "gpu_memory_gb": 40})
    spec["trainer"] = {"max_epochs": 1, "batch_size": 4, "log_images": 0, "best_worst": 0}
    spec["tracking"] = {"wandb": {"mode": "disabled"}}
    spec["optimizer"] = {"name": "adam", "lr": {"choice": [0.003, 0.001]}}
    script = textwrap.dedent(f"""
        import json, ray
        from orchestrator.spec import build_sweep
        from orchestrator.study import run_sweep
        ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, logging_level="WARNING")
        result = run_sweep(build_sweep(json.loads({json.dumps(json.dumps(spec))})), {str(tmp_path / "run")!r})
        print("COUNTS", json.dumps(result.counts))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=400,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    counts = json.loads(done.stdout.split("COUNTS", 1)[1])
    assert counts["completed"] == 2
    assert "admitted with 1 GPU instead of 0.25" in done.stderr
    running = [int(line.rsplit(" running", 1)[0].rsplit(" ", 1)[1]) for line in done.stderr.splitlines()
               if line.startswith("[segsweep]") and " running" in line]
    assert running and max(running) == 1



@pytest.mark.slow
def test_a_probe_that_cannot_run_stops_the_sweep_before_tune_with_one_line(synthetic_root, tmp_path):
    """No CUDA here: with a logical GPU and no stated memory, the probe fails before any trial, in one line, and
    leaves no run directory behind."""
    spec = tiny_spec(synthetic_root, resources={"cpus_per_trial": 1, "gpus_per_trial": 0.25})
    spec["tracking"] = {"wandb": {"mode": "disabled"}}
    run_dir = tmp_path / "run"
    script = textwrap.dedent(f"""
        import json, ray
        from orchestrator.errors import SegsweepError
        from orchestrator.spec import build_sweep
        from orchestrator.study import run_sweep
        ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, logging_level="WARNING")
        try:
            run_sweep(build_sweep(json.loads({json.dumps(json.dumps(spec))})), {str(run_dir)!r})
        except SegsweepError as e:
            print("ERROR", e)
    """)
    if torch.cuda.is_available():
        pytest.skip("the probe measures on a real GPU here")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    line = done.stdout.split("ERROR ", 1)[1].strip()
    assert "\n" not in line and "resources.trial_gpu_memory_gb" in line and "memory_aware: false" in line
    assert not run_dir.exists()



def test_cuda_devices_map_to_nvml_indices(monkeypatch):
    """NVML and nvidia-smi number every GPU of the machine; CUDA numbers the visible ones."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert nvml_index() == 0 and nvml_index(1) == 1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert nvml_index() == 2 and nvml_index(1) == 3


def test_an_unwritable_machine_cache_costs_one_line_not_the_run(synthetic_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SEGSWEEP_CACHE_DIR", str(tmp_path / "file-not-folder" / "x"))
    (tmp_path / "file-not-folder").write_text("")  # a file where the folder should be: mkdir fails
    monkeypatch.setattr(admission, "gpu_identity", lambda: "NVIDIA H100 80GB HBM3, 81559 MiB, 580.159.04")
    monkeypatch.setattr(admission, "probe_memory", lambda config, groups, data: {"peak_bytes": GiB, "gpu_bytes": 80 * GiB})
    planner = TrialResources(1, 0.25, True, str(tmp_path), data=None)
    assert planner.estimate({"model.arch": "unet"}) == (GiB, 80 * GiB)
    assert json.loads((tmp_path / "gpu_memory.json").read_text())  # the run's own copy is kept
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not kept for later runs" in err[0] and "SEGSWEEP_CACHE_DIR" in err[0]
