"""The dispatcher (a small Ray actor on the driver's node): which worker a new trial goes to. It keeps the number of
trials assigned to each worker, and gives a new trial to the worker with the most free room (its slots less its
trials). A worker found dead is never chosen again. A trial whose proxy went away without releasing it (its node
died under it) is abandoned by the driver: its worker is told to drop it. Imports no torch."""

from __future__ import annotations


class Dispatcher:
    def __init__(self, slots: list[int]) -> None:
        self.slots = list(slots)
        self.assigned: dict[str, int] = {}
        self.dead: set[int] = set()

    def assign(self, trial_id: str) -> int | None:
        """The index of the worker that trains ``trial_id`` (the same one when asked again); None when every worker
        has died."""
        if trial_id in self.assigned and self.assigned[trial_id] not in self.dead:
            return self.assigned[trial_id]
        alive = [i for i in range(len(self.slots)) if i not in self.dead]
        if not alive:
            return None
        load = {i: sum(1 for w in self.assigned.values() if w == i) for i in alive}
        chosen = max(alive, key=lambda i: (self.slots[i] - load[i], -i))
        self.assigned[trial_id] = chosen
        return chosen

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
