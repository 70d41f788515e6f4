"""The trial's data paths: device-resident batches, per-trial file decoding and host augmentation, each against the
decode-once cache."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as L
import numpy as np
import pytest
import torch

from orchestrator.data.files import FilePairs
from orchestrator.data.prepare import adapter_for, prepare_data, resolve_pairs
from orchestrator.spec.schema import DataSpec
from orchestrator.trial.data import CachedData, balanced_batch
from orchestrator.trial.levers import CPU_LEVERS


def test_device_resident_batches_match_the_cache(synthetic_root, tmp_path):
    """The device-resident path (here on the CPU device) yields the cached pixels, each training image once per
    epoch, in a permutation drawn from the trial's seed."""

    spec = DataSpec(dataset="synthetic", root=str(synthetic_root), size=[32, 64], resize="resize",
                    synthetic={"train": 8, "val": 4, "height": 40, "width": 72, "seed": 1})
    data = prepare_data(spec, tmp_path / "cache")
    dm = CachedData(data.train.path, data.val.path, batch_size=3, resident=True)
    dm.trainer = L.Trainer(accelerator="cpu", logger=False)
    dm.setup()
    seen = []
    for number in dm.train_dataloader():
        images, labels = dm.gather(number)
        assert images.dtype == torch.uint8 and images.shape[1:] == (32, 64, 3)
        seen += [int(np.flatnonzero((dm.train_set.labels.reshape(8, -1) == labels[i].reshape(1, -1).numpy())
                                    .all(1))[0]) for i in range(len(labels))]
    assert sorted(seen) == list(range(8))  # a permutation: every image once
    val = [dm.gather(number) for number in dm.val_dataloader()]
    assert torch.equal(torch.cat([v[0] for v in val]), torch.from_numpy(np.array(dm.val_set.images)))


def test_file_decoding_matches_the_decode_once_cache(synthetic_root, tmp_path):
    spec = DataSpec(dataset="synthetic", root=str(synthetic_root), size=[32, 64], resize="resize",
                    synthetic={"train": 8, "val": 4, "height": 40, "width": 72, "seed": 1})
    data = prepare_data(spec, tmp_path / "cache")
    train, _ = resolve_pairs(spec)
    files = FilePairs(train, adapter_for(spec), (32, 64), "resize", "multiclass")
    cached = np.load(Path(data.train.path) / "images.npy"), np.load(Path(data.train.path) / "labels.npy")
    for i in (0, 5):
        image, label = files[i]
        assert np.array_equal(image.numpy(), cached[0][i]) and np.array_equal(label.numpy(), cached[1][i])


def test_host_augmentation_switch_moves_the_work_before_transfer(synthetic_root, tmp_path):
    spec = DataSpec(dataset="synthetic", root=str(synthetic_root), size=[32, 64], resize="resize",
                    synthetic={"train": 8, "val": 4, "height": 40, "width": 72, "seed": 1})
    data = prepare_data(spec, tmp_path / "cache")
    batch = (torch.zeros(2, 32, 64, 3, dtype=torch.uint8), torch.zeros(2, 32, 64, dtype=torch.uint8))
    host = CachedData(data.train.path, data.val.path, 2, levers=CPU_LEVERS.__class__(
        **{**CPU_LEVERS.__dict__, "device_augment": False}))
    x, y = host.on_before_batch_transfer(batch, 0)
    assert x.dtype == torch.float32 and x.shape == (2, 3, 32, 64) and host.on_after_batch_transfer((x, y), 0)[0] is x
    device = CachedData(data.train.path, data.val.path, 2)
    assert device.on_before_batch_transfer(batch, 0) is batch
    assert device.on_after_batch_transfer(batch, 0)[0].shape == (2, 3, 32, 64)




def test_balanced_batches_by_hand():
    assert balanced_batch(204, 64) == 51  # IDD-lite's val split: four batches of 51, not 64, 64, 64 and 12
    assert balanced_batch(281, 16) == 16 and balanced_batch(10, 64) == 10 and balanced_batch(65, 64) == 33
    assert balanced_batch(128, 64) == 64 and balanced_batch(1, 64) == 1


