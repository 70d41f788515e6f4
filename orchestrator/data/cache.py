"""Decode once: every (image, label) pair is decoded a single time per (dataset, split, size, task) into uint8
``.npy`` arrays that all trials memory-map read-only. Trials never touch JPEGs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap
from PIL import Image

from orchestrator.data.adapters import DataError, Pair, load_pair, to_binary
from orchestrator.files import folder_written_whole

CACHE_VERSION = 1


@dataclass(frozen=True)
class SplitInfo:
    path: str
    images: int


@dataclass(frozen=True)
class PreparedData:
    """What the driver hands to every trial about the data (small, picklable)."""

    dataset: str
    native_size: tuple[int, int]  # (height, width) of the images as stored
    task: str
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]  # one RGB colour per class, for mask panels
    ignore_index: int
    positive: int | None  # foreground index for the binary task
    train: SplitInfo
    val: SplitInfo
    pixel_counts: tuple[int, ...]  # per class over the training split at training size, ignore excluded
    image_pixels: tuple[int, ...]  # per class: labelled pixels of the training images that contain the class

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> PreparedData:
        tuples = {k: tuple(tuple(x) if isinstance(x, list) else x for x in d[k])
                  for k in ("native_size", "classes", "palette", "pixel_counts", "image_pixels")}
        return cls(**{**d, **tuples, "train": SplitInfo(**d["train"]), "val": SplitInfo(**d["val"])})

    def cache_bytes(self) -> int:
        """uint8 bytes of both decoded splits (3 image bytes and 1 label byte per pixel)."""
        h, w = np.load(Path(self.train.path) / "labels.npy", mmap_mode="r").shape[1:]
        return (self.train.images + self.val.images) * h * w * 4


def fit_to_size(image: np.ndarray, label: np.ndarray, size: tuple[int, int], mode: str, ignore_index: int):
    """``resize``: straight to HxW (bilinear image, nearest label). ``pad``: shrink to fit if larger (keeping the
    aspect ratio), then pad bottom/right with black pixels and ignore labels."""
    th, tw = size
    h, w = label.shape
    if mode == "resize" or h > th or w > tw:
        scale = 1.0 if mode == "resize" else min(th / h, tw / w)
        nh, nw = (th, tw) if mode == "resize" else (max(1, round(h * scale)), max(1, round(w * scale)))
        image = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
        label = np.asarray(Image.fromarray(label).resize((nw, nh), Image.NEAREST))
        h, w = nh, nw
    if (h, w) == (th, tw):
        return image, label
    out_image = np.zeros((th, tw, 3), np.uint8)
    out_label = np.full((th, tw), ignore_index, np.uint8)
    out_image[:h, :w], out_label[:h, :w] = image, label
    return out_image, out_label


def decode_item(adapter, pair: Pair, size: tuple[int, int], mode: str, task: str) -> tuple[np.ndarray, np.ndarray]:
    """One pair decoded, mapped to the task's labels and brought to the training size: what the cache stores and what
    ``data.cache: false`` decodes per access."""
    image, label = load_pair(adapter, pair)
    if task == "binary":
        label = to_binary(label, adapter.binary_foreground, adapter.ignore_index)
    return fit_to_size(image, label, size, mode, adapter.ignore_index)


def cache_key(dataset: str, version: int, pairs: list[Pair], size, mode: str, task: str) -> str:
    h = hashlib.sha1(json.dumps([CACHE_VERSION, dataset, version, list(size), mode, task]).encode())
    for pair in pairs:
        for path in (pair.image, pair.label):
            try:
                st = path.stat()
            except OSError:
                raise DataError(f"{path}: missing (the label of {pair.image.name})" if path == pair.label
                                else f"{path}: missing") from None
            h.update(f"{path}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:12]


def build_split_cache(adapter, pairs: list[Pair], size: tuple[int, int], mode: str, task: str, folder: Path) -> Path:
    """Decode ``pairs`` into ``folder/{images,labels}.npy`` (+ ``names.json``); reused when it exists.

    Written into a temporary folder and renamed, so a crash never leaves a half-written cache.
    """
    if (folder / "labels.npy").is_file():
        return folder
    with folder_written_whole(folder) as tmp:
        _decode_into(tmp, adapter, pairs, size, mode, task)
    return folder


def _decode_into(tmp: Path, adapter, pairs: list[Pair], size: tuple[int, int], mode: str, task: str) -> None:
    n, (h, w) = len(pairs), size
    images = open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8, shape=(n, h, w, 3))
    labels = open_memmap(tmp / "labels.npy", mode="w+", dtype=np.uint8, shape=(n, h, w))
    for i, pair in enumerate(pairs):
        images[i], labels[i] = decode_item(adapter, pair, size, mode, task)
    images.flush()
    labels.flush()
    del images, labels
    (tmp / "names.json").write_text(json.dumps([str(p.image) for p in pairs]))


def class_pixel_stats(labels: Iterable[np.ndarray], num_classes: int, ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class: pixels over all images, and labelled pixels of the images that contain the class (for MFB)."""
    counts = np.zeros(num_classes, np.int64)
    image_pixels = np.zeros(num_classes, np.int64)
    for label in labels:
        per_image = np.bincount(label[label != ignore_index].ravel(), minlength=num_classes)[:num_classes]
        counts += per_image
        image_pixels += np.where(per_image > 0, per_image.sum(), 0)
    return counts, image_pixels


def split_names(folder: str | Path) -> list[str]:
    """The source image path of every cached item, in cache order."""
    return json.loads((Path(folder) / "names.json").read_text())


def load_split(folder: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A cached split's images and labels, memory-mapped read-only."""
    return np.load(Path(folder) / "images.npy", mmap_mode="r"), np.load(Path(folder) / "labels.npy", mmap_mode="r")
