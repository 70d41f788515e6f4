"""LR schedules (torch's own, stepped per optimizer step) against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from models.catalog import SCHEDULES
from models.errors import UnknownNameError
from models.optim import create_optimizer, create_schedule

DEFAULTS = dict(pct_start=0.3, div_factor=25.0, final_div_factor=1e4, min_lr_factor=0.0, power=0.9, step_epochs=2,
                step_gamma=0.1, restart_epochs=2, restart_mult=1)


def lrs(name: str, epochs: int = 4, per_epoch: int = 5, lr: float = 0.1, **extra) -> list[float]:
    opt = create_optimizer("sgd", [torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = create_schedule(name, opt, per_epoch, epochs, lr, **{**DEFAULTS, **extra})
    out = []
    for _ in range(epochs * per_epoch):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_schedules_by_hand():
    assert lrs("constant") == [0.1] * 20
    cos = lrs("cosine")
    assert cos[0] == pytest.approx(0.1) and cos[10] == pytest.approx(0.05)
    assert lrs("poly")[10] == pytest.approx(0.1 * (1 - 10 / 20) ** 0.9)
    step = lrs("step")
    assert step[9] == pytest.approx(0.1) and step[10] == pytest.approx(0.01)
    sgdr = lrs("cosine_warm_restarts")
    assert sgdr[5] == pytest.approx(0.05) and sgdr[10] == pytest.approx(0.1)
    one = lrs("onecycle", lr=3e-4)
    assert one[0] == pytest.approx(3e-4 / 25) and max(one) == pytest.approx(3e-4, rel=1e-3)
    assert one.index(max(one)) == round(0.3 * 20) - 1


def test_linear_warmup_then_schedule():
    warm = lrs("cosine", warmup_epochs=1, warmup_start_factor=0.1)
    assert warm[0] == pytest.approx(0.01) and warm[5] == pytest.approx(0.1)
    assert warm[5 + 15 // 2] < 0.1 and warm[5] > warm[-1]
    assert warm[12] == pytest.approx(0.05 * (1 + math.cos(math.pi * 7 / 15)))


def test_registry_names():
    assert set(SCHEDULES) == {"constant", "cosine", "poly", "step", "cosine_warm_restarts", "onecycle"}
    with pytest.raises(UnknownNameError, match="did you mean 'cosine'"):
        create_schedule("cosin", create_optimizer("adam", [torch.nn.Parameter(torch.zeros(1))], lr=1), 1, 1, 1.0)
