"""The dispatcher (a small Ray actor on the driver's node, or the pool's own where the pool outlives sweeps): which
worker a new trial goes to. It keeps the number of trials assigned to each worker, and gives a new trial to the worker
with the most free room (its slots less its trials; ``admission.choose_worker``). A worker found dead is not chosen
again (a pool that outlives sweeps restarts its workers: there, for ``DOWN_S``). A trial whose proxy went away without
releasing it (its node died under it) is abandoned by the driver: its worker is told to drop it. A pool that outlives
sweeps also keeps here its key, its workers and the sweeps attached to it. Imports no torch."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from orchestrator.pool.admission import choose_worker

DOWN_S = 60.0  # a restarting pool's worker found dead is passed over this long, while Ray starts it again


class Lease:
    """A sweep's lease on a pool that outlives it: a tiny actor its driver owns, so it ends with the driver (also on
    kill -9); the pool's workers see that and let the sweep go (``TrialWorker.watch``)."""

    def alive(self) -> bool:
        return True


class Dispatcher:
    def __init__(self, slots: list[int], key: str = "", workers: list[Any] | None = None,
                 restarting: bool = False) -> None:
        """``key``, ``workers``: a pool that outlives sweeps (its versions key, its worker handles); ``restarting``:
        its workers come back after they die."""
        self.slots = list(slots)
        self.assigned: dict[str, int] = {}
        self.down: dict[int, float] = {}  # worker -> when it was found dead
        self.final: dict[str, str] = {}  # trials failed in a way that is not retried (``orchestrator.failures``)
        self.key, self.workers, self.restarting = key, list(workers or []), restarting
        self.contexts: dict[str, tuple[Any, Any]] = {}  # run directory -> (TrialContext, ShippedData)

    @property
    def dead(self) -> set[int]:
        if not self.restarting:
            return set(self.down)
        return {i for i, when in self.down.items() if time.time() - when < DOWN_S}

    def assign(self, trial_id: str) -> int | None:
        """The index of the worker that trains ``trial_id`` (the same one when asked again); None when every worker
        has died."""
        dead = self.dead
        if trial_id in self.assigned and self.assigned[trial_id] not in dead:
            return self.assigned[trial_id]
        chosen = choose_worker(self.slots, Counter(self.assigned.values()), dead)
        if chosen is not None:
            self.assigned[trial_id] = chosen
        return chosen

    def fail(self, trial_id: str, line: str) -> None:
        """``trial_id`` failed with ``line``, which trying again would only repeat: a retry of it ends at once."""
        self.final[trial_id] = line

    def final_failure(self, trial_id: str) -> str | None:
        return self.final.get(trial_id)

    def release(self, trial_id: str) -> None:
        self.assigned.pop(trial_id, None)

    def abandon(self, trial_id: str) -> int | None:
        """Tune ended ``trial_id``: the index of the worker it was still assigned to, which should drop it (its proxy
        did not say so: it died), and the assignment freed; None when it was released or its worker is dead."""
        index = self.assigned.pop(trial_id, None)
        return None if index is None or index in self.dead else index

    def lost(self, index: int) -> None:
        """Worker ``index`` died (its node went away, or its process): no new trial goes there (for ``DOWN_S`` in a
        restarting pool)."""
        self.down[index] = time.time()
        self.assigned = {t: w for t, w in self.assigned.items() if w != index}

    # ------------------------------------------------------------------ a pool that outlives sweeps
    def info(self) -> dict[str, Any]:
        return {"key": self.key, "workers": self.workers, "limits": self.slots, "sweeps": sorted(self.contexts)}

    def set_workers(self, workers: list[Any]) -> None:
        self.workers = list(workers)

    def attach(self, context: Any, shipped: Any = None) -> None:
        self.contexts[context.run_dir] = (context, shipped)

    def detach(self, run_dir: str) -> None:
        self.contexts.pop(run_dir, None)

    def attached(self) -> list[tuple[Any, Any]]:
        """The sweeps attached now, for a worker process that Ray has just started again."""
        return list(self.contexts.values())
