"""The Lightning module on its own: metrics per epoch over the whole split, NaN losses fail loudly."""

from __future__ import annotations

import lightning.pytorch as L
import pytest
import torch

from models.losses import create_loss
from models.registry import create_model
from orchestrator.data.prepare import prepare_data
from orchestrator.spec.schema import DataSpec
from orchestrator.trial.data import CachedData, augment_batch
from orchestrator.trial.module import SegmentationModule
from orchestrator.trial.visuals import image_miou, rank_images, save_panels

OPTIM = {"name": "adam", "lr": 1e-3, "weight_decay": 0.0, "momentum": 0.9}
SCHEDULE = {"name": "constant"}


def module_and_data(synthetic_root, tmp_path, loss):
    spec = DataSpec(dataset="synthetic", root=str(synthetic_root), size=[32, 64], resize="resize",
                    synthetic={"train": 8, "val": 4, "height": 40, "width": 72, "seed": 1})
    data = prepare_data(spec, tmp_path / "cache")
    module = SegmentationModule(create_model("fpn", "resnet18", classes=7), loss, data.classes, data.ignore_index,
                                None, OPTIM, SCHEDULE, max_epochs=2)
    return module, CachedData(data.train.path, data.val.path, batch_size=4), Recorder()


class Recorder(L.Callback):
    """What a reporting callback sees: the module's row of each epoch, asked for before the module's own hook."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def on_train_epoch_end(self, trainer, module) -> None:
        self.rows.append(module.epoch_metrics())


def trainer(*callbacks: L.Callback) -> L.Trainer:
    return L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                     callbacks=list(callbacks))


def test_one_report_per_epoch_with_every_metric(synthetic_root, tmp_path):
    module, data, recorder = module_and_data(synthetic_root, tmp_path, create_loss("ce", "multiclass"))
    trainer(recorder).fit(module, datamodule=data)
    assert [h["epoch"] for h in recorder.rows] == [1, 2]
    assert module.history == recorder.rows  # one row per epoch, whoever asked first
    for h in recorder.rows:
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
    module, data, recorder = module_and_data(synthetic_root, tmp_path, NanAfterFirstStep())
    with pytest.raises(FloatingPointError, match="training loss is nan at epoch 1; lower optimizer.lr"):
        trainer(recorder).fit(module, datamodule=data)
    assert recorder.rows == [] and module.history == []


def blocks() -> tuple[torch.Tensor, torch.Tensor]:
    """Labels in 8x8 blocks; the image's red channel encodes the label, so geometry can be checked pixel by pixel."""
    y = torch.arange(16).view(4, 4).repeat_interleave(8, 0).repeat_interleave(8, 1).unsqueeze(0).repeat(6, 1, 1) % 7
    x = torch.stack([y.float() / 10, torch.zeros_like(y, dtype=torch.float), torch.ones_like(y, dtype=torch.float)], 1)
    return x, y


def test_augmentation_moves_image_and_mask_together():
    torch.manual_seed(0)
    x, y = blocks()
    ax, ay = augment_batch(x, y, hflip=True, scale=(0.6, 1.6), jitter=0.0)
    assert ax.shape == x.shape and ay.shape == y.shape and ay.dtype == torch.long
    inside = ay != 255
    # interior pixels (same label as their 4 neighbours) are away from bilinear seams: they must agree exactly
    c = ay[:, 1:-1, 1:-1]
    interior = (c == ay[:, :-2, 1:-1]) & (c == ay[:, 2:, 1:-1]) & (c == ay[:, 1:-1, :-2]) & (c == ay[:, 1:-1, 2:])
    interior &= c != 255
    decoded = torch.round(ax[:, 0, 1:-1, 1:-1] * 10).long()
    assert interior.float().mean() > 0.5 and torch.equal(decoded[interior], c[interior])
    assert (ax[:, 2][~inside] < 0.5).all()  # outside the frame: black image, ignored label
    assert not torch.equal(ay, y) and set(ay.unique().tolist()) <= set(range(7)) | {255}


def test_colour_jitter_keeps_geometry_and_range():
    torch.manual_seed(1)
    x, y = blocks()
    ax, ay = augment_batch(x, y, hflip=False, scale=None, jitter=0.4)
    assert torch.equal(ay, y) and not torch.allclose(ax, x) and ax.min() >= 0 and ax.max() <= 1
    same_x, same_y = augment_batch(x, y, hflip=False, scale=None, jitter=0.0)
    assert torch.equal(same_x, x) and torch.equal(same_y, y)


def test_validation_batches_are_not_augmented(synthetic_root, tmp_path):
    module, data, _ = module_and_data(synthetic_root, tmp_path, create_loss("ce", "multiclass"))
    data.scale, data.jitter = (0.5, 2.0), 0.5
    data.setup()
    images, labels = next(iter(data.val_dataloader()))
    x1, y1 = data.on_after_batch_transfer((images, labels), 0)  # no trainer attached: evaluation path
    x2, y2 = data.on_after_batch_transfer((images, labels), 0)
    assert torch.equal(x1, x2) and torch.equal(y1, labels.long())


def test_best_and_worst_images_by_per_image_miou(tmp_path):
    import numpy as np
    from PIL import Image


    truth = np.array([[0, 0, 1, 1], [0, 0, 1, 255]], np.uint8)
    assert image_miou(truth, truth, ["a", "b"], 255) == 1.0
    half = np.array([[0, 0, 0, 0], [0, 0, 1, 1]], np.uint8)  # a: tp 4, fp 2 -> 4/6; b: tp 1, fn 2 -> 1/3
    assert image_miou(truth, half, ["a", "b"], 255) == pytest.approx((4 / 6 + 1 / 3) / 2)
    truths = np.stack([truth, truth, truth])
    preds = np.stack([half, truth, np.zeros_like(truth)])
    scores = rank_images(truths, preds, ["a", "b"], 255)
    images = np.zeros((3, 2, 4, 3), np.uint8)
    paths = save_panels(tmp_path, scores, 1, images, truths, preds, ["x/a.jpg", "x/b.jpg", "x/c.jpg"],
                        [(10, 10, 10), (200, 0, 0)], 255)
    # c predicts all a: a tp 4, fp 3 -> 4/7; b -> 0
    assert [p.name for p in paths] == ["best_1_b_miou1.000.png", f"worst_1_c_miou{(4 / 7) / 2:.3f}.png"]
    panel = np.asarray(Image.open(paths[0]))
    assert panel.shape == (2, 4 * 3 + 8, 3) and tuple(panel[0, 4 + 4 + 2]) == (200, 0, 0)
