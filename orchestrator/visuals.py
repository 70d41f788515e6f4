"""Per-image ranking and image | truth | prediction panels (seed 001's best and worst images)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from models.metrics import metrics_from_confusion


def image_miou(truth: np.ndarray, pred: np.ndarray, classes: Sequence[str], ignore_index: int) -> float:
    """mIoU of one image over the classes present in its truth or prediction (ignored pixels left out)."""
    c = len(classes)
    valid = truth != ignore_index
    cm = np.bincount(truth[valid].astype(np.int64) * c + pred[valid], minlength=c * c).reshape(c, c)
    return metrics_from_confusion(cm, classes)["miou"]


def rank_images(truths: np.ndarray, preds: np.ndarray, classes: Sequence[str], ignore_index: int) -> np.ndarray:
    """Per-image mIoU for every image (NaN where an image has no labelled pixel)."""
    return np.array([image_miou(t, p, classes, ignore_index) for t, p in zip(truths, preds, strict=True)])


def colourise(mask: np.ndarray, palette: Sequence[Sequence[int]], ignore_index: int) -> np.ndarray:
    lut = np.zeros((256, 3), np.uint8)
    lut[: len(palette)] = np.asarray(palette, np.uint8)
    lut[ignore_index] = (0, 0, 0)
    return lut[mask]


def panel(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, palette, ignore_index: int) -> np.ndarray:
    gap = np.full((image.shape[0], 4, 3), 255, np.uint8)
    return np.concatenate([image, gap, colourise(truth, palette, ignore_index), gap,
                           colourise(pred, palette, ignore_index)], axis=1)


def save_panels(folder: Path, scores: np.ndarray, k: int, images, truths, preds, names: Sequence[str], palette,
                ignore_index: int) -> list[Path]:
    """Write ``best_<rank>_<name>.png`` and ``worst_<rank>_<name>.png`` for the k best and k worst images."""
    folder.mkdir(parents=True, exist_ok=True)
    order = [i for i in np.argsort(-np.nan_to_num(scores, nan=-1.0)) if not np.isnan(scores[i])]
    chosen = [("best", r, i) for r, i in enumerate(order[:k], 1)] + [("worst", r, i) for r, i in
                                                                       enumerate(order[::-1][:k], 1)]
    paths = []
    for kind, rank, i in chosen:
        path = folder / f"{kind}_{rank}_{Path(names[i]).stem}_miou{scores[i]:.3f}.png"
        Image.fromarray(panel(np.asarray(images[i]), np.asarray(truths[i]), preds[i], palette, ignore_index)).save(path)
        paths.append(path)
    return paths
