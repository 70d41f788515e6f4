"""The seeds' training loop, as the seed projects write it by hand: PIL decodes every JPEG/PNG in DataLoader workers
every epoch, fp32, eager, a plain Lightning loop with automatic optimisation, one process per trial. The baseline
segsweep's benchmarks measure against: ``seeds_pipeline`` (bench-train's fixed model) and ``seeds_trial`` (one trial
of a study, as its own process: ``python -m orchestrator.bench.seeds REQUEST.json``, bench-sweep). ``EpochTimer``
times any Lightning loop's epochs."""

from __future__ import annotations

import json
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from models.losses import create_loss, enet_weights, loss_needs_class_weights
from models.metrics import ConfusionMatrix, metrics_from_confusion
from models.optim import create_optimizer, create_schedule
from models.registry import create_model
from orchestrator.data.adapters import create_adapter
from orchestrator.data.cache import decode_item
from orchestrator.data.prepare import adapter_for, resolve_pairs
from orchestrator.trial.config import TrialConfig

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


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



class SeedsFiles(Dataset):
    """The seeds' dataset for a study's data: each item decoded with PIL and brought to the training size on every
    access, flipped at random (training), converted and normalised on the host."""

    def __init__(self, pairs, adapter, size: tuple[int, int], resize: str, task: str, flip: bool) -> None:
        self.pairs, self.adapter, self.size, self.resize, self.task = pairs, adapter, size, resize, task
        self.flip = flip

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int):
        image, label = decode_item(self.adapter, self.pairs[i], self.size, self.resize, self.task)
        if self.flip and np.random.rand() < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32) / 255).permute(2, 0, 1)
        return (x - MEAN) / STD, torch.from_numpy(np.ascontiguousarray(label, dtype=np.int64))


class PlainTrial(L.LightningModule):
    """A study trial's model, loss, optimiser and schedule in a plain loop: automatic optimisation, fp32, eager;
    validation metrics from the same confusion matrix as segsweep's."""

    def __init__(self, cfg: TrialConfig, classes: tuple[str, ...], positive: int | None, pixel_counts, steps: int):
        super().__init__()
        binary = positive is not None
        self.model = create_model(cfg.model.arch, cfg.model.encoder, classes=1 if binary else len(classes),
                                  batchnorm=cfg.model.batchnorm)
        weights = enet_weights(pixel_counts, cfg.loss.enet_c) if loss_needs_class_weights(cfg.loss.name) else None
        self.loss = create_loss(cfg.loss.name, cfg.data.task, 255, weights=cfg.loss.weights, class_weights=weights,
                                alpha=cfg.loss.alpha, beta=cfg.loss.beta, gamma=cfg.loss.gamma, smooth=cfg.loss.smooth)
        self.cfg, self.classes, self.positive, self.steps = cfg, classes, positive, steps
        self.history: list[dict[str, float]] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        return self.loss(self.model(x), y)

    def on_validation_epoch_start(self) -> None:
        self._cm = ConfusionMatrix(len(self.classes), 255, self.device)

    def validation_step(self, batch, batch_idx) -> None:
        x, y = batch
        logits = self.model(x)
        self._cm.update((logits[:, 0] > 0).long() if self.positive is not None else logits.argmax(1), y)

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            metrics = metrics_from_confusion(self._cm.compute(), self.classes, self.positive)
            self.history.append({f"val/{k}": v for k, v in metrics.items()})

    def configure_optimizers(self):
        optimizer = create_optimizer(params=self.parameters(), **self.cfg.optimizer.model_dump())
        schedule = create_schedule(optimizer=optimizer, steps_per_epoch=self.steps,
                                   max_epochs=self.cfg.trainer.max_epochs, lr=self.cfg.optimizer.lr,
                                   **self.cfg.schedule.model_dump())
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def seeds_trial(config: dict[str, Any], data: dict[str, Any], epochs: int, workers: int) -> dict[str, Any]:
    """One study trial (its flat config) for ``epochs`` epochs the seeds' way; ``data``: the run's prepared data
    (classes, positive class, training pixel counts). Returns the epochs' seconds and validation metrics."""
    cfg = TrialConfig.from_flat(config)
    adapter = adapter_for(cfg.data)
    train, val = resolve_pairs(cfg.data)
    size = tuple(cfg.data.size)
    args = (adapter, size, cfg.data.resize, cfg.data.task)
    loader = DataLoader(SeedsFiles(train, *args, flip=cfg.data.augment.hflip), batch_size=cfg.trainer.batch_size,
                        shuffle=True, num_workers=workers, persistent_workers=workers > 0, pin_memory=True,
                        drop_last=len(train) % cfg.trainer.batch_size == 1)
    val_loader = DataLoader(SeedsFiles(val, *args, flip=False), batch_size=cfg.trainer.batch_size,
                            num_workers=workers, persistent_workers=workers > 0, pin_memory=True)
    L.seed_everything(cfg.trainer.seed, verbose=False)
    module = PlainTrial(cfg, tuple(data["classes"]), data["positive"], data["pixel_counts"], len(loader))
    timer = EpochTimer()
    gpu = torch.cuda.is_available()
    trainer = L.Trainer(max_epochs=epochs, accelerator="gpu" if gpu else "cpu", devices=1, precision="32-true",
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, callbacks=[timer])
    trainer.fit(module, loader, val_loader)
    return {"epochs": epochs, "epoch_s": timer.seconds, "history": module.history}


def main() -> None:
    """``python -m orchestrator.bench.seeds REQUEST.json``: one trial, its result as the last line of stdout."""
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    request = json.loads(Path(sys.argv[1]).read_text())
    started = time.perf_counter()
    result = seeds_trial(request["config"], request["data"], request["epochs"], request["workers"])
    print(json.dumps({**result, "process_s": time.perf_counter() - started}))


if __name__ == "__main__":
    main()
