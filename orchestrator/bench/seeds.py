"""The seeds' training loop, as the seed projects write it by hand: PIL decodes every JPEG/PNG in DataLoader workers
every epoch, fp32, a plain Lightning loop (automatic optimisation, torch's default Adam). The baseline segsweep's
benchmarks measure against; ``EpochTimer`` times any Lightning loop's epochs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from models.registry import create_model
from orchestrator.data.adapters import create_adapter


def seeds_pipeline(s, root: Path, device: str) -> dict[str, Any]:
    """PIL decoding in DataLoader workers, fp32, plain Lightning loop; images/s after the first epoch. ``s``: the
    benchmark's settings (arch, encoder, size, batch, classes, epochs, workers)."""
    pairs = create_adapter("idd_lite").pairs(root, "train")
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    h, w = s.size

    class Files(Dataset):  # the seeds' dataset: open, convert, resize, flip, to tensor, normalise, per item
        def __len__(self) -> int:
            return len(pairs)

        def __getitem__(self, i: int):
            image = Image.open(pairs[i].image).convert("RGB").resize((w, h), Image.BILINEAR)
            label = Image.open(pairs[i].label).resize((w, h), Image.NEAREST)
            if np.random.rand() < 0.5:
                image, label = image.transpose(Image.FLIP_LEFT_RIGHT), label.transpose(Image.FLIP_LEFT_RIGHT)
            x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)
            return (x - mean) / std, torch.from_numpy(np.asarray(label, dtype=np.int64))

    class Plain(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = create_model(s.arch, s.encoder, classes=s.classes, encoder_weights=None)
            self.loss = torch.nn.CrossEntropyLoss(ignore_index=255)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return self.loss(self.model(x), y)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    timer = EpochTimer()
    loader = DataLoader(Files(), batch_size=s.batch, shuffle=True, num_workers=s.workers,
                        pin_memory=device == "cuda", persistent_workers=s.workers > 0)
    trainer = L.Trainer(max_epochs=s.epochs, accelerator="gpu" if device == "cuda" else "cpu", devices=1,
                        precision="32-true", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[timer])
    trainer.fit(Plain(), loader)
    return {"images_per_s": timer.images_per_s(len(pairs)), "epoch_s": timer.seconds, "workers": s.workers,
            **gpu_memory(device)}


class EpochTimer(L.Callback):
    """Wall time of every training epoch, with the device synchronised at both ends."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    @staticmethod
    def _sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._sync()
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._sync()
        self.seconds.append(time.perf_counter() - self._t0)

    def images_per_s(self, images_per_epoch: int) -> float:
        timed = self.seconds[1:] or self.seconds  # the first epoch warms up
        return images_per_epoch * len(timed) / sum(timed)


def gpu_memory(device: str) -> dict[str, float]:
    """The device's peak reserved memory since the last call, in GB (nothing on a CPU)."""
    if device != "cuda":
        return {}
    peak = torch.cuda.max_memory_reserved() / 2**30
    torch.cuda.reset_peak_memory_stats()
    return {"gpu_peak_gb": round(peak, 2)}
