"""The speed levers: every lever on by default on a GPU and switchable off (the opt-in depthwise one off and
switchable on), and what stays on a CPU or where a lever cannot apply."""

from __future__ import annotations

import dataclasses

import pytest

from models.losses import loss_graph_safe
from orchestrator.spec.schema import DataSpec, ResourcesSpec, TrainerSpec
from orchestrator.trial.levers import resolve_levers

GiB = 2**30


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
    off = ResourcesSpec(memory_aware=False, reuse_actors=False, preload_workers=False, gpus_per_trial=0.25)
    assert not (off.memory_aware or off.reuse_actors or off.preload_workers)


def test_native_depthwise_is_opt_in_and_only_on_a_gpu():
    """Off by default (on an H100 it starts a process's first step in 1 s instead of 10 s but trains at 0.66x), on
    when asked for and nothing else changed, and never on a CPU, where there is no cuDNN compilation to skip."""
    default = resolve_levers(TrainerSpec(), on_gpu=True)
    on = resolve_levers(TrainerSpec(native_depthwise=True), on_gpu=True)
    assert not default.native_depthwise and default.as_metrics()["perf/native_depthwise"] == 0.0
    assert on == dataclasses.replace(default, native_depthwise=True) and on.as_metrics()["perf/native_depthwise"] == 1
    assert not resolve_levers(TrainerSpec(native_depthwise=True), on_gpu=False).native_depthwise


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