def test_full_batches_have_one_shape_and_cover_the_split(synthetic_root, tmp_path):
    """On a GPU every training batch is full (the last filled up with the epoch's first samples) and validation's
    batches are balanced, the last padded with repeats that its count of real samples leaves out: here on the CPU
    device, for the device-resident and the host loaders."""
    spec = DataSpec(dataset="synthetic", root=str(synthetic_root), size=[32, 64], resize="resize",
                    synthetic={"train": 8, "val": 5, "height": 40, "width": 72, "seed": 1})
    data = prepare_data(spec, tmp_path / "cache")
    dm = CachedData(data.train.path, data.val.path, batch_size=3, resident=True, val_batch_size=4,
                    full_batches=True, balanced_val=True)
    dm.trainer = L.Trainer(accelerator="cpu", logger=False)
    dm.setup()
    flat = dm.train_set.labels.reshape(8, -1)
    ids = lambda labels: [int(np.flatnonzero((flat == labels[i].reshape(1, -1).numpy()).all(1))[0])
                          for i in range(len(labels))]
    batches = [dm.gather(number) for number in dm.train_dataloader()]
    assert [len(b[1]) for b in batches] == [3, 3, 3]
    seen = [i for b in batches for i in ids(b[1])]
    assert sorted(set(seen)) == list(range(8)) and seen[8] == seen[0]  # every image, and the first once more
    val = [dm.gather(number) for number in dm.val_dataloader()]
    assert [len(b[1]) for b in val] == [3, 3] and len(val[0]) == 2 and val[1][2] == 2  # 5 = 3 + 2 real of 3
    real = torch.cat([val[0][0], val[1][0][:val[1][2]]])
    assert torch.equal(real, torch.from_numpy(np.array(dm.val_set.images)))
    x, _, valid = dm.prepare(val[1], augment=False)
    assert x.shape[0] == 3 and valid == 2
    host = CachedData(data.train.path, data.val.path, batch_size=3, val_batch_size=4, full_batches=True,
                      balanced_val=True, seed=4)
    host.setup()
    loader = host.train_dataloader()
    batches = list(loader)
    assert len(loader) == 3 and [len(b[1]) for b in batches] == [3, 3, 3]
    assert sorted({i for b in batches for i in ids(b[1])}) == list(range(8))
    assert [len(b[1]) for b in host.val_dataloader()] == [3, 2]  # balanced; a host batch is not padded


def test_a_padded_validation_batch_scores_as_the_split_itself(synthetic_root, tmp_path):
    """Validation's metrics and loss with balanced, padded batches equal those of plain batches."""
    from models.losses import create_loss
    from models.registry import create_model
    from orchestrator.trial.module import SegmentationModule

    spec = DataSpec(dataset="synthetic", root=str(synthetic_root), size=[32, 64], resize="resize",
                    synthetic={"train": 4, "val": 5, "height": 40, "width": 72, "seed": 1})
    data = prepare_data(spec, tmp_path / "cache")
    results = []
    for balanced in (False, True):
        torch.manual_seed(0)
        module = SegmentationModule(create_model("unet", "resnet18", classes=len(data.classes)),
                                    create_loss("ce", "multiclass"), data.classes, data.ignore_index, None,
                                    {"name": "adam", "lr": 1e-3, "weight_decay": 0.0, "momentum": 0.9},
                                    {"name": "constant"}, max_epochs=1)
        dm = CachedData(data.train.path, data.val.path, batch_size=2, resident=True, val_batch_size=4,
                        balanced_val=balanced)
        trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False)
        trainer.validate(module, datamodule=dm, verbose=False)
        results.append(module.val_metrics)
    plain, padded = results
    assert plain.keys() == padded.keys()
    for key, value in plain.items():
        assert padded[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
