"""The dispatcher (a small Ray actor on the driver's node): which worker a new trial goes to. It keeps the number of
trials assigned to each worker, and gives a new trial to the worker with the most free room (its slots less its
trials). A worker found dead is never chosen again. A trial whose proxy went away without releasing it (its node
died under it) is abandoned by the driver: its worker is told to drop it. Imports no torch."""

from __future__ import annotations

from collections import Counter

from orchestrator.pool.admission import choose_worker


class Dispatcher:
    def __init__(self, slots: list[int]) -> None:
        self.slots = list(slots)
        self.assigned: dict[str, int] = {}
        self.dead: set[int] = set()
        self.final: dict[str, str] = {}  # trials failed in a way that is not retried (``orchestrator.failures``)

    def assign(self, trial_id: str) -> int | None:
        """The index of the worker that trains ``trial_id`` (the same one when asked again); None when every worker
        has died."""
        if trial_id in self.assigned and self.assigned[trial_id] not in self.dead:
            return self.assigned[trial_id]
        chosen = choose_worker(self.slots, Counter(self.assigned.values()), self.dead)
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
        """Worker ``index`` died (its node went away): no new trial goes there."""
        self.dead.add(index)
        self.assigned = {t: w for t, w in self.assigned.items() if w != index}
