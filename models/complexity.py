"""Parameters, weight size and GMACs of a model at an input size, with the counter named.

GMACs come from ``torch.utils.flop_counter.FlopCounterMode``, which counts FLOPs of convolutions and matrix
products (2 FLOPs per multiply-add) during one forward pass; interpolation, pooling and element-wise operations are
not counted (as in fvcore, ptflops and MMSeg's get_flops). Latency is never inferred from it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from models.catalog import COUNTER


@dataclass(frozen=True)
class Complexity:
    params: int
    size_mb: float
    gmacs: float
    counter: str = COUNTER

    def to_json(self) -> dict:
        return asdict(self)


def model_size(model: nn.Module) -> tuple[int, float]:
    """(parameter count, weight size in MB of the state_dict: parameters + buffers)."""
    params = sum(p.numel() for p in model.parameters())
    nbytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return params, nbytes / 1e6


def complexity(model: nn.Module, size: tuple[int, int], in_channels: int = 3) -> Complexity:
    """Count at batch 1 and ``size`` = (height, width), in eval mode, on the model's device; the mode is restored."""
    params, size_mb = model_size(model)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, in_channels, *size, device=device))
    model.train(was_training)
    return Complexity(params=params, size_mb=size_mb, gmacs=counter.get_total_flops() / 2 / 1e9)
