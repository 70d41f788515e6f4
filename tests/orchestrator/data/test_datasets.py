"""Miniatures of each dataset's exact on-disk layout: loaders, class mapping, data stats and data check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.data.adapters import DataError, create_adapter, load_pair

IGN = 255


def save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)
    return path


def rgb(h: int, w: int) -> np.ndarray:
    return np.random.default_rng(h * w).integers(0, 255, (h, w, 3)).astype(np.uint8)


def decode(adapter, pair):
    return load_pair(adapter, pair)[1]


def test_camvid_jpg_images_pair_by_stem_and_void_is_ignored(tmp_path):
    root = tmp_path / "CamVid"
    save(root / "train" / "0001TP_006690.jpg", rgb(6, 8))  # a re-encoded copy: .jpg image, .png label
    save(root / "train" / "Seq05VD_f00000.png", rgb(6, 8))
    save(root / "trainannot" / "0001TP_006690.png", np.array([[0, 3, 11, 10] * 2] * 6))
    save(root / "trainannot" / "Seq05VD_f00000.png", np.full((6, 8), 8))
    save(root / "val" / "0016E5_07959.png", rgb(6, 8))
    save(root / "valannot" / "0016E5_07959.png", np.zeros((6, 8)))
    adapter = create_adapter("camvid")
    pairs = adapter.pairs(tmp_path, "train")  # the folder containing CamVid/ works, as does CamVid/ itself
    assert [(p.image.name, p.label.name) for p in pairs] == [
        ("0001TP_006690.jpg", "0001TP_006690.png"), ("Seq05VD_f00000.png", "Seq05VD_f00000.png")]
    assert decode(adapter, pairs[0])[0, :4].tolist() == [0, 3, IGN, 10]
    assert len(adapter.classes) == 11 and adapter.classes[3] == "road"
    assert adapter.pairs(root, "val")[0].image.name == "0016E5_07959.png"


def test_cityscapes_label_ids_map_to_train_ids_and_train_ids_file_wins(tmp_path):
    city = "leftImg8bit/train/aachen"
    save(tmp_path / city / "aachen_000000_000019_leftImg8bit.png", rgb(2, 4))
    save(tmp_path / "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png",
         np.array([[7, 26, 0, 33], [24, 255, 1, 23]]))
    save(tmp_path / city / "aachen_000001_000019_leftImg8bit.png", rgb(2, 4))
    save(tmp_path / "gtFine/train/aachen/aachen_000001_000019_gtFine_labelIds.png", np.zeros((2, 4)))
    save(tmp_path / "gtFine/train/aachen/aachen_000001_000019_gtFine_labelTrainIds.png", np.array([[18, 255, 0, 1]] * 2))
    adapter = create_adapter("cityscapes")
    first, second = adapter.pairs(tmp_path, "train")
    assert first.label.name.endswith("_labelIds.png") and second.label.name.endswith("_labelTrainIds.png")
    assert decode(adapter, first).tolist() == [[0, 13, IGN, 18], [11, IGN, IGN, 10]]
    assert decode(adapter, second)[0].tolist() == [18, IGN, 0, 1]
    assert len(adapter.classes) == 19


@pytest.mark.parametrize(("encoding", "expected"), [("current", [0, 1, 2]), ("legacy_2018", [2, 0, 1])])
def test_bdd100k_both_encodings_and_binary(tmp_path, encoding, expected):
    save(tmp_path / "images/100k/train/0a0a0b1a-7c39d841.jpg", rgb(2, 3))
    save(tmp_path / "labels/drivable/masks/train/0a0a0b1a-7c39d841.png", np.array([[0, 1, 2], [2, 2, 2]]))
    adapter = create_adapter("bdd100k_drivable", encoding=encoding)
    (pair,) = adapter.pairs(tmp_path, "train")
    assert decode(adapter, pair)[0].tolist() == expected
    assert adapter.classes == ("direct", "alternative", "background")
    assert adapter.task_classes("binary") == ("background", "drivable") and adapter.binary_foreground == (0, 1)


def test_comma10k_colours_and_val_split(tmp_path):
    road, lane, undrivable, movable, mycar = (0x40, 0x20, 0x20), (255, 0, 0), (0x80, 0x80, 0x60), (0, 255, 0x66), (0xCC, 0, 255)
    mask = np.array([[road, lane, undrivable], [movable, mycar, (0, 0xCC, 0xFF)]], np.uint8)
    names = ("0000_0085e9e41513078a_2018-08-19--13-26-08_11_864.png", "0001_a23b0de0bc12dcba_2018-06-24--00-29-19_17_79.png",
             "0002_e8e95b54ed6116a6_2018-09-04--16-24-39_3_669.png")
    for name in names:
        save(tmp_path / "imgs" / name, rgb(2, 3))
        save(tmp_path / "masks" / name, mask)
    adapter = create_adapter("comma10k")
    assert [p.image.name for p in adapter.pairs(tmp_path, "train")] == [names[0]]
    assert [p.image.name for p in adapter.pairs(tmp_path, "val")] == list(names[1:])
    assert decode(adapter, adapter.pairs(tmp_path, "train")[0]).tolist() == [[0, 1, 2], [3, 4, 3]]
    save(tmp_path / "masks" / names[0], np.array([[road, road, (0x41, 0x20, 0x20)]] * 2, np.uint8))
    with pytest.raises(DataError, match="colours #412020 are not in the class colours"):
        decode(adapter, adapter.pairs(tmp_path, "train")[0])


def test_folder_by_values_and_by_colours(tmp_path):
    save(tmp_path / "v/images/a.jpg", rgb(2, 2))
    save(tmp_path / "v/masks/a.png", np.array([[0, 10], [255, 10]]))
    adapter = create_adapter("folder", class_map=[{"name": "bg", "value": 0}, {"name": "road", "value": 10}])
    assert adapter.classes == ("bg", "road")
    assert decode(adapter, adapter.pairs(tmp_path / "v", "train")[0]).tolist() == [[0, 1], [IGN, 1]]
    save(tmp_path / "c/images/train/b.png", rgb(1, 2))
    save(tmp_path / "c/masks/train/b.png", np.array([[[0, 0, 0], [9, 9, 9]]]))
    by_colour = create_adapter("folder", class_map=[{"name": "bg", "color": [0, 0, 0]}, {"name": "x", "color": [9, 9, 9]}])
    assert decode(by_colour, by_colour.pairs(tmp_path / "c", "train")[0]).tolist() == [[0, 1]]
    with pytest.raises(DataError, match="data.class_map"):
        create_adapter("folder")


def test_data_stats_against_hand_counts(tmp_path):
    save(tmp_path / "images/100k/train/a.jpg", rgb(2, 4))
    save(tmp_path / "labels/drivable/masks/train/a.png", np.array([[0, 0, 2, 2], [2, 2, 2, 255]]))
    save(tmp_path / "images/100k/train/b.jpg", rgb(2, 4))
    save(tmp_path / "labels/drivable/masks/train/b.png", np.array([[1, 2, 2, 2], [2, 2, 2, 2]]))
    result = CliRunner().invoke(app, ["data", "stats", "--dataset", "bdd100k_drivable", "--root", str(tmp_path),
                                      "--format", "json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert (stats["dataset"], stats["split"], stats["images"], stats["ignored_pixels"]) == ("bdd100k_drivable", "train", 2, 1)
    pixels = [c["pixels"] for c in stats["classes"]]
    assert pixels == [2, 1, 12]
    freq = np.array([2, 1, 12]) / 15
    assert [c["frequency"] for c in stats["classes"]] == pytest.approx(freq.tolist())
    assert [c["enet_weight"] for c in stats["classes"]] == pytest.approx((1 / np.log(1.02 + freq)).tolist())
    # MFB: class 0 only in image a (7 labelled px), class 1 only in b (8 px), class 2 in both (15 px)
    mfb_freq = np.array([2 / 7, 1 / 8, 12 / 15])
    assert [c["mfb_weight"] for c in stats["classes"]] == pytest.approx((np.median(mfb_freq) / mfb_freq).tolist())
    text = CliRunner().invoke(app, ["data", "stats", "--dataset", "bdd100k_drivable", "--root", str(tmp_path)])
    assert "alternative" in text.output and "2 images, 1 ignored pixels" in text.output


def test_data_check_lists_every_broken_file(tmp_path):
    root = tmp_path / "CamVid"
    for i in range(5):
        save(root / "train" / f"s_{i}.png", rgb(4, 6))
        save(root / "trainannot" / f"s_{i}.png", np.zeros((4, 6)))
    (root / "trainannot" / "s_1.png").unlink()  # missing label
    (root / "train" / "s_2.png").write_bytes((root / "train" / "s_2.png").read_bytes()[:30])  # truncated image
    save(root / "trainannot" / "s_3.png", np.zeros((3, 6)))  # size mismatch
    save(root / "trainannot" / "s_4.png", np.full((4, 6), 12))  # value outside 0..10 and void 11
    result = CliRunner().invoke(app, ["data", "check", "--dataset", "camvid", "--root", str(tmp_path)])
    assert result.exit_code == 1
    lines = result.stdout.strip().splitlines()
    assert any("s_1.png: missing" in line for line in lines)
    assert any("s_2.png: unreadable image" in line for line in lines)
    assert any("s_3.png: size 6x3 differs from its image's 6x4" in line for line in lines)
    assert any("s_4.png: label values [12] are not in the class set" in line for line in lines)
    assert "5 pairs checked, 4 with problems" in result.stderr
    for name in ("s_1", "s_2", "s_3", "s_4"):
        (root / "train" / f"{name}.png").unlink()
        (root / "trainannot" / f"{name}.png").unlink(missing_ok=True)
    good = CliRunner().invoke(app, ["data", "check", "--dataset", "camvid", "--root", str(tmp_path)])
    assert good.exit_code == 0 and "1 pairs checked, 0 with problems" in good.output
