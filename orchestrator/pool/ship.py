"""The decoded data for workers on other nodes than the driver's: the driver decodes once into the run's cache and puts
its files into Ray's object store; a worker on another node gets them from there (Ray moves an object to a node
once) and writes them into its node's own folder, once per node and data, where the node's other workers find them.
No worker reads a path of another node. A worker on the driver's node reads the run's cache itself. Imports no
torch."""

from __future__ import annotations

import dataclasses
import fcntl
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray

from orchestrator.data.cache import PreparedData, SplitInfo
from orchestrator.files import folder_written_whole


@dataclass(frozen=True)
class ShippedData:
    """The cache's files in Ray's object store, for the workers of other nodes (small: object references)."""

    node_id: str  # the driver's node
    splits: dict[str, dict[str, Any]]  # "train" / "val" -> {file name: ObjectRef of its bytes as uint8}


def ship(prepared: PreparedData) -> ShippedData | None:
    """The run's decoded splits into the object store, when the cluster has more than one node (else None)."""
    if sum(1 for node in ray.nodes() if node["Alive"]) < 2:
        return None
    splits = {}
    for name, info in (("train", prepared.train), ("val", prepared.val)):
        splits[name] = {f.name: ray.put(np.fromfile(f, dtype=np.uint8))
                        for f in sorted(Path(info.path).iterdir()) if f.is_file()}
    return ShippedData(ray.get_runtime_context().get_node_id(), splits)


def node_folder() -> Path:
    """This node's folder for received data: beside Ray's own files of the node (its ``--temp-dir``)."""
    context = ray.get_runtime_context() if ray.is_initialized() else None
    # the node's --temp-dir where this Ray tells it (2.60 does), else the system's temporary folder
    root = context.get_temp_dir() if hasattr(context, "get_temp_dir") else tempfile.gettempdir()
    return Path(root) / "segsweep-data"


def receive(prepared: PreparedData, shipped: ShippedData | None, folder: Path | None = None,
            node_id: str | None = None) -> tuple[PreparedData, dict[str, Any]]:
    """The data as this worker reads it, and how it came (for the worker's timeline): the run's cache on the driver's
    node; elsewhere this node's copy, written from the object store by the node's first worker."""
    here = {"source": "run cache", "path": str(Path(prepared.train.path).parent)}
    if shipped is None:  # one node (or a worker made outside Ray, in tests): nothing to ask Ray, which would start one
        return prepared, here
    if (node_id or ray.get_runtime_context().get_node_id()) == shipped.node_id:
        return prepared, here
    folder = folder or node_folder()
    started, fetched, splits = time.perf_counter(), 0, {}
    for name, info in (("train", prepared.train), ("val", prepared.val)):
        target = folder / Path(info.path).name  # the run cache's folder name: dataset, split, size, content key
        fetched += _materialise(target, shipped.splits[name])
        splits[name] = SplitInfo(str(target), info.images)
    how = {"source": "object store" if fetched else "node copy", "path": str(folder), "bytes": fetched,
           "seconds": round(time.perf_counter() - started, 3)}
    return dataclasses.replace(prepared, **splits), how


def _materialise(target: Path, files: dict[str, Any]) -> int:
    """``target`` holds the split's files (written now, under a lock the node's workers share, unless a worker
    wrote it before); the bytes fetched."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(target.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_dir():  # renamed into place only once whole
            return 0
        fetched = 0
        with folder_written_whole(target) as tmp:
            for name, ref in files.items():
                data = ray.get(ref)
                data.tofile(tmp / name)
                fetched += data.nbytes
        return fetched
