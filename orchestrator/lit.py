"""The Lightning pieces of a trial: data from the decode-once cache, and the segmentation module."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from models.metrics import ConfusionMatrix, metrics_from_confusion
from models.optim import create_optimizer, create_schedule
from orchestrator.data.cache import load_split
from orchestrator.perf import Levers

log = logging.getLogger("segsweep.trial")
CPU_LEVERS = Levers(precision="32", channels_last=False, fused_optimizer=False, cuda_graphs=False, device_augment=True,
                    native_depthwise=False)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 NxHxWx3 -> float Nx3xHxW in [0, 1] (augmentation works here; ``normalise`` follows)."""
    return images.permute(0, 3, 1, 2).float().div_(255)


def normalise(x: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    return ((x - mean) / std).contiguous(memory_format=layout)


class ArrayPairs(Dataset):
    """uint8 image HxWx3 and label HxW tensors straight from the memory-mapped cache."""

    def __init__(self, folder: str) -> None:
        self.images, self.labels = load_split(folder)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(np.array(self.images[i])), torch.from_numpy(np.array(self.labels[i]))


def augment_batch(x: torch.Tensor, y: torch.Tensor, hflip: bool = True, scale: tuple[float, float] | None = None,
                  jitter: float = 0.0, ignore_index: int = 255, generator: torch.Generator | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips, scale + crop and colour jitter of a batch, on its device, one draw per sample.

    ``x``: float images in [0, 1], Nx3xHxW; ``y``: long labels NxHxW. Geometry is applied identically to both
    (bilinear for images, nearest for labels); where a zoomed-out sample leaves the frame, the image is black and
    the label is ``ignore_index``. No host synchronisation.
    """
    n = x.shape[0]
    if hflip:
        flip = torch.rand(n, device=x.device, generator=generator) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        y = torch.where(flip.view(-1, 1, 1), y.flip(-1), y)
    if scale is not None and scale != (1.0, 1.0):
        lo, hi = scale
        s = lo + (hi - lo) * torch.rand(n, device=x.device, generator=generator)
        inv = 1.0 / s  # the crop window's size relative to the frame
        shift = (1.0 - inv).abs().unsqueeze(1) * (2 * torch.rand(n, 2, device=x.device, generator=generator) - 1)
        theta = torch.zeros(n, 2, 3, device=x.device)
        theta[:, 0, 0], theta[:, 1, 1] = inv, inv
        theta[:, :, 2] = shift
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        # labels shifted by one so that the zero padding marks "outside the frame"
        moved = F.grid_sample((y + 1).unsqueeze(1).float(), grid, mode="nearest", padding_mode="zeros",
                              align_corners=False)[:, 0].long()
        y = torch.where(moved == 0, ignore_index, moved - 1)
    if jitter > 0:
        factors = 1 + jitter * (2 * torch.rand(3, n, 1, 1, 1, device=x.device, generator=generator) - 1)
        x = x * factors[0]  # brightness
        gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
        x = (x - gray.mean((2, 3), keepdim=True)) * factors[1] + gray.mean((2, 3), keepdim=True)  # contrast
        gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
        x = (gray + (x - gray) * factors[2]).clamp(0, 1)  # saturation
    return x, y


class BatchNumbers(Dataset):
    """(split, batch number, batch size) triples: what a device-resident split's loader yields."""

    def __init__(self, n: int, batch_size: int, drop_last: bool, split: str) -> None:
        self.n, self.batch_size, self.split = n, batch_size, split
        self.batches = n // batch_size if drop_last else -(-n // batch_size)

    def __len__(self) -> int:
        return self.batches

    def __getitem__(self, i: int) -> tuple[str, int, int]:
        if not 0 <= i < self.batches:
            raise IndexError(i)
        return self.split, i, min(self.batch_size, self.n - i * self.batch_size)


class CachedData(L.LightningDataModule):
    """Batches of uint8 from the cache; conversion, augmentation and normalisation happen on the device after
    transfer (augmentation in training only)."""

    def __init__(self, train_dir: str, val_dir: str, batch_size: int, hflip: bool = True,
                 scale: tuple[float, float] | None = None, jitter: float = 0.0, num_workers: int = 0,
                 ignore_index: int = 255, levers: Levers = CPU_LEVERS, train_set: Dataset | None = None,
                 val_set: Dataset | None = None, resident: bool = False) -> None:
        super().__init__()
        self.train_dir, self.val_dir = train_dir, val_dir
        self.batch_size, self.num_workers, self.ignore_index = batch_size, num_workers, ignore_index
        self.hflip, self.scale, self.jitter = hflip, scale, jitter
        self.levers = levers
        self.given = (train_set, val_set)
        self.resident = resident and train_set is None
        self.on_device: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def on_host(self) -> bool:
        """Conversion and augmentation before transfer: only for host batches with trainer.device_augment off."""
        return not (self.levers.device_augment or self.on_device)

    def setup(self, stage: str | None = None) -> None:
        train, val = self.given
        # the decode-once cache, or (data.cache: false) datasets that decode files in the workers
        self.train_set = train if train is not None else ArrayPairs(self.train_dir)
        self.val_set = val if val is not None else ArrayPairs(self.val_dir)
        if self.resident:
            device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
            # data.device_cache: the uint8 splits live on the GPU; a batch is one gather, no host work, no copy
            self.on_device = {name: tuple(torch.from_numpy(np.array(a)).to(device) for a in
                                          (split.images, split.labels))
                              for name, split in (("train", self.train_set), ("val", self.val_set))}

    def _drop_last(self, n: int) -> bool:
        # a last batch of one breaks BatchNorm after global pooling (DeepLabV3, PSPNet): drop only that one
        return n % self.batch_size == 1 and n > 1

    def train_dataloader(self) -> DataLoader:
        n = len(self.train_set)
        if self.on_device:  # batch numbers; the batches themselves are gathered on the device
            return DataLoader(BatchNumbers(n, self.batch_size, self._drop_last(n), "train"), batch_size=None)
        pin = self.num_workers > 0 or (self.trainer is not None and self.trainer.strategy.root_device.type == "cuda")
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, num_workers=self.num_workers,
                          drop_last=self._drop_last(n), pin_memory=pin, persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        if self.on_device:
            return DataLoader(BatchNumbers(len(self.val_set), self.batch_size, False, "val"), batch_size=None)
        return DataLoader(self.val_set, batch_size=self.batch_size, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def gather(self, batch: tuple[str, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch of the device-resident split: a random permutation per training epoch, drawn on the device."""
        split, number, n = batch
        images, labels = self.on_device[split]
        if split == "val":
            index = slice(number * self.batch_size, (number + 1) * self.batch_size)
            return images[index], labels[index]
        if number == 0:
            self._perm = torch.randperm(len(labels), device=labels.device, generator=self.generator(labels.device))
        index = self._perm[number * self.batch_size:number * self.batch_size + n]
        return images[index], labels[index]

    def prepare(self, batch: Any, augment: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 batch -> normalised float input and long labels, where the batch is; augmented when ``augment``
        (default: while the trainer trains)."""
        images, labels = batch
        x, y = to_model_input(images), labels.long()
        if augment is None:
            augment = self.trainer is not None and self.trainer.training
        if augment:
            x, y = augment_batch(x, y, self.hflip, self.scale, self.jitter, self.ignore_index, self.generator(x.device))
        return normalise(x, self.levers.channels_last), y

    def generator(self, device: torch.device) -> torch.Generator:
        """Augmentation's own random stream, seeded from the trial's seed: independent of the model's draws and of
        the default generator that CUDA-graph capture registers."""
        if getattr(self, "_generator", None) is None or self._generator.device != device:
            self._generator = torch.Generator(device=device).manual_seed(torch.initial_seed())
        return self._generator

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return self.prepare(batch) if self.on_host else batch

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.on_device:
            batch = self.gather(batch)
        return batch if self.on_host else self.prepare(batch)


class TrainStep:
    """One optimizer step per batch: eager, or (``levers.cuda_graphs``) replayed from a CUDA graph of the whole step:
    forward, loss, backward and optimizer, captured once the shapes are known.

    Full batches of one shape are graphed after ``WARMUP`` eager steps on a side stream (cuDNN and cuBLAS set up
    outside capture); other shapes (a short last batch) run eagerly beside the graph. The learning rate reaches the
    graph through a device tensor filled after each schedule step, so schedules keep working and nothing reads the
    host. A configuration that cannot be captured (a loss with data-dependent shapes, a non-capturable optimizer)
    falls back to eager for the rest of the trial, with the reason logged and kept in ``fallback``.
    """

    WARMUP = 3

    def __init__(self, module: SegmentationModule, levers: Levers, batch_size: int) -> None:
        self.module, self.batch_size = module, batch_size
        self.dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(levers.precision)
        self.scaler = torch.amp.GradScaler("cuda") if levers.precision == "16-mixed" else None
        self.use_graphs = levers.cuda_graphs
        self.graph: torch.cuda.CUDAGraph | None = None
        self.key: tuple | None = None
        self.seen = 0
        self.graphed = 0  # replays so far
        self.fallback: str | None = None
        self.lr: list[torch.Tensor] = []

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        # graphs must not keep autocast's weight-cast cache across captures
        return torch.autocast(self.module.device.type, dtype=self.dtype, cache_enabled=not self.use_graphs)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            logits, y = self.module._logits(x, y, training=True)
        return self.module.loss(logits.float(), y)

    def eager(self, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = self.loss(x, y)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            loss.backward()
            optimizer.step()
        return loss.detach()

    def __call__(self, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer) -> torch.Tensor:
        if not self.use_graphs or x.shape[0] != self.batch_size:
            return self.eager(x, y, optimizer)
        key = (tuple(x.shape), tuple(y.shape), x.is_contiguous(memory_format=torch.channels_last),
               self.module.in_stage1)
        if key != self.key:
            self.key, self.seen, self.graph = key, 0, None
        if self.graph is None:
            if self.seen < self.WARMUP:
                self.seen += 1
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    loss = self.eager(x, y, optimizer)
                torch.cuda.current_stream().wait_stream(side)
                return loss
            try:
                self.capture(x, y, optimizer)
            except Exception as e:  # noqa: BLE001 - any capture failure means: train eagerly
                self.use_graphs, self.graph = False, None
                root = e
                while root.__context__ is not None:  # the first error inside the capture, not capture_end's
                    root = root.__context__
                self.fallback = f"{type(root).__name__}: {(str(root).splitlines() or [''])[0]}"[:200]
                log.warning("CUDA graph capture failed, training eagerly: %s", self.fallback)
                torch.cuda.synchronize()
                return self.eager(x, y, optimizer)
        self.static_x.copy_(x)
        self.static_y.copy_(y)
        self.graph.replay()
        self.graphed += 1
        return self.static_loss.clone()

    def capture(self, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        groups = optimizer.param_groups
        self.static_x, self.static_y = x.clone(), y.clone()
        self.lr = [torch.tensor(float(g["lr"]), device=x.device) for g in groups]
        floats = [g["lr"] for g in groups]
        graph = torch.cuda.CUDAGraph()
        optimizer.zero_grad(set_to_none=True)
        try:
            for g, t in zip(groups, self.lr, strict=True):
                g["lr"] = t  # captured by address; schedules keep stepping the float
            # thread_local: the DataLoader's pin-memory thread may allocate while this thread captures
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                loss = self.loss(self.static_x, self.static_y)
                loss.backward()
                optimizer.step()
        finally:
            for g, f in zip(groups, floats, strict=True):
                g["lr"] = f
        self.static_loss, self.graph = loss.detach(), graph
        torch.cuda.empty_cache()  # the warm-up's cached blocks: packed trials can use them

    def sync_lr(self, optimizer: torch.optim.Optimizer) -> None:
        """After a schedule step: the graph's learning-rate tensors follow (no host read)."""
        if self.graph is not None:
            for g, t in zip(optimizer.param_groups, self.lr, strict=True):
                t.fill_(g["lr"])


def predict(logits: torch.Tensor, binary: bool) -> torch.Tensor:
    return (logits[:, 0] > 0).long() if binary else logits.argmax(1)


class SegmentationModule(L.LightningModule):
    """Model + loss + optimiser; metrics over the whole validation split; one ``report(metrics)`` per epoch.

    Losses are summed on the device and read once per epoch (no per-step host sync); a non-finite training loss
    fails the trial at the end of that epoch with the epoch named.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        classes: tuple[str, ...],
        ignore_index: int,
        positive: int | None,
        optim: dict[str, Any],
        schedule: dict[str, Any],
        max_epochs: int,
        report: Callable[[dict[str, float], "SegmentationModule"], None] | None = None,
        epoch_offset: int = 0,
        stage1_epochs: int = 0,
        levers: Levers = CPU_LEVERS,
        batch_size: int = 8,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False  # TrainStep runs the step (eager or a CUDA graph), schedules step here
        self.levers = levers
        self.step = TrainStep(self, levers, batch_size)
        self.model, self.loss = model, loss
        self.stage1_epochs = stage1_epochs
        self.classes, self.ignore_index, self.positive = classes, ignore_index, positive
        self.optim, self.schedule, self.max_epochs = optim, schedule, max_epochs
        self.report, self.epoch_offset = report, epoch_offset
        self.resume_state: dict[str, Any] | None = None
        self.history: list[dict[str, float]] = []
        self.started = time.time()  # the trial's start (wall clock), for perf/startup_s
        self.startup_s: float | None = None

    @property
    def binary(self) -> bool:
        return self.positive is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    @property
    def in_stage1(self) -> bool:
        """ENet's first stage: the encoder alone trains against labels downsampled x8 (nearest)."""
        return self.epoch_offset + self.current_epoch < self.stage1_epochs

    def _logits(self, x: torch.Tensor, y: torch.Tensor, training: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.in_stage1:
            return self(x), y
        logits = self.model.forward_encoder(x)
        if training:
            small = F.interpolate(y.unsqueeze(1).float(), size=logits.shape[-2:], mode="nearest")
            return logits, small[:, 0].long()
        # validation in stage 1 scores the encoder's output upsampled to full resolution, so curves stay comparable
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False), y

    def on_train_epoch_start(self) -> None:
        self._train_loss = torch.zeros((), device=self.device)
        self._train_batches = 0
        self._train_items = 0
        self._epoch_start = time.perf_counter()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        if self.startup_s is None:
            self.startup_s = time.time() - self.started
        x, y = batch
        optimizer = self.optimizers()
        optimizer = getattr(optimizer, "optimizer", optimizer)
        loss = self.step(x, y, optimizer)
        scheduler = self.lr_schedulers()
        scheduler.step()
        self.step.sync_lr(optimizer)
        self._train_loss += loss.float()
        self._train_batches += 1
        self._train_items += x.shape[0]

    def on_validation_epoch_start(self) -> None:
        self._cm = ConfusionMatrix(len(self.classes), self.ignore_index, self.device)
        self._val_loss = torch.zeros((), device=self.device)
        self._val_items = 0

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        with self.step.autocast():
            logits, y = self._logits(x, y, training=False)
        logits = logits.float()
        self._val_loss += self.loss(logits, y).detach().float() * x.shape[0]
        self._val_items += x.shape[0]
        self._cm.update(predict(logits, self.binary), y)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        metrics = metrics_from_confusion(self._cm.compute(), self.classes, self.positive)
        self._val_metrics = {f"val/{k}": v for k, v in metrics.items()}
        self._val_metrics["val/loss"] = float(self._val_loss) / max(1, self._val_items)

    def on_train_epoch_end(self) -> None:
        epoch = self.epoch_offset + self.current_epoch + 1
        train_loss = float(self._train_loss) / max(1, self._train_batches)
        if not np.isfinite(train_loss):
            raise FloatingPointError(f"training loss is {train_loss} at epoch {epoch}; lower optimizer.lr?")
        seconds = time.perf_counter() - self._epoch_start  # the loss read above waited for the GPU
        lr = float(self.trainer.optimizers[0].param_groups[0]["lr"])
        metrics = {"epoch": epoch, "train/loss": train_loss, "lr": lr,
                   "perf/images_per_s": self._train_items / max(seconds, 1e-9), "perf/epoch_s": seconds,
                   "perf/cuda_graphs": float(self.step.graphed > 0)}
        if self.startup_s is not None:
            metrics["perf/startup_s"] = self.startup_s
        if self.device.type == "cuda":
            metrics["perf/gpu_peak_gb"] = torch.cuda.max_memory_reserved(self.device) / 2**30
        metrics |= getattr(self, "_val_metrics", {})
        self.history.append(metrics)
        if self.report is not None:
            self.report(metrics, self)

    def build_optimizer(self) -> torch.optim.Optimizer:
        return create_optimizer(params=self.model.parameters(), fused=self.levers.fused_optimizer,
                                capturable=self.levers.cuda_graphs, **self.optim)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.build_optimizer()
        steps_per_epoch = max(1, self.trainer.estimated_stepping_batches // max(1, self.trainer.max_epochs))
        scheduler = create_schedule(
            optimizer=optimizer, steps_per_epoch=steps_per_epoch, max_epochs=self.max_epochs,
            lr=self.optim["lr"], **self.schedule,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_fit_start(self) -> None:
        if self.resume_state:  # optimiser and schedule continue where the checkpoint left them
            self.trainer.optimizers[0].load_state_dict(self.resume_state["optimizer"])
            self.trainer.lr_scheduler_configs[0].scheduler.load_state_dict(self.resume_state["scheduler"])

    def training_state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.trainer.optimizers[0].state_dict(),
            "scheduler": self.trainer.lr_scheduler_configs[0].scheduler.state_dict(),
        }
