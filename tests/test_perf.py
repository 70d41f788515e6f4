"""Issue 5's levers and GPU packing: every lever on by default and switchable off (the opt-in depthwise one off and
switchable on), the admission arithmetic by hand,
the device-resident and file-decoding data paths against the cache, admission through a real Ray cluster with a
logical GPU, and ``orchestrate bench-train`` on CPU."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from models.losses import loss_graph_safe
from orchestrator.perf import TrialResources, gpu_share, gpus_per_trial, memory_key, resolve_levers
from orchestrator.spec import DataSpec, ResourcesSpec, TrainerSpec, build_sweep

GiB = 2**30
ROOT = Path(__file__).resolve().parents[1]


def test_every_lever_is_on_by_default_on_a_gpu():
    levers = resolve_levers(TrainerSpec(), on_gpu=True, bf16_supported=True)
    assert (levers.precision, levers.channels_last, levers.fused_optimizer, levers.cuda_graphs,
            levers.device_augment) == ("bf16-mixed", True, True, True, True)
    data, resources = DataSpec(dataset="synthetic", root="/tmp/x", size=[32, 32]), ResourcesSpec()
    assert data.cache and data.device_cache == "auto" and data.on_device(GiB)
    assert resources.gpus_per_trial == "auto" and resources.memory_aware and resources.reuse_actors


@pytest.mark.parametrize("setting, field", [
    ({"precision": "32"}, "precision"), ({"channels_last": False}, "channels_last"),
    ({"fused_optimizer": False}, "fused_optimizer"), ({"cuda_graphs": False}, "cuda_graphs"),
    ({"device_augment": False}, "device_augment"),
])
def test_each_trainer_lever_can_be_turned_off(setting, field):
    on = resolve_levers(TrainerSpec(), on_gpu=True)
    off = resolve_levers(TrainerSpec(**setting), on_gpu=True)
    assert getattr(off, field) in (False, "32") and getattr(on, field) not in (False, "32")
    others = [f for f in ("channels_last", "fused_optimizer", "device_augment") if f != field]
    assert all(getattr(off, f) for f in others)  # turning one off leaves the rest alone


def test_data_and_resource_levers_can_be_turned_off():
    spec = DataSpec(dataset="synthetic", root="/tmp/x", size=[32, 32], cache=False)
    assert not spec.on_device(1)  # no cache, nothing to keep on the device
    assert not DataSpec(dataset="synthetic", root="/tmp/x", size=[32, 32], device_cache=False).on_device(1)
    auto = DataSpec(dataset="synthetic", root="/tmp/x", size=[32, 32], device_cache_max_gb=1)
    assert auto.on_device(GiB) and not auto.on_device(GiB + 1)
    off = ResourcesSpec(memory_aware=False, reuse_actors=False, gpus_per_trial=0.25)
    assert TrialResources(1, 0.25, off.memory_aware, "/nonexistent", trial_gpu_memory_gb=70,
                          gpu_memory_gb=80).share({}) == 0.25


def test_native_depthwise_is_opt_in_and_only_on_a_gpu():
    """Off by default (on an H100 it starts a process's first step in 1 s instead of 10 s but trains at 0.66x), on
    when asked for and nothing else changed, and never on a CPU, where there is no cuDNN compilation to skip."""
    default = resolve_levers(TrainerSpec(), on_gpu=True)
    on = resolve_levers(TrainerSpec(native_depthwise=True), on_gpu=True)
    assert not default.native_depthwise and default.as_metrics()["perf/native_depthwise"] == 0.0
    assert on == dataclasses.replace(default, native_depthwise=True) and on.as_metrics()["perf/native_depthwise"] == 1
    assert not resolve_levers(TrainerSpec(native_depthwise=True), on_gpu=False).native_depthwise
    assert memory_key({"trainer.native_depthwise": True}) != memory_key({"trainer.native_depthwise": False})


def test_levers_on_a_cpu_and_where_they_cannot_apply():
    cpu = resolve_levers(TrainerSpec(), on_gpu=False)
    assert (cpu.precision, cpu.channels_last, cpu.fused_optimizer, cpu.cuda_graphs, cpu.native_depthwise) == (
        "32", False, False, False, False)
    assert resolve_levers(TrainerSpec(precision="16-mixed"), on_gpu=False).precision == "32"
    assert not resolve_levers(TrainerSpec(precision="16-mixed"), on_gpu=True).cuda_graphs  # GradScaler reads the host
    assert resolve_levers(TrainerSpec(), on_gpu=True, bf16_supported=False).precision == "32"
    # losses that select pixels by boolean indexing failed capture on an H100: they stay eager
    assert not loss_graph_safe("focal") and not loss_graph_safe("ce+lovasz")
    assert loss_graph_safe("bce_dice") and loss_graph_safe("tversky")
    assert not resolve_levers(TrainerSpec(), on_gpu=True, graph_safe_loss=False).cuda_graphs


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
    from orchestrator.data import prepare_data
    from orchestrator.errors import SegsweepError

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
    import orchestrator.perf as perf
    from orchestrator.data import prepare_data
    from orchestrator.errors import SegsweepError

    if torch.cuda.is_available():
        pytest.skip("the probe would measure on the real GPU here")
    monkeypatch.setenv("SEGSWEEP_CACHE_DIR", str(tmp_path / "machine"))
    monkeypatch.setattr(perf, "gpu_identity", lambda: "NVIDIA H100 80GB HBM3, 81559 MiB, 580.159.04")
    data = prepare_data(DataSpec(dataset="synthetic", root=str(synthetic_root), size=[32, 64], resize="resize",
                                 synthetic={"train": 8, "val": 4, "height": 40, "width": 72, "seed": 1}),
                        tmp_path / "cache")
    config = build_sweep({"name": "p", "data": {"dataset": "synthetic", "root": str(tmp_path / "d"), "size": [32, 32]},
                          "model": {"arch": "unet", "encoder": "resnet18"}, "loss": {"name": "ce"}}).fixed_config()
    first = TrialResources(1, 0.25, True, str(tmp_path / "run1"), data=data)
    (tmp_path / "run1").mkdir()
    measured = {"peak_bytes": 30 * GiB, "gpu_bytes": 80 * GiB, "graphs": 2, "device": "NVIDIA H100 80GB HBM3"}
    perf._write_json(perf.machine_memory_file(), {first.machine_key(memory_key(config)): measured})
    (tmp_path / "run2").mkdir()
    later = TrialResources(1, 0.25, True, str(tmp_path / "run2"), data=data)
    assert later.estimate(config) == (30 * GiB, 80 * GiB) and later.share(config) == 0.5
    assert json.loads((tmp_path / "run2" / "gpu_memory.json").read_text()) == {memory_key(config): measured}
    monkeypatch.setattr(perf, "gpu_identity", lambda: "NVIDIA H200, 143771 MiB, 580.159.04")
    (tmp_path / "run3").mkdir()
    with pytest.raises(SegsweepError, match="GPU memory probe failed"):
        TrialResources(1, 0.25, True, str(tmp_path / "run3"), data=data).estimate(config)


def test_device_resident_batches_match_the_cache(synthetic_root, tmp_path):
    """The device-resident path (here on the CPU device) yields the cached pixels, each training image once per
    epoch, in a permutation drawn from the trial's seed."""
    import lightning.pytorch as L

    from orchestrator.data import prepare_data
    from orchestrator.lit import CachedData

    spec = DataSpec(dataset="synthetic", root=str(synthetic_root), size=[32, 64], resize="resize",
                    synthetic={"train": 8, "val": 4, "height": 40, "width": 72, "seed": 1})
    data = prepare_data(spec, tmp_path / "cache")
    dm = CachedData(data.train.path, data.val.path, batch_size=3, resident=True)
    dm.trainer = L.Trainer(accelerator="cpu", logger=False)
    dm.setup()
    seen = []
    for number in dm.train_dataloader():
        images, labels = dm.gather(number)
        assert images.dtype == torch.uint8 and images.shape[1:] == (32, 64, 3)
        seen += [int(np.flatnonzero((dm.train_set.labels.reshape(8, -1) == labels[i].reshape(1, -1).numpy())
                                    .all(1))[0]) for i in range(len(labels))]
    assert sorted(seen) == list(range(8))  # a permutation: every image once
    val = [dm.gather(number) for number in dm.val_dataloader()]
    assert torch.equal(torch.cat([v[0] for v in val]), torch.from_numpy(np.array(dm.val_set.images)))


def test_file_decoding_matches_the_decode_once_cache(synthetic_root, tmp_path):
    from orchestrator.data import prepare_data
    from orchestrator.data.files import FilePairs
    from orchestrator.data.prepare import adapter_for, resolve_pairs

    spec = DataSpec(dataset="synthetic", root=str(synthetic_root), size=[32, 64], resize="resize",
                    synthetic={"train": 8, "val": 4, "height": 40, "width": 72, "seed": 1})
    data = prepare_data(spec, tmp_path / "cache")
    train, _ = resolve_pairs(spec)
    files = FilePairs(train, adapter_for(spec), (32, 64), "resize", "multiclass")
    cached = np.load(Path(data.train.path) / "images.npy"), np.load(Path(data.train.path) / "labels.npy")
    for i in (0, 5):
        image, label = files[i]
        assert np.array_equal(image.numpy(), cached[0][i]) and np.array_equal(label.numpy(), cached[1][i])


def test_host_augmentation_switch_moves_the_work_before_transfer(synthetic_root, tmp_path):
    from orchestrator.data import prepare_data
    from orchestrator.lit import CPU_LEVERS, CachedData

    spec = DataSpec(dataset="synthetic", root=str(synthetic_root), size=[32, 64], resize="resize",
                    synthetic={"train": 8, "val": 4, "height": 40, "width": 72, "seed": 1})
    data = prepare_data(spec, tmp_path / "cache")
    batch = (torch.zeros(2, 32, 64, 3, dtype=torch.uint8), torch.zeros(2, 32, 64, dtype=torch.uint8))
    host = CachedData(data.train.path, data.val.path, 2, levers=CPU_LEVERS.__class__(
        **{**CPU_LEVERS.__dict__, "device_augment": False}))
    x, y = host.on_before_batch_transfer(batch, 0)
    assert x.dtype == torch.float32 and x.shape == (2, 3, 32, 64) and host.on_after_batch_transfer((x, y), 0)[0] is x
    device = CachedData(data.train.path, data.val.path, 2)
    assert device.on_before_batch_transfer(batch, 0) is batch
    assert device.on_after_batch_transfer(batch, 0)[0].shape == (2, 3, 32, 64)


def test_a_trial_that_would_not_fit_beside_others_runs_alone(synthetic_root, tmp_path):
    """A real local Ray cluster with one logical GPU: gpus_per_trial 0.25 asked, 30 of 40 GiB per trial stated, so
    each trial is admitted with the whole GPU: never two at once (the trials themselves train on the CPU here)."""
    from tests.conftest import tiny_spec

    spec = tiny_spec(synthetic_root, resources={"cpus_per_trial": 1, "gpus_per_trial": 0.25,
                                                "trial_gpu_memory_gb": 30, "gpu_memory_gb": 40})
    spec["trainer"] = {"max_epochs": 1, "batch_size": 4, "log_images": 0, "best_worst": 0}
    spec["tracking"] = {"wandb": {"mode": "disabled"}}
    spec["optimizer"] = {"name": "adam", "lr": {"choice": [0.003, 0.001]}}
    script = textwrap.dedent(f"""
        import json, ray
        from orchestrator.runner import run_sweep
        from orchestrator.spec import build_sweep
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


def test_bench_train_on_cpu(ray_session, tmp_path):
    """``orchestrate bench-train`` with tiny settings: every part runs and the figures are consistent."""
    from orchestrator.throughput import BenchSettings, run_bench

    s = BenchSettings(size=(32, 64), batch=4, images=12, epochs=2, workers=0, trials=2, sweep_epochs=1,
                      quality_epochs=1, parts=("seeds", "trial", "sweep"))
    result = run_bench(s, tmp_path)
    assert result["seeds"]["images_per_s"] > 0 and result["trial"]["images_per_s"] > 0
    seeds = result["seeds"]["images_per_s"]
    assert result["trial"]["x_seeds"] == pytest.approx(result["trial"]["images_per_s"] / seeds)
    sweep = result["sweep"]
    assert sweep["trials"] == sweep["completed"] == 2 and sweep["images"] == 2 * 12
    assert sweep["images_per_s"] == pytest.approx(sweep["images"] / sweep["fit_s"], rel=0.01)
    assert sweep["startup_s"]["min"] > 0
    assert result["cache"]["ratio"] == pytest.approx(1.0, abs=0.01)
    saved = json.loads((tmp_path / "bench_train.json").read_text())
    assert saved["trial"]["levers"]["device_augment"] is True
    table = (tmp_path / "bench_train.md").read_text()
    assert "| seeds: PIL in DataLoader workers" in table and "sweep of 2 trials" in table


def test_bench_train_table_names_levers_off_and_opt_in_levers_on():
    from orchestrator.throughput import LEVER_SWITCHES, OPT_IN, markdown

    result = {"settings": {"arch": "unet", "encoder": "mobilenet_v2", "size": [224, 320], "batch": 16, "images": 1024},
              "machine": {"gpus": ["H100"], "torch": "2.11", "cpus": 16},
              "seeds": {"images_per_s": 500.0, "workers": 8},
              "trial": {"images_per_s": 1000.0, "levers": {"precision": "bf16-mixed", "native_depthwise": False},
                        "cuda_graphs": True},
              "levers_off": {"trainer.cuda_graphs": {"images_per_s": 400.0}},
              "levers_on": {"trainer.native_depthwise": {"images_per_s": 660.0}}}
    lines = markdown(result).splitlines()
    assert "| segsweep: one trial | 1,000 | 2.00 | levers: precision; graphs on |" in lines
    assert "| segsweep: one trial, trainer.cuda_graphs off | 400 | 0.80 | 0.40x of all on |" in lines
    assert "| segsweep: one trial, trainer.native_depthwise on (opt-in) | 660 | 1.32 | 0.66x of the defaults |" in lines
    assert set(OPT_IN).isdisjoint(LEVER_SWITCHES)


def test_a_probe_that_cannot_run_stops_the_sweep_before_tune_with_one_line(synthetic_root, tmp_path):
    """No CUDA here: with a logical GPU and no stated memory, the probe fails before any trial, in one line, and
    leaves no run directory behind."""
    from tests.conftest import tiny_spec

    spec = tiny_spec(synthetic_root, resources={"cpus_per_trial": 1, "gpus_per_trial": 0.25})
    spec["tracking"] = {"wandb": {"mode": "disabled"}}
    run_dir = tmp_path / "run"
    script = textwrap.dedent(f"""
        import json, ray
        from orchestrator.errors import SegsweepError
        from orchestrator.runner import run_sweep
        from orchestrator.spec import build_sweep
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


def test_preloaded_workers_are_on_by_default_and_can_be_turned_off(synthetic_root, tmp_path):
    """``resources.preload_workers``: a sweep's own Ray (started by ``run_sweep``) runs the preload hook in every
    worker, and the trials report that they got a preloaded worker; off, the runtime environment has no hook."""
    from orchestrator.runner import ray_runtime_env
    from tests.conftest import tiny_spec

    spec = tiny_spec(synthetic_root)
    spec["trainer"] = {"max_epochs": 1, "batch_size": 4, "log_images": 0, "best_worst": 0}
    spec["tracking"] = {"wandb": {"mode": "disabled"}}
    spec["optimizer"] = {"name": "adam", "lr": {"choice": [0.003, 0.001]}}
    assert ray_runtime_env(build_sweep(spec).spec)["worker_process_setup_hook"] == "orchestrator.preload.warm"
    off = {**spec, "resources": {**spec["resources"], "preload_workers": False}}
    assert "worker_process_setup_hook" not in ray_runtime_env(build_sweep(off).spec)
    script = textwrap.dedent(f"""
        import json
        from orchestrator.runner import run_sweep
        from orchestrator.spec import build_sweep
        from orchestrator.store import Store
        result = run_sweep(build_sweep(json.loads({json.dumps(json.dumps(spec))})), {str(tmp_path / "run")!r})
        trials = Store.of_run(result.run_dir).trials(history=True)
        print("PRELOADED", json.dumps([t.history[0]["perf/preloaded"] for t in trials]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=400,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.split("PRELOADED", 1)[1]) == [1.0, 1.0]


def test_cuda_devices_map_to_nvml_indices(monkeypatch):
    """NVML and nvidia-smi number every GPU of the machine; CUDA numbers the visible ones."""
    from orchestrator.perf import _nvml_index

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert _nvml_index() == 0 and _nvml_index(1) == 1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert _nvml_index() == 2 and _nvml_index(1) == 3


def test_an_unwritable_machine_cache_costs_one_line_not_the_run(synthetic_root, tmp_path, monkeypatch, capsys):
    import orchestrator.perf as perf

    monkeypatch.setenv("SEGSWEEP_CACHE_DIR", str(tmp_path / "file-not-folder" / "x"))
    (tmp_path / "file-not-folder").write_text("")  # a file where the folder should be: mkdir fails
    monkeypatch.setattr(perf, "gpu_identity", lambda: "NVIDIA H100 80GB HBM3, 81559 MiB, 580.159.04")
    monkeypatch.setattr(perf, "probe_memory", lambda config, groups, data: {"peak_bytes": GiB, "gpu_bytes": 80 * GiB})
    planner = TrialResources(1, 0.25, True, str(tmp_path), data=None)
    assert planner.estimate({"model.arch": "unet"}) == (GiB, 80 * GiB)
    assert json.loads((tmp_path / "gpu_memory.json").read_text())  # the run's own copy is kept
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not kept for later runs" in err[0] and "SEGSWEEP_CACHE_DIR" in err[0]
