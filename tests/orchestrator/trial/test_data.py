"""The trial's data paths: device-resident batches, per-trial file decoding and host augmentation, each against the
decode-once cache."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as L
import numpy as np
import torch

from orchestrator.data.files import FilePairs
from orchestrator.data.prepare import adapter_for, prepare_data, resolve_pairs
from orchestrator.spec.schema import DataSpec
from orchestrator.trial.data import CachedData
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


