"""IDD-lite layout loader, synthetic generator, decode-once cache and class statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from orchestrator.data.adapters import DataError, IddLite, to_binary
from orchestrator.data.cache import class_pixel_stats, fit_to_size, load_split
from orchestrator.data.prepare import prepare_data, resolve_pairs
from orchestrator.data.synthetic import generate_synthetic
from orchestrator.errors import SegsweepError
from orchestrator.spec.schema import DataSpec


def idd_tree(root: Path, split: str, items: list[tuple[str, str, np.ndarray]]) -> None:
    """Write (drive, frame, label) pairs in the real IDD-lite layout, with an instance label to be ignored."""
    for drive, frame, label in items:
        img_dir, gt_dir = root / "idd20k_lite" / "leftImg8bit" / split / drive, root / "idd20k_lite" / "gtFine" / split / drive
        img_dir.mkdir(parents=True, exist_ok=True)
        gt_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full(label.shape + (3,), 100, np.uint8)).save(img_dir / f"{frame}_image.jpg")
        Image.fromarray(label).save(gt_dir / f"{frame}_label.png")
        Image.fromarray(np.zeros_like(label)).save(gt_dir / f"{frame}_inst_label.png")


def spec(root: Path, **kw) -> DataSpec:
    return DataSpec(**{"dataset": "idd_lite", "root": str(root), "size": [32, 32], **kw})


def test_idd_lite_pairs_follow_the_layout(tmp_path):
    label = np.zeros((4, 6), np.uint8)
    idd_tree(tmp_path, "train", [("119", "903127", label), ("0", "frame5153", label), ("7", "0013252", label)])
    pairs = IddLite().pairs(tmp_path, "train")
    assert [p.image.name for p in pairs] == ["frame5153_image.jpg", "903127_image.jpg", "0013252_image.jpg"]
    for pair in pairs:
        assert pair.label == Path(str(pair.image).replace("leftImg8bit", "gtFine")).with_name(
            pair.image.name.replace("_image.jpg", "_label.png"))
    # the folder that contains idd20k_lite works as well as idd20k_lite itself
    assert IddLite().pairs(tmp_path / "idd20k_lite", "train") == pairs


def test_val_fraction_and_missing_val_split(tmp_path):
    label = np.zeros((4, 6), np.uint8)
    idd_tree(tmp_path, "train", [(str(i % 2), f"{i:04d}", label) for i in range(10)])
    with pytest.raises(DataError, match="no 'val' split; set data.val_fraction"):
        resolve_pairs(spec(tmp_path))
    train, val = resolve_pairs(spec(tmp_path, val_fraction=0.2))
    assert len(train) == 8 and len(val) == 2 and not set(train) & set(val)
    assert resolve_pairs(spec(tmp_path, val_fraction=0.2)) == (train, val)  # deterministic


def test_pad_and_resize_to_training_size():
    image = np.full((227, 320, 3), 7, np.uint8)
    label = np.full((227, 320), 3, np.uint8)
    img, lab = fit_to_size(image, label, (256, 320), "pad", 255)
    assert img.shape == (256, 320, 3) and (lab[:227] == 3).all() and (lab[227:] == 255).all() and (img[227:] == 0).all()
    img, lab = fit_to_size(image, label, (224, 320), "resize", 255)
    assert img.shape == (224, 320, 3) and set(np.unique(lab)) == {3}
    img, lab = fit_to_size(image, label, (128, 160), "pad", 255)  # larger than the target: shrink, then pad
    assert lab.shape == (128, 160) and (lab[:114] == 3).all() and (lab[114:] == 255).all()


def test_binary_road_task_mapping():
    label = np.array([[0, 1, 6], [255, 0, 3]], np.uint8)
    np.testing.assert_array_equal(to_binary(label, (0,)), [[1, 0, 0], [255, 1, 0]])


def test_class_pixel_stats_by_hand():
    labels = np.array([[[0, 0], [1, 255]], [[1, 1], [1, 2]]], np.uint8)
    counts, image_pixels = class_pixel_stats(labels, 3, 255)
    np.testing.assert_array_equal(counts, [2, 4, 1])
    np.testing.assert_array_equal(image_pixels, [3, 7, 4])  # labelled pixels of the images containing the class


def test_synthetic_is_deterministic_and_in_layout(tmp_path):
    a = generate_synthetic(tmp_path / "a", train=3, val=2, height=40, width=56, seed=3)
    b = generate_synthetic(tmp_path / "b", train=3, val=2, height=40, width=56, seed=3)
    pairs_a, pairs_b = IddLite().pairs(a, "train"), IddLite().pairs(b, "train")
    assert len(pairs_a) == 3 and len(IddLite().pairs(a, "val")) == 2
    for pa, pb in zip(pairs_a, pairs_b, strict=True):
        np.testing.assert_array_equal(IddLite().read_label(pa.label), IddLite().read_label(pb.label))
    values = set(np.unique(np.concatenate([IddLite().read_label(p.label).ravel() for p in pairs_a])).tolist())
    assert values <= set(range(7)) | {255} and {0, 6, 255} <= values
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "mine.txt").write_text("x")
    with pytest.raises(SegsweepError, match="not empty and not a segsweep synthetic dataset"):
        generate_synthetic(tmp_path / "user", 2, 1, 40, 56)


def test_prepare_decodes_once_and_counts_classes(tmp_path):
    labels = [np.array([[0, 0, 1], [255, 6, 6]], np.uint8), np.array([[3, 3, 0], [0, 0, 0]], np.uint8)]
    idd_tree(tmp_path / "d", "train", [("1", "a", labels[0]), ("2", "b", labels[1])])
    idd_tree(tmp_path / "d", "val", [("1", "c", labels[0])])
    prepared = prepare_data(spec(tmp_path / "d", task="binary"), tmp_path / "cache")
    assert prepared.classes == ("background", "road") and prepared.positive == 1
    images, cached = load_split(prepared.train.path)
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8
    # padded pixels are ignore; drivable (0) -> 1
    assert cached[0, 0, :3].tolist() == [1, 1, 0] and cached[0, 1, 0] == 255 and (cached[:, 2:] == 255).all()
    assert prepared.pixel_counts == (3 + 2, 2 + 4)  # (background, road) over both training images
    mtime = (Path(prepared.train.path) / "images.npy").stat().st_mtime_ns
    again = prepare_data(spec(tmp_path / "d", task="binary"), tmp_path / "cache")
    assert again == prepared and (Path(prepared.train.path) / "images.npy").stat().st_mtime_ns == mtime
    assert json.loads((Path(prepared.train.path) / "names.json").read_text())[0].endswith("a_image.jpg")


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda gt, img: gt.unlink(), "missing"),
        (lambda gt, img: img.write_bytes(img.read_bytes()[:40]), "unreadable image"),
        (lambda gt, img: Image.fromarray(np.full((4, 6), 9, np.uint8)).save(gt), r"label values \[9\]"),
        (lambda gt, img: Image.fromarray(np.zeros((3, 6), np.uint8)).save(gt), "differs from its image"),
    ],
)
def test_bad_files_are_named(tmp_path, breakage, message):
    label = np.zeros((4, 6), np.uint8)
    idd_tree(tmp_path, "train", [("1", "a", label), ("1", "b", label)])
    idd_tree(tmp_path, "val", [("1", "c", label)])
    gt = tmp_path / "idd20k_lite" / "gtFine" / "train" / "1" / "b_label.png"
    breakage(gt, tmp_path / "idd20k_lite" / "leftImg8bit" / "train" / "1" / "b_image.jpg")
    with pytest.raises(DataError, match=message) as info:
        prepare_data(spec(tmp_path), tmp_path / "cache")
    assert "/1/b_" in str(info.value)
    assert not list((tmp_path / "cache").glob("*train*")), "no half-written cache is left behind"
