"""The Lightning module on its own: metrics per epoch over the whole split, NaN losses fail loudly."""

from __future__ import annotations

import lightning.pytorch as L
import pytest
import torch

from models.losses import create_loss
from models.registry import create_model
from orchestrator.data import prepare_data
from orchestrator.lit import CachedData, SegmentationModule
from orchestrator.spec import DataSpec

OPTIM = {"name": "adam", "lr": 1e-3, "weight_decay": 0.0, "momentum": 0.9}
SCHEDULE = {"name": "constant"}


def module_and_data(synthetic_root, tmp_path, loss):
    spec = DataSpec(dataset="synthetic", root=str(synthetic_root), size=[32, 64], resize="resize",
                    synthetic={"train": 8, "val": 4, "height": 40, "width": 72, "seed": 1})
    data = prepare_data(spec, tmp_path / "cache")
    history = []
    module = SegmentationModule(create_model("fpn", "resnet18", classes=7), loss, data.classes, data.ignore_index,
                                None, OPTIM, SCHEDULE, max_epochs=2, report=lambda m, _: history.append(m))
    return module, CachedData(data.train.path, data.val.path, batch_size=4), history


def trainer() -> L.Trainer:
    return L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)


def test_one_report_per_epoch_with_every_metric(synthetic_root, tmp_path):
    module, data, history = module_and_data(synthetic_root, tmp_path, create_loss("ce", "multiclass"))
    trainer().fit(module, datamodule=data)
    assert [h["epoch"] for h in history] == [1, 2]
    for h in history:
        assert {"train/loss", "val/loss", "val/miou", "val/iou/sky", "val/pixel_acc", "lr"} <= set(h)
        assert 0 <= h["val/miou"] <= 1 and h["train/loss"] > 0


class NanAfterFirstStep(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ce, self.calls = create_loss("ce", "multiclass"), 0

    def forward(self, logits, target):
        self.calls += 1
        loss = self.ce(logits, target)
        return loss if self.calls == 1 else loss * float("nan")


def test_nan_training_loss_fails_with_the_epoch_named(synthetic_root, tmp_path):
    module, data, history = module_and_data(synthetic_root, tmp_path, NanAfterFirstStep())
    with pytest.raises(FloatingPointError, match="training loss is nan at epoch 1; lower optimizer.lr"):
        trainer().fit(module, datamodule=data)
    assert history == []
