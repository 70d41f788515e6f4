"""A trial's data: batches of uint8 from the decode-once cache (memory-mapped, or resident on the GPU), converted,
augmented and normalised on the device after transfer (augmentation in training only)."""

from __future__ import annotations

import threading
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from orchestrator.data.cache import load_split
from orchestrator.trial.levers import CPU_LEVERS, Levers

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


def balanced_batch(n: int, batch_size: int) -> int:
    """The smallest batch that splits ``n`` samples into as many batches as ``batch_size`` does (204 at 64: 51, four
    batches of one shape instead of 64, 64, 64 and 12): validation's batch size is speed only, and every new shape
    costs each thread of a worker new cuDNN plans."""
    batches = -(-n // max(1, batch_size))
    return -(-n // max(1, batches))


class BatchNumbers(Dataset):
    """(split, batch number, batch size) triples: what a device-resident split's loader yields. ``full``: every
    batch has ``batch_size`` samples, the last one filled up (``CachedData.gather``)."""

    def __init__(self, n: int, batch_size: int, drop_last: bool, split: str, full: bool = False) -> None:
        self.n, self.batch_size, self.split, self.full = n, batch_size, split, full
        self.batches = n // batch_size if drop_last and not full else -(-n // batch_size)

    def __len__(self) -> int:
        return self.batches

    def __getitem__(self, i: int) -> tuple[str, int, int]:
        if not 0 <= i < self.batches:
            raise IndexError(i)
        return self.split, i, self.batch_size if self.full else min(self.batch_size, self.n - i * self.batch_size)


class FullBatchSampler(torch.utils.data.Sampler[int]):
    """A random permutation per epoch whose last batch is filled up with the permutation's first samples (as
    ``DistributedSampler`` pads its shards by repeating indices): every training batch has the same shape, so a
    CUDA-graphed step replays for every batch and no eager step of a new shape follows it."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size = n, batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-self.n // self.batch_size) * self.batch_size

    def __iter__(self):
        perm = torch.randperm(self.n, generator=self.generator)
        return iter(fill_up(perm, self.batch_size).tolist())


def fill_up(index: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``index`` repeated from its start up to a whole number of batches (``len`` of ``FullBatchSampler``)."""
    size = -(-len(index) // batch_size) * batch_size
    return index if size == len(index) else index.repeat(-(-size // len(index)))[:size]


# DataLoader workers (data.cache: false) start from a clean server process: forking a trial worker, which runs
# several trials in threads with CUDA initialised, could copy a lock another thread holds
LOADER_CONTEXT = "forkserver"
_RESIDENT: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}
_RESIDENT_LOCK = threading.Lock()


def resident_split(folder: str, split: ArrayPairs, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A cached split's uint8 images and labels on ``device``, uploaded once per process: the trials of a worker
    share them (read-only; batches are gathers)."""
    key = (str(folder), str(device))
    with _RESIDENT_LOCK:
        if key not in _RESIDENT:
            tensors = tuple(torch.from_numpy(np.array(a)).to(device) for a in (split.images, split.labels))
            if device.type == "cuda":
                torch.cuda.current_stream(device).synchronize()  # ready before another stream reads it
            _RESIDENT[key] = tensors
        return _RESIDENT[key]


def release_resident(folders: list[str]) -> None:
    """A finished sweep's splits leave the device (``resident_split``)."""
    with _RESIDENT_LOCK:
        for key in [k for k in _RESIDENT if k[0] in {str(f) for f in folders}]:
            del _RESIDENT[key]


class CachedData(L.LightningDataModule):
    """Batches of uint8 from the cache; conversion, augmentation and normalisation happen on the device after
    transfer (augmentation in training only)."""

    def __init__(self, train_dir: str, val_dir: str, batch_size: int, hflip: bool = True,
                 scale: tuple[float, float] | None = None, jitter: float = 0.0, num_workers: int = 0,
                 ignore_index: int = 255, levers: Levers = CPU_LEVERS, train_set: Dataset | None = None,
                 val_set: Dataset | None = None, resident: bool = False, seed: int = 0,
                 val_batch_size: int | None = None, full_batches: bool = False, balanced_val: bool = False) -> None:
        """Batches of one shape (on a GPU: a CUDA-graphed step replays for every batch, and no thread of a worker
        plans cuDNN's kernels for a short last batch): ``full_batches`` fills the last training batch up with other
        samples of its epoch (``FullBatchSampler``); ``balanced_val`` balances validation's batches
        (``balanced_batch``) and pads the last one with repeats, which its count of real samples leaves out (not
        with batch statistics in evaluation, which the repeats would change)."""
        super().__init__()
        self.full_batches, self.balanced_val = full_batches, balanced_val
        self.train_dir, self.val_dir = train_dir, val_dir
        self.batch_size, self.num_workers, self.ignore_index = batch_size, num_workers, ignore_index
        self.hflip, self.scale, self.jitter = hflip, scale, jitter
        self.levers, self.seed = levers, seed
        self.val_batch_size = val_batch_size or batch_size
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
            self.on_device = {"train": resident_split(self.train_dir, self.train_set, device),
                              "val": resident_split(self.val_dir, self.val_set, device)}

    def _drop_last(self, n: int) -> bool:
        # a last batch of one breaks BatchNorm after global pooling (DeepLabV3, PSPNet): drop only that one
        return n % self.batch_size == 1 and n > 1

    @property
    def val_batch(self) -> int:
        """Validation's batch size: balanced over its batches where ``balanced_val`` (``balanced_batch``)."""
        n = len(self.val_set)
        return balanced_batch(n, self.val_batch_size) if self.balanced_val else self.val_batch_size

    def train_dataloader(self) -> DataLoader:
        n = len(self.train_set)
        if self.on_device:  # batch numbers; the batches themselves are gathered on the device
            return DataLoader(BatchNumbers(n, self.batch_size, self._drop_last(n), "train", self.full_batches),
                              batch_size=None)
        pin = self.num_workers > 0 or (self.trainer is not None and self.trainer.strategy.root_device.type == "cuda")
        order = {"sampler": FullBatchSampler(n, self.batch_size, self.seed)} if self.full_batches else {
            "shuffle": True, "drop_last": self._drop_last(n)}
        return DataLoader(self.train_set, batch_size=self.batch_size, num_workers=self.num_workers, pin_memory=pin,
                          persistent_workers=self.num_workers > 0,
                          multiprocessing_context=LOADER_CONTEXT if self.num_workers else None, **order)

    def val_dataloader(self) -> DataLoader:
        if self.on_device:
            return DataLoader(BatchNumbers(len(self.val_set), self.val_batch, False, "val", self.balanced_val),
                              batch_size=None)
        return DataLoader(self.val_set, batch_size=self.val_batch, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0,
                          multiprocessing_context=LOADER_CONTEXT if self.num_workers else None)

    def gather(self, batch: tuple[str, int, int]) -> tuple[torch.Tensor, ...]:
        """A batch of the device-resident split: a random permutation per training epoch, drawn on the device
        (filled up to a full last batch where ``full_batches``). A validation batch padded to the full size
        (repeats of the split's last image) comes with its count of real samples as a third element."""
        split, number, n = batch
        images, labels = self.on_device[split]
        if split == "val":
            size = self.val_batch
            start, stop = number * size, min(len(labels), (number + 1) * size)
            if not self.balanced_val or stop - start == size:
                return images[start:stop], labels[start:stop]
            index = torch.arange(start, start + size, device=labels.device).clamp_(max=len(labels) - 1)
            return images[index], labels[index], stop - start
        if number == 0:
            self._perm = torch.randperm(len(labels), device=labels.device, generator=self.generator(labels.device))
            if self.full_batches:
                self._perm = fill_up(self._perm, self.batch_size)
        index = self._perm[number * self.batch_size:number * self.batch_size + n]
        return images[index], labels[index]

    def prepare(self, batch: Any, augment: bool | None = None) -> tuple[torch.Tensor, ...]:
        """uint8 batch -> normalised float input and long labels, where the batch is; augmented when ``augment``
        (default: while the trainer trains). A padded batch's count of real samples (``gather``) passes through."""
        images, labels, *valid = batch
        x, y = to_model_input(images), labels.long()
        if augment is None:
            augment = self.trainer is not None and self.trainer.training
        if augment:
            x, y = augment_batch(x, y, self.hflip, self.scale, self.jitter, self.ignore_index, self.generator(x.device))
        return normalise(x, self.levers.channels_last), y, *valid

    def generator(self, device: torch.device) -> torch.Generator:
        """Augmentation's own random stream, seeded from the trial's seed: independent of the model's draws and of
        the default generator that CUDA-graph capture registers."""
        if getattr(self, "_generator", None) is None or self._generator.device != device:
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
        return self._generator

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return self.prepare(batch) if self.on_host else batch

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.on_device:
            batch = self.gather(batch)
        return batch if self.on_host else self.prepare(batch)
