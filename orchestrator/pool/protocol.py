"""What the driver, the proxies and the workers agree on: the proxies' context, the workers' settings, the
scheduler's decision points and the checkpoint stub. Imports no torch."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STUB = {"finished": True}  # what a finished trial's released checkpoint (state.pt) says, as JSON
CHECKPOINT_NAME = re.compile(r"^checkpoint_\d+$")  # Tune's checkpoint folders of a trial
POOL_NAME, NAMESPACE = "segsweep-pool", "segsweep"  # how a pool that outlives sweeps is found in Ray
REPLAYED = "segsweep/replayed"  # marks the one report of a trial that had finished before a resume (no epoch in it)


@dataclass(frozen=True)
class PoolContext:
    """What every proxy needs (passed with ``tune.with_parameters``; small and torch-free)."""

    run_dir: str
    workers: tuple[Any, ...]  # Ray actor handles of the TrialWorkers
    dispatcher: Any  # Ray actor handle of the Dispatcher
    groups: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    # trials the store held finished when the driver (re)started, each with the metrics of its last epoch: a resumed
    # one ends at once, whatever Tune's older snapshot says of it (running, maybe with no checkpoint yet, so it would
    # train again from the start), after one report of those metrics marked REPLAYED (Tune refuses a trial's end
    # whose result lacks the sweep's metric, and the searcher learns its value if it had not)
    finished: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkerSettings:
    """A worker's shape, whichever sweeps it trains for (a sweep's own settings come with its ``TrialContext``)."""

    slots: int  # threads: the most trials this worker trains at once
    limit: int  # trials admitted at once at the start (slots, or fewer by the stated memory figures)
    threads: int  # torch's CPU threads (the trial's CPU share)
    memory_aware: bool


def decision_epochs(max_epochs: int, grace_period: int | None, reduction_factor: float) -> tuple[int, ...]:
    """The epochs after which ASHA may stop a trial (its rungs: grace_period * rf^k below max_epochs). A worker waits
    there for Tune's decision instead of training an epoch that may be thrown away; elsewhere it runs at most one
    epoch ahead. ``grace_period`` None (no early stopping): none."""
    if grace_period is None:
        return ()
    rungs, k = [], 0
    while True:
        epoch = int(math.ceil(grace_period * reduction_factor ** k))
        if epoch >= max_epochs:
            return tuple(rungs)
        rungs.append(epoch)
        k += 1


def _marker(state: Path) -> dict | None:
    """A ``state.pt`` that is a few bytes of JSON (the stub, or a pointer to a newer checkpoint); None for weights."""
    if not state.is_file() or state.stat().st_size > 256:
        return None
    try:
        value = json.loads(state.read_text())
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def is_stub(state: Path) -> bool:
    """Whether a trial's ``state.pt`` is the stub a finished trial's checkpoint becomes (checked without torch)."""
    return _marker(state) == STUB


def superseded_by(newer: str) -> dict[str, str]:
    """What an older checkpoint's ``state.pt`` of a running trial becomes once ``newer`` (a sibling checkpoint
    folder's name) holds the trial's state."""
    return {"superseded_by": newer}


def resolve_state(state: Path) -> Path:
    """The ``state.pt`` a restored trial continues from: a superseded checkpoint's pointer is followed to its
    trial's newest checkpoint (whole, or the stub of a finished trial). Tune's own snapshot may name an older one."""
    for _ in range(100_000):
        newer = (_marker(state) or {}).get("superseded_by")
        if not isinstance(newer, str) or not CHECKPOINT_NAME.match(newer):
            return state
        state = state.parent.parent / newer / state.name
    return state
