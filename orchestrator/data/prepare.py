"""The driver's data step: resolve the splits, generate synthetic data if asked, decode once, count classes."""

from __future__ import annotations

import json
import random
from pathlib import Path

from orchestrator.data.adapters import Adapter, DataError, Pair, create_adapter
from orchestrator.data.cache import PreparedData, SplitInfo, build_split_cache, cache_key, class_pixel_stats, load_split
from orchestrator.data.synthetic import generate_synthetic


def adapter_for(spec) -> Adapter:
    """The adapter a ``DataSpec`` describes."""
    class_map = [c.model_dump() for c in spec.class_map] if spec.class_map else None
    return create_adapter(spec.dataset, spec.encoding, class_map)


def _ensure_root(spec) -> Path:
    root = Path(spec.root)
    if spec.dataset == "synthetic":
        s = spec.synthetic
        return generate_synthetic(root, s.train, s.val, s.height, s.width, s.seed)
    if not root.is_dir():
        raise DataError(f"data.root: {root} does not exist (set data.root or its environment variable)")
    return root


def resolve_pairs(spec, root: Path | None = None) -> tuple[list[Pair], list[Pair]]:
    """Train and val pairs. ``val_fraction`` holds out a seeded share of train (for datasets without a val split)."""
    adapter = adapter_for(spec)
    root = Path(root or spec.root)
    train = adapter.pairs(root, "train")
    if spec.val_fraction:
        shuffled = train[:]
        random.Random(0).shuffle(shuffled)
        n_val = max(1, round(len(train) * spec.val_fraction))
        val, train = sorted(shuffled[:n_val], key=str), sorted(shuffled[n_val:], key=str)
    elif adapter.has_split(root, spec.val_split):
        val = adapter.pairs(root, spec.val_split)
    else:
        raise DataError(f"{root}: no '{spec.val_split}' split; set data.val_fraction (e.g. 0.2) to hold out part of train")
    if spec.limit_images:
        train, val = train[: spec.limit_images], val[: spec.limit_images]
    if len(train) < 2:
        raise DataError(f"{root}: {len(train)} training image(s); a sweep needs at least 2")
    return train, val


def dataset_sizes(spec) -> dict[str, object]:
    """Image counts per split and the native image size, without decoding (``--dry-run``); synthetic data is not
    generated."""
    if spec.dataset == "synthetic" and not Path(spec.root, "idd20k_lite").is_dir():
        s = spec.synthetic
        n_val = round(s.train * spec.val_fraction) if spec.val_fraction else s.val
        return {"train": s.train - (n_val if spec.val_fraction else 0), "val": n_val, "native": (s.height, s.width)}
    train, val = resolve_pairs(spec)
    return {"train": len(train), "val": len(val), "native": native_size(train[0])}


def prepare_data(spec, cache_root: Path) -> PreparedData:
    """Decode both splits once into ``cache_root`` and compute the training split's class pixel counts."""
    adapter = adapter_for(spec)
    root = _ensure_root(spec)
    train_pairs, val_pairs = resolve_pairs(spec, root)
    folders = {split: split_cache(spec, adapter, pairs, split, cache_root)
               for split, pairs in (("train", train_pairs), ("val", val_pairs))}
    classes = adapter.task_classes(spec.task)
    stats_file = folders["train"] / "stats.json"
    if stats_file.is_file():
        stats = json.loads(stats_file.read_text())
    else:
        _, labels = load_split(folders["train"])
        counts, image_pixels = class_pixel_stats(labels, len(classes), adapter.ignore_index)
        stats = {"pixel_counts": counts.tolist(), "image_pixels": image_pixels.tolist()}
        stats_file.write_text(json.dumps(stats))
    return PreparedData(
        dataset=spec.dataset,
        native_size=native_size(train_pairs[0]),
        task=spec.task,
        classes=tuple(classes),
        palette=task_palette(adapter, spec.task),
        ignore_index=adapter.ignore_index,
        positive=1 if spec.task == "binary" else None,
        train=SplitInfo(str(folders["train"]), len(train_pairs)),
        val=SplitInfo(str(folders["val"]), len(val_pairs)),
        pixel_counts=tuple(stats["pixel_counts"]),
        image_pixels=tuple(stats["image_pixels"]),
    )


def split_cache(spec, adapter: Adapter, pairs: list[Pair], split: str, cache_root: Path) -> Path:
    """``pairs`` decoded once at the training size into ``cache_root`` (reused while its files are unchanged)."""
    size = tuple(spec.size)
    key = cache_key(adapter.name, adapter.version, pairs, size, spec.resize, spec.task)
    folder = Path(cache_root) / f"{adapter.name}-{split}-{size[0]}x{size[1]}-{spec.task}-{key}"
    return build_split_cache(adapter, pairs, size, spec.resize, spec.task, folder)


def split_pairs(spec, split: str) -> list[Pair]:
    """The pairs of ``split`` for evaluation: the sweep's own validation images for its validation split (the
    held-out share of train with ``data.val_fraction``), else the dataset's split as stored. A dataset without that
    split, or a split without label files, is a one-line DataError."""
    if split == spec.val_split or (split == "val" and spec.val_fraction):
        return resolve_pairs(spec)[1]
    adapter, root = adapter_for(spec), Path(spec.root)
    if not adapter.has_split(root, split):
        have = [s for s in ("train", "val", "test") if adapter.has_split(root, s)]
        raise DataError(f"{root}: {spec.dataset} has no '{split}' split here (it has {', '.join(have) or 'none'}); "
                        f"choose --split from those")
    pairs = adapter.pairs(root, split)
    if not any(p.label.is_file() for p in pairs):
        raise DataError(f"{root}: the '{split}' split has no labels (none of its {len(pairs)} images has a label "
                        f"file, e.g. {pairs[0].label}); evaluate on a labelled split")
    return pairs


def task_palette(adapter: Adapter, task: str) -> tuple[tuple[int, int, int], ...]:
    """Class colours for the task: the dataset's palette, or black + the first foreground class's colour."""
    if task == "binary":
        return (0, 0, 0), tuple(adapter.palette[adapter.binary_foreground[0]]) if adapter.palette else (255, 255, 255)
    return tuple(tuple(c) for c in adapter.palette)


def native_size(pair: Pair) -> tuple[int, int]:
    """(height, width) of a dataset image as stored, read from its header only."""
    from PIL import Image

    with Image.open(pair.image) as im:
        return im.height, im.width
