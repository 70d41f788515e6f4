"""Per-trial file decoding (``data.cache: false``): every item is read from its JPEG/PNG with PIL in a DataLoader
worker, every epoch, and brought to the training size exactly as the decode-once cache does."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from orchestrator.data.adapters import Adapter, Pair
from orchestrator.data.cache import decode_item


class FilePairs(Dataset):
    """uint8 image HxWx3 and label HxW tensors decoded from the dataset's files on every access."""

    def __init__(self, pairs: list[Pair], adapter: Adapter, size: tuple[int, int], resize: str, task: str) -> None:
        self.pairs, self.adapter, self.size, self.resize, self.task = pairs, adapter, size, resize, task

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = decode_item(self.adapter, self.pairs[i], self.size, self.resize, self.task)
        return torch.from_numpy(np.array(image)), torch.from_numpy(np.array(label))
