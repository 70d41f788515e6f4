"""Segmentation metrics from a confusion matrix accumulated over the whole split (not a mean of batch scores)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


class ConfusionMatrix:
    """Rows = true class, columns = predicted class; ignored pixels are dropped.

    Accumulates on the tensors' device with ``scatter_add_``: no host synchronisation per batch.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, device: torch.device | str = "cpu") -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index
        # one extra bin collects ignored pixels so that no boolean indexing (a host sync) is needed
        self._counts = torch.zeros(num_classes * num_classes + 1, dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        c = self.num_classes
        pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
        valid = (target != self.ignore_index) & (target >= 0) & (target < c)
        index = torch.where(valid, target * c + pred, c * c)
        self._counts.scatter_add_(0, index, torch.ones_like(index))

    def compute(self) -> np.ndarray:
        c = self.num_classes
        return self._counts[: c * c].view(c, c).cpu().numpy()


def _ratio(num: np.ndarray, den: np.ndarray, defined: np.ndarray) -> np.ndarray:
    """``num / den`` for the classes that are ``defined`` (NaN for the others); a zero denominator of a defined class
    gives 0, as torchmetrics and scikit-learn (``zero_division=0``) count it."""
    out = np.divide(num, den, out=np.zeros(num.shape), where=den > 0)
    return np.where(defined, out, np.nan)


def metrics_from_confusion(cm: np.ndarray, class_names: Sequence[str], positive: int | None = None) -> dict[str, float]:
    """mIoU, per-class IoU, Dice, pixel accuracy, precision, recall and specificity.

    A class is counted when it is in the labels or predicted. Such a class that is in the labels but never predicted
    has precision 0; one predicted but absent has recall 0 (and IoU, Dice 0), as torchmetrics and scikit-learn count
    them. A class neither in the labels nor predicted has every value NaN and leaves every mean.
    Multiclass (``positive=None``): Dice, precision, recall and specificity are macro means over the counted classes.
    Binary (``positive`` = index of the foreground class): those four are the foreground's, as a road-segmentation
    user reads them.
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    tn = cm.sum() - tp - fp - fn
    defined = tp + fp + fn > 0
    iou = _ratio(tp, tp + fp + fn, defined)
    per_class = {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, defined),
        "precision": _ratio(tp, tp + fp, defined),
        "recall": _ratio(tp, tp + fn, defined),
        "specificity": _ratio(tn, tn + fp, defined),
    }
    out = {"miou": _nanmean(iou), "pixel_acc": float(tp.sum() / cm.sum()) if cm.sum() else float("nan")}
    out |= {f"iou/{name}": float(v) for name, v in zip(class_names, iou, strict=True)}
    for key, values in per_class.items():
        out[key] = float(values[positive]) if positive is not None else _nanmean(values)
    return out


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")
