"""Shared fixtures: tiny synthetic data in the real IDD-lite layout, sweep files, one Ray instance per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]  # the repository

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def pytest_collection_modifyitems(config, items) -> None:
    """``gpu`` tests need a CUDA device: skipped here without one (they run on the GPU machine)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def tiny_spec(root: Path, **sections) -> dict:
    """A small valid sweep as a dict; ``sections`` replace whole top-level sections."""
    spec = {
        "name": "tiny",
        "data": {"dataset": "synthetic", "root": str(root), "size": [32, 64], "resize": "resize",
                 "synthetic": {"train": 8, "val": 4, "height": 40, "width": 72, "seed": 1}},
        "model": {"arch": "unet", "encoder": "resnet18", "encoder_weights": None},
        "loss": {"name": "dice"},
        "optimizer": {"name": "adam", "lr": 0.003},
        "trainer": {"max_epochs": 2, "batch_size": 4, "log_images": 1, "best_worst": 1},
        "search": {"algorithm": "optuna", "num_samples": 2, "metric": "val/miou", "mode": "max", "seed": 0},
        "resources": {"cpus_per_trial": 1, "max_concurrent": 2},
    }
    spec.update(sections)
    return spec


@pytest.fixture
def write_spec(tmp_path: Path):
    def write(spec: dict | str, name: str = "sweep.yaml") -> Path:
        path = tmp_path / name
        path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec, sort_keys=False))
        return path

    return write


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    from orchestrator.data.synthetic import generate_synthetic

    root = tmp_path_factory.mktemp("synthetic")
    return generate_synthetic(root, train=8, val=4, height=40, width=72, seed=1)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test session (2 CPUs, as on CI)."""
    import ray

    # address "local": its own Ray, whatever other Ray runs on the machine (`ray start` would be joined otherwise)
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING", configure_logging=True)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def ssh_targets(tmp_path_factory):
    """One real sshd on loopback for the session, one port per device profile (``tests.standins``): ``plain`` (this
    machine as it is), ``orin`` (TensorRT 10, an Orin's tegrastats), ``xavier`` (TensorRT 8.4, an AGX Xavier's),
    ``trt11`` and ``no-tegrastats``."""
    from tests.standins import start_sshd

    started = start_sshd(tmp_path_factory.mktemp("sshd"))
    if started is None:
        pytest.skip("openssh-server is not installed (apt-get install openssh-server)")
    server, targets = started
    yield targets
    server.terminate()
    server.wait(10)



@pytest.fixture(scope="session", autouse=True)
def no_pool_outlives_the_session(tmp_path_factory):
    """A pool holder a test started (they outlive their starter by design) does not outlive the test session: each
    one whose state file lies in this session's temporary folders is stopped."""
    yield
    import psutil

    base = str(tmp_path_factory.getbasetemp())
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "orchestrator.pool.resident" in cmdline and any(arg.startswith(base) for arg in cmdline):
            proc.terminate()
