"""``orchestrate data stats`` and ``data check``: class statistics and a file-by-file scan of a dataset as stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from models.losses import enet_weights, mfb_weights
from orchestrator.data.adapters import Adapter, DataError, Pair, load_pair, to_binary
from orchestrator.data.cache import class_pixel_stats

SPLITS = ("train", "val", "test")


def split_stats(adapter: Adapter, pairs: list[Pair], task: str = "multiclass", c: float = 1.02,
                dataset: str | None = None, split: str = "train") -> dict[str, Any]:
    """Pixel counts per class over every label of the split at native size, with ENet (``c``) and MFB weights.

    Frequencies are over non-ignored pixels. Returns the ``data stats --format json`` object.
    """
    classes = adapter.task_classes(task)
    ignored = 0

    def labels():
        nonlocal ignored
        for pair in pairs:
            label = adapter.read_label(pair.label)
            if task == "binary":
                label = to_binary(label, adapter.binary_foreground, adapter.ignore_index)
            ignored += int((label == adapter.ignore_index).sum())
            yield label

    counts, image_pixels = class_pixel_stats(labels(), len(classes), adapter.ignore_index)
    total = counts.sum()
    enet = enet_weights(counts, c) if total else np.zeros(len(classes))
    mfb = mfb_weights(counts, image_pixels) if total else np.zeros(len(classes))
    return {
        "dataset": dataset or adapter.name, "split": split, "images": len(pairs), "ignored_pixels": ignored,
        "classes": [{"id": i, "name": name, "pixels": int(counts[i]),
                     "frequency": float(counts[i] / total) if total else 0.0,
                     "enet_weight": float(enet[i]), "mfb_weight": float(mfb[i])} for i, name in enumerate(classes)],
    }


def stats_table(stats: dict[str, Any]) -> str:
    lines = [f"{stats['dataset']} {stats['split']}: {stats['images']} images, {stats['ignored_pixels']} ignored pixels",
             f"{'id':>3}  {'class':<18} {'pixels':>12} {'freq':>8} {'enet w':>8} {'mfb w':>8}"]
    for c in stats["classes"]:
        lines.append(f"{c['id']:>3}  {c['name']:<18} {c['pixels']:>12} {c['frequency']:>8.4f} "
                     f"{c['enet_weight']:>8.3f} {c['mfb_weight']:>8.3f}")
    return "\n".join(lines)


def check_dataset(adapter: Adapter, root: Path) -> tuple[int, list[str]]:
    """Every pair of every split there is: (pairs checked, one problem line per bad file)."""
    checked, problems = 0, []
    splits = [s for s in SPLITS if adapter.has_split(root, s)]
    if not splits:
        raise DataError(f"{root}: no split of a {adapter.name} dataset found (looked for {', '.join(SPLITS)})")
    for split in splits:
        for pair in adapter.pairs(root, split):
            checked += 1
            try:
                load_pair(adapter, pair)
            except DataError as e:
                problems.append(str(e))
    return checked, problems
