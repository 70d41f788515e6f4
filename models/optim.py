"""Optimizer and LR-schedule registries. Schedules are torch's own, stepped once per optimizer step."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim import lr_scheduler as sched

from models import catalog
from models.errors import UnknownNameError

# each name of the catalog (``models.catalog.OPTIMIZERS`` and ``SCHEDULES``: descriptions) and its builder;
# tests/models/test_catalog.py holds the two together
OPTIMIZER_BUILDERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": lambda params, lr, weight_decay, momentum, fast: torch.optim.Adam(
        params, lr=lr, weight_decay=weight_decay, **fast),
    "adamw": lambda params, lr, weight_decay, momentum, fast: torch.optim.AdamW(
        params, lr=lr, weight_decay=weight_decay, **fast),
    "sgd": lambda params, lr, weight_decay, momentum, fast: torch.optim.SGD(
        params, lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=momentum > 0,
        **{k: v for k, v in fast.items() if k != "capturable"}),
}


def create_optimizer(
    name: str, params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float = 0.0, momentum: float = 0.9,
    fused: bool = False, capturable: bool = False,
) -> torch.optim.Optimizer:
    """``fused``: one fused kernel per step (CUDA parameters only); ``capturable``: optimizer state on the device,
    so that the step can be captured in a CUDA graph (Adam/AdamW; SGD needs none)."""
    if name not in OPTIMIZER_BUILDERS:
        raise UnknownNameError("optimizer", name, catalog.OPTIMIZERS)
    params = list(params)
    on_cuda = any(p.is_cuda for p in params)
    fast = {"fused": True} if fused and on_cuda else {}
    if capturable and on_cuda:
        fast["capturable"] = True
    return OPTIMIZER_BUILDERS[name](params, lr, weight_decay, momentum, fast)


@dataclass(frozen=True)
class Steps:
    """Schedule lengths in optimizer steps."""

    per_epoch: int
    total: int
    warmup: int

    @property
    def main(self) -> int:
        return max(1, self.total - self.warmup)


SCHEDULE_BUILDERS: dict[str, Callable[..., sched.LRScheduler]] = {
    "constant": lambda opt, s, p: sched.LambdaLR(opt, lambda _: 1.0),
    "cosine": lambda opt, s, p: sched.CosineAnnealingLR(opt, T_max=s.main, eta_min=p["lr"] * p["min_lr_factor"]),
    "poly": lambda opt, s, p: sched.PolynomialLR(opt, total_iters=s.main, power=p["power"]),
    "step": lambda opt, s, p: sched.StepLR(opt, step_size=p["step_epochs"] * s.per_epoch, gamma=p["step_gamma"]),
    "cosine_warm_restarts": lambda opt, s, p: sched.CosineAnnealingWarmRestarts(
        opt, T_0=p["restart_epochs"] * s.per_epoch, T_mult=p["restart_mult"], eta_min=p["lr"] * p["min_lr_factor"]),
    "onecycle": lambda opt, s, p: sched.OneCycleLR(
        opt, max_lr=p["lr"], total_steps=s.main, pct_start=p["pct_start"], anneal_strategy="cos",
        div_factor=p["div_factor"], final_div_factor=p["final_div_factor"]),
}


def create_schedule(
    name: str,
    optimizer: torch.optim.Optimizer,
    steps_per_epoch: int,
    max_epochs: int,
    lr: float,
    warmup_epochs: float = 0.0,
    warmup_start_factor: float = 0.1,
    **params: Any,
) -> sched.LRScheduler:
    """Build schedule ``name``; with ``warmup_epochs`` > 0 a linear warm-up from ``lr * warmup_start_factor`` precedes it."""
    if name not in SCHEDULE_BUILDERS:
        raise UnknownNameError("schedule", name, catalog.SCHEDULES)
    total = steps_per_epoch * max_epochs
    warmup = min(total - 1, math.ceil(warmup_epochs * steps_per_epoch)) if warmup_epochs > 0 else 0
    steps = Steps(per_epoch=steps_per_epoch, total=total, warmup=max(0, warmup))
    main = SCHEDULE_BUILDERS[name](optimizer, steps, {"lr": lr, **params})
    if steps.warmup == 0:
        return main
    warm = sched.LinearLR(optimizer, start_factor=warmup_start_factor, end_factor=1.0, total_iters=steps.warmup)
    return sched.SequentialLR(optimizer, [warm, main], milestones=[steps.warmup])
