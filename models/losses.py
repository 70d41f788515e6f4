"""Loss registry for binary (logits Nx1xHxW) and multiclass (logits NxCxHxW) segmentation; targets NxHxW long.

The ignore index is honoured by every loss. smp's losses are used where they are right; BCE is our own because
smp's ``SoftBCEWithLogitsLoss`` averages over ignored pixels too, and smp has no weighted cross-entropy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from segmentation_models_pytorch import losses as smp_losses
from torch import nn

from models import catalog
from models.catalog import loss_parts
from models.errors import ModelError


def enet_weights(pixel_counts: Sequence[int] | np.ndarray, c: float = 1.02) -> np.ndarray:
    """ENet class weights ``w = 1 / ln(c + p)`` with ``p`` the pooled pixel share of each class (ignore excluded)."""
    counts = np.asarray(pixel_counts, dtype=np.float64)
    if counts.sum() <= 0:
        raise ValueError("no labelled pixels to compute class weights from")
    return 1.0 / np.log(c + counts / counts.sum())


def mfb_weights(pixel_counts: Sequence[int] | np.ndarray, image_pixels: Sequence[int] | np.ndarray) -> np.ndarray:
    """Median-frequency balancing (SegNet): ``freq_c = pixels_c / pixels of images containing c``, ``w = median / freq``.

    A class that never occurs gets weight 0 (it has no frequency to balance).
    """
    counts = np.asarray(pixel_counts, dtype=np.float64)
    totals = np.asarray(image_pixels, dtype=np.float64)
    freq = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    present = freq > 0
    if not present.any():
        raise ValueError("no labelled pixels to compute class weights from")
    median = np.median(freq[present])
    return np.divide(median, freq, out=np.zeros_like(freq), where=present)


class MaskedBCE(nn.Module):
    """Binary cross-entropy on logits averaged over non-ignored pixels, optionally weighted per class.

    With class weights ``w`` the mean is ``sum(w_t * bce) / sum(w_t)``: the same normalisation as
    ``nn.CrossEntropyLoss(weight=w)``, so binary and multiclass weighted CE agree.
    """

    def __init__(self, ignore_index: int = 255, class_weights: torch.Tensor | None = None) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.register_buffer("class_weights", class_weights, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits[:, 0]
        valid = target != self.ignore_index
        target01 = torch.where(valid, target, 0)
        bce = F.binary_cross_entropy_with_logits(logits, target01.to(logits.dtype), reduction="none")
        weight = valid.to(logits.dtype)
        if self.class_weights is not None:
            weight = weight * self.class_weights.to(logits.dtype)[target01]
        return (bce * weight).sum() / weight.sum().clamp_min(1e-12)


class WeightedSum(nn.Module):
    """``w_a * loss_a + w_b * loss_b``."""

    def __init__(self, losses: Sequence[nn.Module], weights: Sequence[float]) -> None:
        super().__init__()
        self.losses = nn.ModuleList(losses)
        self.weights = tuple(float(w) for w in weights)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(w * loss(logits, target) for w, loss in zip(self.weights, self.losses, strict=True))


@dataclass(frozen=True)
class LossContext:
    """What every loss builder may use."""

    task: str  # "binary" | "multiclass"
    ignore_index: int
    alpha: float = 0.5
    beta: float = 0.5
    gamma: float | None = None
    smooth: float = 0.0
    class_weights: torch.Tensor | None = None

    @property
    def smp_mode(self) -> str:
        return "binary" if self.task == "binary" else "multiclass"


def _ce(ctx: LossContext, weights: torch.Tensor | None = None) -> nn.Module:
    if ctx.task == "binary":
        return MaskedBCE(ctx.ignore_index, weights)
    return nn.CrossEntropyLoss(weight=weights, ignore_index=ctx.ignore_index)


def _weighted_ce(ctx: LossContext) -> nn.Module:
    if ctx.class_weights is None:
        raise ModelError("weighted_ce_enet needs the training split's class weights; none were computed")
    return _ce(ctx, ctx.class_weights)


def _dice(ctx: LossContext) -> nn.Module:
    return smp_losses.DiceLoss(ctx.smp_mode, from_logits=True, smooth=ctx.smooth, ignore_index=ctx.ignore_index)


# each name of the catalog (``models.catalog.LOSSES``: descriptions, graph safety) and its builder;
# tests/models/test_catalog.py holds the two together
BUILDERS: dict[str, Callable[[LossContext], nn.Module]] = {
    "ce": _ce,
    "weighted_ce_enet": _weighted_ce,
    "dice": _dice,
    "bce_dice": lambda ctx: WeightedSum([_ce(ctx), _dice(ctx)], (1.0, 1.0)),
    "focal": lambda ctx: smp_losses.FocalLoss(
        ctx.smp_mode, gamma=2.0 if ctx.gamma is None else ctx.gamma, ignore_index=ctx.ignore_index
    ),
    "tversky": lambda ctx: smp_losses.TverskyLoss(
        ctx.smp_mode,
        from_logits=True,
        smooth=ctx.smooth,
        ignore_index=ctx.ignore_index,
        alpha=ctx.alpha,
        beta=ctx.beta,
        gamma=1.0 if ctx.gamma is None else ctx.gamma,
    ),
    "lovasz": lambda ctx: smp_losses.LovaszLoss(ctx.smp_mode, ignore_index=ctx.ignore_index),
}
def loss_graph_safe(name: str) -> bool:
    """Whether every part of ``name`` can run inside a captured CUDA graph (checked on an H100 for each loss)."""
    return all(catalog.LOSSES[p].graph_safe for p in loss_parts(name))


def loss_needs_class_weights(name: str) -> bool:
    return "weighted_ce_enet" in loss_parts(name)


def create_loss(
    name: str,
    task: str,
    ignore_index: int = 255,
    weights: Sequence[float] = (1.0, 1.0),
    class_weights: torch.Tensor | Sequence[float] | None = None,
    **params: float | None,
) -> nn.Module:
    """Build ``name`` (or ``a+b``, summed with ``weights``) for ``task``; ``params``: alpha, beta, gamma, smooth."""
    parts = loss_parts(name)
    cw = torch.as_tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
    ctx = LossContext(task=task, ignore_index=ignore_index, class_weights=cw, **params)
    built = [BUILDERS[p](ctx) for p in parts]
    return built[0] if len(built) == 1 else WeightedSum(built, weights)
