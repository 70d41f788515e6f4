"""The worker's kernel warm-up thread: one training pass per architecture of the study, then validation's forward
at its balanced batch, reported to the worker's timeline (GPU); nothing at all without CUDA."""

from __future__ import annotations

import pytest
import torch

from orchestrator.driver.pool import warm_configs
from orchestrator.pool.warm import KernelWarmUp, start_warm_up
from orchestrator.spec import build_sweep
from tests.conftest import tiny_spec


def study(synthetic_root):
    spec = tiny_spec(synthetic_root)
    spec["model"] = {"arch": {"choice": ["unet", "fpn"]}, "encoder": "mobilenet_v2", "encoder_weights": None}
    return build_sweep(spec)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_there_is_no_warm_up(synthetic_root):
    assert start_warm_up(warm_configs(study(synthetic_root))) is None


@pytest.mark.gpu
def test_each_architecture_is_run_for_training_then_for_validation(synthetic_root):
    configs = warm_configs(study(synthetic_root))
    warm = KernelWarmUp(configs)
    marks: list[tuple[str, dict]] = []
    warm.report_to(lambda event, **details: marks.append((event, details)))
    warm.validation(10)
    assert warm.done.wait(300)
    assert [(d["arch"], d["part"]) for _, d in marks] == [("unet", "train"), ("fpn", "train"),
                                                          ("unet", "validation"), ("fpn", "validation")]
    assert all(event == "warm-up" and d["seconds"] >= 0 for event, d in marks)
