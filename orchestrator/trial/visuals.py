"""What a trial shows of its validation images at the end: the first few with their masks (for W&B) and the best
and worst by per-image mIoU as image | truth | prediction panels (seed 001's)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from models.metrics import metrics_from_confusion
from orchestrator.data.cache import PreparedData, load_split, split_names
from orchestrator.rundir import TrialDir
from orchestrator.trial.config import TrialConfig
from orchestrator.trial.data import CachedData
from orchestrator.trial.module import SegmentationModule, predict


def save_visuals(module: SegmentationModule, datamodule: CachedData, cfg: TrialConfig, data: PreparedData,
                 epoch: int, trial_dir: TrialDir) -> None:
    """The first ``log_images`` validation images with their masks (``examples.npz``, for W&B), and the
    ``best_worst`` best and worst validation images by per-image mIoU as panels."""
    count = max(cfg.trainer.log_images, 1 if cfg.trainer.best_worst else 0)
    if count == 0:
        return
    # the decode-once cache, which the driver writes whatever data.cache says (the trial may read the files instead)
    images, labels = load_split(data.val.path)
    n = len(labels) if cfg.trainer.best_worst else min(count, len(labels))
    preds = predict_images(module, datamodule, images, labels, n, cfg.trainer.batch_size)
    k = cfg.trainer.log_images
    if k:
        np.savez_compressed(trial_dir.examples, images=np.array(images[:k]), truths=np.array(labels[:k]),
                            preds=preds[:k], classes=np.array(data.classes), ignore_index=data.ignore_index, epoch=epoch)
    if cfg.trainer.best_worst:
        scores = rank_images(np.asarray(labels[:n]), preds, data.classes, data.ignore_index)
        save_panels(trial_dir.best_worst, scores, cfg.trainer.best_worst, images, labels, preds,
                    split_names(data.val.path), data.palette, data.ignore_index)


def predict_images(module: SegmentationModule, datamodule: CachedData, images, labels, n: int,
                   batch_size: int) -> np.ndarray:
    """Predicted class ids (uint8, NxHxW) of the first ``n`` cached images, in eval mode (the mode is restored)."""
    preds = []
    was_training = module.training
    module.eval()
    with torch.no_grad():
        for start in range(0, n, batch_size):
            chunk = slice(start, min(n, start + batch_size))
            x, _ = datamodule.prepare(
                (torch.from_numpy(np.array(images[chunk])), torch.from_numpy(np.array(labels[chunk]))), augment=False)
            preds.append(predict(module(x.to(module.device)), module.binary).cpu().numpy().astype(np.uint8))
    module.train(was_training)
    return np.concatenate(preds)


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
