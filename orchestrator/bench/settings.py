"""What ``orchestrate bench-train`` measures with: its settings, the machine it runs on, and the benchmark's sweep
(identical-shape trials of one model on synthetic data). No Ray here: ``benchmarks/startup_profile.py`` times its
imports."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass(frozen=True)
class BenchSettings:
    arch: str = "unet"
    encoder: str = "mobilenet_v2"
    size: tuple[int, int] = (224, 320)
    batch: int = 16
    images: int = 256  # training images; validation gets a quarter
    epochs: int = 3
    workers: int = 8  # DataLoader workers of the seeds' pipeline (and of data.cache: false)
    trials: int = 8
    sweep_epochs: int = 3
    quality_epochs: int = 8
    classes: int = 7
    parts: tuple[str, ...] = ("seeds", "trial", "levers", "sweep", "quality")
    sweep_set: tuple[tuple[str, Any], ...] = ()  # spec overrides for the sweep part (e.g. resources.trials_per_gpu)


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "cpus": os.cpu_count(), "platform": platform.platform()}
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["gpu_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    else:
        info["gpus"] = []
    return info


def sweep_spec(s: BenchSettings, root: Path, overrides: dict[str, Any] | None = None, trials: int | None = None,
               epochs: int | None = None, seed: int = 0) -> dict[str, Any]:
    """The benchmark's sweep: identical-shape trials of one model; learning rates differ between trials."""
    spec: dict[str, Any] = {
        "name": "bench-train",
        "data": {"dataset": "synthetic", "root": str(root), "size": list(s.size),
                 "synthetic": {"train": s.images, "val": max(4, s.images // 4), "height": s.size[0],
                               "width": s.size[1], "seed": 0},
                 "augment": {"hflip": True}, "workers": s.workers},
        "model": {"arch": s.arch, "encoder": s.encoder},
        "loss": {"name": "ce"},
        "optimizer": {"name": "adam", "lr": {"loguniform": [3e-4, 3e-3]}},
        "schedule": {"name": "constant"},
        "trainer": {"max_epochs": epochs or s.sweep_epochs, "batch_size": s.batch, "seed": seed, "log_images": 0,
                    "best_worst": 0},
        "search": {"algorithm": "random", "num_samples": trials or s.trials, "seed": seed,
                   "scheduler": {"name": "none"}, "metric": "val/miou", "mode": "max"},
        "resources": {"cpus_per_trial": 1},
        "tracking": {"wandb": {"mode": "disabled"}},
    }
    for key, value in (overrides or {}).items():
        node = spec
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return spec
