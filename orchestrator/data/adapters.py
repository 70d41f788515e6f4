"""Dataset adapters: each knows only its on-disk layout. It lists (image, label) pairs and decodes a label."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from orchestrator.errors import SegsweepError


@dataclass(frozen=True)
class Pair:
    image: Path
    label: Path


class DataError(SegsweepError):
    """A dataset root, split or file that cannot be read; the message names the path."""


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 HxWx3; a truncated or unreadable file raises DataError naming it."""
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable image ({e})") from None


def read_index_png(path: Path) -> np.ndarray:
    """Single-channel label PNG as uint8 HxW."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("L", "P", "I", "I;16"):
                raise DataError(f"{path}: label must be a single-channel index PNG, got mode {im.mode}")
            return np.asarray(im).astype(np.uint8)
    except OSError as e:
        raise DataError(f"{path}: unreadable label ({e})") from None


@dataclass(frozen=True)
class IddLite:
    """IDD-lite (``idd20k_lite``): 7 level-1 classes, 255 ignore; binary task = drivable vs rest.

    ``leftImg8bit/<split>/<drive>/<frame>_image.jpg`` with ``gtFine/<split>/<drive>/<frame>_label.png``. The root
    may be the ``idd20k_lite`` folder itself or the folder that contains it.
    """

    name: str = "idd_lite"
    description: str = "IDD-lite (idd20k_lite): 7 level-1 classes, 227x320, ignore 255"
    classes: tuple[str, ...] = (
        "drivable",
        "non-drivable",
        "living-things",
        "vehicles",
        "road-side-objs",
        "far-objects",
        "sky",
    )
    palette: tuple[tuple[int, int, int], ...] = (
        (128, 64, 18),
        (244, 35, 232),
        (220, 20, 60),
        (0, 0, 230),
        (220, 190, 40),
        (70, 70, 70),
        (70, 130, 180),
    )
    ignore_index: int = 255
    binary_foreground: tuple[int, ...] = (0,)
    binary_classes: tuple[str, str] = ("background", "road")
    version: int = 1

    def base(self, root: Path) -> Path:
        nested = Path(root) / "idd20k_lite"
        return nested if nested.is_dir() else Path(root)

    def has_split(self, root: Path, split: str) -> bool:
        return (self.base(root) / "leftImg8bit" / split).is_dir()

    def pairs(self, root: Path, split: str) -> list[Pair]:
        images = self.base(root) / "leftImg8bit" / split
        if not images.is_dir():
            raise DataError(f"{root}: no '{split}' split (expected {images})")
        pairs = []
        for image in sorted(images.glob("*/*_image.jpg")):
            label = Path(str(image).replace("leftImg8bit", "gtFine", 1)[: -len("_image.jpg")] + "_label.png")
            pairs.append(Pair(image, label))
        if not pairs:
            raise DataError(f"{images}: no '<drive>/<frame>_image.jpg' files")
        return pairs

    def read_label(self, path: Path) -> np.ndarray:
        return read_index_png(path)


def to_binary(label: np.ndarray, foreground: tuple[int, ...], ignore_index: int = 255) -> np.ndarray:
    """Foreground classes -> 1, other classes -> 0, the ignore value kept."""
    out = np.isin(label, foreground).astype(np.uint8)
    out[label == ignore_index] = ignore_index
    return out
