"""The pool's Ray actor class, importable without torch: the driver names it to start the workers, and only the
worker's own process imports ``pool.worker`` (torch, Lightning, smp), in ``__init__``. So the driver's start does
not wait for those imports before the workers begin theirs (measured on 2 cores: 4-5 s of a 6.8 s driver import)."""

from __future__ import annotations

from typing import Any

from orchestrator.pool.protocol import WorkerSettings


class WorkerActor:
    """``ray.remote(WorkerActor)`` with ``max_concurrency``: each method runs in its own thread and hands its call to
    the process's ``TrialWorker`` (``pool.worker``), which holds the slots: the calls the driver, the proxies and the
    pool's own tools make, no more."""

    def __init__(self, settings: WorkerSettings, dispatcher: Any = None) -> None:
        from orchestrator.pool.worker import TrialWorker  # lazy: this process trains; the driver's must not import

        self.worker = TrialWorker(settings, dispatcher)

    def ready(self) -> dict[str, Any]:
        return self.worker.ready()

    def attach(self, context: Any, shipped: Any = None) -> None:
        self.worker.attach(context, shipped)

    def detach(self, run_dir: str) -> None:
        self.worker.detach(run_dir)

    def start(self, trial_id: str, config: dict[str, Any], state_path: str | None, run_dir: str = "") -> None:
        self.worker.start(trial_id, config, state_path, run_dir)

    def next_event(self, trial_id: str, timeout: float) -> dict[str, Any] | None:
        return self.worker.next_event(trial_id, timeout)

    def decide(self, trial_id: str, epoch: int) -> None:
        self.worker.decide(trial_id, epoch)

    def stop(self, trial_id: str) -> None:
        self.worker.stop(trial_id)

    def revalidate(self, trial_id: str, config: dict[str, Any], run_dir: str = "") -> dict[str, Any]:
        return self.worker.revalidate(trial_id, config, run_dir)
